"""Findings for machines and reviewers: SARIF 2.1.0, JUnit XML, GitHub workflow commands, Markdown.

Each format takes the same `Report`: the findings of a check run, the records it checked and,
after `ecoc check --base`, what changed in each record's readiness since the base.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace

from ecoc import __version__
from ecoc.findings import Finding, Severity
from ecoc.report import MAX_LISTED_RECORDS, count_phrase, format_text, summary_line

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
GITHUB_COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}
# GitHub turns at most this many workflow commands of each kind in one step into annotations.
GITHUB_ANNOTATIONS_PER_KIND = 10
# VINs an annotation names when a finding affects many records; the log line names them all.
ANNOTATED_RECORDS = 10
# A pull-request comment may hold 65,536 characters; the rest is left for the cut note.
MARKDOWN_LIMIT = 65_000
MARKDOWN_MARKER = "<!-- ecoc-readiness-report -->"
# The artifact of the pr-readiness workflow that contains the previews, and their index page in it.
PREVIEW_ARTIFACT = "ecoc-report"
PREVIEW_INDEX = "preview/index.html"
# The note of the text, GitHub and Markdown reports when the check did not use the official IVI XSD.
NO_SCHEMA_NOTE = (
    "The official IVI XSD was not used, so ecoc checked against its built-in IVI 2.0 model only. "
    "Pass the path of the official IVI-2.0.xsd with --xsd, in ECOC_XSD, or as xsd.path in ecoc.yaml."
)


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """Rule metadata for reports: the title, what to do about a finding, and the legal source."""

    id: str
    title: str
    severity: Severity | None = None
    hint: str | None = None
    doc: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class CheckedRecord:
    file: str
    vin: str | None


@dataclass(frozen=True, slots=True)
class RecordChange:
    """The readiness change of one record between the base and this checkout.

    `before` and `after` are `blocked`, `ready` or `absent` (the record file does not exist there).
    """

    file: str
    vin: str | None
    before: str
    after: str
    added: tuple[Finding, ...] = ()
    resolved: tuple[Finding, ...] = ()
    # The record's file at the base, when the record was moved or renamed since.
    renamed_from: str | None = None
    # Whether the certificate the record renders differs from the one it rendered at the base,
    # which a change can do without changing the record's readiness or findings. None when the
    # record does not render on one of the two sides.
    certificate_changed: bool | None = None


@dataclass(frozen=True)
class ValueChange:
    """A certificate value that a change sets to another value, and the number of certificates it does so in."""

    item: str | None
    label: str
    # The values as the pages show them; None where the value is new or removed.
    before: str | None
    after: str | None
    records: int


@dataclass(frozen=True)
class ChangeCounts:
    """The vehicles a change made blocked, ready or removed, and the records whose certificate it changed."""

    newly_blocked: int
    newly_ready: int
    removed: int
    certificate_changed: int

    def phrase(self) -> str:
        """Say the counts, as in "1 newly blocked, 0 newly ready, 2 removed"."""
        text = f"{self.newly_blocked} newly blocked, {self.newly_ready} newly ready"
        text += f", {self.removed} removed" if self.removed else ""
        if self.certificate_changed:
            text += f", {count_phrase(self.certificate_changed, 'record')} with changed certificate content"
        return text


def change_counts(changes: Sequence[RecordChange]) -> ChangeCounts:
    """Count the vehicles that became blocked, ready or absent since the base, and the rewritten certificates.

    A vehicle is counted by its VIN, so a record file that was renamed or copied counts once,
    by its states in all of its files.
    """
    before: dict[str, set[str]] = {}
    after: dict[str, set[str]] = {}
    for change in changes:
        if change.before == "unknown":
            continue  # the base could not be checked, so nothing is new
        vehicle = change.vin or change.file
        before.setdefault(vehicle, set()).add(change.before)
        after.setdefault(vehicle, set()).add(change.after)
    blocked = sum(1 for vehicle in after if "blocked" in after[vehicle] and "blocked" not in before[vehicle])
    ready = sum(
        1
        for vehicle in after
        if "ready" in after[vehicle] and "blocked" not in after[vehicle] and "ready" not in before[vehicle]
    )
    removed = sum(1 for vehicle in after if after[vehicle] == {"absent"} and before[vehicle] != {"absent"})
    rewritten = sum(1 for change in changes if change.certificate_changed is True)
    return ChangeCounts(blocked, ready, removed, rewritten)


@dataclass
class Report:
    findings: Sequence[Finding]
    summary: Mapping[str, object]
    records: Sequence[CheckedRecord] = ()
    rules: Mapping[str, RuleInfo] = field(default_factory=dict)
    # Set by `ecoc check --base`: the base as the user named it, and the records whose readiness changed.
    base: str | None = None
    changes: Sequence[RecordChange] | None = None
    # Findings about no record (rule files, waivers) added or resolved since the base.
    repository_change: RecordChange | None = None
    # The values that differ between the certificates here and at the base, counted over the
    # first `values_from` records whose certificate changed.
    value_changes: Sequence[ValueChange] = ()
    values_from: int = 0
    # Lines each file changed since the base; GitHub annotations put findings there first.
    changed_lines: Mapping[str, frozenset[int]] | None = None
    # Files other than records that the change edits, with git's status letter: the approvals,
    # rules, waivers and settings whose change can alter the readiness of records it does not touch.
    changed_sources: Sequence[tuple[str, str]] = ()
    # Start of a link to a file at this commit, such as https://github.com/o/r/blob/<sha>/.
    link_base: str | None = None
    # Why the base could not be checked, when it could not.
    base_problem: str | None = None
    # Where the whole report can be found when a Markdown comment is cut, such as a run's artifacts.
    # After `ecoc check --base`, the Markdown comment points to the previews there too.
    full_report: str | None = None
    # Whether the check validated against the official IVI XSD. False means ecoc checked against
    # its built-in model only, and the text, GitHub and Markdown outputs then add NO_SCHEMA_NOTE.
    # None, the default, means the caller did not set it, and the outputs omit the note.
    official_schema: bool | None = None


def record_vins(report: Report) -> dict[str, str]:
    """Return the VIN of each record file, as read here or, after `ecoc check --base`, at the base."""
    vins = {change.file: change.vin for change in report.changes or () if change.vin is not None}
    vins.update({record.file: record.vin for record in report.records if record.vin is not None})
    return vins


def _attribute(finding: Finding, vins: Mapping[str, str]) -> Finding:
    if finding.records or finding.file is None or finding.file not in vins:
        return finding
    return replace(finding, records=(vins[finding.file],))


def attributed(report: Report) -> Report:
    """Return the report with the VIN on each finding about a record file that names no record.

    A record file that cannot be read, such as one with a YAML syntax error, yields findings
    without a VIN. They concern that file's record, whose VIN is the one read here or, when the
    file cannot be read here either, the one at the base.
    """
    vins = record_vins(report)
    changes = report.changes
    if changes is not None:
        changes = [
            replace(
                change,
                added=tuple(_attribute(f, vins) for f in change.added),
                resolved=tuple(_attribute(f, vins) for f in change.resolved),
            )
            for change in changes
        ]
    return dataclasses.replace(report, findings=[_attribute(f, vins) for f in report.findings], changes=changes)


def json_extra(report: Report) -> dict[str, object]:
    """Return the keys that JSON output adds to or replaces in the document of `format_json`.

    They are the findings, when a finding gets the VIN of its record file here, and after
    `ecoc check --base` the readiness changes.
    """
    named = attributed(report)
    extra: dict[str, object] = {}
    if report.official_schema is not None:
        # A saved report records whether the official XSD took part, as the text report does.
        extra["official_schema"] = report.official_schema
    if list(named.findings) != list(report.findings):
        extra["findings"] = [f.to_dict() for f in named.findings]
    if report.base is None:
        return extra
    repository = report.repository_change
    extra["base"] = {
        "ref": report.base,
        "problem": report.base_problem,
        "counts": dataclasses.asdict(change_counts(named.changes or ())),
        "values": [dataclasses.asdict(value) for value in _ordered_values(report.value_changes)],
        "values_from": report.values_from,
        "changes": [
            {
                "file": change.file,
                "renamed_from": change.renamed_from,
                "record": change.vin,
                "before": change.before,
                "after": change.after,
                "added": [f.to_dict() for f in change.added],
                "resolved": [f.to_dict() for f in change.resolved],
                "certificate_changed": change.certificate_changed,
            }
            for change in named.changes or ()
        ],
        "repository": {
            "added": [f.to_dict() for f in repository.added] if repository else [],
            "resolved": [f.to_dict() for f in repository.resolved] if repository else [],
        },
    }
    return extra


@dataclass(frozen=True, slots=True)
class FindingDiff:
    """The findings a change added and resolved, with each change of waiver as one pair.

    When a waiver starts or stops accepting a finding, the comparison with the base finds the
    waived finding on one side and the unwaived one on the other. Reports show such a pair as
    one finding whose waiver changed, instead of as an added and a resolved finding.
    """

    added: tuple[Finding, ...] = ()
    resolved: tuple[Finding, ...] = ()
    # Pairs of the finding here and the same finding at the base, with different waivers.
    rewaived: tuple[tuple[Finding, Finding], ...] = ()

    @classmethod
    def of(cls, change: RecordChange | None) -> FindingDiff:
        if change is None:
            return cls()
        waiting: dict[tuple[object, ...], list[int]] = {}
        for index, old in enumerate(change.resolved):
            waiting.setdefault(_waiver_free_key(old), []).append(index)
        added: list[Finding] = []
        pairs: list[tuple[Finding, Finding]] = []
        paired: set[int] = set()
        for new in change.added:
            candidates = waiting.get(_waiver_free_key(new), [])
            match = next((i for i in candidates if i not in paired and change.resolved[i].waiver != new.waiver), None)
            if match is None:
                added.append(new)
                continue
            paired.add(match)
            pairs.append((new, change.resolved[match]))
        resolved = tuple(old for index, old in enumerate(change.resolved) if index not in paired)
        return cls(tuple(added), resolved, tuple(pairs))

    def __bool__(self) -> bool:
        return bool(self.added or self.resolved or self.rewaived)

    def phrase(self, added_word: str = "added") -> str:
        """Count the changes, such as "1 added, 2 resolved, 1 now waived", or return "none"."""
        waived = sum(1 for new, _ in self.rewaived if new.waiver is not None)
        counts = (
            (len(self.added), added_word),
            (len(self.resolved), "resolved"),
            (waived, "now waived"),
            (len(self.rewaived) - waived, "no longer waived"),
        )
        return ", ".join(f"{count} {word}" for count, word in counts if count) or "none"


def _waiver_free_key(finding: Finding) -> tuple[object, ...]:
    return (finding.rule, finding.severity, finding.message, finding.file, finding.path)


def waiver_note(new: Finding, old: Finding) -> str:
    """Say how the waiver of a finding changed since the base, such as "now waived by W-7"."""
    if new.waiver is None:
        return f"no longer waived by {old.waiver}"
    if old.waiver is None:
        return f"now waived by {new.waiver}"
    return f"now waived by {new.waiver} instead of {old.waiver}"


def _diff_line(finding: Finding) -> str:
    waived = f" (waived by {finding.waiver})" if finding.waiver else ""
    return f"{finding.severity.value} {finding.rule}: {finding.message}{waived}"


def _diff_lines(change: RecordChange | None) -> list[str]:
    """Format the findings a change added (+), resolved (-), or gave another waiver (~) as text lines."""
    diff = FindingDiff.of(change)
    lines = [f"    + {_diff_line(f)}" for f in diff.added]
    lines += [f"    - {_diff_line(f)}" for f in diff.resolved]
    lines += [
        f"    ~ {new.severity.value} {new.rule}: {new.message} ({waiver_note(new, old)})" for new, old in diff.rewaived
    ]
    return lines


def format_check_text(report: Report) -> str:
    """Write the text report of `ecoc check`: the findings, a note when the official XSD was not used, the changes."""
    note = f"note: {NO_SCHEMA_NOTE}\n" if report.official_schema is False else ""
    return format_text(report.findings) + note + changes_text(report)


def changes_text(report: Report) -> str:
    """Format the readiness changes as text lines, after `ecoc check --base`."""
    if report.base is None:
        return ""
    lines = [f"readiness since {report.base}:"]
    if report.base_problem:
        lines.append(f"  {report.base_problem}, so the state of each checked record there is unknown")
    if report.repository_change is not None:
        lines.append("  repository findings (rule files, waivers, settings):")
        lines += _diff_lines(report.repository_change)
    if not report.changes:
        lines.append("  no record changed its readiness, findings or certificate")
    for change in report.changes or ():
        name = change.file + (f" ({change.vin})" if change.vin and change.vin not in change.file else "")
        name += f", moved from {change.renamed_from}" if change.renamed_from else ""
        state = change.after if change.before == change.after else f"{change.before} -> {change.after}"
        lines.append(f"  {name}: {state}")
        lines += _diff_lines(change)
        if change.certificate_changed:
            lines.append("    certificate content changed")
    if report.value_changes:
        lines.append(f"certificate values that change, {_values_scope(report)}:")
        for value in _ordered_values(report.value_changes):
            name = f"{value.item} {value.label}" if value.item else value.label
            lines.append(
                f"  {name}: {_value_text(value.before)} -> {_value_text(value.after)} "
                f"({count_phrase(value.records, 'record')})"
            )
    return "\n".join(lines) + "\n"


def _ordered_values(values: Sequence[ValueChange]) -> list[ValueChange]:
    """Order value changes by the number of records they are in, then by CoC item."""
    return sorted(values, key=lambda value: (-value.records, value.item or "~", value.label, value.before or ""))


def _value_text(value: str | None) -> str:
    return "(none)" if value is None else value


def _values_scope(report: Report) -> str:
    """Say which records the value changes were counted over, as "in the first 20 of 300 rewritten records"."""
    total = change_counts(report.changes or ()).certificate_changed
    if report.values_from < total:
        return f"in the first {report.values_from} of {total} records with changed certificate content"
    return f"in the {count_phrase(total, 'record')} with changed certificate content"


def affecting(report: Report) -> tuple[dict[str, list[Finding]], list[Finding]]:
    """Findings by the record file they concern, and those that concern no checked record."""
    by_vin: dict[str, str] = {}
    files = set()
    for record in report.records:
        files.add(record.file)
        if record.vin is not None:
            by_vin.setdefault(record.vin, record.file)
    grouped: dict[str, list[Finding]] = {}
    general: list[Finding] = []
    for finding in report.findings:
        # A finding in a record file concerns that file, even when another file has the same VIN.
        file = finding.file or ""
        targets = {file} if file in files else {by_vin[vin] for vin in finding.records if vin in by_vin}
        if not targets:
            general.append(finding)
        for target in sorted(targets):
            grouped.setdefault(target, []).append(finding)
    return grouped, general


def state_of(findings: Iterable[Finding]) -> str:
    return "blocked" if any(f.blocking for f in findings) else "ready"


# The key of the fingerprint in SARIF results. The version changes whenever the fingerprint does.
FINGERPRINT_KEY = "ecocFinding/v2"


def _fingerprint(finding: Finding, records: Sequence[str]) -> str:
    """Return a finding's identity that survives moved lines: rule, file, YAML path, message and `records`."""
    text = "\0".join((finding.rule, finding.file or "", finding.path or "", finding.message, " ".join(records)))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _fingerprints(findings: Sequence[Finding]) -> list[str]:
    """Return the fingerprint of each finding, with the VIN of the record it concerns when it concerns one.

    One value of an approval file yields a finding per record, and a waiver may accept it for
    some records only. The VIN keeps the waived and the unwaived finding apart, so that code
    scanning does not merge them. A finding that affects several records names no VIN, unless
    another finding would get the same fingerprint. Then both name all the records they affect.
    """
    single = [_fingerprint(f, (f.record,) if f.record else ()) for f in findings]
    shared = {fingerprint for fingerprint, count in Counter(single).items() if count > 1}
    return [
        _fingerprint(f, f.records) if fingerprint in shared else fingerprint
        for f, fingerprint in zip(findings, single, strict=True)
    ]


