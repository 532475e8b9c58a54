"""Atomic file writes, and temporary work folders that a later run removes when their process died.

A reader of an atomic write gets the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

# Age in seconds from which a work folder of an ended process is removed. A process in another
# PID namespace that shares the temporary folder looks ended, so its folder gets this long.
ABANDONED_AFTER_SECONDS = 3600


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write through a temporary file in the same folder, then rename it over `path`.

    The file gets the mode of the file it replaces, or the usual mode for new files.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    # Through a link, the file it points at is replaced, not the link.
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        status = path.stat()
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    else:
        if not stat.S_ISREG(status.st_mode):
            # A device or pipe such as /dev/stdout is written to, never replaced by a file.
            with open(path, "wb") as stream:
                stream.write(payload)
            return
        mode = status.st_mode & 0o777
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def work_folder(prefix: str) -> Path:
    """Create a temporary folder named `<prefix><pid>-<random>`, after removing ones whose process is gone.

    A process killed with SIGKILL cannot remove its folder, so the next run with the same prefix does.
    """
    _remove_abandoned(Path(tempfile.gettempdir()), prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


def _remove_abandoned(parent: Path, prefix: str) -> None:
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        pid = entry.name[len(prefix) :].split("-", 1)[0] if entry.name.startswith(prefix) else ""
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != os.getuid()
            or now - info.st_mtime < ABANDONED_AFTER_SECONDS
        ):
            continue
        if not _running(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # the process exists and belongs to another user
    return True
