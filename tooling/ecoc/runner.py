"""Run the checks over a repository: select records, reuse cached results, use every core.

The per-record work (`ecoc.check.check_record`) is pure; this module reads the files, keys
the cache, spreads the records that need checking over worker processes, and adds the checks
that need all records at once (duplicate VINs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ecoc.cache import CachedRecord, CheckCache, context_key, result_key
from ecoc.check import (
    CHECK_DATETIME,
    ApprovalIndex,
    RuleRun,
    check_record,
    duplicate_vins,
    load_approvals,
    record_stage,
)
from ecoc.config import Repository
from ecoc.evidence import Evidence, read_evidence
from ecoc.files import digest, list_yaml, pick_yaml, read_file
from ecoc.findings import Finding, Severity, merge_duplicates
from ecoc.ivi.render import content_digest
from ecoc.ivi.xsd import IviSchema
from ecoc.memo import today
from ecoc.model.record import Record, parse_record
from ecoc.rules.builtin import BUILTIN_RULES
from ecoc.rules.catalogue import Catalogue, load_catalogue
from ecoc.rules.waivers import WaiverSet, load_waivers
from ecoc.yamlload import Scalar, Source

log = logging.getLogger(__name__)

# Below this many records to check, starting worker processes costs more than it saves.
PARALLEL_THRESHOLD = 200
CHUNK_SIZE = 64


@dataclass(frozen=True, slots=True)
class RecordResult:
    """The outcome of checking one record file, as the parent process receives it."""

    relative: str
    digest: str
    summary: CachedRecord
    rendered: bytes | None = None
    # With the render: the digest of the certificate's content (ecoc.ivi.render.content_digest),
    # the digest of its data without the IviVersionNumber, and the IviVersionNumber it renders with.
    content_digest: str | None = None
    data_digest: str | None = None
    version_number: int | None = None
    # The record's correction_reason, with the render.
    correction_reason: str | None = None


@dataclass(eq=False)
class CheckRun:
    findings: list[Finding]
    records: int
    approvals: int
    cache_hits: int = 0
    results: list[RecordResult] = field(default_factory=list)
    # The rules the run used, when it ran them.
    catalogue: Catalogue | None = None
    # (record file, VIN) of each checked record, in the order they were checked.
    checked: list[tuple[str, str | None]] = field(default_factory=list)
    # The sha256 of the certificate each checked record renders, when it renders.
    certificates: dict[str, str | None] = field(default_factory=dict)
    # The approval number each checked record names.
    approval_of: dict[str, str | None] = field(default_factory=dict)
    # The approvals of the run, and the evidence archive as it was read.
    index: ApprovalIndex | None = None
    evidence: dict[str, list[Evidence]] = field(default_factory=dict)
    # The rules with the results they gave per version, when the run ran them.
    rules: RuleRun | None = None


@dataclass(frozen=True)
class RunOptions:
    selection: list[Path] | None = None
    schema: IviSchema | None = None
    version_datetime: str = CHECK_DATETIME
    # Keep the rendered bytes of each record (render needs them, check does not).
    keep_render: bool = False
    jobs: int = 1
    # Run the readiness rules of rules/ (the benchmark turns them off to measure their cost).
    rules: bool = True
    # Read only these record files (relative to the repository); None reads every one.
    files: frozenset[str] | None = None
    # Rules already loaded from the same rule files, to use instead of loading rules/ again.
    catalogue: Catalogue | None = None
    # VIN patterns whose every record is in the selection: a waiver that names only these can
    # be judged unused by a run over the selection.
    complete_patterns: frozenset[str] = frozenset()
    # A finished run whose parsed approvals and per-version rule results this run takes over.
    # It does so when its approval files have the same bytes and it runs the same rules on the
    # same day, as the base of a change to records does.
    reuse: CheckRun | None = None


# Set in the parent before worker processes fork, so that they inherit it.
_WORKER_STATE: (
    tuple[ApprovalIndex, IviSchema | None, str, bool, RuleRun | None, dict[str, list[Evidence]], Path] | None
) = None


def _check_one(path: str, relative: str) -> RecordResult:
    assert _WORKER_STATE is not None
    index, schema, version_datetime, keep_render, rules, evidence, root = _WORKER_STATE
    data, problem = read_file(path, relative)
    if data is None:
        assert problem is not None
        return RecordResult(relative, "", CachedRecord(None, 1, 1, None, (problem,)))
    record = parse_record(data, Source(relative), digest(data))
    outcome = check_record(record, index, schema, version_datetime, keep_render, rules, evidence, root)
    vin = record.vin
    reference = outcome.effective.header.get("IviReferenceId") if outcome.effective is not None else None
    summary = CachedRecord(
        vin.text if vin is not None else None,
        vin.line if vin else 1,
        vin.column if vin else 1,
        record.approval.text if record.approval is not None else None,
        tuple(outcome.findings),
        reference.text if isinstance(reference, Scalar) else None,
        outcome.effective.stage if outcome.effective is not None else 1,
        record.variant.text if record.variant is not None else None,
        record.version.text if record.version is not None else None,
        outcome.certificate,
    )
    content = data_digest = None
    version_number = None
    if outcome.rendered is not None and outcome.effective is not None:
        content = content_digest(outcome.effective.header, outcome.effective.coc)
        data_digest = content_digest(outcome.effective.header, outcome.effective.coc, with_version=False)
        version_number = outcome.effective.version_number
    reason = record.correction_reason.text if record.correction_reason is not None and content else None
    return RecordResult(
        relative, record.digest, summary, outcome.rendered, content, data_digest, version_number, reason
    )


def _check_chunk(chunk: list[tuple[str, str]]) -> list[RecordResult]:
    return [_check_one(path, relative) for path, relative in chunk]


def _chunks(items: list[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def worker_signals() -> None:
    """Let the parent handle Ctrl-C, and let SIGTERM end a pool worker, as the pool expects."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _check_all(items: list[tuple[str, str]], jobs: int) -> Iterator[RecordResult]:
    if jobs <= 1 or len(items) < PARALLEL_THRESHOLD:
        for path, relative in items:
            yield _check_one(path, relative)
        return
    context = multiprocessing.get_context("fork")
    # Ctrl-C reaches the whole process group: the parent stops the pool, so workers ignore it.
    with context.Pool(jobs, initializer=worker_signals) as pool:
        for results in pool.imap(_check_chunk, _chunks(items, CHUNK_SIZE)):
            yield from results


