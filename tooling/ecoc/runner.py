"""Run the checks over a repository: select records, reuse cached results, use every core.

The per-record work (`ecoc.check.check_record`) is pure; this module reads the files, keys
the cache, spreads the records that need checking over worker processes, and adds the checks
that need all records at once (duplicate VINs).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ecoc.cache import CachedRecord, CheckCache, result_key
from ecoc.check import (
    CHECK_DATETIME,
    ApprovalIndex,
    check_record,
    digest,
    duplicate_vins,
    list_yaml,
    load_approvals,
    read_file,
)
from ecoc.config import Repository
from ecoc.findings import Finding, merge_duplicates
from ecoc.ivi.xsd import IviSchema
from ecoc.model.record import Record, parse_record
from ecoc.yamlload import Source

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


@dataclass(eq=False)
class CheckRun:
    findings: list[Finding]
    records: int
    approvals: int
    cache_hits: int = 0
    results: list[RecordResult] = field(default_factory=list)


@dataclass(frozen=True)
class RunOptions:
    selection: list[Path] | None = None
    schema: IviSchema | None = None
    version_datetime: str = CHECK_DATETIME
    # Keep the rendered bytes of each record (render needs them, check does not).
    keep_render: bool = False
    jobs: int = 1


# Set in the parent before worker processes fork, so that they inherit it.
_WORKER_STATE: tuple[ApprovalIndex, IviSchema | None, str, bool] | None = None


def _check_one(path: str, relative: str) -> RecordResult:
    assert _WORKER_STATE is not None
    index, schema, version_datetime, keep_render = _WORKER_STATE
    data, problem = read_file(path, relative)
    if data is None:
        assert problem is not None
        return RecordResult(relative, "", CachedRecord(None, 1, 1, None, (problem,)))
    record = parse_record(data, Source(relative), digest(data))
    outcome = check_record(record, index, schema, version_datetime, keep_render)
    vin = record.vin
    summary = CachedRecord(
        vin.text if vin is not None else None, vin.line if vin else 1, vin.column if vin else 1,
        record.approval.text if record.approval is not None else None, tuple(outcome.findings))
    return RecordResult(relative, record.digest, summary, outcome.rendered)


def _check_chunk(chunk: list[tuple[str, str]]) -> list[RecordResult]:
    return [_check_one(path, relative) for path, relative in chunk]


def _chunks(items: list[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _check_all(items: list[tuple[str, str]], jobs: int) -> Iterator[RecordResult]:
    if jobs <= 1 or len(items) < PARALLEL_THRESHOLD:
        for path, relative in items:
            yield _check_one(path, relative)
        return
    context = multiprocessing.get_context("fork")
    with context.Pool(jobs) as pool:
        for results in pool.imap(_check_chunk, _chunks(items, CHUNK_SIZE)):
            yield from results


def _selected(relative: str, chosen: list[str] | None) -> bool:
    """Whether a file (relative to the repository) is one of `chosen` or below one of them."""
    if chosen is None:
        return True
    return any(relative == c or relative.startswith(c + "/") for c in chosen)


def _approval_keys(index: ApprovalIndex) -> tuple[dict[str, str], str]:
    """The cache key part for each approval number, and the one for an unknown number."""
    keys = {number: approval.digest for number, approval in index.by_number.items()}
    # A record whose approval is missing gets suggestions from the known numbers.
    missing = hashlib.sha256("\0".join(sorted(keys)).encode()).hexdigest()
    return keys, missing


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_check(repository: Repository, options: RunOptions, cache: CheckCache | None = None,
              sink: Callable[[RecordResult], None] | None = None) -> CheckRun:
    """Check the selected records (all when no selection is given) and their approvals.

    `sink` receives each record's result as soon as it is known (render writes files there).
    """
    global _WORKER_STATE
    chosen = ([repository.relative(p).rstrip("/") for p in options.selection]
              if options.selection is not None else None)
    if chosen is not None and "." in chosen:
        chosen = None
    index = load_approvals(list_yaml(repository.root, "approvals"))
    selected_approvals = {a.source.path for a in index.approvals if _selected(a.source.path, chosen)}
    approval_keys, missing_key = _approval_keys(index)
    schema_digest = options.schema.digest if options.schema is not None else None
    use_cache = cache is not None and not options.keep_render
    findings = [f for f in index.findings if f.file in selected_approvals]
    vins: list[tuple[str, int, int, str]] = []
    run = CheckRun(findings, 0, len(selected_approvals))
    to_check: list[tuple[str, str]] = []
    selected_files: set[str] = set()

    def key_of(record_digest: str, number: str | None) -> str:
        return result_key(record_digest, approval_keys.get(number or "", missing_key), schema_digest)

    def accept(result: RecordResult) -> None:
        summary = result.summary
        if summary.vin is not None:
            vins.append((summary.vin, summary.vin_line, summary.vin_column, result.relative))
        run.findings.extend(summary.findings)
        run.records += 1
        if sink is not None:
            sink(result)

    for path, relative in list_yaml(repository.root, "records"):
        data: bytes | None = None
        record_digest = None
        try:
            status = os.stat(path)
            if cache is not None:
                record_digest = cache.file_digest(relative, status)
            if record_digest is None:
                with open(path, "rb") as handle:
                    data = handle.read()
                record_digest = digest(data)
                if cache is not None:
                    cache.remember_file(relative, status, record_digest)
        except OSError:
            selected_files.add(relative)
            to_check.append((path, relative))  # the worker reports the read error
            continue
        reference = cache.reference(record_digest) if cache is not None else None
        record = None

        def parsed() -> Record:
            nonlocal data, record
            if record is None:
                if data is None:
                    with open(path, "rb") as handle:
                        data = handle.read()
                record = parse_record(data, Source(relative), record_digest)
            return record

        wanted = _selected(relative, chosen)
        if not wanted and selected_approvals:
            # Records of a selected approval file are selected too.
            reference_approval = parsed().approval if reference is None else None
            number = reference[0] if reference is not None else (
                reference_approval.text if reference_approval is not None else None)
            approval = index.by_number.get(number or "")
            wanted = approval is not None and approval.source.path in selected_approvals
        if wanted:
            selected_files.add(relative)
            cached = (cache.lookup(key_of(record_digest, reference[0]))
                      if use_cache and reference is not None else None)  # type: ignore[union-attr]
            if cached is not None:
                accept(RecordResult(relative, record_digest, cached))
            else:
                to_check.append((path, relative))
            continue
        # Records outside the selection still count for duplicate VINs.
        if reference is not None:
            if reference[1] is not None:
                vins.append((reference[1], reference[2], reference[3], relative))
            continue
        vin = parsed().vin
        if vin is not None:
            vins.append((vin.text, vin.line, vin.column, relative))

    if to_check and options.schema is not None:
        options.schema.compile()  # once, before worker processes fork
    _WORKER_STATE = (index, options.schema, options.version_datetime, options.keep_render)
    try:
        for result in _check_all(to_check, options.jobs):
            accept(result)
            if cache is not None and result.digest:
                cache.store(key_of(result.digest, result.summary.approval), result.digest, result.summary)
    finally:
        _WORKER_STATE = None

    run.findings.extend(f for f in duplicate_vins(vins) if f.file in selected_files)
    run.findings = merge_duplicates(run.findings)
    if cache is not None:
        run.cache_hits = cache.hits
        cache.save()
    log.info("checked %d records (%d from the cache)", run.records, run.cache_hits)
    return run