# SARIF 2.1.0 ---------------------------------------------------------------------------------------


def _sarif_rule(rule_id: str, info: RuleInfo | None) -> dict[str, object]:
    entry: dict[str, object] = {"id": rule_id}
    if info is None:
        return entry
    entry["shortDescription"] = {"text": info.title}
    if info.doc:
        entry["fullDescription"] = {"text": info.doc}
    if info.hint:
        entry["help"] = {"text": info.hint}
    if info.severity is not None:
        entry["defaultConfiguration"] = {"level": SARIF_LEVEL[info.severity]}
    if info.source:
        entry["properties"] = {"source": info.source}
    return entry


def format_sarif(report: Report) -> str:
    report = attributed(report)
    findings, omitted = _within_sarif_limit(report.findings)
    rule_ids = sorted({f.rule for f in findings})
    index = {rule_id: position for position, rule_id in enumerate(rule_ids)}
    results = []
    for finding, fingerprint in zip(findings, _fingerprints(findings), strict=True):
        message = finding.message if not finding.hint else f"{finding.message}\nHint: {finding.hint}"
        result: dict[str, object] = {
            "ruleId": finding.rule,
            "ruleIndex": index[finding.rule],
            "level": SARIF_LEVEL[finding.severity],
            "message": {"text": message},
            "partialFingerprints": {FINGERPRINT_KEY: fingerprint},
        }
        if finding.file:
            location: dict[str, object] = {
                "physicalLocation": {
                    "artifactLocation": {"uri": finding.file, "uriBaseId": "SRCROOT"},
                    "region": {"startLine": finding.line or 1, "startColumn": finding.column or 1},
                }
            }
            if finding.path:
                location["logicalLocations"] = [{"fullyQualifiedName": finding.path, "kind": "member"}]
            result["locations"] = [location]
        if finding.waiver is not None:
            result["suppressions"] = [
                {"kind": "external", "status": "accepted", "justification": f"accepted by waiver {finding.waiver}"}
            ]
        if finding.records:
            result["properties"] = {"records": list(finding.records)}
        results.append(result)
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "ecoc",
                        "version": __version__,
                        "rules": [_sarif_rule(rule_id, report.rules.get(rule_id)) for rule_id in rule_ids],
                    }
                },
                "originalUriBaseIds": {"SRCROOT": {"description": {"text": "the compliance repository"}}},
                "columnKind": "unicodeCodePoints",
                "results": results,
                "properties": {
                    "summary": dict(report.summary),
                    **({"officialSchema": report.official_schema} if report.official_schema is not None else {}),
                    **({"omittedResults": omitted} if omitted else {}),
                },
            }
        ],
    }
    if omitted:
        # Code scanning rejects a run with more results; the JSON report keeps every finding.
        log["runs"][0]["invocations"] = [  # type: ignore[index]
            {
                "executionSuccessful": True,
                "toolExecutionNotifications": [
                    {
                        "level": "warning",
                        "message": {
                            "text": f"{omitted} findings are left out, because code scanning takes at most "
                            f"{SARIF_MAX_RESULTS} results per run; errors come first, and --format json lists all"
                        },
                    }
                ],
            }
        ]
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"