def _selected(relative: str, chosen: list[str] | None) -> bool:
    """Return whether a file (relative to the repository) is one of `chosen` or below one of them."""
    if chosen is None:
        return True
    return any(relative == c or relative.startswith(c + "/") for c in chosen)


def _approval_keys(index: ApprovalIndex) -> tuple[dict[str, str], str]:
    """Return the cache key part of each approval number, and the one of an unknown number.

    The part names each file of the number with its digest, because findings name the file.
    """
    keys = {
        number: "\0".join(f"{a.source.path}\0{a.digest}" for a in index.files_of(number)) for number in index.by_number
    }
    # A record whose approval is missing gets suggestions from the known numbers.
    missing = hashlib.sha256("\0".join(sorted(keys)).encode()).hexdigest()
    return keys, missing


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(eq=False)
class _RecordFile:
    """A record file during the scan, read and parsed only when needed."""

    path: str
    relative: str
    digest: str
    data: bytes | None = None
    _record: Record | None = None

    def parsed(self) -> Record:
        if self._record is None:
            if self.data is None:
                with open(self.path, "rb") as handle:
                    self.data = handle.read()
            self._record = parse_record(self.data, Source(self.relative), self.digest)
        return self._record


class _Run:
    """One check run: scan the record files, check those without a cached result, collect the findings."""

    def __init__(
        self,
        repository: Repository,
        options: RunOptions,
        cache: CheckCache | None,
        sink: Callable[[RecordResult], None] | None,
    ) -> None:
        self.repository = repository
        self.options = options
        self.cache = cache
        self.sink = sink
        chosen = (
            [repository.relative(p).rstrip("/") for p in options.selection] if options.selection is not None else None
        )
        self.chosen = None if chosen is not None and "." in chosen else chosen
        listed = list_yaml(repository.root, "approvals")
        reused = options.reuse
        if reused is not None and reused.index is not None and _same_approvals(reused.index, listed):
            self.index = reused.index
        else:
            reused = None
            self.index = load_approvals(listed)
        self.selected_approvals = {a.source.path for a in self.index.approvals if _selected(a.source.path, self.chosen)}
        self.approval_files = {a.source.path for a in self.index.approvals}
        self.approval_keys, self.missing_key = _approval_keys(self.index)
        self.schema_digest = options.schema.digest if options.schema is not None else None
        self.rules: RuleRun | None = None
        self.catalogue_findings: list[Finding] = []
        self.catalogue: Catalogue | None = None
        self.waivers = WaiverSet()
        if options.rules:
            catalogue = options.catalogue or load_catalogue(repository.root)
            self.catalogue = catalogue
            self.rules = RuleRun(catalogue, today())
            earlier = reused.rules if reused is not None else None
            if earlier is not None and earlier.catalogue is catalogue and earlier.today == self.rules.today:
                self.rules = earlier
            self.catalogue_findings = catalogue.findings
            self.waivers = load_waivers(repository.root, catalogue, BUILTIN_RULES, self.rules.today)
            # Results depend on the rules and, through date rules, on the day.
            self.schema_digest = f"{self.schema_digest}\0{catalogue.digest}\0{self.rules.today}"
        self.contexts: dict[str, str] = {}
        self.evidence, self.evidence_findings = read_evidence(repository.root)
        self.use_cache = cache is not None and not options.keep_render
        # VINs of the checked records of each approval file, so that the approval's findings
        # are reported with the records they block.
        # Per approval file: the VIN, variant and version of each checked record that uses it.
        self.affected: dict[str, list[tuple[str, str | None, str | None]]] = {}
        self.result = CheckRun([], 0, len(self.selected_approvals))
        self.vins: list[tuple[str, int, int, str, int]] = []
        # IviReferenceId -> positions in `vins` of the records that render with it.
        self.references: dict[str, int | list[int]] = {}
        self.to_check: list[tuple[str, str]] = []
        self.selected_files: set[str] = set()

    def key_of(self, relative: str, record_digest: str, number: str | None, vin: str | None) -> str:
        approval_key = self.approval_keys.get(number or "", self.missing_key)
        context = self.contexts.get(approval_key)
        if context is None:
            context = self.contexts[approval_key] = context_key(approval_key, self.schema_digest)
        # A record with issued certificates depends on them too (its version, a rejection).
        issued = self.evidence.get(vin or "")
        if issued:
            context = f"{context}\0" + "\0".join(f"{e.manifest}:{e.data_digest}:{e.delivery}" for e in issued)
        return result_key(relative, record_digest, context)

    def waive(self, findings: tuple[Finding, ...] | list[Finding]) -> list[Finding]:
        return [part for finding in findings for part in self.waivers.apply(finding)]

    def accept(self, result: RecordResult) -> None:
        if self.waivers.by_rule and result.summary.findings:
            waived = tuple(self.waive(result.summary.findings))
            result = replace(result, summary=replace(result.summary, findings=waived))
        summary = result.summary
        if summary.vin is not None:
            self.vins.append((summary.vin, summary.vin_line, summary.vin_column, result.relative, summary.stage))
            if summary.reference_id is not None:
                self.note_reference(summary.reference_id, len(self.vins) - 1)
            for path in self.index.paths_of(summary.approval):
                self.affected.setdefault(path, []).append((summary.vin, summary.variant, summary.version))
        self.result.findings.extend(summary.findings)
        self.result.records += 1
        self.result.checked.append((result.relative, summary.vin))
        self.result.approval_of[result.relative] = summary.approval
        self.result.certificates[result.relative] = summary.certificate
        if self.sink is not None:
            self.sink(result)

    def note_reference(self, reference: str, position: int) -> None:
        # A list only for the rare shared id, so that 100,000 records cost one int each.
        known = self.references.get(reference)
        if known is None:
            self.references[reference] = position
        elif isinstance(known, int):
            self.references[reference] = [known, position]
        else:
            known.append(position)

    def open_file(self, path: str, relative: str) -> _RecordFile:
        """Hash a record file, without reading it when the cache has its digest and it is unchanged."""
        status = os.stat(path)
        if self.cache is not None:
            known = self.cache.file_digest(relative, status)
            if known is not None:
                return _RecordFile(path, relative, known)
        with open(path, "rb") as handle:
            data = handle.read()
        record_file = _RecordFile(path, relative, digest(data), data)
        if self.cache is not None:
            self.cache.remember_file(relative, status, record_file.digest)
        return record_file

    def scan(self, path: str, relative: str) -> None:
        """Take one record's result from the cache, queue the record for checking, or note only its VIN."""
        try:
            record_file = self.open_file(path, relative)
        except OSError:
            self.selected_files.add(relative)
            self.to_check.append((path, relative))  # the worker reports the read error
            return
        reference = self.cache.reference(record_file.digest) if self.cache is not None else None
        if self.wanted(record_file, reference):
            self.selected_files.add(relative)
            cached = None
            if self.use_cache and reference is not None:
                key = self.key_of(relative, record_file.digest, reference[0], reference[1])
                cached = self.cache.lookup(key)  # type: ignore[union-attr]
            if cached is not None:
                self.accept(RecordResult(relative, record_file.digest, cached))
            else:
                self.to_check.append((path, relative))
            return
        # Records outside the selection still count for duplicate VINs.
        if reference is not None:
            if reference[1] is not None:
                self.vins.append((reference[1], reference[2], reference[3], relative, reference[4]))
            return
        vin = record_file.parsed().vin
        if vin is not None:
            self.vins.append((vin.text, vin.line, vin.column, relative, record_stage(record_file.parsed(), self.index)))

    def wanted(self, record_file: _RecordFile, reference: list[Any] | None) -> bool:
        """Return whether the record is selected, by its path or through its approval file."""
        if _selected(record_file.relative, self.chosen):
            return True
        if not self.selected_approvals:
            return False
        if reference is not None:
            number = reference[0]
        else:
            named = record_file.parsed().approval
            number = named.text if named is not None else None
        approval = self.index.by_number.get(number or "")
        return approval is not None and approval.source.path in self.selected_approvals

    def check_queued(self) -> None:
        global _WORKER_STATE
        options = self.options
        if self.to_check and options.schema is not None:
            options.schema.compile()  # once, before worker processes fork
        _WORKER_STATE = (
            self.index,
            options.schema,
            options.version_datetime,
            options.keep_render,
            self.rules,
            self.evidence,
            self.repository.root,
        )
        try:
            for result in _check_all(self.to_check, options.jobs):
                self.accept(result)
                if self.cache is not None and result.digest:
                    self.cache.store(
                        self.key_of(result.relative, result.digest, result.summary.approval, result.summary.vin),
                        result.digest,
                        result.summary,
                    )
        finally:
            _WORKER_STATE = None

    def approval_findings(self) -> list[Finding]:
        """Findings in approval files that were selected or that checked records use."""
        findings = []
        for finding in self.index.findings:
            variant, version = _variant_and_version(finding.path)
            vins = tuple(
                sorted(
                    {
                        vin
                        for vin, record_variant, record_version in self.affected.get(finding.file or "", ())
                        if variant in (None, record_variant) and version in (None, record_version)
                    }
                )
            )
            # A file that could not be read as an approval counts as selected when its path is.
            unread = finding.file not in self.approval_files and _selected(finding.file or "", self.chosen)
            if finding.file not in self.selected_approvals and not vins and not unread:
                continue
            findings.append(finding if finding.records or not vins else replace(finding, records=vins))
        return findings

    def unused_versions(self) -> list[Finding]:
        """Info findings for versions of the selected approvals that no checked record uses.

        The readiness rules run on a version only through its records, so a new version without
        vehicles is checked against the schema model alone. Only a run limited to some files, as
        `ecoc check --base` makes, reports them: there the approval's records are all checked.
        """
        if self.options.files is None:
            return []
        findings = []
        for approval in self.index.approvals:
            path = approval.source.path
            if path not in self.selected_approvals:
                continue
            used = {(variant, version) for _, variant, version in self.affected.get(path, ())}
            for variant in approval.variants.values():
                for version in variant.versions.values():
                    if (variant.name, version.name) in used:
                        continue
                    findings.append(
                        Finding(
                            "approval.version-unchecked",
                            Severity.INFO,
                            f"version {version.name} of variant {variant.name} has no record, so the readiness "
                            "rules did not check its values; they run on a version through its records",
                            path,
                            version.line,
                            version.column,
                            f"variants.{variant.name}.versions.{version.name}",
                            "check the version's values before its first vehicle, whose record brings the rules",
                        )
                    )
        return findings

    def duplicate_reference_ids(self) -> list[Finding]:
        """One finding per checked record whose IviReferenceId another checked record also renders.

        Only records checked in this run are compared: their ids are known without rendering.
        """
        findings = []
        for reference, positions in self.references.items():
            if isinstance(positions, int):
                continue
            holders = [self.vins[position] for position in positions]
            if len({holder[0] for holder in holders}) == 1:
                continue  # one VIN in several files, which record.duplicate-vin reports
            for vin, line, column, relative, _ in holders:
                others = ", ".join(other[3] for other in holders if other[3] != relative)
                findings.append(
                    Finding(
                        "record.duplicate-reference-id",
                        Severity.ERROR,
                        f"IviReferenceId {reference} is also used by {others}",
                        relative,
                        line,
                        column,
                        None,
                        "each issued certificate needs its own IviReferenceId. A record file copied from another "
                        "keeps that record's issued block, so remove the block from the copy. An imported record "
                        "keeps the id of its message, so check where the message came from",
                        (vin,),
                    )
                )
        return findings

    def signed_elsewhere(self) -> list[Finding]:
        """Records whose VIN the evidence archive holds as signed from another record file."""
        evidence, findings = self.evidence, self.evidence_findings
        signed = {vin: (entries[0].record, entries[0].manifest) for vin, entries in evidence.items()}
        for vin, line, column, relative, _ in self.vins:
            known = signed.get(vin)
            if known is None or known[0] == relative or relative not in self.selected_files:
                continue
            findings.append(
                Finding(
                    "record.signed-elsewhere",
                    Severity.ERROR,
                    f"VIN {vin} was signed from {known[0]} ({known[1]})",
                    relative,
                    line,
                    column,
                    "vin",
                    f"continue the vehicle's history in {known[0]}; a certificate's record does not move",
                    (vin,),
                )
            )
        return findings

    def removed_after_signing(self) -> list[Finding]:
        """Findings for vehicles with issued certificates whose record file is gone."""
        findings = []
        root = self.repository.root
        for vin, entries in self.evidence.items():
            latest = entries[-1]
            if (root / latest.record).exists():
                continue
            findings.append(
                Finding(
                    "record.removed-after-signing",
                    Severity.ERROR,
                    f"VIN {vin} has an issued certificate ({latest.manifest}), but its record {latest.record} "
                    "no longer exists",
                    latest.record,
                    records=(vin,),
                    hint=(
                        f"restore {latest.record} from the main branch: a vehicle with an issued certificate keeps "
                        "its record at the path it was signed from, and its data changes only by a correction"
                    ),
                )
            )
        return findings

    def finish(self) -> CheckRun:
        run = self.result
        # The approval files the run checked: those selected, and those of the checked records.
        run.approvals = len(self.selected_approvals | set(self.affected))
        run.catalogue = self.catalogue
        run.index = self.index
        run.evidence = self.evidence
        run.rules = self.rules
        run.findings.extend(self.waive(self.approval_findings()))
        run.findings.extend(self.unused_versions())
        run.findings.extend(self.catalogue_findings)
        run.findings.extend(self.waive([f for f in duplicate_vins(self.vins) if f.file in self.selected_files]))
        run.findings.extend(self.waive(self.duplicate_reference_ids()))
        run.findings.extend(self.waive(self.signed_elsewhere()))
        run.findings.extend(self.waive(self.removed_after_signing()))
        run.findings.extend(self.waivers.findings)
        if self.repository.settings.signing.cert is not None:
            # The seal checks read certificates, whose library is loaded only when a seal is set.
            from ecoc.preflight import signing_findings

            run.findings.extend(self.waive(signing_findings(self.repository, self.index, dt.datetime.now(dt.UTC))))
        if self.chosen is None:
            # Only a run over every record can tell that a waiver accepts nothing ...
            run.findings.extend(self.waivers.unused())
        elif self.options.complete_patterns:
            # ... or a run over every record that the waiver's VIN patterns can match.
            patterns = self.options.complete_patterns
            run.findings.extend(self.waivers.unused(lambda waiver: set(waiver.spec.records) <= patterns))
        disabled = set(self.repository.settings.disable)
        run.findings = merge_duplicates([f for f in run.findings if f.rule not in disabled])
        if self.cache is not None:
            run.cache_hits = self.cache.hits
            self.cache.save()
        log.info("checked %d records (%d from the cache)", run.records, run.cache_hits)
        return run


