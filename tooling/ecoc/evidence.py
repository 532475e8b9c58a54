"""The evidence archive `signed/`: what was signed, what was delivered, and in which order.

Each issued version of each vehicle's certificate has a folder that is written once and never
changed: `signed/<VIN>/stage-<S>/v<N>/`.

- `certificate.xml`: the signed bytes exactly as they were delivered.
- `manifest.json`: written with the certificate, to link it to its source. It names the VIN,
  stage, IviVersionNumber and IviReferenceId, and the record and approval files with their sha256
  at the source commit. It also gives the digests of the content, the rule set and the schema,
  the tool version, the signer certificate, the signing time, the transport and the correction
  reason.
- `delivery-<n>.json`: one per delivery attempt that ended, with its status (`accepted`,
  `rejected` or `failed`), the authority's message and receipt id, and the receipt file's name and
  sha256. `receipt-<n>.<ext>` holds the authority's reply exactly as received.

`signed/ledger.jsonl` orders every event, one JSON object per line. Each line names the sha256
of the line before it (`prev`), so a deleted, changed, inserted or reordered line breaks the chain.
Lines are only ever appended.

A certificate is `pending` until a delivery attempt is accepted or rejected; a failed attempt
(no answer, a server error) leaves it pending and the next release sends it again with the same
IviReferenceId, which the authority recognises as a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecoc.errors import ConfigError
from ecoc.files import EVIDENCE_FOLDER, MANIFEST_NAME, list_manifests
from ecoc.findings import Finding, Severity

LEDGER = f"{EVIDENCE_FOLDER}/ledger.jsonl"
CERTIFICATE_NAME = "certificate.xml"
MANIFEST_FORMAT = "ecoc-evidence/1"
DELIVERY_STATES = ("pending", "accepted", "rejected")
# The `prev` of the first ledger line.
LEDGER_START = "0" * 64
# Files of the archive that document it: no ledger event lists them, and they may be edited.
ARCHIVE_NOTE = f"{EVIDENCE_FOLDER}/README.md"
ARCHIVE_NOTES = frozenset({ARCHIVE_NOTE})
_DELIVERY_FILE = re.compile(r"delivery-([0-9]+)\.json\Z")
_ATTEMPT_FILE = re.compile(r"(?:delivery|receipt)-([0-9]+)\.[a-z]+\Z")
_RECEIPT_SUFFIXES = {"application/json": ".json", "text/xml": ".xml", "application/xml": ".xml"}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def evidence_folder(vin: str, stage: int, version: int) -> str:
    """The folder (relative to the repository) of one issued version of one vehicle's certificate."""
    return f"{EVIDENCE_FOLDER}/{vin}/stage-{stage}/v{version}"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One ended delivery attempt, as its delivery file describes it."""

    number: int
    status: str
    message: str
    receipt_id: str | None
    duplicate: bool
    at: str | None


@dataclass(frozen=True, slots=True)
class Evidence:
    """One issued certificate version, as its manifest and delivery files describe it."""

    manifest: str
    vin: str
    record: str
    version: int
    content_digest: str | None
    delivery: str
    reason: str | None = None
    stage: int = 1
    reference_id: str | None = None
    version_datetime: str | None = None
    data_digest: str | None = None
    correction_reason: str | None = None
    attempts: tuple[Attempt, ...] = ()
    # (path, sha256) of the record and approval files the certificate was signed from.
    sources: tuple[tuple[str, str], ...] = ()
    # The transport the release delivered through: outbox, nap-soap or vca-rest.
    transport: str | None = None

    @property
    def folder(self) -> str:
        return self.manifest.rsplit("/", 1)[0]


class DamagedDeliveryFile(ValueError):
    """A delivery-<n>.json file that cannot be read."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name