# Code scanning rejects a SARIF run with more results than this.
SARIF_MAX_RESULTS = 25_000


def _within_sarif_limit(findings: Sequence[Finding]) -> tuple[list[Finding], int]:
    """Keep at most SARIF_MAX_RESULTS findings, the blocking ones first, in their order; count the rest."""
    if len(findings) <= SARIF_MAX_RESULTS:
        return list(findings), 0
    ranked = sorted(
        range(len(findings)), key=lambda i: (not findings[i].blocking, _SEVERITY_RANK[findings[i].severity])
    )
    kept = sorted(ranked[:SARIF_MAX_RESULTS])
    return [findings[i] for i in kept], len(findings) - SARIF_MAX_RESULTS


_SEVERITY_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


# JUnit XML -----------------------------------------------------------------------------------------

# Characters XML 1.0 cannot hold, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: str) -> str:
    return _NOT_XML.sub(lambda match: f"\\x{ord(match.group(0)):02x}", text)


def _finding_names(findings: Sequence[Finding]) -> str:
    """Name findings by rule and place, such as "yaml.syntax in rules/waivers.yaml:2", the first few only."""
    names = []
    for finding in findings[:MAX_LISTED_RECORDS]:
        name = finding.rule
        if finding.file:
            name += f" in {finding.file}"
        if finding.file and finding.line is not None:
            name += f":{finding.line}"
        names.append(name)
    more = len(findings) - MAX_LISTED_RECORDS
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def _testcase(
    suite: ET.Element,
    classname: str,
    name: str,
    file: str | None,
    findings: list[Finding],
    blocked_by: Sequence[Finding] = (),
) -> bool:
    """Add one test case, which fails when a finding blocks. Return whether it failed.

    `blocked_by` holds the findings outside the case's file that block it, such as a broken
    waiver file, which blocks every record.
    """
    case = ET.SubElement(suite, "testcase", classname=classname, name=_xml(name))
    if file:
        case.set("file", _xml(file))
    blocking = [f for f in findings if f.blocking]
    if blocking or blocked_by:
        reasons = [count_phrase(len(blocking), "blocking finding")] if blocking else []
        if blocked_by:
            reasons.append(
                f"blocked by {'the repository finding' if len(blocked_by) == 1 else 'the repository findings'} "
                + _finding_names(blocked_by)
            )
        failure = ET.SubElement(case, "failure", type="readiness", message=_xml(", ".join(reasons)))
        failure.text = _xml(format_text([*blocking, *blocked_by]))
    others = [f for f in findings if not f.blocking]
    if others:
        ET.SubElement(case, "system-out").text = _xml(format_text(others))
    return bool(blocking or blocked_by)


