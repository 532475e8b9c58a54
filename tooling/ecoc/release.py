"""`ecoc release`: sign, deliver and archive the certificates that are ready, safe against crashes.

The job runs on the main branch after a merge. Before anything else, it checks the branch, git's
index, the sources and the remote: HEAD must have the commits of the remote's main branch and no
others but the evidence commits of an interrupted run. A dry run makes the same checks and reports
each failure. Then the job works in steps, and each step ends in one commit (never one per
vehicle) that is pushed before the next step starts:

1. recover: receipts that an interrupted run wrote but did not commit are committed, evidence
   folders that were never committed (so never delivered) are removed, and commits that were
   not pushed are pushed;
2. select: check every record with the rules and the evidence archive. A record is released when
   nothing blocks it and the archive has no certificate of its content and IviVersionNumber;
3. sign: render, validate and sign each, write certificate and manifest, append `signed` events
   to the ledger, commit and push;
4. deliver: send every pending certificate (new ones, and those an earlier run could not
   deliver), write each answer and its receipt the moment it arrives, append `delivery` events,
   commit and push.

A certificate is only delivered once its evidence is committed and pushed, so a crash can lose
at most a signature that nobody received. A crash after a delivery and before its commit leads
to a second send with the same IviReferenceId, which the authority answers as a duplicate. When
a push loses a race to another push, the job's commits are replayed on the new head. If the new
head changed the data of a certificate that was signed and not yet delivered, the signed and
undelivered certificates are dropped instead, and the run stops, so the next one signs the new data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import resource
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ecoc import __version__, gitinfo
from ecoc.config import Repository
from ecoc.errors import ConfigError, EcocError, UsageError
from ecoc.evidence import (
    CERTIFICATE_NAME,
    LEDGER,
    Evidence,
    append_ledger,
    evidence_folder,
    file_digests,
    sha256_hex,
    sync,
    write_attempt,
    write_certificate,
)
from ecoc.files import EVIDENCE_FOLDER, MANIFEST_NAME, SOURCE_FOLDERS, YAML_SUFFIXES
from ecoc.findings import Finding

if TYPE_CHECKING:
    from ecoc.ivi.xsd import IviSchema
    from ecoc.runner import RecordResult
    from ecoc.signing import SigningKey
    from ecoc.transports import Delivery, Transport

log = logging.getLogger(__name__)

# Folders whose committed state is what gets released.


@dataclass(frozen=True)
class ReleaseOptions:
    dry_run: bool = False
    limit: int | None = None
    # (K, N): release only the records of shard K of N, by a hash of the VIN.
    shard: tuple[int, int] | None = None
    # None: push when the repository has the remote of release.remote.
    push: bool | None = None
    jobs: int = 1
    xades: bool = False
    timestamp_url: str | None = None


@dataclass(frozen=True)
class Candidate:
    """A record that is ready and has no evidence for its content yet."""

    relative: str
    vin: str
    stage: int
    version: int
    reference_id: str
    rendered: bytes
    content_digest: str
    data_digest: str
    approval_number: str | None
    correction_reason: str | None


@dataclass(frozen=True)
class Outcome:
    vin: str
    version: int
    reference_id: str
    status: str
    message: str
    # Whether the authority already had this certificate (a resend of an earlier attempt).
    duplicate: bool = False


@dataclass
class ReleaseReport:
    planned: list[Candidate] = field(default_factory=list)
    # Ready certificates that --limit leaves for a later run.
    deferred: int = 0
    # Certificates signed before whose delivery is still open, as (folder, VIN, version).
    resend: list[Evidence] = field(default_factory=list)
    # Undelivered versions that a later version replaces, which are not sent again.
    superseded: list[Evidence] = field(default_factory=list)
    # Undelivered versions whose record changed or is blocked now, with the reason; they wait.
    held_back: list[tuple[Evidence, str]] = field(default_factory=list)
    signed: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    # Certificates this run meant to deliver and did not send, after too many failures in a row.
    not_sent: int = 0
    blocked: int = 0
    # Each blocked record file with the first reason it is blocked.
    blocked_records: list[tuple[str, str]] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)
    pushed: bool = False
    # What would stop a real run, found by a dry run, in the order a real run meets them.
    problems: list[EcocError] = field(default_factory=list)
    # Seconds spent in each phase: check, signing, delivery and git (commits and pushes).
    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("check", "signing", "delivery", "git"), 0.0)
    )

    @property
    def failed(self) -> bool:
        return any(outcome.status != "accepted" for outcome in self.outcomes)


def in_shard(vin: str, shard: tuple[int, int] | None) -> bool:
    if shard is None:
        return True
    number, count = shard
    return int.from_bytes(hashlib.sha256(vin.encode()).digest()[:8], "big") % count == number - 1


def parse_shard(text: str) -> tuple[int, int]:
    parts = text.split("/")
    if len(parts) == 2 and all(part.isdigit() for part in parts):
        number, count = int(parts[0]), int(parts[1])
        if 1 <= number <= count:
            return number, count
    raise UsageError(f"--shard {text}: expected K/N with 1 <= K <= N", "for example --shard 2/4 for the second of four")


def _children_cpu() -> float:
    """Return the user and system seconds of the child processes that have ended, such as git's."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class Publisher:
    """Commits evidence steps and pushes them, replaying them on a new head when a push loses a race."""

    def __init__(self, repository: Repository, push: bool | None) -> None:
        self.root = repository.root
        self.remote = repository.settings.release.remote
        self.branch = repository.settings.main_branch
        self.attempts = repository.settings.release.push_attempts
        present = gitinfo.has_remote(self.root, self.remote)
        named = "remote" in repository.settings.release.model_fields_set
        # With --push (as the release workflow runs) or a remote that ecoc.yaml names, a missing remote
        # is a mistake: evidence that is not pushed is lost with the runner.
        if not present and (push or (push is None and named)):
            where = "correct release.remote in ecoc.yaml" if named else "set release.remote in ecoc.yaml"
            raise ConfigError(
                f"the repository has no remote {self.remote} to push the evidence to",
                f"add the remote, {where}, or pass --no-push to keep the evidence in this clone",
            )
        if not present and push is None:
            log.warning("the repository has no remote %s, so the evidence stays in this clone", self.remote)
        if present and push is False:
            # Only pushed evidence shows other clones what was delivered.
            log.warning(
                "--no-push keeps the evidence in this clone: a release from another clone of %s would sign and "
                "deliver the same certificates again; push this clone's commits before any other release runs",
                self.remote,
            )
        self.push_enabled = present if push is None else push
        self.commits: list[str] = []
        self.seconds = 0.0
        # CPU seconds of the git processes that the commits and pushes ran.
        self.git_cpu = 0.0
        self.signed_commits = gitinfo.signs_commits(self.root)
        # Two runs that sign the same certificates in the same second write the same files and
        # ledger lines. The run's own trailer keeps their commits apart, so that the second push
        # loses the race instead of passing as a push of a commit the remote already has.
        self.run_id = secrets.token_hex(8)
        # Evidence folders that another release published while this one ran: it delivers them.
        self.published_elsewhere: set[str] = set()

    def commit(self, paths: list[str], events: list[dict[str, object]], subject: str, trailers: list[str]) -> str:
        """Append the step's events to the ledger and commit them with the step's files."""
        with self._measured():
            append_ledger(self.root, events)
            sync()
            lines = [*trailers, f"Ecoc-Run: {self.run_id}"]
            message = f"{subject}\n\nWritten by ecoc {__version__} release.\n\n" + "\n".join(lines) + "\n"
            commit = self._commit([*paths, LEDGER], message)
        self.commits.append(commit)
        log.info("committed %s: %s", commit[:12], subject)
        return commit

    def _commit(self, paths: list[str], message: str) -> str:
        if self.signed_commits:
            # git fast-import cannot sign, so signed commits go through git add and git commit.
            return gitinfo.commit_files(self.root, EVIDENCE_FOLDER, message)
        return gitinfo.commit_paths(self.root, paths, message)

    def publish(self) -> bool:
        """Push the commits HEAD has that the remote lacks; replay them on the remote's new head if it moved."""
        if not self.push_enabled:
            return False
        with self._measured():
            return self._publish()

    @contextmanager
    def _measured(self) -> Iterator[None]:
        """Add the wall time of the block, and the CPU time of the git processes it ran, to the git phase."""
        start, cpu = time.perf_counter(), _children_cpu()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start
            self.git_cpu += _children_cpu() - cpu

    def _publish(self) -> bool:
        for _ in range(self.attempts):
            known = gitinfo.remote_head(self.root, self.remote, self.branch)
            try:
                pushed = gitinfo.push(self.root, self.remote, self.branch)
            except ConfigError as failure:
                # Two pushes at the same moment can fail with a lock error instead of a rejection.
                try:
                    gitinfo.fetch(self.root, self.remote, self.branch)
                except ConfigError:
                    raise failure from None
                if gitinfo.remote_head(self.root, self.remote, self.branch) == known:
                    raise
                pushed = False
            if pushed:
                gitinfo.fetch(self.root, self.remote, self.branch)
                return True
            log.warning("the push lost a race to another push; replaying the evidence on the new head")
            gitinfo.fetch(self.root, self.remote, self.branch)
            self.replay()
        raise ConfigError(
            f"the push to {self.remote} lost {self.attempts} races in a row",
            "the evidence is committed here but not pushed; run the release again, which pushes it first",
        )

    def replay(self) -> None:
        """Re-create the local evidence commits on top of the remote branch's new head.

        The new head may have changed the data of a certificate that was signed and not yet
        delivered. Then the certificates signed and not delivered are dropped without being pushed,
        and ConfigError stops the run, so that the next run signs the new data.
        """
        new_head = gitinfo.remote_head(self.root, self.remote, self.branch)
        assert new_head is not None
        plan = replay_plan(self.root, new_head)
        # Conflicts stop the run before the reset, so that this clone keeps its own commits.
        _raise_conflict(plan, self.remote, self.branch)
        steps, unsent, changed, elsewhere = plan.steps, plan.unsent, plan.changed, plan.elsewhere
        gitinfo.reset_to(self.root, new_head)
        if elsewhere:
            # Another release signed the same certificates and pushed first: it delivers them.
            log.warning(
                "another release published %d of the certificates signed here, and delivers them; "
                "this run leaves them out",
                len(elsewhere),
            )
            self.published_elsewhere.update(elsewhere)
        for message, files, events in steps:
            for path, data in files.items():
                target = self.root / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            append_ledger(self.root, events)
            sync()
            self._commit([*files, LEDGER], message)
        if changed:
            listed = ", ".join(changed[:3]) + (" …" if len(changed) > 3 else "")
            raise ConfigError(
                f"while the release ran, {self.remote}/{self.branch} received changes to the data of "
                f"certificates that were signed here: {listed}",
                f"the {len(unsent)} certificate(s) signed and not yet delivered were dropped without being pushed "
                "or delivered; run the release again to sign the new data",
            )


