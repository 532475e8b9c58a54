"""The findings of the last complete check, reused while none of its inputs changed.

A check's findings depend on ecoc's code, `ecoc.yaml`, the schema, the command's options and
the approval and record files. The memo stores a fingerprint of all of these with the
findings. When a new check computes the same fingerprint, it prints the stored findings
without loading the model, the schema or any record, which is what makes a second run on an
unchanged repository cheap. Files are fingerprinted by size, modification and change time and
inode; only the kernel sets the change time, so an edit that restores the modification time
still shows. A file changed less than two seconds before the memo was written is not trusted,
because coarse file system clocks could hide a second change; git's index has the same rule.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ecoc import cache
from ecoc.cache import code_digest, prepare_folder
from ecoc.errors import ConfigError
from ecoc.fileio import write_atomically
from ecoc.files import CONFIG_NAME, list_manifests, list_yaml

log = logging.getLogger(__name__)

MEMO_FILE = "last-check.json"
MEMO_FORMAT = 4
FOLDERS = ("approvals", "records", "rules")


@dataclass(frozen=True)
class CheckInputs:
    """The options of a check that change its findings (the output format does not)."""

    selection: tuple[str, ...]
    xsd_option: str | None
    xsd_environment: str | None
    # Rules compare dates with the day of the check.
    today: str


@dataclass
class Memo:
    fingerprint: str
    written_at: int
    # The schema the check used, or None when none was configured.
    schema_path: str | None
    schema_matches_model: bool
    records: int
    approvals: int
    findings: list[dict[str, Any]] = field(default_factory=list)
    # [record file, VIN] of each checked record, for reports with a part per record.
    checked: list[list[str | None]] = field(default_factory=list)


def _stat_line(label: str, path: str) -> tuple[str, int]:
    """Describe a file by size, modification and change time, and inode; return the later time too."""
    try:
        status = os.stat(path)
    except OSError:
        return f"{label}\0missing\n", 0
    line = f"{label}\0{status.st_size}\0{status.st_mtime_ns}\0{status.st_ctime_ns}\0{status.st_ino}\n"
    return line, max(status.st_mtime_ns, status.st_ctime_ns)


def fingerprint(root: Path, inputs: CheckInputs, schema_path: str | None, trusted_before: int | None) -> str | None:
    """Hash everything a check depends on; None when a file is too recent to be trusted."""
    digest = hashlib.sha256()
    digest.update(code_digest().encode())
    try:
        digest.update((root / CONFIG_NAME).read_bytes())
    except OSError:
        return None
    digest.update(json.dumps([inputs.selection, inputs.xsd_option, inputs.xsd_environment, inputs.today]).encode())
    lines: list[tuple[str, int]] = []
    if schema_path is not None:
        lines.append(_stat_line("xsd", schema_path))
        lines.append(_stat_line("xsd-import", str(Path(schema_path).parent / "xmldsig-core-schema.xsd")))
    for folder in FOLDERS:
        lines.extend(_stat_line(relative, path) for path, relative in list_yaml(root, folder))
    lines.extend(_stat_line(relative, path) for path, relative in list_manifests(root))
    for line, mtime in lines:
        if trusted_before is not None and mtime >= trusted_before:
            return None
        digest.update(line.encode())
    return digest.hexdigest()


def load_memo(folder: Path) -> Memo | None:
    try:
        document = json.loads((folder / MEMO_FILE).read_bytes())
        if document.pop("format") != MEMO_FORMAT:
            return None
        return Memo(**document)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.info("ignoring the unreadable findings of the last check in %s: %s", folder, exc)
        return None


def replayable(folder: Path, root: Path, inputs: CheckInputs) -> Memo | None:
    """Return the memo of the last check if its inputs are unchanged, else None."""
    memo = load_memo(folder)
    if memo is None:
        return None
    current = fingerprint(root, inputs, memo.schema_path, memo.written_at - cache.RACY_NANOSECONDS)
    return memo if current == memo.fingerprint else None


def save_memo(folder: Path, memo: Memo) -> None:
    document = {"format": MEMO_FORMAT, **asdict(memo)}
    try:
        prepare_folder(folder)
        write_atomically(folder / MEMO_FILE, json.dumps(document, separators=(",", ":")))
    except OSError as exc:
        log.warning("cannot write the findings of this check to %s: %s", folder, exc.strerror)


def today() -> str:
    """Return the date rules compare with; ECOC_TODAY (YYYY-MM-DD) sets it for reproducible runs."""
    text = os.environ.get("ECOC_TODAY")
    if not text:
        return datetime.date.today().isoformat()
    try:
        date = datetime.date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        date = None
    if date is None:
        raise ConfigError(
            f"ECOC_TODAY={text!r} is not a date",
            "write the date as YYYY-MM-DD, such as 2026-12-04, or unset ECOC_TODAY to use the current date",
        )
    return date.isoformat()


def now() -> int:
    return time.time_ns()