def format_junit(report: Report) -> str:
    report = attributed(report)
    grouped, general = affecting(report)
    general_blocking = [f for f in general if f.blocking]
    vins = record_vins(report)
    root = ET.Element("testsuites", name="ecoc check")
    suites = []
    records = ET.Element("testsuite", name="records")
    failed = 0
    for record in report.records:
        name = vins.get(record.file) or record.file
        failed += _testcase(
            records, "records", name, record.file, grouped.get(record.file, []), blocked_by=general_blocking
        )
    suites.append((records, len(report.records), failed))
    by_file: dict[str, list[Finding]] = {}
    for finding in general:
        by_file.setdefault(finding.file or "", []).append(finding)
    if by_file:
        repository = ET.Element("testsuite", name="repository")
        failed = sum(
            _testcase(repository, "repository", file or "repository", file or None, findings)
            for file, findings in sorted(by_file.items())
        )
        suites.append((repository, len(by_file), failed))
    total = failures = 0
    for suite, tests, failed in suites:
        suite.set("tests", str(tests))
        suite.set("failures", str(failed))
        suite.set("errors", "0")
        suite.set("skipped", "0")
        root.append(suite)
        total += tests
        failures += failed
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# GitHub workflow commands --------------------------------------------------------------------------


def _command_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _command_property(text: str) -> str:
    return _command_data(text).replace(":", "%3A").replace(",", "%2C")


