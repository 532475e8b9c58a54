"""Findings for machines and reviewers: SARIF 2.1.0, JUnit XML, GitHub workflow commands, Markdown.

Each format takes the same `Report`: the findings of a check run, the records it checked and,
after `ecoc check --base`, what changed in each record's readiness since the base.
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ecoc import __version__
from ecoc.findings import Finding, Severity
from ecoc.report import format_text, summary_line

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
GITHUB_COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}
# GitHub turns at most this many workflow commands of each kind in one step into annotations.
GITHUB_ANNOTATIONS_PER_KIND = 10
# A pull-request comment may hold 65,536 characters; the rest is left for the cut note.
MARKDOWN_LIMIT = 65_000
MARKDOWN_MARKER = "<!-- ecoc-readiness-report -->"


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


@dataclass
class Report:
    findings: Sequence[Finding]
    summary: Mapping[str, object]
    records: Sequence[CheckedRecord] = ()
    rules: Mapping[str, RuleInfo] = field(default_factory=dict)
    # Set by `ecoc check --base`: the base as the user named it, and the records whose readiness changed.
    base: str | None = None
    changes: Sequence[RecordChange] | None = None
    # Lines each file changed since the base; GitHub annotations put findings there first.
    changed_lines: Mapping[str, frozenset[int]] | None = None
    # Start of a link to a file at this commit, such as https://github.com/o/r/blob/<sha>/.
    link_base: str | None = None
    # Why the base could not be checked, when it could not.
    base_problem: str | None = None
    # Where the whole report can be found when a Markdown comment is cut, such as a run's artifacts.
    full_report: str | None = None


def json_extra(report: Report) -> dict[str, object]:
    """Return the readiness changes for JSON output, after `ecoc check --base`."""
    if report.base is None:
        return {}
    return {
        "base": {
            "ref": report.base,
            "problem": report.base_problem,
            "changes": [
                {
                    "file": change.file,
                    "record": change.vin,
                    "before": change.before,
                    "after": change.after,
                    "added": [f.to_dict() for f in change.added],
                    "resolved": [f.to_dict() for f in change.resolved],
                }
                for change in report.changes or ()
            ],
        }
    }


def changes_text(report: Report) -> str:
    """Format the readiness changes as text lines, after `ecoc check --base`."""
    if report.base is None:
        return ""
    lines = [f"readiness since {report.base}:"]
    if report.base_problem:
        lines.append(f"  {report.base_problem}; every checked record counts as new")
    if not report.changes:
        lines.append("  no record changed its readiness or findings")
    for change in report.changes or ():
        name = change.file + (f" ({change.vin})" if change.vin and change.vin not in change.file else "")
        state = change.after if change.before == change.after else f"{change.before} -> {change.after}"
        lines.append(f"  {name}: {state}")
        lines += [f"    + {f.severity.value} {f.rule}: {f.message}" for f in change.added]
        lines += [f"    - {f.severity.value} {f.rule}: {f.message}" for f in change.resolved]
    return "\n".join(lines) + "\n"


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
        targets = {by_vin[vin] for vin in finding.records if vin in by_vin}
        if finding.file in files:
            targets.add(finding.file)
        if not targets:
            general.append(finding)
        for target in sorted(targets):
            grouped.setdefault(target, []).append(finding)
    return grouped, general


def state_of(findings: Iterable[Finding]) -> str:
    return "blocked" if any(f.blocking for f in findings) else "ready"


def _fingerprint(finding: Finding) -> str:
    """Return a finding's identity that survives moved lines: rule, file, YAML path and message."""
    text = "\0".join((finding.rule, finding.file or "", finding.path or "", finding.message))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


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
    rule_ids = sorted({f.rule for f in report.findings})
    index = {rule_id: position for position, rule_id in enumerate(rule_ids)}
    results = []
    for finding in report.findings:
        message = finding.message if not finding.hint else f"{finding.message}\nHint: {finding.hint}"
        result: dict[str, object] = {
            "ruleId": finding.rule,
            "ruleIndex": index[finding.rule],
            "level": SARIF_LEVEL[finding.severity],
            "message": {"text": message},
            "partialFingerprints": {"ecocFinding/v1": _fingerprint(finding)},
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
                "properties": {"summary": dict(report.summary)},
            }
        ],
    }
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"