Step = tuple[str, dict[str, bytes], list[dict[str, object]]]


def _unsent_certificates(steps: list[Step]) -> dict[str, dict[str, object]]:
    """Return the manifest of each certificate that `steps` sign and that has no delivery result, by folder."""
    signed = {str(e["folder"]) for _, _, events in steps for e in events if e.get("event") == "signed"}
    answered = {str(e["folder"]) for _, _, events in steps for e in events if e.get("event") in ("delivery", "receipt")}
    manifests = {}
    for folder in sorted(signed - answered):
        name = f"{folder}/{MANIFEST_NAME}"
        manifests[folder] = json.loads(next(files[name] for _, files, _ in steps if name in files))
    return manifests


@dataclass
class ReplayPlan:
    """The plan to replay this clone's unpushed evidence commits on the remote's head."""

    steps: list[Step]
    # Certificates signed here and not delivered, by folder.
    unsent: dict[str, dict[str, object]]
    # Sources of those certificates that the remote's head changed; they are then dropped.
    changed: list[str]
    # Certificates of `unsent` that the remote's head already holds, signed by another release.
    elsewhere: dict[str, dict[str, object]]
    # Files the steps would write that the remote's head contains with other content.
    conflicts: list[str]


def replay_plan(root: Path, new_head: str) -> ReplayPlan:
    """Work out the replay of the unpushed evidence commits on `new_head`, without changing anything."""
    steps = gitinfo.own_commits(root, new_head)
    unsent = _unsent_certificates(steps)
    changed = _changed_sources(root, unsent, new_head)
    if changed:
        steps = _without_certificates(steps, unsent)
    manifests = [(new_head, f"{folder}/{MANIFEST_NAME}") for folder in unsent]
    present = gitinfo.read_many(root, manifests)
    elsewhere = {folder: m for folder, m in unsent.items() if (new_head, f"{folder}/{MANIFEST_NAME}") in present}
    if elsewhere:
        steps = _without_certificates(steps, elsewhere)
    existing = gitinfo.read_many(root, [(new_head, path) for _, files, _ in steps for path in files])
    conflicts = [
        path for _, files, _ in steps for path, data in files.items() if existing.get((new_head, path), data) != data
    ]
    return ReplayPlan(steps, unsent, changed, elsewhere, conflicts)