def _annotation(finding: Finding) -> str:
    kind = "notice" if finding.waiver is not None else GITHUB_COMMAND[finding.severity]
    properties = []
    if finding.file:
        properties.append(f"file={_command_property(finding.file)}")
        if finding.line is not None:
            properties.append(f"line={finding.line}")
            properties.append(f"col={finding.column or 1}")
    title = finding.rule + (f" ({finding.record})" if finding.record else "")
    properties.append(f"title={_command_property(title)}")
    lines = [finding.message]
    if finding.path:
        lines.append(f"at {finding.path}")
    if len(finding.records) > 1:
        shown = ", ".join(finding.records[:ANNOTATED_RECORDS])
        more = len(finding.records) - ANNOTATED_RECORDS
        lines.append(f"affects {len(finding.records)} records: {shown}" + (f" and {more} more" if more > 0 else ""))
    if finding.waiver is not None:
        lines.append(f"accepted by waiver {finding.waiver}")
    if finding.hint:
        lines.append(f"hint: {finding.hint}")
    return f"::{kind} {','.join(properties)}::{_command_data(chr(10).join(lines))}"


_STATUS_WORDS = {"A": "added", "D": "deleted", "M": "changed", "T": "changed"}


def _source_notices(report: Report) -> list[str]:
    """Return one notice on the first changed line of each approval, rule or settings file the change edits.

    A finding that such a change causes sits in records or approval files the change does not
    touch, so the edited line itself would otherwise carry no annotation at all.
    """
    changes = report.changes or ()
    blocked = sum(1 for c in changes if c.after == "blocked" and c.before != "blocked")
    ready = sum(1 for c in changes if c.after == "ready" and c.before == "blocked")
    rewritten = sum(1 for c in changes if c.certificate_changed is True)
    if not (blocked or ready or rewritten):
        return []
    effect = f"{count_phrase(blocked, 'record')} newly blocked, {count_phrase(ready, 'record')} newly ready"
    effect += f", {count_phrase(rewritten, 'record')} with changed certificate content" if rewritten else ""
    lines = []
    for path, status in report.changed_sources:
        if status == "D":
            continue
        changed = sorted((report.changed_lines or {}).get(path, ()))
        place = f"file={_command_property(path)}" + (f",line={changed[0]}" if changed else "")
        text = f"since {report.base}, with this change: {effect}; the pull-request comment lists them"
        lines.append(f"::notice {place},title=ecoc readiness::{_command_data(text)}")
    return lines


def format_github(report: Report) -> str:
    """Workflow commands for the findings GitHub will show, then the rest as plain log lines.

    Findings on lines this change touched come first, so that the annotations GitHub keeps are
    the ones a reviewer of the change needs.
    """
    report = attributed(report)
    changed = report.changed_lines or {}

    def order(finding: Finding) -> tuple[int, int]:
        on_change = finding.file in changed and (finding.line or 0) in changed[finding.file or ""]
        return (0 if on_change else 1, 0 if finding.waiver is None else 1)

    findings = sorted(report.findings, key=order)  # stable: file order within each group
    shown: dict[str, int] = {}
    lines = _source_notices(report)
    shown["notice"] = len(lines)
    if report.official_schema is False:
        # First, so that GitHub shows it whatever the number of findings.
        shown["warning"] = 1
        title = _command_property("ecoc checked without the official IVI XSD")
        lines.append(f"::warning title={title}::{_command_data(NO_SCHEMA_NOTE)}")
    left: list[Finding] = []
    for finding in findings:
        kind = "notice" if finding.waiver is not None else GITHUB_COMMAND[finding.severity]
        # One notice stays free for saying that findings were left out.
        room = GITHUB_ANNOTATIONS_PER_KIND - (1 if kind == "notice" else 0)
        if shown.get(kind, 0) < room:
            shown[kind] = shown.get(kind, 0) + 1
            lines.append(_annotation(finding))
        else:
            left.append(finding)
    if left:
        lines.append(
            "::notice title=ecoc::"
            + _command_data(
                f"{len(left)} more finding{'s are' if len(left) != 1 else ' is'} not shown as annotations, "
                f"because GitHub shows {GITHUB_ANNOTATIONS_PER_KIND} of each kind per step. "
                "The log below and the SARIF report list every finding."
            )
        )
        lines.append(format_text(sorted(left, key=Finding.sort_key)).rstrip("\n"))
    lines.append(summary_line(dict(report.summary)))
    return "\n".join(lines) + "\n" + changes_text(report)


# Markdown (pull-request comment) -------------------------------------------------------------------

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|<>&#])")


def markdown_cell(text: str) -> str:
    """Text for a Markdown table cell or line: no markup, no HTML, one line."""
    escaped = text.replace("\r", " ").replace("\n", " ")
    return _MARKDOWN_SPECIAL.sub(
        lambda match: {"<": "&lt;", ">": "&gt;", "&": "&amp;"}.get(match.group(1), "\\" + match.group(1)), escaped
    )


