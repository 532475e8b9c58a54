"""The files a change since a base commit touches, and a copy of the base's files, found with git alone.

The records to check are the record files the change touches, every record of an approval file
it touches, and the records that the VIN patterns of changed waivers name. A changed rule
concerns the records of the approvals its selectors can match, judged from the approval files'
text, and the records that set a selected element themselves, or every record when it has no
selector. A change to ecoc.yaml concerns every record unless it touches only settings that no
check reads (owners, release, main_branch).

The module imports neither the model nor the rules at the top: `BaseCopy` starts git on a
second thread first, and git works while the caller imports them and loads the rules.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from ecoc import gitinfo
from ecoc.errors import EcocError
from ecoc.fileio import work_folder
from ecoc.files import CONFIG_NAME, EVIDENCE_FOLDER, WAIVER_FILES, YAML_SUFFIXES

if TYPE_CHECKING:
    from ecoc.rules.catalogue import Catalogue, Rule
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


def scope_of(root: Path, base: str) -> Scope:
    """Find what changed between the commit `base` names and the working tree of `root`."""
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
    from ecoc.config import read_settings

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
    from ecoc.rules.catalogue import read_rules

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
    from ecoc.rules.catalogue import applies_to_approval

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
    from ecoc.model.nodes import to_plain
    from ecoc.yamlload import Source, load_yaml

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


def related_records(root: Path, scope: Scope) -> set[str]:
    """Record files in the working tree that a changed file may concern.

    They are the changed records themselves, the records that contain the VIN of a changed record
    (for duplicate VINs), and the records that name the approval number of a changed approval.
    A text search finds them, and the check then reads each one properly.
    """
    found = set(gitinfo.grep_files(root, None, list(scope.needles), "records")) if scope.needles else set()
    lines = [_vin_line(pattern) for pattern in scope.waived]
    if lines:
        found.update(gitinfo.grep_files(root, None, [line for line in lines if line], "records", extended=True))
    found.update(path for path in scope.records if scope.changed[path] != "D")
    return {path for path in found if path.endswith(YAML_SUFFIXES)}


def related_at_base(scope: Scope, related: set[str]) -> set[str]:
    """The same record files as they were at the base.

    A file the change did not touch is the same on both sides, and the needles cover the VINs and
    numbers of both sides, so only the files the change added or deleted differ.
    """
    kept = {path for path in related if scope.changed.get(path) != "A"}
    return kept | {path for path in scope.records if scope.changed[path] != "A"}


def _prepare(root: Path, scope: Scope, copy: Path) -> tuple[set[str], str | None]:
    """Find the related records, and write the base's files into `copy`.

    The second value is the reason the base cannot be checked, when git cannot provide it.
    """
    related = set() if scope.everything else related_records(root, scope)
    if scope.commit == gitinfo.EMPTY_TREE:
        return related, None
    wanted = [CONFIG_NAME, "approvals", "rules"]
    try:
        if scope.everything:
            gitinfo.export(root, scope.commit, [*wanted, "records", EVIDENCE_FOLDER], [], copy)
        else:
            files = sorted(related_at_base(scope, related))
            # The evidence of these vehicles decides their state at the base too (issued versions,
            # corrections, rejections); a record file is named after its VIN.
            evidence = sorted({f"{EVIDENCE_FOLDER}/{_stem(path)}" for path in files})
            gitinfo.export(root, scope.commit, [*wanted, *evidence], files, copy)
        named = _settings_files(copy)
        if named:
            gitinfo.export(root, scope.commit, [], named, copy)
    except EcocError as exc:
        return related, f"the base {scope.base} cannot be checked: {exc.message}"
    return related, None


def _settings_files(copy: Path) -> list[str]:
    """Return the files in the repository that the base's ecoc.yaml names and a check reads: the seal certificate."""
    from ecoc.config import open_repository

    try:
        cert = open_repository(copy, explicit=True).settings.signing.cert
    except EcocError:
        return []  # the check of the base reports the settings' problem
    if cert is None or Path(cert).is_absolute() or ".." in Path(cert).parts:
        return []
    return [Path(cert).as_posix()]


class BaseCopy:
    """The scope of a change and the base's files it needs, made by git on a second thread.

    `scope_of` runs first, then the search for related records and the export of the base's
    files into a temporary folder. The thread mostly waits for git, so the caller can import
    the model and load the rules meanwhile. Leaving the `with` block removes the folder.
    """

    def __init__(self, root: Path, base: str, scope: Scope | None = None) -> None:
        self.folder = work_folder("ecoc-base-")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecoc-base")
        self._scope: Future[Scope] = Future()
        if scope is None:
            self._scope = self._pool.submit(scope_of, root, base)
        else:
            self._scope.set_result(scope)
        # One worker runs the two in order, so the second finds the scope done.
        self._prepared = self._pool.submit(lambda: _prepare(root, self._scope.result(), self.folder))

    def scope(self) -> Scope:
        return self._scope.result()

    def prepared(self) -> tuple[set[str], str | None]:
        """Return the related records, and the reason the base cannot be checked when it cannot."""
        return self._prepared.result()

    def __enter__(self) -> BaseCopy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.folder, ignore_errors=True)
