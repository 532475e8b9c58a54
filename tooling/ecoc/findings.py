"""Findings: what `ecoc check` reports about the repository's data.

A finding is data, never an exception: a YAML syntax error, an unknown key, an XSD violation
and a failed readiness rule all end up as one `Finding` with the place it points at.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def blocking(self) -> bool:
        return self is Severity.ERROR


_SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True, slots=True)
class Finding:
    """One reported problem, located at `file:line:column` and at a YAML path inside the file."""

    rule: str
    severity: Severity
    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    path: str | None = None
    hint: str | None = None
    # VINs of the records the finding affects; empty for findings about a file as such.
    records: tuple[str, ...] = field(default=())
    # The id of the waiver that accepts this finding; a waived finding is reported but blocks nothing.
    waiver: str | None = None

    @property
    def record(self) -> str | None:
        return self.records[0] if len(self.records) == 1 else None

    @property
    def blocking(self) -> bool:
        return self.severity.blocking and self.waiver is None

    def sort_key(self) -> tuple[str, int, int, int, str, str]:
        return (
            self.file or "",
            self.line or 0,
            self.column or 0,
            _SEVERITY_ORDER[self.severity],
            self.rule,
            self.message,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "severity": self.severity.value,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "record": self.record,
            "records": list(self.records),
            "hint": self.hint,
            "waiver": self.waiver,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Finding:
        return cls(
            rule=str(data["rule"]),
            severity=Severity(str(data["severity"])),
            message=str(data["message"]),
            file=data.get("file"),  # type: ignore[arg-type]
            line=data.get("line"),  # type: ignore[arg-type]
            column=data.get("column"),  # type: ignore[arg-type]
            path=data.get("path"),  # type: ignore[arg-type]
            hint=data.get("hint"),  # type: ignore[arg-type]
            records=tuple(data.get("records") or ()),  # type: ignore[arg-type]
            waiver=data.get("waiver"),  # type: ignore[arg-type]
        )


def merge_duplicates(findings: list[Finding]) -> list[Finding]:
    """Fold findings that differ only in the record they affect into one finding.

    A bad value in an approval file affects every record of that approval; it is reported once,
    naming all the records, instead of once per record.
    """
    merged: dict[tuple[object, ...], Finding] = {}
    for finding in findings:
        key = (
            finding.rule,
            finding.severity,
            finding.message,
            finding.file,
            finding.line,
            finding.column,
            finding.path,
            finding.hint,
            finding.waiver,
        )
        known = merged.get(key)
        if known is None:
            merged[key] = finding
            continue
        merged[key] = replace(known, records=tuple(sorted(set(known.records + finding.records))))
    return sorted(merged.values(), key=Finding.sort_key)