def _place(finding: Finding, link_base: str | None) -> str:
    if not finding.file:
        return ""
    where = finding.file + (f":{finding.line}" if finding.line is not None else "")
    if finding.line is not None and finding.column is not None:
        where += f":{finding.column}"
    if link_base is None:
        return f"`{where.replace('`', '')}`"
    anchor = f"#L{finding.line}" if finding.line is not None else ""
    return f"[{markdown_cell(where)}]({link_base}{finding.file.replace(' ', '%20').replace(')', '%29')}{anchor})"


_ICON = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "info"}


def _finding_table(
    findings: Sequence[Finding], link_base: str | None, notes: Mapping[Finding, str] | None = None
) -> list[str]:
    """Build the rows of a findings table. With `notes`, a first column shows what the change did to each finding."""
    change_column = notes is not None
    lines = [
        ("| change " if change_column else "") + "| severity | rule | where | message |",
        ("| --- " if change_column else "") + "| --- | --- | --- | --- |",
    ]
    for finding in findings:
        severity = _ICON[finding.severity] + (f" (waived: {markdown_cell(finding.waiver)})" if finding.waiver else "")
        message = markdown_cell(finding.message)
        if finding.path:
            message += f"<br>at `{finding.path.replace('`', '')}`"
        if finding.hint:
            message += f"<br>hint: {markdown_cell(finding.hint)}"
        change = f"| {notes.get(finding, '')} " if notes is not None else ""
        lines.append(f"{change}| {severity} | `{finding.rule}` | {_place(finding, link_base)} | {message} |")
    return lines


def _resolved_table(findings: Sequence[Finding]) -> list[str]:
    """Build the rows of a table of resolved findings, without line numbers, because those are the base's."""
    return _finding_table([replace(f, line=None, hint=None) for f in findings], None)


def _change_notes(diff: FindingDiff) -> dict[Finding, str]:
    """Return the Markdown note of each finding that a change added or gave another waiver."""
    notes = {finding: "**new**" for finding in diff.added}
    notes.update({new: markdown_cell(waiver_note(new, old)) for new, old in diff.rewaived})
    return notes


def _shared_notes(grouped: Mapping[str, Sequence[Finding]], diffs: Mapping[str, FindingDiff]) -> dict[Finding, str]:
    """Return the note of each record finding that has the same note in every record it concerns.

    A finding in an approval file concerns every record of the approval. It is new only when
    it is new in each of them.
    """
    seen: dict[Finding, set[str]] = {}
    for file, findings in grouped.items():
        notes = _change_notes(diffs[file]) if file in diffs else {}
        for finding in findings:
            seen.setdefault(finding, set()).add(notes.get(finding, ""))
    return {finding: next(iter(found)) for finding, found in seen.items() if len(found) == 1}


def _counts(findings: Sequence[Finding]) -> str:
    parts = []
    for severity, word in ((Severity.ERROR, "error"), (Severity.WARNING, "warning"), (Severity.INFO, "info")):
        count = sum(1 for f in findings if f.severity is severity and f.waiver is None)
        if count:
            parts.append(count_phrase(count, word, "info" if word == "info" else None))
    waived = sum(1 for f in findings if f.waiver is not None)
    if waived:
        parts.append(f"{waived} waived")
    return ", ".join(parts) or "no findings"


# Shares of the comment for the blocking findings and for the table of changes; the sections per
# record get what is left.
_FINDINGS_SHARE = 0.4
_CHANGES_SHARE = 0.25
# Changed certificate values the comment lists at most; the previews show every one.
MARKDOWN_VALUE_ROWS = 30


def _capped(rows: Sequence[str], room: int) -> tuple[list[str], int]:
    """The rows that fit in `room` characters, and how many did not."""
    kept: list[str] = []
    used = 0
    for row in rows:
        if used + len(row) + 1 > room:
            break
        kept.append(row)
        used += len(row) + 1
    return kept, len(rows) - len(kept)


def _affected(finding: Finding, record_files: Set[str]) -> int | None:
    """Return the number of records a finding concerns, or None for every record."""
    if finding.records:
        return len(finding.records)
    # A record file that cannot be read yields findings without a VIN.
    return 1 if finding.file in record_files else None


def _blocking_table(
    findings: Sequence[Finding], link_base: str | None, record_files: Set[str], notes: Mapping[Finding, str] | None
) -> tuple[str, list[str]]:
    """Build the header and the rows of the blocking findings table.

    After `ecoc check --base` (with `notes`), the findings that block because of the change come
    first. Within that, findings for every record come first, then those that block the most records.
    """
    header = "| rule | where | message | records |\n| --- | --- | --- | ---: |"
    if notes is not None:
        header = "| change | rule | where | message | records |\n| --- | --- | --- | --- | ---: |"

    def order(finding: Finding) -> tuple[object, ...]:
        affected = _affected(finding, record_files)
        # A blocking finding has a note when it is new, or when its waiver no longer applies.
        unchanged = 0 if notes is not None and notes.get(finding) else 1
        return (unchanged, -(len(record_files) + 1 if affected is None else affected), *finding.sort_key())

    rows = []
    for finding in sorted(findings, key=order):
        affected = _affected(finding, record_files)
        change = f"| {notes.get(finding, '')} " if notes is not None else ""
        rows.append(
            f"{change}| `{finding.rule}` | {_place(finding, link_base)} | {markdown_cell(finding.message)} "
            f"| {'all' if affected is None else affected} |"
        )
    return header, rows


def _record_name(file: str, vin: str | None, files_per_vin: Mapping[str, int]) -> str:
    """Name a record by its VIN, and by its file where the VIN is unknown or other files have it too."""
    code = f"`{file.replace('`', '')}`"
    if vin is None:
        return code
    if files_per_vin.get(vin, 0) > 1:
        return f"{markdown_cell(vin)} ({code})"
    return markdown_cell(vin)


