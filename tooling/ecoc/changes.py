"""`ecoc check --base REF`: check what a change touches, and compare readiness with the base.

`ecoc.scope` finds the records a change touches and copies the base's files out of git. The same
selection is checked here and in that copy, and each record's state and findings are compared,
ignoring line numbers, which move with every edit.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ecoc import gitinfo
from ecoc.config import Repository, open_repository
from ecoc.errors import EcocError
from ecoc.files import CONFIG_NAME
from ecoc.findings import Finding
from ecoc.formats import CheckedRecord, RecordChange, Report, ValueChange, affecting, state_of
from ecoc.rules.builtin import BUILTIN_RULES
from ecoc.rules.catalogue import load_catalogue
from ecoc.runner import CheckRun, RecordResult, RunOptions, run_check
from ecoc.scope import BaseCopy, Scope, related_at_base

log = logging.getLogger(__name__)

Sink = Callable[[RecordResult], None]


@dataclass
class Comparison:
    head: CheckRun
    base: CheckRun | None
    changes: list[RecordChange]
    # Findings about no record that were added or resolved (the file and states stay empty).
    repository: RecordChange | None = None
    # Why the base could not be checked, when it could not.
    base_problem: str | None = None
    # The values that changed in the certificates of the first `values_from` rewritten records.
    values: list[ValueChange] = field(default_factory=list)
    values_from: int = 0


# A list index in a YAML path or message, as in waivers[1] or ColourTable[2].
_INDEX = re.compile(r"\[[0-9]+\]")


def _finding_key(finding: Finding) -> tuple[object, ...]:
    """Identify a finding across the two sides, apart from its line and its row numbers.

    A row inserted above a finding moves it to the next index, as an inserted line moves it to
    the next line, so neither makes it another finding. The count of equal keys still tells two
    findings of one kind apart.
    """
    message = _INDEX.sub("[]", finding.message)
    path = _INDEX.sub("[]", finding.path) if finding.path else finding.path
    return (finding.rule, finding.severity, message, finding.file, path, finding.waiver is None)


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
        if base is None:
            before = "unknown"  # the base could not be checked
        elif file in checked["base"]:
            before = state_of([*findings["base"], *everywhere["base"]])
        else:
            before = "absent"
        after = state_of([*findings["head"], *everywhere["head"]]) if file in checked["head"] else "absent"
        if any(f.rule == "rules.skipped" for f in findings["head"]):
            # The rules did not run here, so what they found at the base is not known to be resolved.
            findings["base"] = [f for f in findings["base"] if f.rule in BUILTIN_RULES]
        counts = {name: Counter(_finding_key(f) for f in findings[name]) for name in runs}
        added = _only_in(findings["head"], counts["head"] - counts["base"])
        resolved = _only_in(findings["base"], counts["base"] - counts["head"])
        rewritten = _rewritten(base.certificates.get(file), head.certificates.get(file)) if base is not None else None
        if before == after and not added and not resolved and not rewritten:
            continue
        vin = checked["head"].get(file) or checked["base"].get(file)
        changes.append(RecordChange(file, vin, before, after, tuple(added), tuple(resolved), None, rewritten))
    changes = _merge_renames(changes, head.certificates, base.certificates if base is not None else {})
    counts = {name: Counter(_finding_key(f) for f in general[name]) for name in runs}
    added = _only_in(general["head"], counts["head"] - counts["base"])
    resolved = _only_in(general["base"], counts["base"] - counts["head"])
    repository = RecordChange("", None, "", "", tuple(added), tuple(resolved)) if added or resolved else None
    return changes, repository


def _rewritten(before: str | None, after: str | None) -> bool | None:
    """Tell whether a record renders another certificate than at the base, or None when one side renders none."""
    return None if before is None or after is None else before != after


def _merge_renames(
    changes: list[RecordChange], here: Mapping[str, str | None], there: Mapping[str, str | None]
) -> list[RecordChange]:
    """Report a record whose file was moved or renamed as one change, under its new file.

    Its findings and certificates (`here` and `there` by record file) are compared apart from the
    file name, so a move alone changes nothing.
    """
    gone: dict[str, list[RecordChange]] = {}
    for change in changes:
        if change.vin and change.after == "absent" and change.before != "unknown":
            gone.setdefault(change.vin, []).append(change)
    merged: list[RecordChange] = []
    used: set[str] = set()
    for change in changes:
        old = gone.get(change.vin or "", [])
        if change.before != "absent" or len(old) != 1:
            merged.append(change)
            continue
        previous = old[0]
        used.add(previous.file)

        def key(finding: Finding) -> tuple[object, ...]:
            return _finding_key(finding)[:3] + _finding_key(finding)[4:]

        now, before = Counter(key(f) for f in change.added), Counter(key(f) for f in previous.resolved)
        added = _only_in(change.added, now - before, key)
        resolved = _only_in(previous.resolved, before - now, key)
        rewritten = _rewritten(there.get(previous.file), here.get(change.file))
        if previous.before == change.after and not added and not resolved and not rewritten:
            continue
        merged.append(
            RecordChange(
                change.file,
                change.vin,
                previous.before,
                change.after,
                tuple(added),
                tuple(resolved),
                previous.file,
                rewritten,
            )
        )
    return [change for change in merged if change.file not in used]


def _only_in(
    findings: Sequence[Finding],
    surplus: Counter[tuple[object, ...]],
    identify: Callable[[Finding], tuple[object, ...]] | None = None,
) -> list[Finding]:
    left = Counter(surplus)
    kept = []
    for finding in findings:
        key = (identify or _finding_key)(finding)
        if left[key] > 0:
            left[key] -= 1
            kept.append(finding)
    return kept


# The records whose certificates are compared value by value, so that a report can name the
# values a change sets. The same edit of an approval gives every record of it the same changes.
VALUE_SAMPLE = 20


def check_against_base(
    repository: Repository,
    copy: BaseCopy,
    options: RunOptions,
    sinks: tuple[Sink | None, Sink | None] = (None, None),
    values: bool = False,
) -> Comparison:
    """Check the selection of the copy's scope here and in the base copy, and compare the two.

    `sinks` receive each record's result here and in the base, as `run_check` gives them. With
    `values`, the certificates of up to VALUE_SAMPLE records that the change rewrites are also
    compared value by value. The rules load here while git, on the copy's thread, searches the
    records and writes the base's files. git runs as its own process, so the two overlap.
    """
    here, there = sinks
    scope = copy.scope()
    folder = copy.folder
    if options.rules and options.catalogue is None:
        # The full check and `ecoc rules test` judge rule files that the change leaves alone, so
        # here they are only read.
        options = replace(options, catalogue=load_catalogue(repository.root, validate=scope.rules_changed))
    related, problem = copy.prepared()
    if scope.everything:
        head = run_check(repository, options, sink=here)
    else:
        head = run_check(repository, _restricted(repository.root, scope, options, related), sink=here)
    if problem is not None:
        log.warning("%s", problem)
        return Comparison(head, None, *compare(head, None), problem)
    try:
        # The base runs with its own rules when the change touched rules/, else with these, and
        # then takes over the approvals and rule results of this run where its files are the same.
        base_options = replace(options, catalogue=None) if scope.rules_changed else replace(options, reuse=head)
        base = _check_base(scope, base_options, related_at_base(scope, related), folder, there)
    except EcocError as exc:
        # The copy is a temporary folder: name its files as git does, as REF:path.
        message = exc.message.replace(f"{folder.resolve()}/", f"{scope.base}:").replace(f"{folder}/", f"{scope.base}:")
        message = message.replace(str(folder.resolve()), scope.base).replace(str(folder), scope.base)
        problem = f"the base {scope.base} cannot be checked: {message}"
        log.warning("%s", problem)
        return Comparison(head, None, *compare(head, None), problem)
    if not scope.everything and _blocking_everywhere(head) != _blocking_everywhere(base):
        # A finding that blocks every record came or went, as with an expired waiver or a broken
        # rule file. Every record's readiness can then change, so every record is checked.
        log.info("the change adds or resolves a finding that blocks every record, so every record is checked")
        with BaseCopy(repository.root, scope.base, replace(scope, everything=True)) as whole:
            return check_against_base(repository, whole, options, sinks, values)
    comparison = Comparison(head, base, *compare(head, base))
    if values:
        renders = replace(options, reuse=head)
        comparison.values, comparison.values_from = _value_changes(repository, renders, comparison.changes, folder)
    return comparison


def _value_changes(
    repository: Repository, options: RunOptions, changes: Sequence[RecordChange], copy: Path
) -> tuple[list[ValueChange], int]:
    """Render the first records whose certificate changed, here and in the base copy, and compare their values."""
    from ecoc.preview import value_changes

    sample = [change for change in changes if change.certificate_changed is True][:VALUE_SAMPLE]
    if not sample:
        return [], 0
    renders: list[dict[str, bytes]] = [{}, {}]
    pairs = [(change.file, change.renamed_from or change.file) for change in sample]
    # Only the renders are needed, so the rules do not run.
    quick = replace(options, keep_render=True, jobs=1, rules=False, catalogue=None, complete_patterns=frozenset())
    try:
        for side, (root, files) in enumerate(
            ((repository.root, [here for here, _ in pairs]), (copy, [there for _, there in pairs]))
        ):
            found = renders[side]

            def keep(result: RecordResult, found: dict[str, bytes] = found) -> None:
                if result.rendered is not None:
                    found[result.relative] = result.rendered

            selected = replace(quick, selection=[root / file for file in files], files=frozenset(files))
            run_check(repository if side == 0 else open_repository(copy, explicit=True), selected, sink=keep)
    except EcocError as exc:
        log.warning("comparing the changed certificate values failed, so the report leaves them out: %s", exc.message)
        return [], 0
    compared = [
        (renders[0][here], renders[1][there]) for here, there in pairs if here in renders[0] and there in renders[1]
    ]
    return value_changes(compared), len(compared)


def _blocking_everywhere(run: CheckRun) -> Counter[tuple[object, ...]]:
    """Count the blocking findings of a run that concern no checked record, since they block every record."""
    records = [CheckedRecord(file, vin) for file, vin in run.checked]
    _, general = affecting(Report(run.findings, {}, records))
    return Counter(_finding_key(finding) for finding in general if finding.blocking)


def _restricted(root: Path, scope: Scope, options: RunOptions, files: set[str]) -> RunOptions:
    """Check the changed approvals and the related records, and read no other record file."""
    selection = [root / path for path in (*scope.approvals, *sorted(files)) if (root / path).exists()]
    # No selection at all would mean every record, while a path without records selects nothing.
    return replace(
        options,
        selection=selection or [root / "records" / ".none"],
        files=frozenset(files),
        complete_patterns=frozenset(scope.waived),
    )


def _check_base(scope: Scope, options: RunOptions, files: set[str], copy: Path, sink: Sink | None) -> CheckRun:
    """Check the base copy that `BaseCopy` wrote."""
    if scope.commit == gitinfo.EMPTY_TREE:
        return CheckRun([], 0, 0)
    if not (copy / CONFIG_NAME).is_file():
        # Without ecoc.yaml the base was no compliance repository yet, so every record is new.
        log.info("the base %s has no %s, so every record counts as new", scope.base, CONFIG_NAME)
        return CheckRun([], 0, 0)
    if scope.everything:
        return run_check(open_repository(copy, explicit=True), options, sink=sink)
    return run_check(open_repository(copy, explicit=True), _restricted(copy, scope, options, files), sink=sink)