def _attempts(folder: Path) -> list[Attempt]:
    attempts = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        match = _DELIVERY_FILE.match(name)
        if match is None:
            continue
        try:
            with open(folder / name, "rb") as handle:
                data = json.loads(handle.read())
            status = str(data["status"])
            if status not in ("accepted", "rejected", "failed"):
                raise ValueError(f"delivery status {status!r} is not accepted, rejected or failed")
            attempts.append(
                Attempt(
                    int(match.group(1)),
                    status,
                    str(data.get("message") or ""),
                    str(data["receipt_id"]) if data.get("receipt_id") else None,
                    bool(data.get("duplicate", False)),
                    str(data["at"]) if data.get("at") else None,
                )
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DamagedDeliveryFile(name, str(exc)) from None
    attempts.sort(key=lambda attempt: attempt.number)
    return attempts


def _state(attempts: list[Attempt]) -> tuple[str, str | None]:
    """Return the delivery state the attempts leave: the first decision counts, and failures decide nothing."""
    for attempt in attempts:
        if attempt.status in ("accepted", "rejected"):
            return attempt.status, attempt.message or None
    return "pending", None


def _sources(manifest: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Return (path, sha256) of the files that a manifest lists as the sources of its certificate."""
    digests = manifest.get("digests")
    if not isinstance(digests, dict):
        return ()
    sources = []
    if isinstance(digests.get("record"), str):
        sources.append((str(manifest["record"]), digests["record"]))
    approvals = digests.get("approval")
    if isinstance(approvals, dict):
        sources += [(str(path), sha) for path, sha in approvals.items() if isinstance(sha, str)]
    return tuple(sources)


def read_evidence(root: Path) -> tuple[dict[str, list[Evidence]], list[Finding]]:
    """Read every manifest below signed/, by VIN and in (stage, IviVersionNumber) order, and report unreadable ones."""
    by_vin: dict[str, list[Evidence]] = {}
    findings = []
    for path, relative in list_manifests(root):
        try:
            with open(path, "rb") as handle:
                data = json.loads(handle.read())
            attempts = _attempts(Path(path).parent)
            status, reason = _state(attempts)
            evidence = Evidence(
                relative,
                str(data["vin"]),
                str(data["record"]),
                int(data.get("version", 1)),
                str(data["content_digest"]) if data.get("content_digest") else None,
                status,
                reason,
                int(data.get("stage", 1)),
                str(data["reference_id"]) if data.get("reference_id") else None,
                str(data["version_datetime"]) if data.get("version_datetime") else None,
                str(data["data_digest"]) if data.get("data_digest") else None,
                str(data["correction_reason"]) if data.get("correction_reason") else None,
                tuple(attempts),
                _sources(data),
                str(data["transport"]) if data.get("transport") else None,
            )
        except DamagedDeliveryFile as exc:
            findings.append(
                Finding(
                    "io.read",
                    Severity.ERROR,
                    f"cannot read the delivery result: {exc}",
                    f"{relative.rsplit('/', 1)[0]}/{exc.name}",
                    1,
                    1,
                    hint="evidence in signed/ is written by the release job only; restore the file from git",
                )
            )
            continue
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            findings.append(
                Finding(
                    "io.read",
                    Severity.ERROR,
                    f"cannot read the evidence manifest: {exc}",
                    relative,
                    1,
                    1,
                    hint="evidence in signed/ is written by the release job only; restore the file from git",
                )
            )
            continue
        by_vin.setdefault(evidence.vin, []).append(evidence)
    for entries in by_vin.values():
        entries.sort(key=lambda evidence: (evidence.stage, evidence.version, evidence.manifest))
    return by_vin, findings


def latest(entries: Iterable[Evidence], stage: int) -> Evidence | None:
    """The highest issued version of one stage, or None."""
    chosen = None
    for entry in entries:
        if entry.stage == stage and (chosen is None or entry.version > chosen.version):
            chosen = entry
    return chosen


# The sha256, modification time and size of each evidence file this process wrote, by path.
_WRITTEN: dict[str, tuple[str, int, int]] = {}


def _write_new(path: Path, data: bytes) -> None:
    """Write a file of the archive that must not exist yet, whole or not at all.

    The bytes go to a temporary name first and are renamed into place, so a killed process
    leaves no half-written file under the real name. `sync` makes them durable before a commit.
    """
    if os.path.lexists(path):
        raise ConfigError(
            f"{path}: exists already; evidence is never overwritten",
            "another release wrote this certificate version; run the release again on the current main branch",
        )
    os.makedirs(path.parent, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)
    status = os.stat(path)
    _WRITTEN[str(path)] = (sha256_hex(data), status.st_mtime_ns, status.st_size)


def sync() -> None:
    """Flush every written file to disk, once for a whole step instead of once per file."""
    os.sync()


def _json_bytes(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_certificate(root: Path, folder: str, signed: bytes, manifest: Mapping[str, Any]) -> list[str]:
    """Write a signed certificate and its manifest into a new evidence folder; return their paths.

    The manifest comes first, so a certificate file without a manifest naming its sha256 is never
    the release's own, and recovery after a crash leaves it alone.
    """
    certificate = f"{folder}/{CERTIFICATE_NAME}"
    record = dict(manifest)
    record["format"] = MANIFEST_FORMAT
    record.setdefault("digests", {})["certificate"] = sha256_hex(signed)
    _write_new(root / folder / MANIFEST_NAME, _json_bytes(record))
    _write_new(root / certificate, signed)
    return [certificate, f"{folder}/{MANIFEST_NAME}"]


def next_attempt(root: Path, folder: str) -> int:
    try:
        names = os.listdir(root / folder)
    except OSError:
        return 1
    # A killed run can leave a receipt whose delivery result it never wrote, so both count.
    numbers = [int(m.group(1)) for name in names if (m := _ATTEMPT_FILE.match(name))]
    return max(numbers, default=0) + 1


def write_attempt(
    root: Path,
    folder: str,
    attempt: Mapping[str, Any],
    receipt: bytes | None,
    media_type: str | None,
) -> list[str]:
    """Write one ended delivery attempt, with the receipt exactly as received; return the new paths."""
    number = next_attempt(root, folder)
    written = []
    record = dict(attempt)
    record["attempt"] = number
    record["receipt"] = None
    if receipt is not None:
        suffix = _RECEIPT_SUFFIXES.get((media_type or "").split(";")[0].strip().lower(), ".bin")
        name = f"receipt-{number}{suffix}"
        _write_new(root / folder / name, receipt)
        record["receipt"] = {"file": name, "sha256": sha256_hex(receipt), "media_type": media_type}
        written.append(f"{folder}/{name}")
    _write_new(root / folder / f"delivery-{number}.json", _json_bytes(record))
    written.insert(0, f"{folder}/delivery-{number}.json")
    return written


def ledger_lines(root: Path) -> list[bytes]:
    try:
        data = (root / LEDGER).read_bytes()
    except FileNotFoundError:
        return []
    return [line for line in data.split(b"\n") if line]


def append_ledger(root: Path, events: list[dict[str, Any]]) -> None:
    """Append events to the ledger, each chained to the line before it by sha256."""
    if not events:
        return
    lines = ledger_lines(root)
    previous = sha256_hex(lines[-1]) if lines else LEDGER_START
    sequence = len(lines)
    out = []
    for event in events:
        sequence += 1
        line = json.dumps({"seq": sequence, "prev": previous, **event}, sort_keys=True, ensure_ascii=False).encode()
        out.append(line + b"\n")
        previous = sha256_hex(line)
    path = root / LEDGER
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        handle.write(b"".join(out))
        handle.flush()
        os.fsync(handle.fileno())


def file_digests(root: Path, paths: Iterable[str]) -> dict[str, str]:
    """Return the sha256 of each file, from what this process wrote where it can, so that nothing is read twice."""
    digests = {}
    for path in sorted(paths):
        target = root / path
        written = _WRITTEN.get(str(target))
        if written is not None:
            # A stat is far cheaper than reading the file again, and shows that the file is unchanged since then.
            status = os.stat(target)
            if (status.st_mtime_ns, status.st_size) == written[1:]:
                digests[path] = written[0]
                continue
        digests[path] = sha256_hex(target.read_bytes())
    return digests
