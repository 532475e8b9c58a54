"""Write findings as text (file:line:col) or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import cast

from ecoc.findings import Finding, Severity

MAX_LISTED_RECORDS = 3


def count_phrase(count: int, noun: str, plural: str | None = None) -> str:
    """Return the count with its noun in agreeing number, such as "1 record" or "2 records"."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _records_note(finding: Finding) -> str:
    if not finding.records:
        return ""
    if len(finding.records) == 1:
        vin = finding.records[0]
        return "" if finding.file and vin in finding.file else f" (record {vin})"
    shown = ", ".join(finding.records[:MAX_LISTED_RECORDS])
    more = len(finding.records) - MAX_LISTED_RECORDS
    return f" (affects {len(finding.records)} records: {shown}{f' and {more} more' if more > 0 else ''})"


def format_text(findings: Sequence[Finding]) -> str:
    lines = []
    for finding in findings:
        place = finding.file or "-"
        if finding.line is not None:
            place += f":{finding.line}:{finding.column or 1}"
        at = f" [{finding.path}]" if finding.path else ""
        waived = f" (waived by {finding.waiver})" if finding.waiver else ""
        lines.append(
            f"{place}: {finding.severity.value} {finding.rule}: {finding.message}{at}{_records_note(finding)}{waived}"
        )
        if finding.hint:
            lines.append(f"    hint: {finding.hint}")
    return "\n".join(lines) + ("\n" if lines else "")


def format_json(findings: Sequence[Finding], summary: dict[str, object], extra: dict[str, object] | None = None) -> str:
    """Write the summary and the findings as JSON. Keys of `extra` follow them or replace them in place."""
    document = {"summary": summary, "findings": [f.to_dict() for f in findings], **(extra or {})}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def summarize(findings: Sequence[Finding], records: int, approvals: int) -> dict[str, object]:
    """Count findings by severity; waived findings are counted apart, whatever their severity."""
    counts = {severity.value: 0 for severity in Severity}
    waived = 0
    for finding in findings:
        if finding.waiver is not None:
            waived += 1
        else:
            counts[finding.severity.value] += 1
    return {
        "records": records,
        "approvals": approvals,
        "errors": counts["error"],
        "warnings": counts["warning"],
        "info": counts["info"],
        "waived": waived,
    }


def summary_line(summary: dict[str, object]) -> str:
    def plural(key: str, noun: str) -> str:
        return count_phrase(cast(int, summary[key]), noun)

    waived = f", {summary['waived']} waived" if summary.get("waived") else ""
    return (
        f"{plural('errors', 'error')}{waived}, {plural('warnings', 'warning')}, "
        f"{summary['info']} info in {plural('records', 'record')} and {plural('approvals', 'approval')}"
    )