def _raise_conflict(plan: ReplayPlan, remote: str, branch: str) -> None:
    if not plan.conflicts:
        return
    raise ConfigError(
        f"{plan.conflicts[0]}: the evidence committed here and not pushed differs from the evidence on "
        f"{remote}/{branch} for the same certificate ({len(plan.conflicts)} file(s)), so another release signed "
        "or delivered the same certificates",
        f"this clone keeps its commits: compare them (git diff {remote}/{branch} HEAD -- signed/) and keep its "
        "delivery and receipt files, which record what the authority received, before resetting it to "
        f"{remote}/{branch}; only one release may run at a time, and a run with --no-push keeps its evidence "
        "from the others",
    )


def _changed_sources(root: Path, manifests: dict[str, dict[str, object]], new_head: str) -> list[str]:
    """List the sources of the certificates of `manifests` that differ between their source commit and `new_head`.

    A certificate's sources are its record file, its approval files, rules/ and ecoc.yaml.
    """
    changed: set[str] = set()
    by_commit: dict[str, list[dict[str, object]]] = {}
    for manifest in manifests.values():
        by_commit.setdefault(str(manifest.get("source_commit")), []).append(manifest)
    for commit, group in by_commit.items():
        if not gitinfo.commit_exists(root, commit):
            # Without the commit nothing shows that the data stayed the same.
            changed.update(str(manifest["record"]) for manifest in group)
            continue
        paths = gitinfo.changed_between(root, commit, new_head, SOURCE_FOLDERS)
        for manifest in group:
            approvals = manifest.get("approval")
            sources = {str(manifest["record"]), *(approvals if isinstance(approvals, list) else [])}
            # Every certificate depends on rules/ and ecoc.yaml, the other paths that the diff lists.
            changed.update(path for path in paths if path in sources or not path.startswith(("records/", "approvals/")))
    return sorted(changed)


def _without_certificates(steps: list[Step], manifests: dict[str, dict[str, object]]) -> list[Step]:
    """Remove the files, ledger events and trailers of the certificates of `manifests`, and the steps left empty."""
    trailers = {f"Ecoc-Signed: {m['vin']} v{m['version']} {m['reference_id']}" for m in manifests.values()}
    remaining = []
    for message, files, events in steps:
        files = {path: data for path, data in files.items() if path.rsplit("/", 1)[0] not in manifests}
        events = [event for event in events if event.get("folder") not in manifests]
        if files or events:
            lines = [line for line in message.split("\n") if line not in trailers]
            remaining.append(("\n".join(lines), files, events))
    return remaining


def _event(kind: str, entry: Evidence | Candidate, folder: str, files: list[str], root: Path) -> dict[str, object]:
    return {
        "event": kind,
        "vin": entry.vin,
        "stage": entry.stage,
        "version": entry.version,
        "reference_id": entry.reference_id,
        "folder": folder,
        "files": file_digests(root, files),
        "at": _now(),
    }


_OWN_FILE = re.compile(
    rf"{EVIDENCE_FOLDER}/[^/]+/stage-[0-9]+/v[0-9]+/"
    r"(?:certificate\.xml|manifest\.json|delivery-[0-9]+\.json|receipt-[0-9]+\.(?:json|xml|bin))\Z"
)
_OWN_PARTIAL = re.compile(rf"{EVIDENCE_FOLDER}/[^/]+/stage-[0-9]+/v[0-9]+/\.[^/]+\.partial\Z")


def _own_ledger_tail(root: Path, committed: bytes | None) -> bool:
    """Return whether the working ledger is the committed one plus lines a release appended."""
    try:
        data = (root / LEDGER).read_bytes()
    except FileNotFoundError:
        return committed is not None
    if committed is not None and not data.startswith(committed):
        return False
    for line in data[len(committed or b"") :].split(b"\n"):
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            return False
        if not isinstance(event, dict) or "seq" not in event or "prev" not in event:
            return False
    return True


def _own_certificate(root: Path, folder: str) -> bool:
    """Return whether the certificate in `folder` is the one the manifest beside it names."""
    try:
        manifest = json.loads((root / folder / MANIFEST_NAME).read_bytes())
        certificate = (root / folder / CERTIFICATE_NAME).read_bytes()
    except (OSError, ValueError):
        return False
    digests = manifest.get("digests") if isinstance(manifest, dict) else None
    return isinstance(digests, dict) and digests.get("certificate") == sha256_hex(certificate)


