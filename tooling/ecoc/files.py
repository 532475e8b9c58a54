"""Files of a compliance repository: finding its root, listing, reading and hashing them.

Kept free of heavy imports, because a check whose inputs are all unchanged needs only this.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from ecoc.errors import ConfigError
from ecoc.findings import Finding, Severity

CONFIG_NAME = "ecoc.yaml"
# Files under rules/ that hold waivers, not rules.
WAIVER_FILES = frozenset({"waivers.yaml", "waivers.yml"})
YAML_SUFFIXES = (".yaml", ".yml")
# The sources of a certificate. The last commit that changed them dates its IviVersionDateTime.
SOURCE_FOLDERS = ("approvals", "records", "rules", CONFIG_NAME)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _walk(root: Path, folder: str) -> list[tuple[str, os.DirEntry[str]]]:
    """Files below `root/folder` as (path relative to `root`, entry), sorted by the former.

    Hidden entries are left out. A folder reached twice through symbolic links is read once, and
    an entry whose kind cannot be told (a link loop) counts as a file, so that reading it reports
    the problem. Works on plain strings with `os.scandir`, because a repository can hold hundreds
    of thousands of records.
    """
    found: list[tuple[str, os.DirEntry[str]]] = []
    pending = [(os.path.join(root, folder), folder)]
    # A link to a folder around the walk, such as `..`, would read the whole repository again.
    start = os.path.realpath(pending[0][0])
    seen: set[tuple[int, int]] = set()
    top = os.path.realpath(root)
    while pending:
        absolute, relative = pending.pop()
        try:
            status = os.stat(absolute)
            entries = list(os.scandir(absolute))
        except FileNotFoundError:
            continue  # no such folder: the caller decides whether that matters
        except OSError as exc:
            # Leaving out a folder that cannot be read would check, render or release less
            # than the repository holds, and report it as clean.
            kind = "is not a folder" if exc.errno == errno.ENOTDIR else f"cannot be read: {exc.strerror}"
            raise ConfigError(
                f"{relative}/ {kind}",
                f"make {relative}/ a folder that the user running ecoc can read",
            ) from None
        if (status.st_dev, status.st_ino) in seen:
            continue
        seen.add((status.st_dev, status.st_ino))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink():
                _reject_outside_link(entry.path, f"{relative}/{entry.name}", top)
            try:
                if entry.is_dir():
                    if not (entry.is_symlink() and _encloses(os.path.realpath(entry.path), start)):
                        pending.append((entry.path, f"{relative}/{entry.name}"))
                    continue
                # A dangling link is listed too, so that reading it reports the problem.
                wanted = entry.is_file() or entry.is_symlink()
            except OSError:
                wanted = True
            if wanted:
                found.append((f"{relative}/{entry.name}", entry))
    found.sort(key=lambda item: item[0])
    return found


def _reject_outside_link(path: str, relative: str, top: str) -> None:
    """Raise a ConfigError for a symbolic link that leads out of the repository.

    git stores only the link, so the data it leads to was never committed or reviewed, and a
    check or a release would read it all the same.
    """
    target = os.path.realpath(path)
    if _encloses(top, target) or not os.path.exists(target):
        return  # a link inside the repository, or a dangling one that reading reports
    raise ConfigError(
        f"{relative} is a symbolic link to {target}, outside the repository, so git contains only the link",
        "replace the link by the file or folder itself and commit it, so that it is reviewed like the rest",
    )


def _encloses(folder: str, path: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def list_yaml(root: Path, folder: str) -> list[tuple[str, str]]:
    """YAML files below `root/folder` as (path, path relative to `root`), sorted by the latter."""
    return [(entry.path, relative) for relative, entry in _walk(root, folder) if entry.name.endswith(YAML_SUFFIXES)]


def pick_yaml(root: Path, folder: str, relatives: frozenset[str] | set[str]) -> list[tuple[str, str]]:
    """Return the YAML files among `relatives` that `list_yaml(root, folder)` lists, without reading the folder.

    A check of a few named records in a repository of many thousands lists only those. As in
    the walk, hidden entries, folders and absent files are left out, a dangling link is kept,
    and a link on the way that leads out of the repository is an error.
    """
    top = os.path.realpath(root)
    found = []
    for relative in sorted(relatives):
        parts = relative.split("/")
        if parts[0] != folder or len(parts) < 2 or not relative.endswith(YAML_SUFFIXES):
            continue
        if any(not part or part.startswith(".") or part == ".." for part in parts[1:]):
            continue
        path = os.path.join(root, *parts)
        if not os.path.lexists(path) or os.path.isdir(path):
            continue
        for depth in range(2, len(parts) + 1):
            step = os.path.join(root, *parts[:depth])
            if os.path.islink(step):
                _reject_outside_link(step, "/".join(parts[:depth]), top)
        found.append((path, relative))
    return found


def read_file(path: str | Path, relative: str) -> tuple[bytes | None, Finding | None]:
    try:
        with open(path, "rb") as handle:
            return handle.read(), None
    except OSError as exc:
        return None, Finding(
            "io.read", Severity.ERROR, f"cannot read the file: {exc.strerror}", relative, 1, 1, hint=_read_hint(exc)
        )


def _read_hint(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "the file is a symbolic link that leads back to itself; replace it with the file it should be"
    if exc.errno == errno.ENOENT:
        return "the file is a symbolic link to a file that does not exist; restore the target or remove the link"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "check the file's permissions"
    if exc.errno == errno.EISDIR:
        return "a folder has the name of a YAML file; rename it"
    return "check that the file can be read (permissions, disk, file system)"


def find_root(start: Path) -> Path:
    here = start.resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise ConfigError(
        f"no {CONFIG_NAME} in {here} or any folder above it",
        "run ecoc inside a compliance repository, or pass --repo DIR",
    )


# The evidence archive, which only the release job writes.
EVIDENCE_FOLDER = "signed"
# The evidence manifest the release job writes next to each signed certificate in signed/.
MANIFEST_NAME = "manifest.json"


def list_manifests(root: Path) -> list[tuple[str, str]]:
    """Evidence manifests below signed/ as (path, path relative to `root`), sorted."""
    return [(entry.path, relative) for relative, entry in _walk(root, EVIDENCE_FOLDER) if entry.name == MANIFEST_NAME]