# JUnit XML -----------------------------------------------------------------------------------------

# Characters XML 1.0 cannot hold, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: str) -> str:
    return _NOT_XML.sub(lambda match: f"\\x{ord(match.group(0)):02x}", text)


def _testcase(suite: ET.Element, classname: str, name: str, file: str | None, findings: list[Finding]) -> bool:
    """Add one test case; it fails when a finding blocks. Return whether it failed."""
    case = ET.SubElement(suite, "testcase", classname=classname, name=_xml(name))
    if file:
        case.set("file", _xml(file))
    blocking = [f for f in findings if f.blocking]
    if blocking:
        count = len(blocking)
        failure = ET.SubElement(
            case, "failure", type="readiness", message=f"{count} blocking finding{'s' if count != 1 else ''}"
        )
        failure.text = _xml(format_text(blocking))
    others = [f for f in findings if not f.blocking]
    if others:
        ET.SubElement(case, "system-out").text = _xml(format_text(others))
    return bool(blocking)


def format_junit(report: Report) -> str:
    grouped, general = affecting(report)
    root = ET.Element("testsuites", name="ecoc check")
    suites = []
    records = ET.Element("testsuite", name="records")
    failed = 0
    for record in report.records:
        failed += _testcase(records, "records", record.vin or record.file, record.file, grouped.get(record.file, []))
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
        lines.append(f"affects {len(finding.records)} records: {', '.join(finding.records)}")
    if finding.waiver is not None:
        lines.append(f"accepted by waiver {finding.waiver}")
    if finding.hint:
        lines.append(f"hint: {finding.hint}")
    return f"::{kind} {','.join(properties)}::{_command_data(chr(10).join(lines))}"


def format_github(report: Report) -> str:
    """Workflow commands for the findings GitHub will show, then the rest as plain log lines.

    Findings on lines this change touched come first, so that the annotations GitHub keeps are
    the ones a reviewer of the change needs.
    """
    changed = report.changed_lines or {}

    def order(finding: Finding) -> tuple[int, int]:
        on_change = finding.file in changed and (finding.line or 0) in changed[finding.file or ""]
        return (0 if on_change else 1, 0 if finding.waiver is None else 1)

    findings = sorted(report.findings, key=order)  # stable: file order within each group
    shown: dict[str, int] = {}
    lines = []
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
                "The log below, the job summary and the SARIF report list every finding."
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
    if link_base is None:
        return f"`{where.replace('`', '')}`"
    anchor = f"#L{finding.line}" if finding.line is not None else ""
    return f"[{markdown_cell(where)}]({link_base}{finding.file.replace(' ', '%20').replace(')', '%29')}{anchor})"


_ICON = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "info"}


def _finding_table(findings: Sequence[Finding], link_base: str | None) -> list[str]:
    lines = ["| severity | rule | where | message |", "| --- | --- | --- | --- |"]
    for finding in findings:
        severity = _ICON[finding.severity] + (f" (waived: {markdown_cell(finding.waiver)})" if finding.waiver else "")
        message = markdown_cell(finding.message)
        if finding.path:
            message += f"<br>at `{finding.path.replace('`', '')}`"
        if finding.hint:
            message += f"<br>hint: {markdown_cell(finding.hint)}"
        lines.append(f"| {severity} | `{finding.rule}` | {_place(finding, link_base)} | {message} |")
    return lines


def _counts(findings: Sequence[Finding]) -> str:
    parts = []
    for severity, word in ((Severity.ERROR, "error"), (Severity.WARNING, "warning"), (Severity.INFO, "info")):
        count = sum(1 for f in findings if f.severity is severity and f.waiver is None)
        if count:
            parts.append(f"{count} {word}{'s' if count != 1 and word != 'info' else ''}")
    waived = sum(1 for f in findings if f.waiver is not None)
    if waived:
        parts.append(f"{waived} waived")
    return ", ".join(parts) or "no findings"