def _foreign_changes(root: Path, changed: list[str], in_head: set[str], committed_manifests: set[str]) -> list[str]:
    """List the changes below signed/ that no interrupted release can have made, each with its reason."""
    foreign = []
    for path in changed:
        if path == LEDGER:
            committed = gitinfo.read_at(root, "HEAD", [LEDGER]).get(LEDGER)
            if not _own_ledger_tail(root, committed):
                foreign.append(f"{path} (lines changed or removed; the release only appends)")
        elif path in in_head:
            if (root / path).exists():
                foreign.append(f"{path} (differs from its committed version)")
        elif not (_OWN_FILE.match(path) or _OWN_PARTIAL.match(path)):
            foreign.append(f"{path} (not a file the release writes)")
        else:
            folder, _, name = path.rpartition("/")
            answer = name.startswith(("delivery-", "receipt-"))
            if name == CERTIFICATE_NAME and not _own_certificate(root, folder):
                foreign.append(f"{path} (no manifest beside it names this certificate)")
            elif answer and f"{folder}/{MANIFEST_NAME}" not in committed_manifests:
                foreign.append(f"{path} (a delivery file of a certificate that was never committed)")
    return foreign


def evidence_changes(root: Path) -> tuple[list[str], set[str], set[str]]:
    """Return the uncommitted changes below signed/, those that HEAD has, and the committed manifests beside them.

    Raises ConfigError, and changes nothing, when a change is not one that an interrupted release makes.
    """
    changed = gitinfo.uncommitted(root, (EVIDENCE_FOLDER,), ignored=True)
    if not changed:
        return [], set(), set()
    in_head = gitinfo.tracked(root, changed)
    committed_manifests = gitinfo.tracked(
        root, sorted({f"{path.rsplit('/', 1)[0]}/{MANIFEST_NAME}" for path in changed if "/" in path})
    )
    foreign = _foreign_changes(root, changed, in_head, committed_manifests)
    if foreign:
        listed = "\n  ".join(foreign[:10])
        more = f"\n  and {len(foreign) - 10} more" if len(foreign) > 10 else ""
        raise ConfigError(
            f"{EVIDENCE_FOLDER}/ has changes the release did not make:\n  {listed}{more}",
            f"only the release job writes {EVIDENCE_FOLDER}/: move other files out of it, and put back "
            f"changed evidence with git checkout HEAD -- {EVIDENCE_FOLDER}",
        )
    return changed, in_head, committed_manifests


def recover(repository: Repository, report: ReleaseReport) -> tuple[list[str], list[dict[str, object]]]:
    """Keep what an interrupted run received and remove what it signed but never committed.

    Only files the release itself writes are touched. Any other change below signed/ stops the
    run before anything is removed, so no one's work is lost. Returns the recovered files
    (receipts, delivery results) with their ledger events, for the next commit.
    """
    root = repository.root
    # A run killed between moving HEAD and updating the index leaves the index behind HEAD, so the
    # index is set to HEAD first and only the files themselves are compared.
    if gitinfo.uncommitted(root, (EVIDENCE_FOLDER,)):
        gitinfo.unstage(root, EVIDENCE_FOLDER)
    changed, in_head, committed_manifests = evidence_changes(root)
    if not changed:
        return [], []
    if LEDGER in changed:
        # Lines of a step that was not committed go; the step's events are written again.
        if LEDGER in in_head:
            gitinfo.restore(root, [LEDGER])
        else:
            (root / LEDGER).unlink(missing_ok=True)
    kept: dict[str, list[str]] = {}
    for path in changed:
        if path == LEDGER:
            continue
        folder, _, name = path.rpartition("/")
        answer = name.startswith(("delivery-", "receipt-"))
        if answer and f"{folder}/{MANIFEST_NAME}" in committed_manifests and (root / path).is_file():
            kept.setdefault(folder, []).append(path)
            continue
        target = root / path
        if path in in_head:
            # A committed evidence file that is missing comes back from git.
            gitinfo.restore(root, [path])
            log.warning("%s was deleted; it is evidence, so it was put back from the last commit", path)
        elif target.is_file():
            target.unlink()
            report.discarded.append(path)
    events: list[dict[str, object]] = []
    files: list[str] = []
    for folder, paths in sorted(kept.items()):
        data = json.loads((root / folder / MANIFEST_NAME).read_bytes())
        for path in sorted(paths):
            status = None
            if path.rsplit("/", 1)[-1].startswith("delivery-"):
                status = json.loads((root / path).read_bytes()).get("status")
            files.append(path)
            events.append(
                {
                    "event": "delivery" if status else "receipt",
                    "status": status,
                    "vin": data["vin"],
                    "stage": data.get("stage", 1),
                    "version": data["version"],
                    "reference_id": data.get("reference_id"),
                    "folder": folder,
                    "files": file_digests(root, [path]),
                    "at": _now(),
                    "recovered": True,
                }
            )
    report.recovered = files
    return files, events


