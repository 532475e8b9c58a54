"""`ecoc check --base REF`: check what a change touches, and compare readiness with the base.

The records to check are the record files the change touches, and every record of an approval
file it touches. A change to the rules, the waivers or ecoc.yaml can concern any record, so it
checks them all. The same selection is checked in a copy of the base taken from git, and each
record's state and findings are compared, ignoring line numbers, which move with every edit.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ecoc import gitinfo
from ecoc.config import Repository, open_repository
from ecoc.errors import EcocError
from ecoc.files import CONFIG_NAME
from ecoc.findings import Finding
from ecoc.formats import CheckedRecord, RecordChange, Report, affecting, state_of
from ecoc.runner import CheckRun, RunOptions, run_check

log = logging.getLogger(__name__)

# Folders and files whose change can concern every record.
_EVERYTHING = ("rules/", CONFIG_NAME)
_VIN_LINE = re.compile(rb"^vin:[ \t]*[\"']?([A-Za-z0-9]+)", re.MULTILINE)
_NUMBER_LINE = re.compile(rb"^[ \t]*TypeApprovalNumber:[ \t]*[\"']?([^\"'\s#]+)", re.MULTILINE)


@dataclass(frozen=True)
class Scope:
    """The files a change touches, and whether the change can concern every record."""

    base: str
    commit: str
    changed: tuple[str, ...]
    everything: bool
    records: tuple[str, ...]
    approvals: tuple[str, ...]


def scope_of(repository: Repository, base: str) -> Scope:
    commit = gitinfo.resolve_commit(repository.root, base)
    changed = tuple(gitinfo.changed_files(repository.root, commit))
    everything = any(path == CONFIG_NAME or path.startswith(_EVERYTHING) for path in changed)
    records = tuple(p for p in changed if p.startswith("records/") and p.endswith((".yaml", ".yml")))
    approvals = tuple(p for p in changed if p.startswith("approvals/") and p.endswith((".yaml", ".yml")))
    return Scope(base, commit, changed, everything, records, approvals)


def _needles(texts: Iterable[bytes | None], pattern: re.Pattern[bytes]) -> set[str]:
    found: set[str] = set()
    for text in texts:
        if text:
            found.update(match.decode("utf-8", "replace") for match in pattern.findall(text))
    return found


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].rsplit(".", 1)[0].split("-", 1)[0]


def related_records(repository: Repository, scope: Scope, at: str | None) -> set[str]:
    """Record files, in the working tree (`at` None) or at a commit, that a changed file may concern.

    They are the changed records themselves, the records that hold the VIN of a changed record
    (for duplicate VINs), and the records that name the approval number of a changed approval.
    A text search finds them; the check then reads each one properly.
    """
    root = repository.root
    paths = [*scope.records, *scope.approvals]
    head = {path: gitinfo.read_working(root, path) for path in paths}
    base = gitinfo.read_at(root, scope.commit, paths)
    vins = _needles((*(head[p] for p in scope.records), *(base.get(p) for p in scope.records)), _VIN_LINE)
    vins |= {_stem(path) for path in scope.records}
    numbers = _needles((*(head[p] for p in scope.approvals), *(base.get(p) for p in scope.approvals)), _NUMBER_LINE)
    found = set(gitinfo.grep_files(root, at, sorted(vins | numbers), "records")) if vins | numbers else set()
    present = gitinfo.files_at(root, at, "records") if at is not None else None
    for path in scope.records:
        if present is None or path in present:
            found.add(path)
    return {path for path in found if path.endswith((".yaml", ".yml"))}


@dataclass
class Comparison:
    head: CheckRun
    base: CheckRun | None
    changes: list[RecordChange]
    # Why the base could not be checked, when it could not.
    base_problem: str | None = None


def _finding_key(finding: Finding) -> tuple[object, ...]:
    return (finding.rule, finding.severity, finding.message, finding.file, finding.path, finding.waiver is None)


def compare(head: CheckRun, base: CheckRun | None) -> list[RecordChange]:
    """Return the records whose state or findings differ between the base run and the head run."""
    runs = {"head": head, "base": base}
    grouped: dict[str, dict[str, list[Finding]]] = {}
    checked: dict[str, dict[str, str | None]] = {}
    for name, run in runs.items():
        if run is None:
            grouped[name], checked[name] = {}, {}
            continue
        records = [CheckedRecord(file, vin) for file, vin in run.checked]
        grouped[name], _ = affecting(Report(run.findings, {}, records))
        checked[name] = dict(run.checked)
    changes = []
    for file in sorted(set(checked["head"]) | set(checked["base"])):
        findings = {name: grouped[name].get(file, []) for name in runs}
        before = state_of(findings["base"]) if file in checked["base"] else "absent"
        after = state_of(findings["head"]) if file in checked["head"] else "absent"
        counts = {name: Counter(_finding_key(f) for f in findings[name]) for name in runs}
        added = _only_in(findings["head"], counts["head"] - counts["base"])
        resolved = _only_in(findings["base"], counts["base"] - counts["head"])
        if before == after and not added and not resolved:
            continue
        vin = checked["head"].get(file) or checked["base"].get(file)
        changes.append(RecordChange(file, vin, before, after, tuple(added), tuple(resolved)))
    return changes


def _only_in(findings: Sequence[Finding], surplus: Counter[tuple[object, ...]]) -> list[Finding]:
    left = Counter(surplus)
    kept = []
    for finding in findings:
        key = _finding_key(finding)
        if left[key] > 0:
            left[key] -= 1
            kept.append(finding)
    return kept


def check_against_base(repository: Repository, scope: Scope, options: RunOptions) -> Comparison:
    """Check the selection of `scope` here and in the base, and compare the two."""
    if scope.everything:
        head = run_check(repository, options)
    else:
        head = run_check(
            repository, _restricted(repository.root, scope, options, related_records(repository, scope, None))
        )
    with tempfile.TemporaryDirectory(prefix="ecoc-base-") as folder:
        try:
            base = _check_base(repository, scope, options, Path(folder))
        except EcocError as exc:
            problem = f"the base {scope.base} cannot be checked: {exc.message}"
            log.warning("%s", problem)
            return Comparison(head, None, compare(head, None), problem)
    return Comparison(head, base, compare(head, base))


def _restricted(root: Path, scope: Scope, options: RunOptions, files: set[str]) -> RunOptions:
    """Check the changed approvals and the related records, and read no other record file."""
    selection = [root / path for path in (*scope.approvals, *sorted(files)) if (root / path).exists()]
    # No selection at all would mean every record, while a path without records selects nothing.
    return replace(options, selection=selection or [root / "records" / ".none"], files=frozenset(files))


def _check_base(repository: Repository, scope: Scope, options: RunOptions, copy: Path) -> CheckRun:
    wanted = [CONFIG_NAME, "approvals", "rules"]
    if scope.everything:
        gitinfo.export(repository.root, scope.commit, [*wanted, "records"], [], copy)
        return run_check(open_repository(copy, explicit=True), options)
    files = related_records(repository, scope, scope.commit)
    gitinfo.export(repository.root, scope.commit, wanted, sorted(files), copy)
    return run_check(open_repository(copy, explicit=True), _restricted(copy, scope, options, files))
