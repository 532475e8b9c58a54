"""The GitHub workflows that `ecoc init` and `ecoc workflows` write into a compliance repository.

ecoc ships the workflows of its own repository, which install ecoc from the checkout they run
in. A compliance repository has no ecoc source, so its copies install a pinned pip requirement
instead, and they run on the repository's main branch.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ecoc.errors import UsageError
from ecoc.fileio import write_atomically

# The lines of the shipped workflows that a compliance repository's copies change.
INSTALL_LINE = ".venv/bin/pip install .\n"
BRANCH_LINES = ("    branches: [main]\n", "          ref: main\n", "deployment branches to main,")

SCHEMA_LINE = '          SCHEMA_URL: ""\n'

REQUIREMENT_EXAMPLE = "'ecoc @ git+https://git.example.com/tools/ecoc@COMMIT' or ecoc==1.2.0"


def installed_requirement() -> str | None:
    """Return a pinned requirement for the ecoc that runs, when pip recorded where it came from.

    pip writes direct_url.json for an install from a URL. A git URL with its commit, or an
    archive URL, can be installed again on a runner, but a local folder cannot, so it gives None.
    """
    try:
        text = metadata.distribution("ecoc").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    origin = json.loads(text)
    url = str(origin.get("url", ""))
    if not url.startswith("https://"):
        return None
    vcs = origin.get("vcs_info")
    if isinstance(vcs, dict):
        commit = vcs.get("commit_id")
        return f"ecoc @ {vcs.get('vcs', 'git')}+{url}@{commit}" if commit else None
    return f"ecoc @ {url}" if "archive_info" in origin else None


def check_requirement(text: str) -> str:
    """Return `text` if it is a pip requirement for one pinned ecoc, else raise UsageError."""
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise UsageError(
            f"--install {text!r}: invalid pip requirement ({str(exc).splitlines()[0]})",
            f"give one requirement, such as {REQUIREMENT_EXAMPLE}",
        ) from None
    if canonicalize_name(requirement.name) != "ecoc":
        raise UsageError(
            f"--install {text!r}: the requirement installs {requirement.name}, not ecoc",
            f"name ecoc, as in {REQUIREMENT_EXAMPLE}",
        )
    pinned = requirement.url is not None or any(spec.operator in ("==", "===") for spec in requirement.specifier)
    if not pinned or any("*" in spec.version for spec in requirement.specifier):
        raise UsageError(
            f"--install {text!r}: the requirement does not pin one ecoc",
            "pin a version (ecoc==1.2.0) or a commit (ecoc @ git+URL@COMMIT), so that every run installs the same ecoc",
        )
    return text


def check_schema_url(url: str) -> str:
    """Return `url` without a trailing slash if it is an https URL of a folder, else raise UsageError."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment or '"' in url or "\\" in url:
        raise UsageError(
            f"--schema-url {url!r}: invalid URL, an https URL of a folder is expected",
            "give the folder that serves IVI-2.0.xsd and xmldsig-core-schema.xsd, such as https://example.com/ivi",
        )
    return url.rstrip("/")


def workflow_text(shipped: str, requirement: str, branch: str, schema_url: str | None = None) -> str:
    """Return a shipped workflow as a compliance repository runs it: `requirement` installed, on `branch`."""
    text = shipped.replace(INSTALL_LINE, f".venv/bin/pip install {shlex.quote(requirement)}\n")
    for line in BRANCH_LINES:
        text = text.replace(line, line.replace("main", branch))
    if schema_url is not None:
        text = text.replace(SCHEMA_LINE, SCHEMA_LINE.replace('""', json.dumps(schema_url)))
    return text


@dataclass
class Written:
    """The workflow files that a run wrote, replaced, and kept as they were."""

    written: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def write_workflows(
    folder: Path,
    requirement: str,
    branch: str,
    replace: bool = False,
    write: Callable[[Path, str], None] = write_atomically,
    schema_url: str | None = None,
) -> Written:
    """Write each shipped workflow into `folder` with `write`; an existing file is replaced only with `replace`."""
    result = Written()
    shipped = files("ecoc") / "workflows"
    for entry in sorted(shipped.iterdir(), key=lambda item: item.name):
        if not entry.name.endswith(".yml"):
            continue
        target = folder / entry.name
        text = workflow_text(entry.read_text(encoding="utf-8"), requirement, branch, schema_url)
        if target.exists():
            if not replace or target.read_text(encoding="utf-8") == text:
                result.unchanged.append(entry.name)
                continue
            result.replaced.append(entry.name)
        else:
            result.written.append(entry.name)
        write(target, text)
    return result