def select(
    results: list[RecordResult],
    findings: list[Finding],
    evidence: dict[str, list[Evidence]],
    options: ReleaseOptions,
    report: ReleaseReport,
) -> None:
    """Choose the records to sign and the signed certificates to deliver again."""
    blocked_vins = {vin for finding in findings if finding.blocking for vin in finding.records}
    everywhere = [finding for finding in findings if finding.blocking and not finding.records]
    if everywhere:
        first = everywhere[0]
        raise ConfigError(
            f"nothing is released while {len(everywhere)} finding(s) block every record, first: "
            f"{first.file or ''}:{first.line}: {first.rule}: {first.message}",
            "run ecoc check and fix them on the main branch",
        )
    issued = {(vin, e.stage, e.version) for vin, entries in evidence.items() for e in entries}
    planned = []
    # The data each vehicle and stage has now, and why a vehicle is blocked now.
    current: dict[tuple[str, int], str | None] = {}
    blocked_now: dict[str, str] = {}
    for result in sorted(results, key=lambda r: r.relative):
        summary = result.summary
        vin = summary.vin
        if vin is None:
            continue
        current[(vin, summary.stage)] = result.data_digest
        blocked = vin in blocked_vins or any(f.blocking for f in summary.findings)
        if blocked or result.rendered is None or result.version_number is None:
            report.blocked += 1
            own = [f for f in summary.findings if f.blocking]
            cause = own[0] if own else next((f for f in findings if f.blocking and vin in f.records), None)
            reason = f"{cause.rule}: {cause.message}" if cause else "its certificate cannot be rendered"
            report.blocked_records.append((result.relative, reason))
            blocked_now[vin] = reason
            continue
        if (vin, summary.stage, result.version_number) in issued or not in_shard(vin, options.shard):
            continue
        assert summary.reference_id is not None and result.content_digest and result.data_digest
        planned.append(
            Candidate(
                result.relative,
                vin,
                summary.stage,
                result.version_number,
                summary.reference_id,
                result.rendered,
                result.content_digest,
                result.data_digest,
                summary.approval,
                result.correction_reason,
            )
        )
    if options.limit is not None:
        report.deferred = max(0, len(planned) - options.limit)
        planned = planned[: options.limit]
    report.planned = planned
    # The latest version of each vehicle and stage, signed before or in this run.
    latest: dict[tuple[str, int], int] = {}
    for entries in evidence.values():
        for entry in entries:
            latest[(entry.vin, entry.stage)] = max(latest.get((entry.vin, entry.stage), 0), entry.version)
    for candidate in planned:
        key = (candidate.vin, candidate.stage)
        latest[key] = max(latest.get(key, 0), candidate.version)
    report.resend = []
    for entries in evidence.values():
        for entry in entries:
            if entry.delivery != "pending" or not in_shard(entry.vin, options.shard):
                continue
            if entry.version < latest[(entry.vin, entry.stage)]:
                # A correction replaces this version, so the outdated data is not sent again.
                report.superseded.append(entry)
                continue
            if entry.vin in blocked_now:
                report.held_back.append((entry, f"its record is blocked now: {blocked_now[entry.vin]}"))
                continue
            now = current.get((entry.vin, entry.stage))
            if now is not None and entry.data_digest is not None and now != entry.data_digest:
                # The record changed since this version was signed: its data is outdated, and
                # the correction that replaces it is not ready yet.
                report.held_back.append((entry, "its record changed since it was signed; release the correction"))
                continue
            report.resend.append(entry)


def manifest_of(
    candidate: Candidate,
    repository: Repository,
    run_head: str,
    version_datetime: str,
    approval_files: list[str],
    rules_digest: str,
    schema: IviSchema,
    seal: SigningKey,
    transport: str,
    options: ReleaseOptions,
) -> dict[str, object]:
    from cryptography.hazmat.primitives import hashes

    root = repository.root
    certificate = seal.certificate
    return {
        "vin": candidate.vin,
        "stage": candidate.stage,
        "version": candidate.version,
        "reference_id": candidate.reference_id,
        "version_datetime": version_datetime,
        "record": candidate.relative,
        "approval": approval_files,
        "approval_number": candidate.approval_number,
        "source_commit": run_head,
        "content_digest": candidate.content_digest,
        "data_digest": candidate.data_digest,
        "correction_reason": candidate.correction_reason,
        "digests": {
            "record": sha256_hex((root / candidate.relative).read_bytes()),
            "approval": {path: sha256_hex((root / path).read_bytes()) for path in approval_files},
            "rules": rules_digest,
            "xsd": schema.digest,
            "unsigned": sha256_hex(candidate.rendered),
        },
        "tool": {"name": "ecoc", "version": __version__},
        "signer": {
            "subject": certificate.subject.rfc4514_string(),
            "issuer": certificate.issuer.rfc4514_string(),
            "serial": format(certificate.serial_number, "x"),
            "sha256": certificate.fingerprint(hashes.SHA256()).hex(),
        },
        "signed_at": _now(),
        "signature": {"xades": options.xades or options.timestamp_url is not None, "timestamp": options.timestamp_url},
        "transport": transport,
    }


@contextmanager
def _opened(opener: Callable[[], Transport]) -> Iterator[Transport]:
    transport = opener()
    try:
        yield transport
    finally:
        transport.close()


def _sent(root: Path, folder: str, entry: Evidence | Candidate, transport: Transport) -> tuple[Delivery, str]:
    signed = (root / folder / CERTIFICATE_NAME).read_bytes()
    return transport.deliver(entry.reference_id or "", entry.vin, signed), _now()


# After this many failed deliveries in a row a run sends no more: the cause is the endpoint, the
# network or its certificates, and each further attempt would only add a failed result to the archive.
FAILURES_IN_A_ROW = 5


