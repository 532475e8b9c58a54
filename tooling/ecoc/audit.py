"""`ecoc audit`: verify the evidence archive offline, entry by entry and as a whole.

For each evidence folder the audit checks:

- the manifest: readable, and naming the certificate's sha256 as it is;
- the signature and the certificate chain, at the signing time (the RFC 3161 timestamp when the
  signature has one, otherwise the signing time of the manifest);
- each delivery result: its receipt file with the sha256 it names, the certificate it is about,
  and a receipt for every accepted delivery;
- the certificate outside its signature, byte for byte against a new render of the record at
  the source commit the manifest names, with the header values the manifest gives.

The ledger is checked from its first line to its last. Each line must name the sha256 of the line
before it, and each file an event lists must still have its sha256. Every file of the archive
must appear in the ledger. Git history shows whether any commit ever changed or deleted a file
of the archive, or took lines out of the ledger: a chain rebuilt after such an edit still holds,
but the history keeps the edit. Each ledger line must also come with the commit trailer that the
release writes for it. The archive audited is the checked-out commit's: uncommitted changes
below signed/ are reported. Nothing here needs a network.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from ecoc import gitinfo
from ecoc.evidence import (
    ARCHIVE_NOTES,
    CERTIFICATE_NAME,
    LEDGER,
    LEDGER_START,
    evidence_folder,
    sha256_hex,
)
from ecoc.fileio import work_folder
from ecoc.files import EVIDENCE_FOLDER, MANIFEST_NAME

# The checks the audit runs, as its reports list them.
CHECKS = (
    "signatures and certificate chains at the signing time",
    "manifests against their folder, certificate, signer, and the record and approval at the source commit",
    "delivery results and receipts",
    "each certificate against a new render of its record at the source commit",
    "the ledger's hash chain and digests",
    "files no ledger event lists",
    "git history: changed or deleted evidence, removed ledger lines, lines without a release trailer",
    "files that differ from the commit",
)

SIGNATURE_START = b"<ds:Signature xmlns:ds="
SIGNATURE_END = b"</ds:Signature>"


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One thing in the archive that does not hold, with the file it is found in."""

    file: str
    check: str
    message: str
    vin: str | None = None
    # The evidence folder a ledger line is about, when the finding is located in the ledger.
    folder: str | None = None


@dataclass
class EntryResult:
    """The audit of one evidence folder."""

    folder: str
    vin: str | None
    version: int | None
    reference_id: str | None
    signed_at: str | None
    source_commit: str | None
    delivery: str
    signer: str | None = None
    problems: list[Discrepancy] = field(default_factory=list)
    # Problems of the archive as a whole (ledger, git history) found in this entry's files.
    elsewhere: int = 0
    # The ecoc version that signed the entry, from its manifest.
    tool_version: str | None = None
    # The transport the manifest names: outbox, nap-soap or vca-rest.
    transport: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and not self.elsewhere


@dataclass
class AuditReport:
    entries: list[EntryResult] = field(default_factory=list)
    ledger_lines: int = 0
    # Problems of the archive as a whole: the ledger, files outside every event.
    problems: list[Discrepancy] = field(default_factory=list)
    # The commit and branch whose archive was audited, and how many commits of signed/ were read.
    commit: str | None = None
    branch: str | None = None
    commits_read: int = 0
    # Files below signed/ that differ from the commit; the entry and ledger counts are of the files as they are.
    uncommitted: int = 0
    # Files below signed/ that are new and not committed, as an interrupted release leaves them.
    added: set[str] = field(default_factory=set)
    # Subjects of the trust anchors the chains were checked against.
    anchors: list[str] = field(default_factory=list)
    # Evidence folders that the ledger's signed events name, with their VIN.
    ledger_folders: dict[str, str | None] = field(default_factory=dict)
    # Whether the audit was limited to some VINs, so that the text report lists each entry.
    selected: bool = False
    # The --since limit, which leaves out older entries on purpose.
    since: dt.datetime | None = None

    @property
    def discrepancies(self) -> list[Discrepancy]:
        return [*self.problems, *(problem for entry in self.entries for problem in entry.problems)]


