"""A content-addressed cache of per-record check results.

A record's findings depend only on the bytes of the record file, the bytes of its approval
file, the schema digest, the IVI model and the version of ecoc. The cache keys results by a
hash of exactly those, so a result is reused only when none of them changed, regardless of
file times. The cache is a JSON file, never a pickle, because a cache folder committed by
mistake must not be able to run code. It is written atomically, and a missing, old or
damaged cache is ignored.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecoc import __version__
from ecoc.fileio import write_atomically
from ecoc.findings import Finding

log = logging.getLogger(__name__)

CACHE_FORMAT = 7
CACHE_FILE = "check.json"
ENVIRONMENT_VARIABLE = "ECOC_CACHE_DIR"
DEFAULT_FOLDER = ".ecoc-cache"
# File times closer than this to the moment the cache was written are not trusted.
RACY_NANOSECONDS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class CachedRecord:
    """The part of one record's result that a later run needs without reading the record again."""

    vin: str | None
    vin_line: int
    vin_column: int
    approval: str | None
    findings: tuple[Finding, ...]
    # The IviReferenceId the record renders with, when it renders at all.
    reference_id: str | None = None
    # The manufacturer stage the record certifies (the highest ManufacturerStageNumber).
    stage: int = 1
    # The variant and version the record names, to tell which records a finding in an
    # approval file affects.
    variant: str | None = None
    version: str | None = None
    # sha256 of the certificate the check rendered, at the check's fixed IviVersionDateTime.
    certificate: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "vin": self.vin,
            "at": [self.vin_line, self.vin_column],
            "approval": self.approval,
            "findings": [f.to_dict() for f in self.findings],
            "reference": self.reference_id,
            "stage": self.stage,
            "variant": self.variant,
            "version": self.version,
            "certificate": self.certificate,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CachedRecord:
        line, column = data["at"]
        findings = tuple(Finding.from_dict(f) for f in data["findings"])
        return cls(
            data["vin"],
            line,
            column,
            data["approval"],
            findings,
            data["reference"],
            data["stage"],
            data["variant"],
            data["version"],
            data["certificate"],
        )


@functools.cache
def code_digest() -> str:
    """Return a digest of ecoc's own source, so that a changed installation never reuses results.

    The version number alone does not change while ecoc is developed from a checkout.
    """
    package = Path(__file__).parent
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def context_key(approval_key: str, schema_digest: str | None) -> str:
    """Return the key of what a record's result depends on besides the record file: approval, schema, ecoc."""
    # The code digest covers the IVI model too, which is generated source.
    parts = (str(CACHE_FORMAT), code_digest(), schema_digest or "-", approval_key)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def result_key(relative: str, record_digest: str, context: str) -> str:
    """Key of one record's result: the file's path (findings name it), its digest, `context_key`."""
    return f"{relative}:{record_digest}:{context}"