def _results(
    root: Path, entries: list[tuple[str, Evidence | Candidate]], transport: Transport, connections: int
) -> Iterator[tuple[int, Delivery, list[str]]]:
    """Yield (entry index, delivery result, files written) as each result arrives, over up to `connections` at once.

    Each result is written where it arrives, on the sending thread. On Ctrl-C the deliveries
    under way still finish and write their results, which the next run then commits, so the
    authority's answers are not lost and those certificates are not sent again.
    """

    def send(index: int) -> tuple[int, Delivery, list[str]]:
        folder, entry = entries[index]
        answer, at = _sent(root, folder, entry, transport)
        attempt = {
            "status": answer.status,
            "message": answer.message,
            "receipt_id": answer.receipt_id,
            "duplicate": answer.duplicate,
            "transport": transport.name,
            "reference_id": entry.reference_id,
            "at": at,
        }
        return index, answer, write_attempt(root, folder, attempt, answer.receipt, answer.media_type)

    streak = 0
    stopped = False

    def gives_up(result: tuple[int, Delivery, list[str]]) -> bool:
        """Count failures in a row; so many mean that the endpoint or its trust is broken, not one certificate."""
        nonlocal streak, stopped
        streak = streak + 1 if result[1].status == "failed" else 0
        if stopped or streak < FAILURES_IN_A_ROW:
            return False
        stopped = True
        log.warning(
            "%d deliveries in a row failed, the last with: %s; the certificates not sent yet wait for the next "
            "run, so fix the cause first",
            streak,
            result[1].message,
        )
        return True

    if connections <= 1 or len(entries) <= 1:
        for index in range(len(entries)):
            result = send(index)
            yield result
            if gives_up(result):
                return
        return

    failure: Exception | None = None
    executor = ThreadPoolExecutor(max_workers=min(connections, len(entries)), thread_name_prefix="deliver")
    try:
        futures = [executor.submit(send, index) for index in range(len(entries))]
        for future in as_completed(futures):
            try:
                result = future.result()
            except CancelledError:
                continue
            except Exception as exc:
                log.warning("delivery failed with %s: %s; sending no more certificates", type(exc).__name__, exc)
                # Results of deliveries already under way are still written. Certificates not yet sent stay open.
                if failure is None:
                    failure = exc
                    for waiting in futures:
                        waiting.cancel()
                continue
            yield result
            if gives_up(result):
                # Deliveries under way finish and are written; the rest stay open for the next run.
                for waiting in futures:
                    waiting.cancel()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    if failure is not None:
        raise failure


def deliver(
    root: Path,
    entries: list[tuple[str, Evidence | Candidate]],
    transport: Transport,
    report: ReleaseReport,
    connections: int = 1,
) -> tuple[list[str], list[dict[str, object]], list[str]]:
    """Send each certificate and write its result the moment it arrives; return the files, ledger events and trailers.

    With more than one connection, certificates go out in parallel. The events, trailers and
    outcomes still follow the order of `entries`.
    """
    files: list[str] = []
    results: dict[int, tuple[Delivery, list[str]]] = {}
    try:
        for index, answer, written in _results(root, entries, transport, connections):
            entry = entries[index][1]
            files += written
            results[index] = (answer, written)
            log.info("%s v%d: %s: %s", entry.vin, entry.version, answer.status, answer.message)
    finally:
        report.outcomes += [
            Outcome(
                entries[i][1].vin,
                entries[i][1].version,
                entries[i][1].reference_id or "",
                a.status,
                a.message,
                a.duplicate,
            )
            for i, (a, _) in sorted(results.items())
        ]
    report.not_sent = len(entries) - len(results)
    events: list[dict[str, object]] = []
    trailers: list[str] = []
    for index, (answer, written) in sorted(results.items()):
        folder, entry = entries[index]
        event = _event("delivery", entry, folder, written, root)
        event["status"] = answer.status
        events.append(event)
        trailers.append(f"Ecoc-Delivery: {entry.vin} v{entry.version} {entry.reference_id or ''} {answer.status}")
    return files, events, trailers


@contextmanager
def _recorded(report: ReleaseReport, options: ReleaseOptions) -> Iterator[None]:
    """Raise a check's error in a real run, and in a dry run record it in the report and go on."""
    try:
        yield
    except EcocError as problem:
        if not options.dry_run:
            raise
        report.problems.append(problem)


def _check_branch(repository: Repository) -> None:
    branch = gitinfo.current_branch(repository.root)
    main = repository.settings.main_branch
    if branch != main:
        raise ConfigError(
            f"ecoc release runs on the {main} branch, and {branch or 'a detached HEAD'} is checked out",
            f"check out {main}; if the released state lives on a branch of another name, set main_branch in "
            "ecoc.yaml through a reviewed change on that branch",
        )


def _check_index_lock(root: Path) -> None:
    lock = gitinfo.index_lock(root)
    if lock is not None:
        raise ConfigError(
            f"git's index is locked ({lock}), because another git process runs or one was killed",
            f"when no git process runs in this repository, delete {lock} and run the release again",
        )


def _check_sources(root: Path) -> None:
    hidden = gitinfo.hidden_files(root, SOURCE_FOLDERS, YAML_SUFFIXES)
    if hidden:
        listed = ", ".join(hidden[:3]) + (" …" if len(hidden) > 3 else "")
        raise ConfigError(
            f"git does not show changes to {len(hidden)} source file(s) ({listed}): they are ignored, or marked "
            "skip-worktree or assume-unchanged",
            "the release signs only reviewed data: remove the ignore rule and commit the file, or clear the flag "
            "(git update-index --no-skip-worktree --no-assume-unchanged FILE)",
        )
    changed = gitinfo.uncommitted(root, SOURCE_FOLDERS)
    if changed:
        listed = ", ".join(changed[:3]) + (" …" if len(changed) > 3 else "")
        raise ConfigError(
            f"{len(changed)} file(s) differ from the last commit ({listed})",
            "commit or stash them: the release signs only data that was reviewed and committed",
        )


# The trailers of the release's evidence commits. A commit without one was not written by the release.
_RELEASE_TRAILER = re.compile(r"^Ecoc-(?:Signed|Delivery|Recovered): ", re.MULTILINE)


def _written_by_release(root: Path, commit: str) -> bool:
    """Return whether `commit` changes only signed/ and carries the trailers of a release's evidence commit."""
    message = gitinfo.git_text(root, "cannot read a commit", "log", "-1", "--format=%B", commit, "--")
    listed = gitinfo.git_text(
        root, "cannot read a commit", "diff-tree", "--no-commit-id", "--name-only", "-r", "-z", commit
    )
    names = [name for name in listed.split("\0") if name]
    only_evidence = bool(names) and all(name.startswith(f"{EVIDENCE_FOLDER}/") for name in names)
    return only_evidence and _RELEASE_TRAILER.search(message) is not None


