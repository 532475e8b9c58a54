"""`ecoc check --base REF`: check what a change touches, and compare readiness with the base.

The records to check are the record files the change touches, every record of an approval file
it touches, and the records that the VIN patterns of changed waivers name. A change to a rule
file or to ecoc.yaml can concern any record, so it checks them all. The same selection is
checked in a copy of the base taken from git, and each record's state and findings are
compared, ignoring line numbers, which move with every edit.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ecoc import gitinfo
from ecoc.config import Repository, open_repository
from ecoc.errors import EcocError
from ecoc.files import CONFIG_NAME, WAIVER_FILES, YAML_SUFFIXES
from ecoc.findings import Finding
from ecoc.formats import CheckedRecord, RecordChange, Report, affecting, state_of
from ecoc.model.nodes import to_plain
from ecoc.runner import CheckRun, RecordResult, RunOptions, run_check
from ecoc.yamlload import Source, load_yaml

log = logging.getLogger(__name__)

Sink = Callable[[RecordResult], None]

# Folders and files whose change can concern every record.
_EVERYTHING = ("rules/", CONFIG_NAME)
_VIN_LINE = re.compile(rb"^vin:[ \t]*[\"']?([A-Za-z0-9]+)", re.MULTILINE)
_NUMBER_LINE = re.compile(rb"^[ \t]*TypeApprovalNumber:[ \t]*[\"']?([^\"'\s#]+)", re.MULTILINE)


@dataclass(frozen=True)
class Scope:
    """The files a change touches, and whether the change can concern every record."""

    base: str
    commit: str
    # Changed files with git's status letter: A (added), D (deleted), M (modified), T (type changed).
    changed: dict[str, str]
    everything: bool
    records: tuple[str, ...]
    approvals: tuple[str, ...]
    # The VINs of the changed records and the approval numbers of the changed approvals, on both sides.
    needles: tuple[str, ...]
    # When only waivers changed: the VIN patterns of the waivers that differ.
    waived: tuple[str, ...] = ()


def scope_of(repository: Repository, base: str) -> Scope:
    root = repository.root
    commit = gitinfo.resolve_commit(root, base)
    changed = gitinfo.changed_files(root, commit)
    everything = any(path == CONFIG_NAME or path.startswith(_EVERYTHING) for path in changed)
    waived: tuple[str, ...] = ()
    waiver_files = [p for p in changed if p.startswith("rules/") and p.rsplit("/", 1)[-1] in WAIVER_FILES]
    if everything and CONFIG_NAME not in changed and len(waiver_files) == sum(p.startswith("rules/") for p in changed):
        # Only waivers changed: they concern the records their VIN patterns name.
        patterns = _changed_waiver_patterns(root, commit, waiver_files, changed)
        if patterns is not None:
            everything, waived = False, patterns
    records = tuple(p for p in changed if p.startswith("records/") and p.endswith(YAML_SUFFIXES))
    approvals = tuple(p for p in changed if p.startswith("approvals/") and p.endswith(YAML_SUFFIXES))
    before = gitinfo.read_at(root, commit, [p for p in (*records, *approvals) if changed[p] != "A"])
    now = {p: gitinfo.read_working(root, p) for p in (*records, *approvals)}
    vins = _needles([*(now[p] for p in records), *(before.get(p) for p in records)], _VIN_LINE)
    vins |= {_stem(path) for path in records}
    numbers = _needles([*(now[p] for p in approvals), *(before.get(p) for p in approvals)], _NUMBER_LINE)
    return Scope(base, commit, changed, everything, records, approvals, tuple(sorted(vins | numbers)), waived)


def _waiver_entries(text: bytes | None, source: str) -> list[str] | None:
    """The waivers of one file as comparable text, or None when the file cannot be read as waivers."""
    if text is None:
        return []
    node, findings = load_yaml(text, Source(source))
    if any(f.severity.blocking for f in findings):
        return None
    document = to_plain(node) if node is not None else {}
    entries = document.get("waivers", []) if isinstance(document, dict) else None
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        return None
    return [json.dumps(entry, sort_keys=True) for entry in entries]


def _changed_waiver_patterns(
    root: Path, commit: str, files: list[str], changed: dict[str, str]
) -> tuple[str, ...] | None:
    """The VIN patterns of the waivers that differ between the base and here, or None if unreadable."""
    before = gitinfo.read_at(root, commit, [path for path in files if changed[path] != "A"])
    patterns: set[str] = set()
    for path in files:
        old = _waiver_entries(before.get(path), path)
        new = _waiver_entries(gitinfo.read_working(root, path), path)
        if old is None or new is None:
            return None
        for entry in set(old) ^ set(new):
            records = json.loads(entry).get("records")
            if not isinstance(records, list) or not all(isinstance(item, str) for item in records):
                return None
            patterns.update(records)
    return tuple(sorted(patterns))


def _vin_line(pattern: str) -> str | None:
    """A POSIX extended regular expression for the `vin:` line of a record whose VIN matches a shell pattern."""
    if not re.fullmatch(r"[A-Z0-9*?\[\]!-]+", pattern):
        return None
    translated = ""
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char == "*":
            translated += "[A-Z0-9]*"
        elif char == "?":
            translated += "[A-Z0-9]"
        elif char == "[":
            end = pattern.find("]", position + 1)
            if end < 0:
                return None
            inside = pattern[position + 1 : end]
            translated += "[" + ("^" + inside[1:] if inside.startswith("!") else inside) + "]"
            position = end
        else:
            translated += char
        position += 1
    return f"^vin:[[:space:]]*[\"']?{translated}[\"']?[[:space:]]*(#.*)?$"


def _needles(texts: Iterable[bytes | None], pattern: re.Pattern[bytes]) -> set[str]:
    found: set[str] = set()
    for text in texts:
        if text:
            found.update(match.decode("utf-8", "replace") for match in pattern.findall(text))
    return found


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].rsplit(".", 1)[0].split("-", 1)[0]


def related_records(repository: Repository, scope: Scope) -> set[str]:
    """Record files in the working tree that a changed file may concern.

    They are the changed records themselves, the records that contain the VIN of a changed record
    (for duplicate VINs), and the records that name the approval number of a changed approval.
    A text search finds them, and the check then reads each one properly.
    """
    found = set(gitinfo.grep_files(repository.root, None, list(scope.needles), "records")) if scope.needles else set()
    lines = [_vin_line(pattern) for pattern in scope.waived]
    if lines:
        found.update(
            gitinfo.grep_files(repository.root, None, [line for line in lines if line], "records", extended=True)
        )
    found.update(path for path in scope.records if scope.changed[path] != "D")
    return {path for path in found if path.endswith(YAML_SUFFIXES)}


def related_at_base(scope: Scope, related: set[str]) -> set[str]:
    """The same record files as they were at the base.

    A file the change did not touch is the same on both sides, and the needles cover the VINs and
    numbers of both sides, so only the files the change added or deleted differ.
    """
    kept = {path for path in related if scope.changed.get(path) != "A"}
    return kept | {path for path in scope.records if scope.changed[path] != "A"}


@dataclass
class Comparison:
    head: CheckRun
    base: CheckRun | None
    changes: list[RecordChange]
    # Findings about no record that were added or resolved (the file and states stay empty).
    repository: RecordChange | None = None
    # Why the base could not be checked, when it could not.
    base_problem: str | None = None


def _finding_key(finding: Finding) -> tuple[object, ...]:
    return (finding.rule, finding.severity, finding.message, finding.file, finding.path, finding.waiver is None)


def compare(head: CheckRun, base: CheckRun | None) -> tuple[list[RecordChange], RecordChange | None]:
    """Return the records whose state or findings differ between the base run and the head run.

    The second value holds the findings about no record (rule files, waivers) that were added or
    resolved, or None when there are none. Such a finding that blocks blocks every record.
    """
    runs = {"head": head, "base": base}
    grouped: dict[str, dict[str, list[Finding]]] = {}
    general: dict[str, list[Finding]] = {}
    checked: dict[str, dict[str, str | None]] = {}
    for name, run in runs.items():
        if run is None:
            grouped[name], general[name], checked[name] = {}, [], {}
            continue
        records = [CheckedRecord(file, vin) for file, vin in run.checked]
        grouped[name], general[name] = affecting(Report(run.findings, {}, records))
        checked[name] = dict(run.checked)
    everywhere = {name: [f for f in general[name] if f.blocking] for name in runs}
    changes = []
    for file in sorted(set(checked["head"]) | set(checked["base"])):
        findings = {name: grouped[name].get(file, []) for name in runs}
        before = state_of([*findings["base"], *everywhere["base"]]) if file in checked["base"] else "absent"
        after = state_of([*findings["head"], *everywhere["head"]]) if file in checked["head"] else "absent"
        counts = {name: Counter(_finding_key(f) for f in findings[name]) for name in runs}
        added = _only_in(findings["head"], counts["head"] - counts["base"])
        resolved = _only_in(findings["base"], counts["base"] - counts["head"])
        if before == after and not added and not resolved:
            continue
        vin = checked["head"].get(file) or checked["base"].get(file)
        changes.append(RecordChange(file, vin, before, after, tuple(added), tuple(resolved)))
    counts = {name: Counter(_finding_key(f) for f in general[name]) for name in runs}
    added = _only_in(general["head"], counts["head"] - counts["base"])
    resolved = _only_in(general["base"], counts["base"] - counts["head"])
    repository = RecordChange("", None, "", "", tuple(added), tuple(resolved)) if added or resolved else None
    return changes, repository


def _only_in(findings: Sequence[Finding], surplus: Counter[tuple[object, ...]]) -> list[Finding]:
    left = Counter(surplus)
    kept = []
    for finding in findings:
        key = _finding_key(finding)
        if left[key] > 0:
            left[key] -= 1
            kept.append(finding)
    return kept


def check_against_base(
    repository: Repository, scope: Scope, options: RunOptions, sinks: tuple[Sink | None, Sink | None] = (None, None)
) -> Comparison:
    """Check the selection of `scope` here and in the base, and compare the two.

    `sinks` receive each record's result here and in the base, as `run_check` gives them.
    """
    related = set() if scope.everything else related_records(repository, scope)
    here, there = sinks
    if scope.everything:
        head = run_check(repository, options, sink=here)
    else:
        head = run_check(repository, _restricted(repository.root, scope, options, related), sink=here)
    with tempfile.TemporaryDirectory(prefix="ecoc-base-") as folder:
        try:
            base_options = options if scope.everything else _same_rules(options, head)
            files = related_at_base(scope, related)
            base = _check_base(repository, scope, base_options, files, Path(folder), there)
        except EcocError as exc:
            problem = f"the base {scope.base} cannot be checked: {exc.message}"
            log.warning("%s", problem)
            return Comparison(head, None, *compare(head, None), problem)
    return Comparison(head, base, *compare(head, base))


def _restricted(root: Path, scope: Scope, options: RunOptions, files: set[str]) -> RunOptions:
    """Check the changed approvals and the related records, and read no other record file."""
    selection = [root / path for path in (*scope.approvals, *sorted(files)) if (root / path).exists()]
    # No selection at all would mean every record, while a path without records selects nothing.
    return replace(options, selection=selection or [root / "records" / ".none"], files=frozenset(files))


def _check_base(
    repository: Repository, scope: Scope, options: RunOptions, files: set[str], copy: Path, sink: Sink | None
) -> CheckRun:
    wanted = [CONFIG_NAME, "approvals", "rules"]
    if scope.commit == gitinfo.EMPTY_TREE:
        return CheckRun([], 0, 0)
    if scope.everything:
        gitinfo.export(repository.root, scope.commit, [*wanted, "records"], [], copy)
        return run_check(open_repository(copy, explicit=True), options, sink=sink)
    gitinfo.export(repository.root, scope.commit, wanted, sorted(files), copy)
    return run_check(open_repository(copy, explicit=True), _restricted(copy, scope, options, files), sink=sink)


def _same_rules(options: RunOptions, head: CheckRun) -> RunOptions:
    """The options for the base run, reusing the head's rules: the change left rules/ alone."""
    return replace(options, catalogue=head.catalogue)