def _variant_and_version(path: str | None) -> tuple[str | None, str | None]:
    """The variant and version a path in an approval file lies in, as in variants.V.versions.W.

    A finding outside both affects every record of the approval.
    """
    steps = (path or "").split(".")
    if len(steps) < 2 or steps[0] != "variants":
        return None, None
    if len(steps) < 4 or steps[2] != "versions":
        return steps[1], None
    return steps[1], steps[3]


def _same_approvals(index: ApprovalIndex, listed: list[tuple[str, str]]) -> bool:
    """Return whether the listed approval files have exactly the bytes `index` was read from."""
    if index.unreadable or [relative for _, relative in listed] != [a.source.path for a in index.approvals]:
        return False
    for (path, relative), approval in zip(listed, index.approvals, strict=True):
        data, _ = read_file(path, relative)
        if data is None or digest(data) != approval.digest:
            return False
    return True


def run_check(
    repository: Repository,
    options: RunOptions,
    cache: CheckCache | None = None,
    sink: Callable[[RecordResult], None] | None = None,
) -> CheckRun:
    """Check the selected records (all when no selection is given) and their approvals.

    `sink` receives each record's result as soon as it is known (render writes files there).
    """
    run = _Run(repository, options, cache, sink)
    if options.files is None:
        listed = list_yaml(repository.root, "records")
    else:
        listed = pick_yaml(repository.root, "records", options.files)
    for path, relative in listed:
        run.scan(path, relative)
    run.check_queued()
    return run.finish()
