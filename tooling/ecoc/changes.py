"""`ecoc check --base REF`: check what a change touches, and compare readiness with the base.

The records to check are the record files the change touches, every record of an approval file
it touches, and the records that the VIN patterns of changed waivers name. A changed rule
concerns the records of the approvals its selectors can match, judged from the approval files'
text, and the records that set a selected element themselves, or every record when it has no
selector. A change to ecoc.yaml concerns every record unless
it touches only settings that no check reads (owners, release, main_branch). The same selection
is checked in a copy of the base taken from git, and each record's state and findings are
compared, ignoring line numbers, which move with every edit.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from ecoc import gitinfo
from ecoc.config import Repository, open_repository, read_settings
from ecoc.errors import EcocError
from ecoc.evidence import EVIDENCE_FOLDER
from ecoc.files import CONFIG_NAME, WAIVER_FILES, YAML_SUFFIXES
from ecoc.findings import Finding
from ecoc.formats import CheckedRecord, RecordChange, Report, ValueChange, affecting, state_of
from ecoc.model.nodes import to_plain
from ecoc.rules.builtin import BUILTIN_RULES
from ecoc.rules.catalogue import Catalogue, Rule, applies_to_approval, load_catalogue, read_rules
from ecoc.runner import CheckRun, RecordResult, RunOptions, run_check
from ecoc.yamlload import Source, load_yaml

log = logging.getLogger(__name__)

Sink = Callable[[RecordResult], None]

# Settings of ecoc.yaml that no check reads: a change to them alone concerns no record.
_UNCHECKED_SETTINGS = frozenset({"owners", "release", "main_branch"})
# Keys of a rule left out when definitions are compared: examples and documentation change no finding.
_UNCHECKED_RULE_KEYS = {"examples", "doc", "source"}
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
    # The VIN patterns of the waivers that differ.
    waived: tuple[str, ...] = ()
    # Whether a rule file changed, so the base is checked with its own rules.
    rules_changed: bool = False


def scope_of(repository: Repository, base: str) -> Scope:
    root = repository.root
    commit = gitinfo.resolve_commit(root, base)
    changed = gitinfo.changed_files(root, commit)
    rule_files = [
        p for p in changed if p.startswith("rules/") and p.endswith(YAML_SUFFIXES) and _name(p) not in WAIVER_FILES
    ]
    waiver_files = [p for p in changed if p.startswith("rules/") and _name(p) in WAIVER_FILES]
    everything = CONFIG_NAME in changed and not _unchecked_settings_only(root, commit, changed)
    waived: tuple[str, ...] = ()
    if waiver_files and not everything:
        patterns = _changed_waiver_patterns(root, commit, waiver_files, changed)
        everything, waived = (True, ()) if patterns is None else (False, patterns)
    ruled: tuple[str, ...] = ()
    if rule_files and not everything:
        selected = _changed_rule_approvals(root, commit, rule_files, changed)
        everything, ruled = (True, ()) if selected is None else (False, selected)
    records = tuple(p for p in changed if p.startswith("records/") and p.endswith(YAML_SUFFIXES))
    approvals = tuple(p for p in changed if p.startswith("approvals/") and p.endswith(YAML_SUFFIXES))
    before = gitinfo.read_at(root, commit, [p for p in (*records, *approvals) if changed[p] != "A"])
    now = {p: gitinfo.read_working(root, p) for p in (*records, *approvals)}
    vins = _needles([*(now[p] for p in records), *(before.get(p) for p in records)], _VIN_LINE)
    vins |= {_stem(path) for path in records}
    numbers = _needles([*(now[p] for p in approvals), *(before.get(p) for p in approvals)], _NUMBER_LINE)
    needles = tuple(sorted(vins | numbers | set(ruled)))
    return Scope(base, commit, changed, everything, records, approvals, needles, waived, bool(rule_files))


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _unchecked_settings_only(root: Path, commit: str, changed: dict[str, str]) -> bool:
    """Return whether the change to ecoc.yaml touches only settings that no check reads."""
    if changed[CONFIG_NAME] != "M":
        return False
    before = gitinfo.read_at(root, commit, [CONFIG_NAME]).get(CONFIG_NAME)
    now = gitinfo.read_working(root, CONFIG_NAME)
    if before is None or now is None:
        return False
    try:
        old = read_settings(before, root).model_dump(mode="json")
        new = read_settings(now, root).model_dump(mode="json")
    except EcocError:
        return False
    differing = {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
    return differing <= _UNCHECKED_SETTINGS


def _definitions(catalogue: Catalogue) -> dict[str, Rule]:
    return {rule.id: rule for rule in catalogue.rules}


def _same_definition(old: Rule | None, new: Rule | None) -> bool:
    if old is None or new is None:
        return old is new
    return old.spec.model_dump(exclude=_UNCHECKED_RULE_KEYS) == new.spec.model_dump(exclude=_UNCHECKED_RULE_KEYS)


def _changed_rule_approvals(
    root: Path, commit: str, files: list[str], changed: dict[str, str]
) -> tuple[str, ...] | None:
    """Return what the rules changed in `files` can apply to, as needles for the record search.

    The needles are the approval numbers of the approvals the rules' selectors can match, and,
    for the selectors on values that a record can set itself (VehicleCategory,
    StageOfCompletion, EnergySource), that key, so that records setting it are found too. None
    means any record: a changed rule has no selector. A rule that moved to another file
    unchanged is no change.
    """
    before = _definitions(read_rules(gitinfo.read_at(root, commit, [p for p in files if changed[p] != "A"])))
    now_files = {path: data for path in files if (data := gitinfo.read_working(root, path)) is not None}
    now = _definitions(read_rules(now_files))
    rules = [
        rule
        for rule_id in sorted(before.keys() | now.keys())
        if not _same_definition(before.get(rule_id), now.get(rule_id))
        for rule in (before.get(rule_id), now.get(rule_id))
        if rule is not None
    ]
    if any(not _has_selector(rule) for rule in rules):
        return None
    if not rules:
        return ()
    texts = [
        gitinfo.read_working(root, path) for path in gitinfo.grep_files(root, None, ["TypeApprovalNumber"], "approvals")
    ]
    at_base = gitinfo.grep_files(root, commit, ["TypeApprovalNumber"], "approvals")
    texts += list(gitinfo.read_at(root, commit, at_base).values())
    by_number: dict[str, list[bytes]] = {}
    for text in texts:
        for number in _needles([text], _NUMBER_LINE):
            by_number.setdefault(number, []).append(text or b"")
    numbers = sorted(
        number for number, found in by_number.items() if any(_may_apply(rule, number, found) for rule in rules)
    )
    keys = sorted({f"{key}:" for rule in rules for kind, key in _VALUE_SELECTORS if getattr(rule.spec.applies, kind)})
    return (*numbers, *keys)


# Selectors on values of the certificate, and the element each one reads. A record can set these
# elements itself, so the approval file alone cannot rule a record out.
_VALUE_SELECTORS = (
    ("categories", "VehicleCategory"),
    ("stages", "StageOfCompletion"),
    ("energy_sources", "EnergySource"),
)


def _has_selector(rule: Rule) -> bool:
    selectors = rule.spec.applies
    return bool(
        selectors.approval_number
        or selectors.frameworks
        or selectors.categories
        or selectors.stages
        or selectors.energy_sources
    )


def _values(texts: list[bytes], key: str) -> set[str] | None:
    """Return every value that the files of an approval give `key`.

    None means the values cannot all be read from the text, as in a flow mapping, so that the
    approval must count as a match.
    """
    mentions = re.compile(rb"(?<![A-Za-z])" + key.encode() + rb"(?![A-Za-z])")
    written = re.compile(
        rb"(?<![A-Za-z])" + key.encode() + rb":[ \t]*[\"']?([A-Za-z0-9]+)[\"']?[ \t]*(?:#.*)?$", re.MULTILINE
    )
    found: set[str] = set()
    for text in texts:
        values = written.findall(text)
        if len(values) != len(mentions.findall(text)):
            return None
        found.update(value.decode() for value in values)
    return found


def _may_apply(rule: Rule, number: str, texts: list[bytes]) -> bool:
    """Return whether `rule` may apply to a record of the approval `number`, whose files are `texts`."""
    if not applies_to_approval(rule, number):
        return False
    selectors = rule.spec.applies
    if selectors.categories:
        categories = _values(texts, "VehicleCategory")
        if categories and not any(fnmatch.fnmatchcase(c, p) for c in categories for p in selectors.categories):
            return False
    if selectors.stages:
        stages = _values(texts, "StageOfCompletion")
        if stages and not stages & set(selectors.stages):
            return False
    if selectors.energy_sources:
        main, additional = _values(texts, "EnergySource"), _values(texts, "AdditionalEnergySource")
        sources = None if main is None or additional is None else main | additional
        if sources and not sources & set(selectors.energy_sources):
            return False
    return True


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
    scope: Scope,
    options: RunOptions,
    sinks: tuple[Sink | None, Sink | None] = (None, None),
    values: bool = False,
) -> Comparison:
    """Check the selection of `scope` here and in the base, and compare the two.

    `sinks` receive each record's result here and in the base, as `run_check` gives them. With
    `values`, the certificates of up to VALUE_SAMPLE records that the change rewrites are also
    compared value by value.
    git searches the records and writes the copy of the base on a second thread while the rules
    load on this one. git runs as its own process, so the two overlap.
    """
    here, there = sinks
    with tempfile.TemporaryDirectory(prefix="ecoc-base-") as folder, ThreadPoolExecutor(max_workers=1) as pool:
        copy = Path(folder)
        prepared = pool.submit(_prepare, repository, scope, copy)
        if options.rules and options.catalogue is None:
            options = replace(options, catalogue=load_catalogue(repository.root))
        related, problem = prepared.result()
        if scope.everything:
            head = run_check(repository, options, sink=here)
        else:
            head = run_check(repository, _restricted(repository.root, scope, options, related), sink=here)
        if problem is not None:
            log.warning("%s", problem)
            return Comparison(head, None, *compare(head, None), problem)
        try:
            # The base runs with its own rules when the change touched rules/, else with these.
            base_options = replace(options, catalogue=None) if scope.rules_changed else options
            base = _check_base(scope, base_options, related_at_base(scope, related), copy, there)
        except EcocError as exc:
            # The copy is a temporary folder: name its files as git does, as REF:path.
            message = exc.message.replace(f"{copy.resolve()}/", f"{scope.base}:").replace(f"{copy}/", f"{scope.base}:")
            message = message.replace(str(copy.resolve()), scope.base).replace(str(copy), scope.base)
            problem = f"the base {scope.base} cannot be checked: {message}"
            log.warning("%s", problem)
            return Comparison(head, None, *compare(head, None), problem)
        widen = not scope.everything and _blocking_everywhere(head) != _blocking_everywhere(base)
        comparison = Comparison(head, base, *compare(head, base))
        if values and not widen:
            # The base copy is still there to render from.
            comparison.values, comparison.values_from = _value_changes(repository, options, comparison.changes, copy)
    if widen:
        # A finding that blocks every record came or went, as with an expired waiver or a broken
        # rule file. Every record's readiness can then change, so every record is checked.
        log.info("the change adds or resolves a finding that blocks every record, so every record is checked")
        return check_against_base(repository, replace(scope, everything=True), options, sinks, values)
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


def _prepare(repository: Repository, scope: Scope, copy: Path) -> tuple[set[str], str | None]:
    """Find the related records, and write the base's files into `copy`.

    The second value is the reason the base cannot be checked, when git cannot provide it.
    """
    related = set() if scope.everything else related_records(repository, scope)
    if scope.commit == gitinfo.EMPTY_TREE:
        return related, None
    wanted = [CONFIG_NAME, "approvals", "rules"]
    try:
        if scope.everything:
            gitinfo.export(repository.root, scope.commit, [*wanted, "records", EVIDENCE_FOLDER], [], copy)
        else:
            files = sorted(related_at_base(scope, related))
            # The evidence of these vehicles decides their state at the base too (issued versions,
            # corrections, rejections); a record file is named after its VIN.
            evidence = sorted({f"{EVIDENCE_FOLDER}/{_stem(path)}" for path in files})
            gitinfo.export(repository.root, scope.commit, [*wanted, *evidence], files, copy)
        named = _settings_files(copy)
        if named:
            gitinfo.export(repository.root, scope.commit, [], named, copy)
    except EcocError as exc:
        return related, f"the base {scope.base} cannot be checked: {exc.message}"
    return related, None


def _settings_files(copy: Path) -> list[str]:
    """Return the files in the repository that the base's ecoc.yaml names and a check reads: the seal certificate."""
    try:
        cert = open_repository(copy, explicit=True).settings.signing.cert
    except EcocError:
        return []  # the check of the base reports the settings' problem
    if cert is None or Path(cert).is_absolute() or ".." in Path(cert).parts:
        return []
    return [Path(cert).as_posix()]


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
    """Check the base copy that `_prepare` wrote."""
    if scope.commit == gitinfo.EMPTY_TREE:
        return CheckRun([], 0, 0)
    if not (copy / CONFIG_NAME).is_file():
        # Without ecoc.yaml the base was no compliance repository yet, so every record is new.
        log.info("the base %s has no %s, so every record counts as new", scope.base, CONFIG_NAME)
        return CheckRun([], 0, 0)
    if scope.everything:
        return run_check(open_repository(copy, explicit=True), options, sink=sink)
    return run_check(open_repository(copy, explicit=True), _restricted(copy, scope, options, files), sink=sink)