def unsigned_bytes(signed: bytes) -> bytes | None:
    """Return the document as it was before ecoc inserted its signature, or None when there is none."""
    start = signed.rfind(SIGNATURE_START)
    end = signed.rfind(SIGNATURE_END)
    if start < 0 or end < start:
        return None
    return signed[:start] + signed[end + len(SIGNATURE_END) :]


def _timestamp(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def check_ledger(root: Path, report: AuditReport) -> dict[str, dict[str, Any]]:
    """Check the ledger's chain and the files its events list; return each listed file's last event."""
    path = root / LEDGER
    listed: dict[str, dict[str, Any]] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if any((root / EVIDENCE_FOLDER).rglob(MANIFEST_NAME)):
            report.problems.append(Discrepancy(LEDGER, "ledger", "the ledger is missing, but evidence exists"))
        return listed
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    else:
        report.problems.append(Discrepancy(LEDGER, "ledger", "the last line does not end with a line break"))
    report.ledger_lines = len(lines)

    previous = LEDGER_START
    # A deleted or inserted line shifts the numbers of every later line, so only the shift is reported.
    offset = 0
    for number, line in enumerate(lines, start=1):
        try:
            event = json.loads(line)
            assert isinstance(event, dict)
        except (ValueError, AssertionError):
            report.problems.append(Discrepancy(f"{LEDGER}:{number}", "ledger", "the line is not a JSON object"))
            previous = sha256_hex(line)
            continue
        if event.get("prev") != previous:
            report.problems.append(
                Discrepancy(
                    f"{LEDGER}:{number}",
                    "ledger",
                    "the line does not chain to the line before it: a line was deleted, inserted, reordered "
                    "or changed at or before this one",
                    event.get("vin"),
                )
            )
        sequence = event.get("seq")
        shift = sequence - number if isinstance(sequence, int) and not isinstance(sequence, bool) else None
        if shift != offset and shift != 0:
            report.problems.append(
                Discrepancy(
                    f"{LEDGER}:{number}",
                    "ledger",
                    f"line {number} says it is number {sequence}: a line was deleted, inserted or moved before it",
                    event.get("vin"),
                )
            )
        # A line back at its own number, as after two swapped lines, is in place again.
        offset = shift if shift is not None else offset
        previous = sha256_hex(line)
        files = event.get("files")
        for name, digest in (files or {}).items() if isinstance(files, dict) else ():
            listed[name] = {**event, "line": number, "digest": digest}
        if event.get("event") == "signed" and isinstance(event.get("folder"), str):
            report.ledger_folders[event["folder"]] = event.get("vin")

    for name, event in listed.items():
        target = root / name
        if not target.is_file():
            report.problems.append(
                Discrepancy(name, "ledger", f"listed in ledger line {event['line']}, but missing", event.get("vin"))
            )
        elif sha256_hex(target.read_bytes()) != event["digest"]:
            report.problems.append(
                Discrepancy(
                    name,
                    "ledger",
                    f"the file differs from the sha256 that ledger line {event['line']} gives for it",
                    event.get("vin"),
                )
            )
        elif event.get("event") == "delivery" and name.rsplit("/", 1)[-1].startswith("delivery-"):
            try:
                status = json.loads(target.read_bytes()).get("status")
            except (ValueError, AttributeError):
                status = None
            if status != event.get("status"):
                report.problems.append(
                    Discrepancy(
                        name,
                        "ledger",
                        f"the delivery result says {status}, but ledger line {event['line']} says "
                        f"{event.get('status')}",
                        event.get("vin"),
                    )
                )

    for file in _archive_files(root):
        # A file that is not committed is reported once, as such, by the git check.
        if file not in listed and file not in report.added:
            why = "it was added outside a release, or its ledger lines were removed"
            report.problems.append(Discrepancy(file, "ledger", f"the file is in no ledger event: {why}"))
    return listed


def _archive_files(root: Path) -> list[str]:
    found = []
    for folder, _, names in os.walk(root / EVIDENCE_FOLDER):
        for name in names:
            relative = (Path(folder) / name).relative_to(root).as_posix()
            if relative != LEDGER and relative not in ARCHIVE_NOTES:
                found.append(relative)
    return sorted(found)


def check_uncommitted(root: Path, report: AuditReport) -> None:
    """Report each file below signed/ that differs from the commit audited, ignored files included."""
    changed = gitinfo.uncommitted_status(root, (EVIDENCE_FOLDER,), ignored=True)
    report.uncommitted = len(changed)
    for status, path in changed:
        if status == "!!":
            what = "added, and ignored by git"
        elif status == "??":
            report.added.add(path)
            report.problems.append(
                Discrepancy(
                    path,
                    "git",
                    "added and not committed, as an interrupted ecoc release leaves its files; run ecoc release "
                    "again to finish that release, or delete the file if no release wrote it",
                    _vin_of(path),
                )
            )
            continue
        elif "D" in status:
            what = "deleted and not committed"
        else:
            what = "changed and not committed"
        # Evidence is never deleted or rewritten, so the fix is to restore the committed file.
        advice = (
            "the archive is the committed one, so remove the file or commit it"
            if status == "!!"
            else "evidence is never deleted or rewritten, so restore the committed file "
            f"(git restore --staged --worktree -- {path}), or run ecoc release again after an interrupted release"
        )
        report.problems.append(Discrepancy(path, "git", f"{what}; {advice}", _vin_of(path)))


def _vin_of(path: str) -> str | None:
    parts = path.split("/")
    return parts[1] if len(parts) > 2 else None


def _common_lines(old: bytes, new: bytes) -> int:
    """Count the leading lines that two versions of the ledger share."""
    count = 0
    for left, right in zip(old.split(b"\n"), new.split(b"\n"), strict=False):
        if left != right:
            break
        count += 1
    return count


def _expected_trailers(event: dict[str, Any]) -> list[str]:
    """Return the commit trailers with which a release commits a ledger event."""
    if event.get("recovered"):
        return [f"Ecoc-Recovered: {name}" for name in sorted(event.get("files") or {})]
    vin, version, reference = event.get("vin"), event.get("version"), event.get("reference_id") or ""
    if event.get("event") == "signed":
        return [f"Ecoc-Signed: {vin} v{version} {reference}"]
    if event.get("event") == "delivery":
        return [f"Ecoc-Delivery: {vin} v{version} {reference} {event.get('status')}"]
    return []


def check_history(root: Path, report: AuditReport) -> None:
    """Find commits that changed or deleted evidence, removed or changed ledger lines, or added foreign lines."""
    from ecoc.history import Commit, parse_log

    commits = list(parse_log(gitinfo.log_names(root, [EVIDENCE_FOLDER], merges=True)))
    report.commits_read = len({commit.sha for commit in commits})
    grown: list[tuple[str, str, str, str]] = []
    # Commits with one parent that added ledger lines, whose messages must carry the release's trailers.
    appended: dict[str, tuple[str, Commit, str]] = {}
    seen: set[tuple[str, str, str]] = set()
    for commit in commits:
        committed_by = f"commit {commit.sha[:12]} by {commit.author} on {commit.date}"
        if (commit.committer, commit.committed) != (commit.author, commit.date):
            committed_by += f" (committed by {commit.committer} on {commit.committed})"
        for status, name in commit.files:
            if name == LEDGER and len(commit.parents) <= 1 and status[:1] in ("A", "M"):
                appended[commit.sha] = (commit.parents[0] if commit.parents else "", commit, committed_by)
            # A merge comes once per parent it differs from, with the same changes for each.
            if name in ARCHIVE_NOTES or status.startswith("A") or (commit.sha, status, name) in seen:
                continue
            seen.add((commit.sha, status, name))
            if name == LEDGER and status.startswith("M"):
                # Every parent's ledger must be the start of the new one; a merge has several.
                grown += [(parent, commit.sha, committed_by, name) for parent in commit.parents]
                continue
            verb = "deleted" if status.startswith("D") else "changed"
            parent = commit.parents[0][:12] if commit.parents else "its parent"
            report.problems.append(
                Discrepancy(
                    name,
                    "history",
                    f"{committed_by} {verb} this file after it was committed; evidence is never rewritten, so "
                    f"restore it as it was before that commit (git checkout {parent} -- {name}), commit the "
                    "restored file, and tell the release owners",
                    _vin_of(name),
                )
            )
    wanted = {pair for parent, sha, _, _ in grown for pair in ((parent, LEDGER), (sha, LEDGER))}
    wanted |= {
        pair for sha, (parent, _, _) in appended.items() for pair in ((parent, LEDGER), (sha, LEDGER)) if pair[0]
    }
    contents = gitinfo.read_many(root, sorted(wanted))
    for parent, sha, committed_by, name in dict.fromkeys(grown):
        old, new = contents.get((parent, LEDGER), b""), contents.get((sha, LEDGER), b"")
        if not new.startswith(old):
            line = _common_lines(old, new) + 1
            report.problems.append(
                Discrepancy(
                    f"{name}:{line}",
                    "history",
                    f"{committed_by} changed or removed ledger lines from line {line} on; the ledger only grows",
                )
            )
    for sha, (parent, commit, committed_by) in appended.items():
        old, new = contents.get((parent, LEDGER), b""), contents.get((sha, LEDGER), b"")
        if not new.startswith(old):
            continue
        trailers = {line.strip() for line in commit.message.splitlines()}
        first = old.count(b"\n") + 1
        for offset, added in enumerate(new[len(old) :].splitlines()):
            try:
                event = json.loads(added)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            missing = [trailer for trailer in _expected_trailers(event) if trailer not in trailers]
            if missing:
                report.problems.append(
                    Discrepancy(
                        f"{LEDGER}:{first + offset}",
                        "history",
                        f"{committed_by} added this ledger line without the trailer {missing[0]!r} that a "
                        "release commits it with, so no release wrote it",
                        event.get("vin") if isinstance(event.get("vin"), str) else None,
                        event.get("folder") if isinstance(event.get("folder"), str) else None,
                    )
                )


class Renderer:
    """Renders records as they were at a commit, exporting each commit's sources once."""

    def __init__(self, root: Path, workspace: Path) -> None:
        self.root = root
        self.workspace = workspace
        self.exports: dict[str, Path] = {}
        self.indexes: dict[str, Any] = {}
        # Record files by (commit, path), read in one git call per commit.
        self.records: dict[tuple[str, str], bytes] = {}
        # The sha256 of approval files by (commit, path).
        self.digests: dict[tuple[str, str], str] = {}

    def prefetch(self, commit: str, paths: list[str]) -> None:
        """Export the approvals at `commit` and read the record files, before worker processes fork."""
        if commit not in self.exports:
            folder = self.workspace / commit
            folder.mkdir()
            gitinfo.export(self.root, commit, ["approvals"], [], folder)
            self.exports[commit] = folder
        for path, data in gitinfo.read_at(self.root, commit, sorted(set(paths))).items():
            self.records[(commit, path)] = data

    def _digest(self, commit: str, path: str) -> str:
        """Return the sha256 of an approval file at `commit`, hashing each file once for all its entries."""
        key = (commit, path)
        if key not in self.digests:
            self.digests[key] = sha256_hex((self.exports[commit] / path).read_bytes())
        return self.digests[key]

    def render(self, commit: str, record_path: str, manifest: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """Render the record as it was at `commit`, with the manifest's version.

        The second value contains what the manifest records about the same sources, as they were at the
        commit: the correction reason, the approval and its files, and the content digests.
        """
        from ecoc.check import load_approvals, resolve
        from ecoc.files import list_yaml
        from ecoc.ivi.render import content_digest, render
        from ecoc.model.effective import build_effective, set_issue
        from ecoc.model.record import parse_record
        from ecoc.yamlload import Source

        if commit not in self.exports:
            self.prefetch(commit, [record_path])
        index = self.indexes.get(commit)
        if index is None:
            index = self.indexes[commit] = load_approvals(list_yaml(self.exports[commit], "approvals"))
        data = self.records.get((commit, record_path))
        if data is None:
            raise LookupError(f"{record_path} does not exist at commit {commit[:12]}")
        record = parse_record(data, Source(record_path), "")
        resolved, _ = resolve(record, index)
        if resolved is None:
            raise LookupError(f"{record_path} at commit {commit[:12]} names no approval version that exists there")
        approval, variant, version = resolved
        effective, _ = build_effective(record, approval, variant, version, str(manifest["version_datetime"]))
        set_issue(effective, int(manifest["version"]), str(manifest["reference_id"]), str(manifest["version_datetime"]))
        data = render(effective.header, effective.coc).data
        number = approval.number_text
        files = index.paths_of(number)
        facts = {
            "correction_reason": record.correction_reason.text if record.correction_reason is not None else None,
            "approval_number": number,
            "approval": files,
            "approval_digests": {path: self._digest(commit, path) for path in files},
            "content_digest": content_digest(effective.header, effective.coc),
            "data_digest": content_digest(effective.header, effective.coc, with_version=False),
            "unsigned": sha256_hex(data),
        }
        return data, facts


def _first_difference(left: bytes, right: bytes) -> str:
    for number, (a, b) in enumerate(zip(left.splitlines(), right.splitlines(), strict=False), start=1):
        if a != b:
            shown = b.decode("utf-8", "replace").strip()[:120]
            return f"line {number} reads {shown!r} in the signed document"
    return "one of the two has more lines"


def audit_entry(
    root: Path,
    folder: str,
    manifest_data: bytes,
    verifier: Any,
    renderer: Renderer | None,
    known_commits: dict[str, bool],
) -> EntryResult:
    from ecoc.signing import VerificationFailed, verify

    manifest_path = f"{folder}/{MANIFEST_NAME}"
    try:
        manifest = json.loads(manifest_data)
        assert isinstance(manifest, dict)
    except (ValueError, AssertionError):
        entry = EntryResult(folder, None, None, None, None, None, "unknown")
        entry.problems.append(Discrepancy(manifest_path, "manifest", "the manifest is not a JSON object"))
        return entry
    vin = manifest.get("vin")
    entry = EntryResult(
        folder,
        vin,
        manifest.get("version"),
        manifest.get("reference_id"),
        manifest.get("signed_at"),
        manifest.get("source_commit"),
        "pending",
        (manifest.get("signer") or {}).get("subject"),
    )
    tool = manifest.get("tool")
    entry.tool_version = str(tool.get("version")) if isinstance(tool, dict) and tool.get("version") else None
    entry.transport = str(manifest["transport"]) if manifest.get("transport") else None

    def problem(file: str, check: str, message: str) -> None:
        entry.problems.append(Discrepancy(file, check, message, vin))

    stage, version = manifest.get("stage", 1), manifest.get("version")
    if isinstance(vin, str) and isinstance(stage, int) and isinstance(version, int):
        expected_folder = evidence_folder(vin, stage, version)
        if expected_folder != folder:
            problem(
                manifest_path,
                "manifest",
                f"the manifest is about {vin} stage {stage} version {version}, whose folder is {expected_folder}",
            )
    else:
        problem(manifest_path, "manifest", "the manifest lacks the VIN, stage or version of its certificate")

    certificate_path = f"{folder}/{CERTIFICATE_NAME}"
    try:
        signed = (root / certificate_path).read_bytes()
    except OSError:
        problem(certificate_path, "certificate", "the signed certificate is missing")
        return entry
    expected = (manifest.get("digests") or {}).get("certificate")
    if sha256_hex(signed) != expected:
        problem(certificate_path, "manifest", "the signed bytes differ from the sha256 the manifest gives")
    verifier.at = _timestamp(entry.signed_at) or dt.datetime.now(dt.UTC)
    try:
        verified = verify(signed, verifier.anchors, None, False, verifier)
    except VerificationFailed as exc:
        problem(certificate_path, "signature", str(exc))
        verified = None
    if verified is not None:
        header = verified.signed_xml.find("{http://eu.ereg.initialvehicleinformation.v2}Header")
        reference = None
        if header is not None:
            reference = header.findtext("{http://eu.ereg.initialvehicleinformation.v2}IviReferenceId")
        if reference != entry.reference_id:
            problem(certificate_path, "manifest", f"the certificate carries IviReferenceId {reference}")
        fingerprint = (manifest.get("signer") or {}).get("sha256")
        from cryptography.hazmat.primitives import hashes

        if fingerprint and verified.signer.fingerprint(hashes.SHA256()).hex() != fingerprint:
            problem(certificate_path, "manifest", "the signing certificate is not the one the manifest names")
        subject = verified.signer.subject.rfc4514_string()
        if entry.signer is not None and entry.signer != subject:
            problem(manifest_path, "manifest", f"the manifest names signer {entry.signer}, but {subject} signed")
        signer = manifest.get("signer") or {}
        issuer, serial = verified.signer.issuer.rfc4514_string(), format(verified.signer.serial_number, "x")
        if signer.get("issuer") not in (None, issuer) or signer.get("serial") not in (None, serial):
            problem(
                manifest_path,
                "manifest",
                f"the manifest names the signer's issuer {signer.get('issuer')} and serial {signer.get('serial')}, "
                f"but the certificate that signed has {issuer} and {serial}",
            )
    _audit_deliveries(root, folder, manifest, entry, problem, sha256_hex(signed))
    commit = entry.source_commit
    if renderer is not None and isinstance(commit, str):
        if commit not in known_commits:
            known_commits[commit] = gitinfo.commit_exists(root, commit)
        if not known_commits[commit]:
            problem(
                manifest_path,
                "source",
                f"the source commit {commit[:12]} is not in this repository: its history was rewritten, or the "
                "clone is shallow (git fetch --unshallow)",
            )
        else:
            unsigned = unsigned_bytes(signed)
            try:
                rendered, facts = renderer.render(commit, str(manifest.get("record")), manifest)
            except (LookupError, KeyError, ValueError) as exc:
                problem(manifest_path, "source", f"the record cannot be rendered at the source commit: {exc}")
            else:
                for field_name, shown in _source_mismatches(manifest, facts):
                    problem(
                        manifest_path,
                        "manifest",
                        f"the manifest's {field_name} differs from the sources at commit {commit[:12]}, which give "
                        f"{shown}: the manifest was changed after signing",
                    )
                record_data = renderer.records.get((commit, str(manifest.get("record"))))
                record_digest = (manifest.get("digests") or {}).get("record")
                if record_data is not None and record_digest and sha256_hex(record_data) != record_digest:
                    problem(
                        manifest_path,
                        "manifest",
                        f"the record sha256 differs from {manifest.get('record')} at commit {commit[:12]}",
                    )
                if unsigned != rendered:
                    where = _first_difference(rendered, unsigned or b"")
                    problem(
                        certificate_path,
                        "source",
                        f"outside its signature, the certificate differs from {manifest.get('record')} rendered "
                        f"at commit {commit[:12]}: {where}",
                    )
    return entry


def _source_mismatches(manifest: dict[str, Any], facts: dict[str, Any]) -> list[tuple[str, str]]:
    """Return each manifest field that disagrees with the sources at its commit, with the sources' value."""
    digests = manifest.get("digests") or {}
    pairs = [
        ("correction_reason", manifest.get("correction_reason"), facts["correction_reason"]),
        ("approval_number", manifest.get("approval_number"), facts["approval_number"]),
        ("approval", sorted(manifest.get("approval") or []), sorted(facts["approval"])),
        ("digests.approval", digests.get("approval"), facts["approval_digests"]),
        ("content_digest", manifest.get("content_digest"), facts["content_digest"]),
        ("data_digest", manifest.get("data_digest"), facts["data_digest"]),
        ("digests.unsigned", digests.get("unsigned"), facts["unsigned"]),
    ]
    return [(name, json.dumps(expected)) for name, given, expected in pairs if given != expected]


def _delivered_digest(receipt: bytes) -> str | None:
    """Return the sha256 of the delivered file that an outbox receipt gives, or None for other receipts."""
    try:
        note = json.loads(receipt)
    except ValueError:
        return None
    if not isinstance(note, dict) or note.get("transport") != "outbox":
        return None
    digest = note.get("sha256")
    return digest if isinstance(digest, str) else None


def _audit_deliveries(
    root: Path,
    folder: str,
    manifest: dict[str, Any],
    entry: EntryResult,
    problem: Any,
    signed_digest: str | None = None,
) -> None:
    names = sorted(
        (name for name in os.listdir(root / folder) if name.startswith("delivery-") and name.endswith(".json")),
        key=lambda name: int(name[len("delivery-") : -len(".json")] or 0),
    )
    for name in names:
        path = f"{folder}/{name}"
        try:
            attempt = json.loads((root / path).read_bytes())
        except ValueError:
            problem(path, "receipt", "the delivery result is not JSON")
            continue
        status = attempt.get("status")
        if attempt.get("reference_id") not in (None, entry.reference_id):
            problem(path, "receipt", f"the delivery result is about IviReferenceId {attempt.get('reference_id')}")
        receipt = attempt.get("receipt")
        if isinstance(receipt, dict):
            receipt_path = f"{folder}/{receipt.get('file')}"
            try:
                data = (root / receipt_path).read_bytes()
            except OSError:
                problem(receipt_path, "receipt", "the receipt is missing")
            else:
                if sha256_hex(data) != receipt.get("sha256"):
                    problem(receipt_path, "receipt", "the receipt differs from the sha256 its delivery result gives")
                elif attempt.get("receipt_id") and str(attempt["receipt_id"]).encode() not in data:
                    problem(receipt_path, "receipt", "the receipt does not name the receipt id of its result")
                elif signed_digest is not None and _delivered_digest(data) not in (None, signed_digest):
                    problem(
                        receipt_path,
                        "receipt",
                        "the receipt gives the sha256 of the delivered file, which is not that of the certificate",
                    )
        elif status in ("accepted", "rejected"):
            problem(path, "receipt", f"the delivery was {status}, but no receipt was kept")
        if status in ("accepted", "rejected") and entry.delivery == "pending":
            entry.delivery = status


# Set in the parent before worker processes fork, so that they inherit it.
_WORKER: tuple[Path, Any, Renderer | None, dict[str, bool]] | None = None
# Below this many entries, starting worker processes costs more than it saves.
PARALLEL_THRESHOLD = 200
CHUNK_SIZE = 50


def _audit_chunk(chunk: list[tuple[str, bytes]]) -> list[EntryResult]:
    assert _WORKER is not None
    root, verifier, renderer, known_commits = _WORKER
    return [audit_entry(root, folder, data, verifier, renderer, known_commits) for folder, data in chunk]


def audit(
    root: Path,
    anchors: Sequence[x509.Certificate],
    vins: Iterable[str] = (),
    since: dt.datetime | None = None,
    rerender: bool = True,
    jobs: int = 1,
) -> AuditReport:
    """Audit the evidence archive below `root`, or the entries of some VINs signed since a time."""
    import multiprocessing

    from ecoc.signing import Verifier

    global _WORKER
    report = AuditReport(
        commit=gitinfo.head(root),
        branch=gitinfo.current_branch(root),
        anchors=[anchor.subject.rfc4514_string() for anchor in anchors],
        since=since,
    )
    check_uncommitted(root, report)
    check_ledger(root, report)
    check_history(root, report)
    wanted = set(vins)
    chosen: list[tuple[str, bytes]] = []
    sources: dict[str, list[str]] = {}
    archived: set[str] = set()
    for manifest in sorted((root / EVIDENCE_FOLDER).rglob(MANIFEST_NAME)):
        data = manifest.read_bytes()
        try:
            peek = json.loads(data)
            assert isinstance(peek, dict)
        except (ValueError, AssertionError):
            peek = {}
        archived.add(str(peek.get("vin")))
        if wanted and peek.get("vin") not in wanted:
            continue
        signed_at = _timestamp(peek.get("signed_at"))
        if since is not None and signed_at is not None and signed_at < since:
            continue
        chosen.append((manifest.parent.relative_to(root).as_posix(), data))
        commit, record = peek.get("source_commit"), peek.get("record")
        if isinstance(commit, str) and isinstance(record, str):
            sources.setdefault(commit, []).append(record)
    known_commits = {commit: gitinfo.commit_exists(root, commit) for commit in sources}
    workspace = work_folder("ecoc-audit-")
    try:
        renderer = Renderer(root, workspace) if rerender else None
        if renderer is not None:
            for commit, records in sources.items():
                if known_commits[commit]:
                    renderer.prefetch(commit, records)
        _WORKER = (root, Verifier(anchors), renderer, known_commits)
        chunks = [chosen[start : start + CHUNK_SIZE] for start in range(0, len(chosen), CHUNK_SIZE)]
        try:
            if jobs <= 1 or len(chosen) < PARALLEL_THRESHOLD:
                for chunk in chunks:
                    report.entries += _audit_chunk(chunk)
            else:
                from ecoc.runner import worker_signals

                with multiprocessing.get_context("fork").Pool(jobs, initializer=worker_signals) as pool:
                    for results in pool.imap(_audit_chunk, chunks):
                        report.entries += results
        finally:
            _WORKER = None
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    for entry in report.entries:
        inside = entry.folder + "/"
        entry.elsewhere = sum(
            1 for problem in report.problems if problem.file.startswith(inside) or problem.folder == entry.folder
        )
    if wanted:
        report.selected = True
        report.ledger_folders = {f: vin for f, vin in report.ledger_folders.items() if vin in wanted}
        report.problems = [p for p in report.problems if p.vin is None or p.vin in wanted]
        report.problems += [
            Discrepancy(EVIDENCE_FOLDER, "evidence", f"{vin} has no evidence in {EVIDENCE_FOLDER}/", vin)
            for vin in sorted(wanted - archived)
        ]
    return report


def format_report(report: AuditReport, format_: str, generated: str, root: Path) -> str:
    """Format the audit as text (one line per discrepancy, then a summary), JSON or an HTML page."""
    if format_ == "json":
        document = {
            "commit": report.commit,
            "branch": report.branch,
            "commits_read": report.commits_read,
            "uncommitted": report.uncommitted,
            "trust_anchors": report.anchors,
            "checks": list(CHECKS),
            "ledger_lines": report.ledger_lines,
            "entries": [
                {**asdict(entry), "ok": entry.ok, "problems": [asdict(problem) for problem in entry.problems]}
                for entry in report.entries
            ],
            "problems": [asdict(problem) for problem in report.problems],
            "discrepancies": len(report.discrepancies),
        }
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if format_ == "html":
        from ecoc.templating import render_page

        entries = [{**asdict(entry), "ok": entry.ok, "problems_count": len(entry.problems)} for entry in report.entries]
        return render_page(
            root,
            "audit.html.j2",
            entries=entries,
            problems=[asdict(problem) for problem in report.problems],
            ledger_lines=report.ledger_lines,
            commit=report.commit,
            branch=report.branch,
            commits_read=report.commits_read,
            anchors=report.anchors,
            generated=generated,
        )
    lines = [f"{problem.file}: {problem.check}: {problem.message}" for problem in report.discrepancies]
    if report.selected:
        # For the vehicles asked about, say what was signed and delivered, not only whether it holds.
        for entry in report.entries:
            delivery = entry.delivery
            if delivery == "accepted" and entry.transport == "outbox":
                delivery = "accepted by the outbox, not yet known to the authority"
            lines.append(
                f"{entry.folder}: IviVersionNumber {entry.version}, IviReferenceId {entry.reference_id}, signed "
                f"{entry.signed_at} by {entry.signer} from commit {(entry.source_commit or '')[:12]}, delivery "
                f"{delivery}: " + ("verified" if entry.ok else f"{len(entry.problems)} discrepancies")
            )
    verified = sum(1 for entry in report.entries if entry.ok)
    where = f"commit {report.commit[:12]}" if report.commit else "a repository without commits"
    lines.append(
        f"audited {EVIDENCE_FOLDER}/ at {where}"
        + (f" on branch {report.branch}" if report.branch else "")
        + f", with {report.commits_read} commits of its history, against "
        + ("; ".join(report.anchors) or "no trust anchor")
    )
    lines.append("checked: " + ", ".join(CHECKS))
    if report.uncommitted:
        lines.append(
            f"{report.uncommitted} file(s) below {EVIDENCE_FOLDER}/ differ from the commit; the counts below are of "
            "the files as they are now"
        )
    missing = len(set(report.ledger_folders) - {entry.folder for entry in report.entries})
    gone = f" (the ledger names {missing} more, which are missing)" if missing and report.since is None else ""
    lines.append(
        f"{verified} of {len(report.entries)} evidence entries verified{gone}, {report.ledger_lines} ledger lines; "
        + (f"{len(report.discrepancies)} discrepancies" if len(report.discrepancies) != 1 else "1 discrepancy")
    )
    return "\n".join(lines) + "\n"