def _record_section(
    record: CheckedRecord,
    vin: str | None,
    findings: Sequence[Finding],
    diff: FindingDiff | None,
    blocked_by: Sequence[Finding],
    report: Report,
    opened: bool,
) -> str:
    """Format one record's findings as a `<details>` element, with what the change did to them.

    `blocked_by` holds the repository findings that block every record. When no finding of the
    record's own blocks it, the section points to them, because the heading of the blocked
    records names them.
    """
    only_blocked_by = blocked_by if not any(f.blocking for f in findings) else ()
    summary = _counts(findings) if findings else "no findings of its own"
    if only_blocked_by:
        summary += ", blocked by repository findings"
    if diff:
        summary += f" (since the base: {diff.phrase('new')})"
    parts = [
        f"<details{' open' if opened else ''}><summary><b>{markdown_cell(vin or record.file)}</b> "
        f"({markdown_cell(record.file)}): {summary}</summary>"
    ]
    if findings:
        notes = _change_notes(diff or FindingDiff()) if report.base is not None else None
        parts.append("\n".join(_finding_table(findings, report.link_base, notes)))
    if only_blocked_by:
        parts.append("No finding of this record blocks it, only the repository findings named above.")
    if diff is not None and diff.resolved:
        parts.append("Resolved since the base:\n\n" + "\n".join(_resolved_table(diff.resolved)))
    parts.append("</details>")
    return "\n\n".join(parts)


def _repository_blockers(blocked_by: Sequence[Finding], link_base: str | None) -> str:
    """Name the repository findings that block every record, such as "A repository finding blocks every record: ..."."""
    named = [f"`{f.rule}`" + (f" at {_place(f, link_base)}" if f.file else "") for f in blocked_by[:MAX_LISTED_RECORDS]]
    more = len(blocked_by) - MAX_LISTED_RECORDS
    blockers = "A repository finding blocks" if len(blocked_by) == 1 else f"{len(blocked_by)} repository findings block"
    listed = ", ".join(named) + (f" and {more} more" if more > 0 else "")
    return f"{blockers} every record (see Repository findings): {listed}."


def _certificate_cell(change: RecordChange) -> str:
    """Say what the change does to the record's certificate, for the table of changes."""
    if change.before == "absent":
        return "new"
    if change.after == "absent":
        return "removed"
    if change.before == "unknown":
        return "base not checked"
    if change.certificate_changed is None:
        return "not rendered"
    return "changed" if change.certificate_changed else "same"


def _news_rank(change: RecordChange | None, diff: FindingDiff | None) -> int:
    """Rank a record by what the change did to it: 0 newly blocked, 1 new blocking findings, 2 neither."""
    if change is not None and change.after == "blocked" and change.before != "blocked":
        return 0
    if diff is not None and any(f.blocking for f in (*diff.added, *(new for new, _ in diff.rewaived))):
        return 1
    return 2


def _repository_section(general: Sequence[Finding], diff: FindingDiff, report: Report) -> str:
    parts = ["\n### Repository findings (rule files, waivers, settings)"]
    if general:
        notes = _change_notes(diff) if report.base is not None else None
        parts.append("\n".join(_finding_table(sorted(general, key=Finding.sort_key), report.link_base, notes)))
    if diff.resolved:
        parts.append("Resolved since the base:\n\n" + "\n".join(_resolved_table(diff.resolved)))
    return "\n\n".join(parts)


def _cut_note(left: Sequence[tuple[int, str]], report: Report, full_report: str | None) -> str:
    """Return the closing note of a cut comment: what it leaves out, and the command that writes all of it."""
    missing = ", ".join(count_phrase(count, noun) for count, noun in left)
    verb = "is" if len(left) == 1 and left[0][0] == 1 else "are"
    where = f" The full report is {full_report}." if full_report else ""
    # The text and JSON formats have no size limit, so they list everything this comment leaves out.
    command = "ecoc check" + (f" --base {shlex.quote(report.base)}" if report.base else "") + " --output report.txt"
    contents = "every finding and readiness change" if report.base is not None else "every finding"
    return (
        f"\n\n---\nThis comment was cut to stay within GitHub's size limit: {missing} {verb} not shown.{where} "
        f"Run `{command.replace('`', '')}` to write {contents} as text, or add `--format json` to write JSON."
    )