class _Budget:
    """Collects Markdown blocks until the next one would pass the size limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.blocks: list[str] = []
        self.size = 0
        self.full = False

    def add(self, block: str) -> bool:
        if self.full or self.size + len(block) + 1 > self.limit:
            self.full = True
            return False
        self.blocks.append(block)
        self.size += len(block) + 1
        return True


def format_markdown(report: Report, limit: int = MARKDOWN_LIMIT, full_report: str | None = None) -> str:
    """A pull-request comment: the summary table first, then a section per record with findings.

    The comment stays under `limit` characters; when records had to be left out, a closing note
    names how many and where the full report is (`full_report`, such as a workflow artifact).
    """
    full_report = full_report or report.full_report
    grouped, general = affecting(report)
    states = {record.file: state_of(grouped.get(record.file, ())) for record in report.records}
    blocked = [r for r in report.records if states[r.file] == "blocked"]
    noted = [r for r in report.records if states[r.file] == "ready" and grouped.get(r.file)]
    general_blocks = any(f.blocking for f in general)
    head = [
        MARKDOWN_MARKER,
        f"## eCoC readiness: {len(blocked)} of {len(report.records)} records blocked"
        + (", and repository findings block every record" if general_blocks else ""),
        "",
        "| records checked | blocked | ready | errors | warnings | info | waived |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {len(report.records)} | {len(blocked)} | {len(report.records) - len(blocked)} "
        f"| {report.summary.get('errors', 0)} | {report.summary.get('warnings', 0)} "
        f"| {report.summary.get('info', 0)} | {report.summary.get('waived', 0)} |",
    ]
    if report.base is not None:
        head += ["", f"Checked the records changed or affected since `{report.base.replace('`', '')}`."]
    # The cut note must always fit after what was kept.
    budget = _Budget(limit - 600)
    budget.add("\n".join(head))
    total_sections = 0
    kept_sections = 0
    if report.changes is not None:
        changes = report.changes
        if not changes:
            budget.add("\n### Changes since the base\n\nNo record's readiness or findings changed.")
        else:
            rows = [
                "\n### Changes since the base\n",
                "| record | before | after | findings added | findings resolved |",
                "| --- | --- | --- | ---: | ---: |",
            ]
            budget.add("\n".join(rows))
            for change in changes:
                total_sections += 1
                arrow = f"**{change.after}**" if change.before != change.after else change.after
                row = (
                    f"| {markdown_cell(change.vin or change.file)} | {change.before} | {arrow} "
                    f"| {len(change.added)} | {len(change.resolved)} |"
                )
                kept_sections += budget.add(row)
    sections: list[tuple[str, list[str]]] = []
    if general:
        sections.append(
            (
                "Repository findings (rule files, waivers, settings)",
                ["", *_finding_table(sorted(general, key=Finding.sort_key), report.link_base)],
            )
        )
    for title, records in (("Blocked records", blocked), ("Ready records with findings", noted)):
        for position, record in enumerate(records):
            findings = grouped[record.file]
            summary = (
                f"<b>{markdown_cell(record.vin or record.file)}</b> ({markdown_cell(record.file)}): {_counts(findings)}"
            )
            lines = [
                *([f"\n### {title}\n"] if position == 0 else []),
                f"<details{' open' if title.startswith('Blocked') and position < 5 else ''}>"
                f"<summary>{summary}</summary>\n",
                *_finding_table(findings, report.link_base),
                "\n</details>",
            ]
            sections.append(("", lines))
    for title, lines in sections:
        total_sections += 1
        block = (f"\n### {title}\n" if title else "") + "\n".join(lines)
        kept_sections += budget.add(block)
    text = "\n".join(budget.blocks)
    if budget.full:
        left = total_sections - kept_sections
        where = f" The full report is {full_report}." if full_report else ""
        text += (
            f"\n\n---\nThis comment was cut to stay within GitHub's size limit: {left} more "
            f"{'entries are' if left != 1 else 'entry is'} not shown.{where} "
            "Run `ecoc check --format markdown --output report.md` to write it in full."
        )
    return text + "\n"