def check_remote(publisher: Publisher) -> None:
    """Fetch the remote's main branch, and raise ConfigError when HEAD and the remote's branch differ.

    A commit that HEAD has and the remote lacks would be pushed with the evidence, unreviewed. A
    commit that the remote has and HEAD lacks means that this clone would sign old data. Evidence
    commits that an interrupted release did not push are the exception: the release pushes them
    first, replayed on the remote's head when it moved on.
    """
    if not publisher.push_enabled:
        return
    root, remote, branch = publisher.root, publisher.remote, publisher.branch
    gitinfo.fetch(root, remote, branch)
    upstream = gitinfo.remote_head(root, remote, branch)
    assert upstream is not None, "the fetch creates the remote-tracking branch"
    failure = "cannot compare HEAD with the remote"
    unpushed = gitinfo.git_text(root, failure, "rev-list", "--reverse", f"{upstream}..HEAD", "--").split()
    unreviewed = [commit for commit in unpushed if not _written_by_release(root, commit)]
    if unreviewed:
        subject = gitinfo.git_text(root, failure, "log", "-1", "--format=%s", unreviewed[0], "--").strip()
        raise ConfigError(
            f"HEAD has {len(unreviewed)} commit(s) that {remote}/{branch} lacks, first {unreviewed[0][:12]} "
            f"({subject}); the release would push them to {branch} with the evidence",
            f"push them through review first (a branch and a pull request), then reset this clone to "
            f"{remote}/{branch}; the release signs and pushes only reviewed data",
        )
    behind = int(gitinfo.git_text(root, failure, "rev-list", "--count", f"HEAD..{upstream}", "--").strip() or 0)
    # Delivery results that an interrupted run wrote and did not commit are committed first. They
    # are then replayed on the remote's head like unpushed evidence, so a pull cannot lose them.
    stranded = behind and not unpushed and bool(gitinfo.uncommitted(root, (EVIDENCE_FOLDER,)))
    if behind and not unpushed and not stranded:
        raise ConfigError(
            f"{remote}/{branch} has {behind} commit(s) that HEAD lacks, so this clone would sign old data",
            f"update the clone (git pull --ff-only {remote} {branch}) and run the release again",
        )
    if behind and unpushed:
        # The unpushed evidence is replayed on the remote's head first; find out now whether it can be.
        _raise_conflict(replay_plan(root, upstream), remote, branch)


def check_start(repository: Repository, options: ReleaseOptions, report: ReleaseReport) -> tuple[str, Publisher | None]:
    """Run the checks that stop a release before anything is signed, and return HEAD and the publisher.

    The release needs a commit on the main branch, git's index free, the sources as committed,
    the remote that the evidence goes to with the same commits as HEAD, and in signed/ only
    changes that an interrupted release made. A dry run records each failure and goes on, and its
    publisher is None when the remote cannot be used.
    """
    root = repository.root
    head = gitinfo.head(root)
    if head is None:
        raise ConfigError(f"{root}: no commit to release", "ecoc release signs what is committed on the main branch")
    with _recorded(report, options):
        _check_branch(repository)
    with _recorded(report, options):
        _check_index_lock(root)
    with _recorded(report, options):
        _check_sources(root)
    publisher: Publisher | None = None
    with _recorded(report, options):
        publisher = Publisher(repository, options.push)
        check_remote(publisher)
    if options.dry_run:
        # A real run checks signed/ as part of its recovery, which changes files, so a dry run only looks.
        with _recorded(report, options):
            evidence_changes(root)
    return head, publisher


def ready_seal(load_seal: Callable[[], SigningKey], repository: Repository) -> SigningKey:
    """Load the seal, and reject one whose signatures would not verify (see ecoc.signing.check_seal)."""
    from ecoc.signing import TokenKey, check_seal, load_anchors

    anchors = load_anchors([repository.root / path for path in repository.settings.signing.trust])
    seal = load_seal()
    try:
        check_seal(seal, anchors)
    except EcocError:
        if isinstance(seal.key, TokenKey):
            seal.key.close()
        raise
    return seal


def _check_delivery(
    repository: Repository,
    options: ReleaseOptions,
    report: ReleaseReport,
    load_seal: Callable[[], SigningKey],
    open_transport: Callable[[], Transport],
    transport_name: str,
) -> None:
    """Check the transport and the seal for a dry run, as a real run does before it signs, and create nothing."""
    from ecoc.signing import TokenKey

    if not report.planned and not report.resend:
        return
    # Without a transport there is nothing to open, and the command line reports that.
    transport = None
    if transport_name:
        with _recorded(report, options):
            transport = open_transport()
    try:
        if report.planned:
            with _recorded(report, options):
                seal = ready_seal(load_seal, repository)
                if isinstance(seal.key, TokenKey):
                    seal.key.close()
        if transport is not None:
            with _recorded(report, options):
                transport.check_ready(create=False)
    finally:
        if transport is not None:
            transport.close()


def _finish_interrupted(repository: Repository, publisher: Publisher, report: ReleaseReport) -> None:
    """Commit what an interrupted run received, and push the evidence commits that it did not push."""
    recovered, recovered_events = recover(repository, report)
    if recovered:
        publisher.commit(
            recovered,
            recovered_events,
            f"Record the delivery results of {len({p.rsplit('/', 1)[0] for p in recovered})} certificate(s) "
            "from an interrupted release",
            [f"Ecoc-Recovered: {path}" for path in recovered],
        )
    if report.discarded:
        log.warning(
            "removed %d file(s) that an interrupted release wrote but never committed",
            len(report.discarded),
        )
    if publisher.push_enabled and gitinfo.ahead_of(repository.root, publisher.remote, publisher.branch) != 0:
        report.pushed = publisher.publish()


