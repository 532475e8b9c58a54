"""Files of a compliance repository: finding its root, listing, reading and hashing them.

Kept free of heavy imports, because a check whose inputs are all unchanged needs only this.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ecoc.errors import ConfigError
from ecoc.findings import Finding, Severity

CONFIG_NAME = "ecoc.yaml"
# Files under rules/ that hold waivers, not rules.
WAIVER_FILES = frozenset({"waivers.yaml", "waivers.yml"})
YAML_SUFFIXES = (".yaml", ".yml")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def list_yaml(root: Path, folder: str) -> list[tuple[str, str]]:
    """YAML files below `root/folder` as (path, path relative to `root`), sorted by the latter.

    Hidden files and folders are left out. Works on plain strings with `os.scandir` because a
    repository can hold hundreds of thousands of records.
    """
    found: list[tuple[str, str]] = []
    pending = [(os.path.join(root, folder), folder)]
    while pending:
        absolute, relative = pending.pop()
        try:
            entries = list(os.scandir(absolute))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            if entry.is_dir():
                pending.append((entry.path, f"{relative}/{name}"))
            elif name.endswith(YAML_SUFFIXES) and (entry.is_file() or entry.is_symlink()):
                # A dangling link is listed too, so that reading it reports the problem.
                found.append((f"{relative}/{name}", entry.path))
    found.sort()
    return [(path, relative) for relative, path in found]


def read_file(path: str | Path, relative: str) -> tuple[bytes | None, Finding | None]:
    try:
        with open(path, "rb") as handle:
            return handle.read(), None
    except OSError as exc:
        return None, Finding(
            "io.read",
            Severity.ERROR,
            f"cannot read the file: {exc.strerror}",
            relative,
            1,
            1,
            hint="check the file's permissions",
        )


def find_root(start: Path) -> Path:
    here = start.resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise ConfigError(
        f"no {CONFIG_NAME} in {here} or any folder above it",
        "run ecoc inside a compliance repository, or pass --repo DIR",
    )


# The evidence manifest the release job writes next to each signed certificate in signed/.
MANIFEST_NAME = "manifest.json"


def list_manifests(root: Path) -> list[tuple[str, str]]:
    """Evidence manifests below signed/ as (path, path relative to `root`), sorted."""
    found: list[tuple[str, str]] = []
    pending = [(os.path.join(root, "signed"), "signed")]
    while pending:
        absolute, relative = pending.pop()
        try:
            entries = list(os.scandir(absolute))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_dir():
                pending.append((entry.path, f"{relative}/{entry.name}"))
            elif entry.name == MANIFEST_NAME:
                found.append((f"{relative}/{entry.name}", entry.path))
    found.sort()
    return [(path, relative) for relative, path in found]