@dataclass
class CheckCache:
    """Results by key, plus the approval number each record file names (by its digest)."""

    path: Path | None
    # Results by key; entries read from disk stay JSON until a run looks them up.
    results: dict[str, CachedRecord | dict[str, Any]] = field(default_factory=dict)
    # Record file digest -> [approval number, VIN, VIN line, VIN column] as last read.
    references: dict[str, list[Any]] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    used_references: set[str] = field(default_factory=set)
    # Relative path -> [size, mtime in ns, inode, sha256] of record files as last read, so that
    # an unchanged file is not read again just to hash it.
    files: dict[str, list[Any]] = field(default_factory=dict)
    seen_files: dict[str, list[Any]] = field(default_factory=dict)
    # When the cache file was written (ns since the epoch).
    written_at: int = 0
    hits: int = 0
    # Whether this run stored a result, so that the file must be written again.
    changed: bool = False

    def file_digest(self, relative: str, status: os.stat_result) -> str | None:
        """Return the digest of a file whose size, times and inode are unchanged since it was hashed.

        The change time (ctime) is part of it, because nothing but the kernel sets it: a tool
        that writes a file and restores its modification time still changes it. A file changed
        within two seconds before the cache was written could have changed again without a new
        time on a file system with a coarse clock, so such an entry is not trusted, as git does
        for its index.
        """
        known = self.files.get(relative)
        if known is None or len(known) != 5:
            return None
        *signature, digest = known
        if signature != _signature(status):
            return None
        if max(status.st_mtime_ns, status.st_ctime_ns) >= self.written_at - RACY_NANOSECONDS:
            # Save the cache again, with a later time, so that the entry can be trusted next time.
            self.changed = True
            return None
        self.seen_files[relative] = known
        return str(digest)

    def remember_file(self, relative: str, status: os.stat_result, digest: str) -> None:
        entry = [*_signature(status), digest]
        if self.files.get(relative) != entry:
            self.changed = True
        self.seen_files[relative] = entry

    def lookup(self, key: str) -> CachedRecord | None:
        found = self.results.get(key)
        if isinstance(found, dict):
            found = self.results[key] = CachedRecord.from_json(found)
        if found is not None:
            self.used.add(key)
            self.hits += 1
        return found

    def reference(self, record_digest: str) -> list[Any] | None:
        """Return the approval number and VIN position a record file named when it was last read."""
        found = self.references.get(record_digest)
        if found is not None:
            self.used_references.add(record_digest)
        return found

    def store(self, key: str | None, record_digest: str, result: CachedRecord) -> None:
        self.changed = True
        if key is not None:
            self.results[key] = result
            self.used.add(key)
        self.references[record_digest] = [result.approval, result.vin, result.vin_line, result.vin_column, result.stage]
        self.used_references.add(record_digest)

    def save(self) -> None:
        """Write the entries this run used; results of files that changed are dropped."""
        if self.path is None:
            return
        unused = (
            len(self.results)
            - len(self.used)
            + len(self.references)
            - len(self.used_references)
            + len(self.files)
            - len(self.seen_files)
        )
        if not self.changed and not unused:
            return
        document = {
            "format": CACHE_FORMAT,
            "ecoc": code_digest(),
            "written_at": time.time_ns(),
            "files": self.seen_files,
            "references": {d: self.references[d] for d in sorted(self.used_references)},
            "results": {k: _as_json(self.results[k]) for k in sorted(self.used)},
        }
        try:
            prepare_folder(self.path)
            write_atomically(self.path / CACHE_FILE, json.dumps(document, separators=(",", ":")))
        except OSError as exc:
            log.warning("cannot write the check cache in %s: %s", self.path, exc.strerror)


def _signature(status: os.stat_result) -> list[int]:
    return [status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino]


def prepare_folder(folder: Path) -> None:
    """Create the cache folder with a .gitignore, so that it stays out of every commit."""
    ignore = folder / ".gitignore"
    if not ignore.exists():
        write_atomically(ignore, "*\n")


def _as_json(result: CachedRecord | dict[str, Any]) -> dict[str, Any]:
    return result if isinstance(result, dict) else result.to_json()


def cache_folder(repository_root: Path, disabled: bool) -> Path | None:
    if disabled:
        return None
    configured = os.environ.get(ENVIRONMENT_VARIABLE)
    return Path(configured) if configured else repository_root / DEFAULT_FOLDER


def open_cache(folder: Path | None) -> CheckCache:
    cache = CheckCache(folder)
    if folder is None:
        return cache
    try:
        document = json.loads((folder / CACHE_FILE).read_bytes())
        if document.get("format") != CACHE_FORMAT or document.get("ecoc") != code_digest():
            return cache
        cache.references = dict(document["references"])
        cache.files = dict(document["files"])
        cache.written_at = int(document["written_at"])
        cache.results = dict(document["results"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.info("ignoring an unreadable check cache in %s: %s", folder, exc)
        cache.references.clear()
        cache.results.clear()
        cache.files.clear()
    return cache