def _warn_outdated_in_outbox(folder: Path, outcomes: list[Outcome], evidence: dict[str, list[Evidence]]) -> None:
    """Warn about earlier versions of the corrected certificates that the outbox still holds.

    The uploader may not have sent them yet, and sending one after its correction would give the
    authority outdated data.
    """
    for outcome in outcomes:
        if outcome.status != "accepted" or outcome.version < 2:
            continue
        for entry in evidence.get(outcome.vin, []):
            name = f"{entry.reference_id}.xml"
            if entry.version < outcome.version and entry.reference_id and (folder / name).is_file():
                log.warning(
                    "the outbox still contains %s, IviVersionNumber %d of %s, which IviVersionNumber %d corrects. "
                    "If the uploader has not sent it, remove it, so that the authority never receives it after "
                    "its correction",
                    name,
                    entry.version,
                    outcome.vin,
                    outcome.version,
                )


def run_release(
    repository: Repository,
    options: ReleaseOptions,
    schema: IviSchema,
    load_seal: Callable[[], SigningKey],
    open_transport: Callable[[], Transport],
    transport_name: str,
) -> ReleaseReport:
    """Release the ready certificates. A dry run signs nothing and reports what would stop a real run."""
    from ecoc.runner import RunOptions, run_check
    from ecoc.signing import TokenKey, sign
    from ecoc.transports import OutboxTransport

    root = repository.root
    report = ReleaseReport()
    head, publisher = check_start(repository, options, report)
    if not options.dry_run:
        assert publisher is not None, "a real run stops at the publisher's error"
        _finish_interrupted(repository, publisher, report)
        head = gitinfo.head(root) or head
    version_datetime = gitinfo.last_change_time(root, SOURCE_FOLDERS) or gitinfo.head_commit_time(root)
    assert version_datetime is not None
    results: list[RecordResult] = []
    start = time.perf_counter()
    run = run_check(
        repository,
        RunOptions(None, schema, version_datetime, keep_render=True, jobs=options.jobs),
        sink=results.append,
    )
    with _recorded(report, options):
        select(results, run.findings, run.evidence, options, report)
    report.seconds["check"] = time.perf_counter() - start
    if options.dry_run:
        _check_delivery(repository, options, report, load_seal, open_transport, transport_name)
        return report
    assert publisher is not None
    if not report.planned and not report.resend:
        report.commits = publisher.commits
        return report
    with _opened(open_transport) as transport:
        # The seal comes first, so that a seal that cannot sign leaves no outbox folder behind.
        seal = ready_seal(load_seal, repository) if report.planned else None
        try:
            transport.check_ready()
        except EcocError:
            if seal is not None and isinstance(seal.key, TokenKey):
                seal.key.close()
            raise
        if seal is not None:
            start = time.perf_counter()
            try:
                files: list[str] = []
                events: list[dict[str, object]] = []
                trailers: list[str] = []
                assert run.index is not None and run.catalogue is not None
                index, rules_digest = run.index, run.catalogue.digest

                def sign_one(candidate: Candidate) -> tuple[str, list[str]]:
                    signed = sign(
                        candidate.rendered,
                        seal,
                        xades=options.xades or options.timestamp_url is not None,
                        timestamp_url=options.timestamp_url,
                    )
                    folder = evidence_folder(candidate.vin, candidate.stage, candidate.version)
                    manifest = manifest_of(
                        candidate,
                        repository,
                        head,
                        version_datetime,
                        index.paths_of(candidate.approval_number),
                        rules_digest,
                        schema,
                        seal,
                        transport_name,
                        options,
                    )
                    return folder, write_certificate(root, folder, signed, manifest)

                # RSA and ECDSA signing, a TSA's response and file writes all let other threads run, so
                # certificates are signed in parallel. A PKCS#11 session serves one thread at a time.
                workers = 1 if isinstance(seal.key, TokenKey) else max(1, options.jobs)
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sign") as executor:
                    for candidate, (folder, written) in zip(
                        report.planned, executor.map(sign_one, report.planned), strict=True
                    ):
                        files += written
                        events.append(_event("signed", candidate, folder, written, root))
                        trailers.append(f"Ecoc-Signed: {candidate.vin} v{candidate.version} {candidate.reference_id}")
                        report.signed += 1
            finally:
                if isinstance(seal.key, TokenKey):
                    seal.key.close()
            report.seconds["signing"] = time.perf_counter() - start
            publisher.commit(files, events, f"Sign {len(report.planned)} certificate(s) for delivery", trailers)
            report.pushed = publisher.publish() or report.pushed
        entries: list[tuple[str, Evidence | Candidate]] = [(entry.folder, entry) for entry in report.resend]
        entries += [
            (folder, c)
            for c in report.planned
            if (folder := evidence_folder(c.vin, c.stage, c.version)) not in publisher.published_elsewhere
        ]
        start = time.perf_counter()
        files, events, trailers = deliver(root, entries, transport, report, repository.settings.release.connections)
        report.seconds["delivery"] = time.perf_counter() - start
        if isinstance(transport, OutboxTransport):
            _warn_outdated_in_outbox(transport.folder, report.outcomes, run.evidence)
    if entries:
        # A run whose certificates another release published has no delivery to record.
        accepted = sum(1 for outcome in report.outcomes if outcome.status == "accepted")
        # The outbox takes a file; whether the authority accepts it, the system that uploads it learns.
        accepted_word = "written to the outbox" if transport_name == "outbox" else "accepted"
        subject = f"Record {len(entries)} delivery result(s), {accepted} {accepted_word}"
        publisher.commit(files, events, subject, trailers)
        report.pushed = publisher.publish() or report.pushed
    report.commits = publisher.commits
    report.seconds["git"] = publisher.seconds
    log.info(
        "release phases: check %.2f s, signing %.2f s, delivery %.2f s, git %.2f s (%.2f s of CPU in git)",
        *(report.seconds[phase] for phase in ("check", "signing", "delivery", "git")),
        publisher.git_cpu,
    )
    return report
