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
# VINs an annotation names when a finding affects many records; the log line names them all.
ANNOTATED_RECORDS = 10
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
    # Findings about no record (rule files, waivers) added or resolved since the base.
    repository_change: RecordChange | None = None
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
            "repository": {
                "added": [f.to_dict() for f in report.repository_change.added] if report.repository_change else [],
                "resolved": [f.to_dict() for f in report.repository_change.resolved]
                if report.repository_change
                else [],
            },
        }
    }


def changes_text(report: Report) -> str:
    """Format the readiness changes as text lines, after `ecoc check --base`."""
    if report.base is None:
        return ""
    lines = [f"readiness since {report.base}:"]
    if report.base_problem:
        lines.append(f"  {report.base_problem}; every checked record counts as new")
    if report.repository_change is not None:
        lines.append("  repository findings (rule files, waivers, settings):")
        lines += [f"    + {f.severity.value} {f.rule}: {f.message}" for f in report.repository_change.added]
        lines += [f"    - {f.severity.value} {f.rule}: {f.message}" for f in report.repository_change.resolved]
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
        shown = ", ".join(finding.records[:ANNOTATED_RECORDS])
        more = len(finding.records) - ANNOTATED_RECORDS
        lines.append(f"affects {len(finding.records)} records: {shown}" + (f" and {more} more" if more > 0 else ""))
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


# Shares of the comment for the blocking findings and for the table of changes; the sections per
# record get what is left.
_FINDINGS_SHARE = 0.4
_CHANGES_SHARE = 0.25


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


def _blocking_rows(findings: Sequence[Finding], link_base: str | None) -> list[str]:
    rows = []
    for finding in findings:
        affected = f"{len(finding.records)}" if finding.records else "all"
        rows.append(
            f"| `{finding.rule}` | {_place(finding, link_base)} | {markdown_cell(finding.message)} | {affected} |"
        )
    return rows


def format_markdown(report: Report, limit: int = MARKDOWN_LIMIT, full_report: str | None = None) -> str:
    """A pull-request comment: the summary, the blocking findings, the changes, then each record.

    The blocking findings come first, each once with the number of records it blocks, because a
    reviewer must see them even when thousands of records changed. The comment stays under
    `limit` characters; what it leaves out is counted in a closing note that names where the
    full report is (`full_report`, such as a workflow artifact).
    """
    full_report = full_report or report.full_report
    grouped, general = affecting(report)
    general_blocking = [f for f in general if f.blocking]
    states = {record.file: state_of([*grouped.get(record.file, ()), *general_blocking]) for record in report.records}
    blocked = [r for r in report.records if states[r.file] == "blocked"]
    noted = [r for r in report.records if states[r.file] == "ready" and grouped.get(r.file)]
    head = [
        MARKDOWN_MARKER,
        f"## eCoC readiness: {len(blocked)} of {len(report.records)} records blocked"
        + (", because repository findings block every record" if general_blocking else ""),
        "",
        "| records checked | blocked | ready | errors | warnings | info | waived |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {len(report.records)} | {len(blocked)} | {len(report.records) - len(blocked)} "
        f"| {report.summary.get('errors', 0)} | {report.summary.get('warnings', 0)} "
        f"| {report.summary.get('info', 0)} | {report.summary.get('waived', 0)} |",
    ]
    if report.base is not None:
        head += ["", f"Checked the records changed or affected since `{report.base.replace('`', '')}`."]
    if report.base_problem:
        head += ["", markdown_cell(report.base_problem) + "; every checked record counts as new."]
    # The closing note must always fit after what was kept.
    room = limit - 800 - sum(len(line) + 1 for line in head)
    left: list[str] = []
    blocks = ["\n".join(head)]

    blocking = sorted([f for f in report.findings if f.blocking], key=lambda f: (-len(f.records), *f.sort_key()))
    if blocking:
        rows, missing = _capped(_blocking_rows(blocking, report.link_base), int(room * _FINDINGS_SHARE))
        blocks.append(
            "\n### Blocking findings\n\n| rule | where | message | records |\n| --- | --- | --- | ---: |\n"
            + "\n".join(rows)
        )
        room -= sum(len(row) + 1 for row in rows) + 120
        if missing:
            left.append(f"{missing} blocking finding{'s' if missing != 1 else ''}")
    if report.changes is not None:
        repository = report.repository_change
        if repository is not None:
            blocks.append(
                f"\nRepository findings since the base: {len(repository.added)} added, "
                f"{len(repository.resolved)} resolved (see below)."
            )
        if not report.changes:
            blocks.append("\n### Changes since the base\n\nNo record's readiness or findings changed.")
        else:
            change_rows = []
            for change in report.changes:
                arrow = f"**{change.after}**" if change.before != change.after else change.after
                change_rows.append(
                    f"| {markdown_cell(change.vin or change.file)} | {change.before} | {arrow} "
                    f"| {len(change.added)} | {len(change.resolved)} |"
                )
            rows, missing = _capped(change_rows, int(room * _CHANGES_SHARE / (1 - _FINDINGS_SHARE)))
            blocks.append(
                "\n### Changes since the base\n\n"
                "| record | before | after | findings added | findings resolved |\n| --- | --- | --- | ---: | ---: |\n"
                + "\n".join(rows)
            )
            room -= sum(len(row) + 1 for row in rows) + 150
            if missing:
                left.append(f"{missing} changed record{'s' if missing != 1 else ''}")
    sections: list[str] = []
    if general:
        sections.append(
            "\n### Repository findings (rule files, waivers, settings)\n\n"
            + "\n".join(_finding_table(sorted(general, key=Finding.sort_key), report.link_base))
        )
    for title, records in (("Blocked records", blocked), ("Ready records with findings", noted)):
        for position, record in enumerate(records):
            findings = grouped.get(record.file, [])
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
            sections.append("\n".join(lines))
    kept, missing = _capped(sections, room)
    blocks += kept
    if missing:
        left.append(f"{missing} record section{'s' if missing != 1 else ''}")
    text = "\n".join(blocks)
    if left:
        where = f" The full report is {full_report}." if full_report else ""
        command = (
            "ecoc check" + (f" --base {report.base}" if report.base else "") + " --format markdown --output report.md"
        )
        text += (
            f"\n\n---\nThis comment was cut to stay within GitHub's size limit: {', '.join(left)} "
            f"are not shown.{where} Run `{command.replace('`', '')}` to write it in full."
        )
    return text + "\n"