def format_markdown(report: Report, limit: int = MARKDOWN_LIMIT, full_report: str | None = None) -> str:
    """A pull-request comment: the summary, the blocking findings, the changes, then each record.

    The blocking findings come first, each once with the number of records it blocks, because a
    reviewer must see them even when thousands of records changed. After `ecoc check --base`,
    the tables mark the findings the change added and the waivers it changed, and each record
    lists the findings the change resolved. The records that the change blocked and the findings
    that block because of it come first, and only those records are expanded. The comment stays
    under `limit` characters; what it leaves out is counted in a closing note that names where
    the full report is (`full_report`, such as a workflow artifact) and a command that writes it.
    """
    full_report = full_report or report.full_report
    report = attributed(report)
    grouped, general = affecting(report)
    general_blocking = [f for f in general if f.blocking]
    vins = record_vins(report)
    diffs = {change.file: FindingDiff.of(change) for change in report.changes or ()}
    ranks = {change.file: _news_rank(change, diffs[change.file]) for change in report.changes or ()}
    repository_diff = FindingDiff.of(report.repository_change)
    states = {record.file: state_of([*grouped.get(record.file, ()), *general_blocking]) for record in report.records}
    blocked = [r for r in report.records if states[r.file] == "blocked"]
    if report.base is not None:
        blocked.sort(key=lambda record: ranks.get(record.file, 2))
    noted = [
        r
        for r in report.records
        if states[r.file] == "ready" and (grouped.get(r.file) or diffs.get(r.file, FindingDiff()).resolved)
    ]
    head = [
        MARKDOWN_MARKER,
        f"## eCoC readiness: {len(blocked)} of {count_phrase(len(report.records), 'record')} blocked"
        + (", because repository findings block every record" if general_blocking else ""),
        "",
        "| records checked | blocked | ready | errors | warnings | info | waived |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {len(report.records)} | {len(blocked)} | {len(report.records) - len(blocked)} "
        f"| {report.summary.get('errors', 0)} | {report.summary.get('warnings', 0)} "
        f"| {report.summary.get('info', 0)} | {report.summary.get('waived', 0)} |",
    ]
    if report.base is not None:
        counts = change_counts(report.changes or ())
        head += [
            "",
            f"Checked the records changed or affected since `{report.base.replace('`', '')}`: {counts.phrase()}.",
        ]
    if report.changed_sources:
        edited = ", ".join(
            f"`{path.replace('`', '')}` ({_STATUS_WORDS.get(status, 'changed')})"
            for path, status in report.changed_sources
        )
        head += [
            "",
            f"Files other than records that the change edits: {edited}. A record listed below without an "
            "edit of its own is listed because of these files.",
        ]
    if report.base_problem:
        head += ["", markdown_cell(report.base_problem) + ", so the state of each checked record there is unknown."]
    if report.base is not None and full_report and (report.records or report.changes):
        head += [
            "",
            f"Previews of these records are {full_report}, in the artifact `{PREVIEW_ARTIFACT}`: "
            f"`{PREVIEW_INDEX}` links the XML, the XML diff against the base and a readable CoC page of each.",
        ]
    if report.official_schema is False:
        head += ["", "> [!WARNING]", "> " + markdown_cell(NO_SCHEMA_NOTE)]
    # The closing note must always fit after what was kept.
    room = limit - 800 - sum(len(line) + 1 for line in head)
    left: list[tuple[int, str]] = []
    blocks = ["\n".join(head)]

    blocking = [f for f in report.findings if f.blocking]
    if blocking:
        notes = {**_shared_notes(grouped, diffs), **_change_notes(repository_diff)} if report.base is not None else None
        record_files = {record.file for record in report.records}
        header, all_rows = _blocking_table(blocking, report.link_base, record_files, notes)
        rows, missing = _capped(all_rows, int(room * _FINDINGS_SHARE))
        blocks.append("\n### Blocking findings\n\n" + header + "\n" + "\n".join(rows))
        room -= sum(len(row) + 1 for row in rows) + 120
        if missing:
            left.append((missing, "blocking finding"))
    if report.changes is not None:
        if report.repository_change is not None:
            blocks.append(f"\nRepository findings since the base: {repository_diff.phrase()} (see below).")
        if not report.changes:
            blocks.append("\n### Changes since the base\n\nNo record's readiness, findings or certificate changed.")
        else:
            files_per_vin = Counter(vins.values())
            change_rows = []
            for change in sorted(report.changes, key=lambda change: ranks[change.file]):
                arrow = f"**{change.after}**" if change.before != change.after else change.after
                name = _record_name(change.file, vins.get(change.file), files_per_vin)
                if change.renamed_from:
                    name += f" (moved from `{change.renamed_from.replace('`', '')}`)"
                certificate = _certificate_cell(change)
                change_rows.append(
                    f"| {name} | {change.before} | {arrow} | {diffs[change.file].phrase()} | {certificate} |"
                )
            rows, missing = _capped(change_rows, int(room * _CHANGES_SHARE / (1 - _FINDINGS_SHARE)))
            blocks.append(
                "\n### Changes since the base\n\n"
                "| record | before | after | findings | certificate |\n| --- | --- | --- | --- | --- |\n"
                + "\n".join(rows)
            )
            room -= sum(len(row) + 1 for row in rows) + 150
            if missing:
                left.append((missing, "changed record"))
        if report.value_changes:
            value_rows = [
                f"| {markdown_cell(value.item or '')} | {markdown_cell(value.label)} "
                f"| {markdown_cell(_value_text(value.before))} | {markdown_cell(_value_text(value.after))} "
                f"| {value.records} |"
                for value in _ordered_values(report.value_changes)
            ]
            rows, missing = _capped(value_rows[:MARKDOWN_VALUE_ROWS], int(room * _CHANGES_SHARE))
            missing += len(value_rows) - min(len(value_rows), MARKDOWN_VALUE_ROWS)
            blocks.append(
                f"\n### Certificate values that change\n\nCounted {_values_scope(report)}.\n\n"
                "| item | element | base | this change | records |\n| --- | --- | --- | --- | ---: |\n"
                + "\n".join(rows)
            )
            room -= sum(len(row) + 1 for row in rows) + 200
            if missing:
                left.append((missing, "changed value"))
    sections: list[str] = []
    if general or repository_diff.resolved:
        sections.append(_repository_section(general, repository_diff, report))
    # After `ecoc check --base`, only records that the change blocked or gave new blocking findings are expanded.
    opened = [r.file for r in blocked if report.base is None or ranks.get(r.file, 2) < 2][:5]
    for title, records in (("Blocked records", blocked), ("Ready records with findings or resolved findings", noted)):
        for position, record in enumerate(records):
            section = _record_section(
                record,
                vins.get(record.file),
                grouped.get(record.file, []),
                diffs.get(record.file),
                general_blocking,
                report,
                opened=records is blocked and record.file in opened,
            )
            heading = f"\n### {title}\n\n" if position == 0 else ""
            if heading and records is blocked and general_blocking:
                heading += _repository_blockers(general_blocking, report.link_base) + "\n\n"
            sections.append(heading + section)
    kept, missing = _capped(sections, room)
    blocks += kept
    if missing:
        left.append((missing, "record section"))
    text = "\n".join(blocks)
    if left:
        text += _cut_note(left, report, full_report)
    return text + "\n"
