"""`ecoc status`: the state of each record, what it lacks, the next action and who owns it.

The state is derived, never stored: `blocked` while a finding blocks the record, `ready` when
nothing does, `approved` once the record and its approval file are on the main branch as they
are here, `signed` when the evidence archive holds a certificate of exactly this content,
`delivered` or `rejected` after the authority's receipt for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from ecoc.evidence import Evidence
from ecoc.files import CONFIG_NAME
from ecoc.findings import Finding
from ecoc.formats import CheckedRecord, Report, affecting, markdown_cell
from ecoc.model.approval import Owners
from ecoc.report import count_phrase

STATES = ("blocked", "ready", "approved", "signed", "delivered", "rejected")
# Blocking findings named in a record's row; the rest are counted.
LISTED_FINDINGS = 3


@dataclass(frozen=True, slots=True)
class RecordStatus:
    file: str
    vin: str | None
    approval: str | None
    state: str
    # The things that keep the record from the next state, in a few words each.
    missing: tuple[str, ...]
    next_action: str
    owners: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Facts:
    """What the state of a record depends on besides its findings."""

    # Record files whose record and approval file are on the main branch as they are here;
    # None when the main branch is unknown.
    merged: frozenset[str] | None
    evidence: Mapping[str, Sequence[Evidence]]
    # The content digest of each record with evidence (see ecoc.ivi.render.content_digest).
    digests: Mapping[str, str]
    # Owners by approval number, and the defaults of ecoc.yaml.
    owners: Mapping[str, Owners]
    default_owners: Owners


def _missing(findings: Sequence[Finding]) -> tuple[str, ...]:
    blocking = [f for f in findings if f.blocking]
    listed = [f"{f.rule} ({f.file}:{f.line})" if f.file else f.rule for f in blocking[:LISTED_FINDINGS]]
    if len(blocking) > LISTED_FINDINGS:
        more = len(blocking) - LISTED_FINDINGS
        listed.append(f"{more} more error" + ("" if more == 1 else "s"))
    return tuple(listed)


def _owners(facts: Facts, approval: str | None, role: str) -> tuple[str, ...]:
    owners = facts.owners.get(approval or "") or facts.default_owners
    chosen: tuple[str, ...] = getattr(owners, role) or getattr(facts.default_owners, role)
    if not chosen and role == "release":
        chosen = owners.review or facts.default_owners.review
    return chosen


def _blocker(finding: Finding) -> tuple[str, str]:
    """Return what a blocking finding requires to be fixed, and the role of the owners who fix it.

    The seal and the evidence archive belong to the release owners, and rules, waivers and
    ecoc.yaml to the reviewers who approve them. Everything else is the approval's or record's data.
    """
    file = finding.file or ""
    if finding.rule.startswith("signing."):
        return "the seal", "release"
    if file.startswith("rules/"):
        return ("the waiver" if finding.rule.startswith("waiver.") else "the rule"), "review"
    if file == CONFIG_NAME:
        return "ecoc.yaml", "review"
    if file.startswith("signed/"):
        return "the evidence archive", "release"
    return "the data", "data"


def status_of(record: CheckedRecord, approval: str | None, findings: Sequence[Finding], facts: Facts) -> RecordStatus:
    """Derive the state of one record, what it lacks, and the next action with its owners."""
    # A rejection is a finding for `ecoc check`; here it is the state itself.
    blocking = [f for f in findings if f.blocking and f.rule != "release.rejected"]
    issued = facts.evidence.get(record.vin or "", ())
    current = facts.digests.get(record.file)
    latest = next((e for e in reversed(issued) if current is not None and e.content_digest == current), None)

    def row(state: str, missing: tuple[str, ...], action: str, role: str | None) -> RecordStatus:
        owners = _owners(facts, approval, role) if role else ()
        return RecordStatus(record.file, record.vin, approval, state, missing, action, owners)

    if latest is not None:
        # A certificate issued for exactly this content keeps its state: a finding that came later,
        # such as an expired waiver, blocks a correction of it, not what was issued.
        later = tuple(f"for a correction: {item}" for item in _missing(blocking))
        if latest.delivery == "accepted" and latest.transport == "outbox":
            # The outbox took the file, and the authority's response goes to the system that uploads it.
            return row(
                "delivered",
                later,
                "none for ecoc: the certificate is in the outbox, and the system that uploads it "
                "receives the authority's answer",
                None,
            )
        if latest.delivery == "accepted":
            return row("delivered", later, "none: the authority accepted the certificate", None)
        if latest.delivery == "rejected":
            reason = latest.reason or "no reason given"
            return row(
                "rejected",
                (f"rejected by the authority: {reason}", *later),
                "correct the data, set correction_reason and release the correction",
                "data",
            )
        failures = [attempt for attempt in latest.attempts if attempt.status == "failed"]
        if failures:
            # Deliveries that keep failing need someone to look at the transport, not only the next run.
            last = failures[-1]
            times = "once" if len(failures) == 1 else f"{len(failures)} times"
            return row(
                "signed",
                (f"the authority's receipt: delivery failed {times}, last: {last.message}", *later),
                "fix what made the delivery fail (the endpoint, its certificates or the network), "
                "then run the release again",
                "release",
            )
        return row("signed", ("the authority's receipt", *later), "the release job delivers the certificate", "release")
    if blocking:
        first = blocking[0]
        what, role = _blocker(first)
        # The message names the element and the problem, and the hint what to write instead.
        action = f"fix {what}: {first.message}" + (f"; {first.hint}" if first.hint else "")
        return row("blocked", _missing(blocking), action, role)
    correction = any(f.rule == "release.correction" for f in findings)
    if facts.merged is not None and record.file in facts.merged:
        what = "the correction" if correction else "it"
        return row("approved", ("a signed certificate",), f"the release job signs and delivers {what}", "release")
    if correction:
        return row(
            "ready",
            ("review and merge",),
            "review the correction and merge the pull request; the release job then issues the next version",
            "review",
        )
    return row("ready", ("review and merge",), "review and merge the pull request", "review")


def statuses(report: Report, approvals: Mapping[str, str | None], facts: Facts) -> list[RecordStatus]:
    grouped, general = affecting(report)
    blocked_everywhere = [f for f in general if f.blocking]
    rows = []
    # In file order, whichever records came from the cache.
    for record in sorted(report.records, key=lambda record: record.file):
        findings = [*grouped.get(record.file, ()), *blocked_everywhere]
        rows.append(status_of(record, approvals.get(record.file), findings, facts))
    return rows


def counts(rows: Sequence[RecordStatus]) -> dict[str, int]:
    return {state: sum(1 for row in rows if row.state == state) for state in STATES}


def format_status_text(rows: Sequence[RecordStatus]) -> str:
    """Format one line per record with its state and owners, then what it lacks and the next action."""
    width = max((len(row.vin or row.file) for row in rows), default=0)
    lines = []
    for row in rows:
        lines.append(f"{(row.vin or row.file).ljust(width)}  {row.state.ljust(9)} {', '.join(row.owners) or '-'}")
        if row.missing:
            lines.append(f"    missing: {'; '.join(row.missing)}")
        lines.append(f"    next: {row.next_action}")
    total = counts(rows)
    lines.append(
        ", ".join(f"{count} {state}" for state, count in total.items()) + f" of {count_phrase(len(rows), 'record')}"
    )
    return "\n".join(lines) + "\n"


def format_status_markdown(rows: Sequence[RecordStatus], where: str = "") -> str:
    """Format the board as Markdown. `where` names the commit and branch it describes."""
    total = counts(rows)
    lines = [
        "## eCoC status",
        "",
        *([f"As {where}.", ""] if where else []),
        "| " + " | ".join(STATES) + " |",
        "|" + " ---: |" * len(STATES),
        "| " + " | ".join(str(total[state]) for state in STATES) + " |",
        "",
        "| record | state | missing | next action | owners |",
        "| --- | --- | --- | --- | --- |",
    ]
    # Records that need someone first, so that a cut board still lists them.
    ordered = sorted(rows, key=lambda row: _ACTION_ORDER.index(row.state))
    size = sum(len(line) + 1 for line in lines)
    for shown, row in enumerate(ordered):
        cells = (
            markdown_cell(row.vin or row.file),
            f"**{row.state}**" if row.state in ("blocked", "rejected") else row.state,
            "<br>".join(markdown_cell(item) for item in row.missing) or "-",
            markdown_cell(row.next_action),
            markdown_cell(", ".join(row.owners)) or "-",
        )
        line = "| " + " | ".join(cells) + " |"
        if size + len(line) + 1 > MARKDOWN_LIMIT:
            # GitHub drops a job summary above 1 MiB, so the board stops short of it.
            left = len(ordered) - shown
            lines += [
                "",
                f"{count_phrase(left, 'more record')} {'is' if left == 1 else 'are'} not listed, to stay within "
                "the size of a job summary; "
                "the counts above include them, and ecoc status --format json lists every record.",
            ]
            break
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines) + "\n"


# Blocked and rejected records need action first, delivered ones none.
_ACTION_ORDER = ("blocked", "rejected", "signed", "ready", "approved", "delivered")
# The board's size in characters, below GitHub's limit of 1 MiB for a step summary.
MARKDOWN_LIMIT = 900_000


def format_status_json(rows: Sequence[RecordStatus], scope: Mapping[str, str | None] | None = None) -> str:
    """Format the board as JSON. `scope` names the commit and branch it describes and when it was made."""
    document = {**(scope or {}), "counts": counts(rows), "records": [asdict(row) for row in rows]}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
