"""The little ecoc needs from git: the time of the commit being rendered.

Git runs as a subprocess with a fixed argument list; no user text reaches its options.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ecoc.errors import ConfigError


def head_commit_time(root: Path) -> str | None:
    """Return the committer date of HEAD in strict ISO 8601, or None outside a repository with commits."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%cI", "HEAD", "--"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except FileNotFoundError:
        raise ConfigError("git is not installed", "install git, or pass --datetime") from None
    if completed.returncode != 0:
        if "dubious ownership" in completed.stderr:
            raise ConfigError(
                f"git refuses to read {root}: the folder belongs to another user",
                f"run: git config --global --add safe.directory {root}",
            )
        return None
    return completed.stdout.strip() or None


def uncommitted(root: Path, folders: tuple[str, ...]) -> list[str]:
    """Files below `folders` that differ from HEAD (changed, added, deleted or untracked)."""
    completed = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", *folders],
        capture_output=True,
        check=False,
        timeout=120,
    )
    if completed.returncode != 0:
        return []
    entries = [entry for entry in completed.stdout.decode("utf-8", "replace").split("\0") if entry]
    return [entry[3:] for entry in entries if len(entry) > 3]
