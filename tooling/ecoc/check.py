"""Readiness checks: load every approval and record, check them, and collect the findings.

Per record the check merges the layers, checks the structure against the IVI model, applies
the identifier rules, and renders the XML and validates it against the official XSD when
one is configured. The result for one record depends only on the bytes of the record file,
of its approval file, of the schema and on the version of ecoc, which is what the cache keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ecoc.errors import InputError
from ecoc.files import digest, read_file
from ecoc.findings import Finding, Severity
from ecoc.identifiers import (
    FRAMEWORKS,
    approval_file_name,
    eu_authority_codes,
    parse_approval_number,
    vin_check_digit,
    vin_forbidden_letters,
)
from ecoc.ivi.header import reference_id
from ecoc.ivi.render import content_digest, render
from ecoc.model.approval import Approval, Variant, Version, parse_approval
from ecoc.model.effective import Effective, build_effective, set_issue
from ecoc.model.record import ISSUED_DIGEST, Record
from ecoc.rules.catalogue import Catalogue
from ecoc.rules.evaluate import VersionMemo, evaluate
from ecoc.yamlload import Scalar, Source

if TYPE_CHECKING:
    from ecoc.evidence import Evidence
    from ecoc.ivi.xsd import IviSchema

# The version date and time only matters for rendered files; checks render with this one.
CHECK_DATETIME = "2000-01-01T00:00:00Z"


@dataclass(eq=False)
class ApprovalIndex:
    """All approval files of the repository, by approval number."""

    approvals: list[Approval] = field(default_factory=list)
    by_number: dict[str, Approval] = field(default_factory=dict)
    # Approval files that name no approval number (unreadable or broken), by file name.
    unnamed: dict[str, Approval] = field(default_factory=dict)
    # Approval files that cannot be read at all.
    unreadable: list[str] = field(default_factory=list)
    # Every file of an approval number that more than one file defines.
    duplicates: dict[str, list[Approval]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def files_of(self, number: str | None) -> list[Approval]:
        """Return the approval files a record of `number` depends on: one, or all duplicates."""
        if number is None:
            return []
        if number in self.duplicates:
            return self.duplicates[number]
        approval = self.by_number.get(number) or self.unnamed.get(approval_file_name(number))
        return [approval] if approval is not None else []

    def add(self, approval: Approval) -> None:
        self.approvals.append(approval)
        self.findings.extend(approval.findings)
        number = approval.number_text
        if number is None:
            self.unnamed[approval.source.path.rsplit("/", 1)[-1]] = approval
            return
        known = self.by_number.get(number)
        if known is not None:
            self.duplicates.setdefault(number, [known]).append(approval)
            return
        self.by_number[number] = approval
        self.findings.extend(check_approval_number(approval))

    def paths_of(self, number: str | None) -> list[str]:
        """Return the files a record of `number` depends on, including one that cannot be read."""
        paths = [approval.source.path for approval in self.files_of(number)]
        if not paths and number is not None:
            name = approval_file_name(number)
            paths = [path for path in self.unreadable if path.rsplit("/", 1)[-1] == name]
        return paths

    def report_duplicates(self) -> None:
        """Add one finding per file of a duplicated number; records of it are blocked too."""
        for number, files in self.duplicates.items():
            for current in files:
                others = ", ".join(other.source.path for other in files if other is not current)
                assert current.number is not None
                self.findings.append(
                    Finding(
                        "approval.duplicate",
                        Severity.ERROR,
                        f"approval {number} is also defined in {others}",
                        current.source.path,
                        current.number.line,
                        current.number.column,
                        "CocDataGroup.TypeApprovalNumber",
                        "keep one file per approval number, and merge the variants into one of them",
                    )
                )


def load_approvals(paths: list[tuple[str, str]]) -> ApprovalIndex:
    index = ApprovalIndex()
    for path, relative in paths:
        data, problem = read_file(path, relative)
        if data is None:
            assert problem is not None
            index.findings.append(problem)
            index.unreadable.append(relative)
            continue
        index.add(parse_approval(data, Source(relative), digest(data)))
    index.report_duplicates()
    return index


def check_approval_number(approval: Approval) -> list[Finding]:
    """Check the approval number's format, its authority and the DesignatedTypeApprovalCountry."""
    number_node = approval.number
    assert number_node is not None
    text = number_node.text
    where = (approval.source.path, number_node.line, number_node.column, "CocDataGroup.TypeApprovalNumber")
    parsed = parse_approval_number(text)

    if parsed is None:
        return [
            Finding(
                "approval.number-format",
                Severity.ERROR,
                f"{text!r} is not a type-approval number of the form e<authority>*<act>*<base>*<extension>",
                *where,
                "write it as on the approval certificate, for example e4*2018/858*00412*01",
            )
        ]

    findings = []
    if parsed.authority not in eu_authority_codes():
        findings.append(
            Finding(
                "approval.authority",
                Severity.ERROR,
                f"{parsed.authority} in {text} is not the code of an EU approval authority",
                *where,
                "IVI 2.0 accepts the e-codes of the 27 EU Member States, "
                "so UK approvals (e11, g11, n11) go to the VCA instead",
            )
        )
    if parsed.act not in FRAMEWORKS:
        findings.append(
            Finding(
                "approval.framework",
                Severity.WARNING,
                f"{parsed.act} in {text} is not an approval framework ecoc knows",
                *where,
                "expected one of " + ", ".join(FRAMEWORKS),
            )
        )

    declared = approval.header.get("DesignatedTypeApprovalCountry") if approval.header else None
    if isinstance(declared, Scalar) and declared.value != parsed.authority:
        findings.append(
            Finding(
                "approval.ecode-country",
                Severity.ERROR,
                f"DesignatedTypeApprovalCountry is {declared.text}, "
                f"but the approval number {text} was granted by {parsed.authority}",
                approval.source.path,
                declared.line,
                declared.column,
                "Header.DesignatedTypeApprovalCountry",
                f"remove DesignatedTypeApprovalCountry (ecoc derives {parsed.authority} from the number) "
                "or correct the approval number",
            )
        )
    return findings


def check_vin(record: Record) -> list[Finding]:
    vin = record.vin
    if vin is None or not isinstance(vin.value, str):
        return []
    findings = []
    where = (record.source.path, vin.line, vin.column, "vin")
    forbidden = vin_forbidden_letters(vin.text)
    if forbidden:
        listed = ", ".join(f"{letter} at position {index}" for index, letter in forbidden)
        findings.append(
            Finding(
                "vin.format",
                Severity.ERROR,
                f"VIN {vin.text} contains {listed}",
                *where,
                "ISO 3779 VINs never contain I, O or Q; check for 1 and 0",
                (vin.text,),
            )
        )
        return findings
    expected = vin_check_digit(vin.text)
    if expected is not None and vin.text[8] != expected:
        findings.append(
            Finding(
                "vin.check-digit",
                Severity.WARNING,
                f"position 9 of VIN {vin.text} is {vin.text[8]}, the North-American check digit would be {expected}",
                *where,
                "EU VINs need no check digit, so this only matters for vehicles that also go to North America",
                (vin.text,),
            )
        )
    return findings


def check_issued(effective: Effective) -> list[Finding]:
    """Block a record whose data differs from the issued certificate of the same version."""
    issued = effective.record.issued
    if issued is None or issued["IviVersionNumber"].value != effective.version_number:
        return []
    if content_digest(effective.header, effective.coc) == issued[ISSUED_DIGEST].value:
        return []
    number = issued["IviVersionNumber"]
    return [
        Finding(
            "record.issued-changed",
            Severity.ERROR,
            f"the data differs from the certificate issued as IviVersionNumber {number.text} "
            f"(IviReferenceId {issued['IviReferenceId'].text})",
            effective.record.source.path,
            number.line,
            number.column,
            "issued.IviVersionNumber",
            f"a change to an issued certificate is a correction: set Header.IviVersionNumber to "
            f"{int(number.text) + 1} and give a correction_reason, or undo the change",
            (effective.vin,),
        )
    ]


def _version_note(effective: Effective, issued: int, released: int) -> list[Finding]:
    """Warn when the record's own Header.IviVersionNumber is not the version the release uses.

    The evidence archive decides the version: unchanged data keeps the issued version, and a
    correction takes the next one, or the record's number when that is higher, which skips some.
    """
    header = effective.record.header
    written = header.get("IviVersionNumber") if header is not None else None
    if not isinstance(written, Scalar) or not isinstance(written.value, int):
        return []
    if written.value == released and released > issued + 1:
        skipped = f"{issued + 1}" if released == issued + 2 else f"{issued + 1} to {released - 1}"
        message = (
            f"Header.IviVersionNumber {written.text} skips IviVersionNumber {skipped}: the evidence archive "
            f"holds {issued} as the latest"
        )
        hint = f"set it to {issued + 1}, unless the skipped versions were issued outside ecoc"
    elif written.value == released:
        return []
    elif released == issued:
        message = (
            f"Header.IviVersionNumber {written.text} is not used: the data equals IviVersionNumber {issued} "
            "in the evidence archive, which keeps its number"
        )
        hint = f"remove IviVersionNumber from the record, or set it to {issued}"
    elif written.value < released:
        message = (
            f"Header.IviVersionNumber {written.text} is not used: the evidence archive holds IviVersionNumber "
            f"{issued}, so the correction is released as {released}"
        )
        hint = f"remove IviVersionNumber from the record, or set it to {released}"
    else:
        return []
    return [
        Finding(
            "record.version-number",
            Severity.WARNING,
            message,
            effective.record.source.path,
            written.line,
            written.column,
            "Header.IviVersionNumber",
            hint,
            (effective.vin,),
        )
    ]


def apply_evidence(effective: Effective, issued: Sequence[Evidence], version_datetime: str) -> list[Finding]:
    """Give the record the version the evidence archive calls for, or block a change that needs a correction.

    Unchanged data keeps the header of its latest issued version. Changed data is a correction:
    with a new correction_reason it becomes the next IviVersionNumber with a new IviReferenceId;
    without one, the record is blocked. A rejected version blocks the record until it is corrected.
    """
    previous = None
    for entry in issued:
        if entry.stage == effective.stage and (previous is None or entry.version > previous.version):
            previous = entry
    if previous is None or previous.reference_id is None or previous.version_datetime is None:
        return []
    record = effective.record
    vin = effective.vin
    data = content_digest(effective.header, effective.coc, with_version=False)
    where = record.correction_reason or record.vin
    assert where is not None
    what = {"accepted": "delivered", "rejected": "rejected by the authority", "pending": "signed"}[previous.delivery]
    if data == previous.data_digest:
        notes = _version_note(effective, previous.version, previous.version)
        set_issue(effective, previous.version, previous.reference_id, previous.version_datetime)
        if previous.delivery != "rejected":
            return notes
        return [
            *notes,
            Finding(
                "release.rejected",
                Severity.ERROR,
                f"the authority rejected IviVersionNumber {previous.version} (IviReferenceId "
                f"{previous.reference_id}): {previous.reason or 'no reason given'}",
                record.source.path,
                where.line,
                where.column,
                "correction_reason" if record.correction_reason is not None else "vin",
                f"correct the data and give a new correction_reason; the release job then issues IviVersionNumber "
                f"{previous.version + 1}",
                (vin,),
            ),
        ]
    reason = record.correction_reason
    if reason is not None and reason.text.strip() and reason.text != previous.correction_reason:
        number = max(effective.version_number, previous.version + 1)
        notes = _version_note(effective, previous.version, number)
        new_reference = reference_id(vin, effective.stage, number)
        set_issue(effective, number, new_reference, version_datetime)
        # Reviewers see in the pull request that merging issues a new version to the authority.
        correction = Finding(
            "release.correction",
            Severity.INFO,
            f"merging releases IviVersionNumber {number} (IviReferenceId {new_reference}) as a correction of "
            f"IviVersionNumber {previous.version}, which was {what}: {reason.text.strip()}",
            record.source.path,
            reason.line,
            reason.column,
            "correction_reason",
            "check that the changed values and the reason are right before approving",
            (vin,),
        )
        return [correction, *notes]
    if reason is not None and reason.text == previous.correction_reason:
        message = (
            f"the data differs from IviVersionNumber {previous.version}, which was {what}, and the "
            f"correction_reason is the one given for that version"
        )
        hint = f"describe this correction in correction_reason to release IviVersionNumber {previous.version + 1}"
    else:
        message = f"the data differs from IviVersionNumber {previous.version}, which was {what} ({previous.manifest})"
        hint = (
            f"a change to an issued certificate is a correction: give correction_reason (why the data changed) "
            f"to release IviVersionNumber {previous.version + 1}, or undo the change"
        )
    # The manifest contains the sha256 of the record and approval files it was signed from.
    current = {record.source.path: record.digest, effective.approval.source.path: effective.approval.digest}
    changed = [path for path, sha in previous.sources if path in current and current[path] != sha]
    if changed:
        message += "; changed since it was signed: " + ", ".join(changed)
    if changed and record.source.path not in changed:
        hint += "; the record file is as it was signed, so the change came from its approval file"
    return [
        Finding(
            "release.correction-required",
            Severity.ERROR,
            message,
            record.source.path,
            where.line,
            where.column,
            "correction_reason" if reason is not None else "vin",
            hint,
            (vin,),
        )
    ]


def check_file_name(record: Record) -> list[Finding]:
    """Records are filed as <VIN>.yaml (or <VIN>-<suffix>.yaml), so that people find them."""
    vin = record.vin
    if vin is None or not isinstance(vin.value, str):
        return []
    stem = record.source.path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if stem == vin.text or stem.startswith(vin.text + "-"):
        return []
    return [
        Finding(
            "record.file-name",
            Severity.WARNING,
            f"the file is named {stem} but holds VIN {vin.text}",
            record.source.path,
            vin.line,
            vin.column,
            "vin",
            f"rename the file to {vin.text}.yaml, or correct the VIN",
            (vin.text,),
        )
    ]


def _unknown(kind: str, text: str, known: list[str], cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(text, known, n=1, cutoff=cutoff)
    if close:
        return f"did you mean {close[0]}?"
    if not known:
        return f"add the {kind} to the approval file"
    return f"known {kind}s: " + ", ".join(known[:8]) + (" …" if len(known) > 8 else "")


def _unknown_approval_hint(number: str, index: ApprovalIndex) -> str:
    broken = index.unreadable + [a.source.path for a in index.unnamed.values()]
    if broken:
        # The approval may be in a file that cannot be read; say so before guessing another one.
        return (
            f"{', '.join(sorted(broken))} cannot be read; if one of them is approval {number}, "
            "fix it first, otherwise add the approval"
        )
    return _unknown("approval", number, list(index.by_number), cutoff=0.9)


def resolve(record: Record, index: ApprovalIndex) -> tuple[tuple[Approval, Variant, Version] | None, list[Finding]]:
    """Find the approval, variant and version a record names."""
    if record.approval is None or record.variant is None or record.version is None or record.vin is None:
        return None, []
    vin = (record.vin.text,)
    path = record.source.path
    approval = index.by_number.get(record.approval.text)
    if approval is None:
        node = record.approval
        broken = index.unnamed.get(approval_file_name(node.text))
        if broken is not None:
            return None, [
                Finding(
                    "record.approval-unknown",
                    Severity.ERROR,
                    f"approval {node.text} cannot be read from {broken.source.path}",
                    path,
                    node.line,
                    node.column,
                    "approval",
                    f"fix the findings in {broken.source.path} first",
                    vin,
                )
            ]
        return None, [
            Finding(
                "record.approval-unknown",
                Severity.ERROR,
                f"approval {node.text} is not defined in approvals/",
                path,
                node.line,
                node.column,
                "approval",
                _unknown_approval_hint(node.text, index),
                vin,
            )
        ]
    variant = approval.variants.get(record.variant.text)
    if variant is None:
        node = record.variant
        return None, [
            Finding(
                "record.variant-unknown",
                Severity.ERROR,
                f"approval {approval.number_text} has no variant {node.text}",
                path,
                node.line,
                node.column,
                "variant",
                _unknown("variant", node.text, list(approval.variants)),
                vin,
            )
        ]
    version = variant.versions.get(record.version.text)
    if version is None:
        node = record.version
        return None, [
            Finding(
                "record.version-unknown",
                Severity.ERROR,
                f"variant {variant.name} of approval {approval.number_text} has no version {node.text}",
                path,
                node.line,
                node.column,
                "version",
                _unknown("version", node.text, list(variant.versions)),
                vin,
            )
        ]
    return (approval, variant, version), []


def xsd_findings(effective: Effective, schema: IviSchema, data: bytes) -> list[Finding]:
    """Validate rendered bytes and map each XSD error back to the YAML line of the value."""
    errors = schema.validate_bytes(data)
    if not errors:
        return []
    origins = render(effective.header, effective.coc, keep_origins=True).origins
    findings = []
    for error in errors:
        origin = origins[error.line - 1] if 0 < error.line <= len(origins) else None
        node = origin.node if origin is not None else None
        if node is None:
            node = effective.record.root
        findings.append(
            Finding(
                "xsd.invalid",
                Severity.ERROR,
                error.message,
                node.source.path if node is not None else effective.record.source.path,
                node.line if node is not None else 1,
                node.column if node is not None else 1,
                origin.xpath if origin is not None else None,
                "the rendered XML breaks the official IVI 2.0 schema here; fix the value in the YAML",
                (effective.vin,),
            )
        )
    return findings


@dataclass(eq=False)
class RecordOutcome:
    record: Record
    findings: list[Finding]
    effective: Effective | None = None
    rendered: bytes | None = None
    # sha256 of the rendered certificate, to compare what would be signed before and after a change.
    certificate: str | None = None


@dataclass(eq=False)
class RuleRun:
    """The readiness rules of one run: the catalogue, the date, and per-version results."""

    catalogue: Catalogue
    today: str
    memos: dict[tuple[str, str, str], VersionMemo] = field(default_factory=dict)

    def memo(self, approval: Approval, variant: Variant, version: Version) -> VersionMemo:
        key = (approval.source.path, variant.name, version.name)
        found = self.memos.get(key)
        if found is None:
            found = self.memos[key] = VersionMemo()
        return found


def check_record(
    record: Record,
    index: ApprovalIndex,
    schema: IviSchema | None,
    version_datetime: str = CHECK_DATETIME,
    keep_render: bool = False,
    rules: RuleRun | None = None,
    evidence: Mapping[str, Sequence[Evidence]] | None = None,
    archive: Path | None = None,
) -> RecordOutcome:
    """Check one record against its approval, the model, the rules and the schema.

    With `evidence` (issued certificates by VIN), the record gets the IviVersionNumber its
    history calls for (see `apply_evidence`). With `archive`, the repository root that holds
    signed/, a change that needs a correction also names the values that differ from the
    certificate last issued.
    """
    vin = (record.vin.text,) if record.vin is not None else ()
    findings = [f if f.records or not vin else _with_records(f, vin) for f in record.findings]
    findings += check_vin(record)
    findings += check_file_name(record)
    resolved, problems = resolve(record, index)
    findings += problems
    outcome = RecordOutcome(record, findings)
    if resolved is None:
        return outcome
    approval, variant, version = resolved
    effective, structure = build_effective(record, approval, variant, version, version_datetime)
    findings += structure
    outcome.effective = effective
    renderable = (
        record.valid
        and approval.valid
        and variant.valid
        and version.valid
        and not any(f.severity.blocking for f in structure)
        # Without it the approval number is malformed, which the approval's findings report.
        and "DesignatedTypeApprovalCountry" in effective.header
    )
    if not renderable:
        if rules is not None and rules.catalogue.rules:
            findings.append(_rules_skipped(record, findings))
        return outcome
    findings += check_issued(effective)
    if evidence is not None and effective.vin in evidence:
        findings += apply_evidence(effective, evidence[effective.vin], version_datetime)
    if rules is not None:
        memo = rules.memo(approval, variant, version)
        findings += evaluate(rules.catalogue, effective, effective.base_coc, memo, rules.today)
    rendered = render(effective.header, effective.coc)
    if archive is not None and evidence is not None:
        issued = evidence.get(effective.vin or "", ())
        findings[:] = [
            _with_changed_values(f, rendered.data, archive, issued, effective.stage)
            if f.rule == "release.correction-required"
            else f
            for f in findings
        ]
    outcome.certificate = hashlib.sha256(rendered.data).hexdigest()
    if schema is not None:
        findings += xsd_findings(effective, schema, rendered.data)
    if keep_render:
        outcome.rendered = rendered.data
    return outcome


# A finding names at most this many changed values; ecoc preview and check --base list them all.
CHANGED_VALUES_NAMED = 5


def _with_changed_values(
    finding: Finding, rendered: bytes, archive: Path, issued: Sequence[Evidence], stage: int
) -> Finding:
    """Add to a finding the values in which `rendered` differs from the certificate last issued for `stage`.

    A certificate that cannot be read, or that is no IVI document, leaves the finding as it is,
    since ecoc audit reports it.
    """
    from ecoc.evidence import CERTIFICATE_NAME
    from ecoc.ivi.xmlsafe import parse_xml_bytes
    from ecoc.preview import changed_values

    latest = max((entry for entry in issued if entry.stage == stage), key=lambda entry: entry.version, default=None)
    if latest is None:
        return finding
    path = archive / latest.folder / CERTIFICATE_NAME
    try:
        certificate = path.read_bytes()
        if parse_xml_bytes(certificate, str(path)).getroot().tag != parse_xml_bytes(rendered, "").getroot().tag:
            return finding
        changes = changed_values(rendered, certificate)
    except (OSError, InputError):
        return finding
    if not changes:
        return finding
    listed = ", ".join(
        f"{item + ' ' if item else ''}{label}: {before or '(none)'} -> {after or '(none)'}"
        for item, label, before, after in changes[:CHANGED_VALUES_NAMED]
    )
    if len(changes) > CHANGED_VALUES_NAMED:
        listed += f" and {len(changes) - CHANGED_VALUES_NAMED} more"
    return dataclasses.replace(finding, message=f"{finding.message}; changed values: {listed}")


def _rules_skipped(record: Record, findings: list[Finding]) -> Finding:
    """Say that the readiness rules did not run on a record that cannot be built whole.

    The note sits at the record's first blocking error, so that it follows that error.
    """
    blocking = [f for f in findings if f.blocking and f.file == record.source.path and f.line is not None]
    first = min(blocking, key=lambda f: (f.line or 0, f.column or 0), default=None)
    line, column = (first.line or 1, first.column or 1) if first is not None else (1, 1)
    return Finding(
        "rules.skipped",
        Severity.INFO,
        "the readiness rules did not run on this record, because of its blocking errors",
        record.source.path,
        line,
        column,
        None,
        "fix the blocking errors, then check again to see what the rules report",
        (record.vin.text,) if record.vin is not None else (),
    )


def _with_records(finding: Finding, records: tuple[str, ...]) -> Finding:
    return Finding(
        finding.rule,
        finding.severity,
        finding.message,
        finding.file,
        finding.line,
        finding.column,
        finding.path,
        finding.hint,
        records,
    )


def duplicate_vins(records: list[tuple[str, int, int, str, int]]) -> list[Finding]:
    """One finding per record whose VIN and manufacturer stage another record also has.

    `records` contains the VIN, its line and column, the record file and the stage of every
    record. Each stage of a multi-stage vehicle has a record of its own, with the same VIN.
    """
    by_vin: dict[tuple[str, int], list[tuple[str, int, int]]] = {}
    for vin, line, column, path, stage in records:
        by_vin.setdefault((vin, stage), []).append((path, line, column))
    findings = []
    for (vin, stage), holders in by_vin.items():
        if len(holders) < 2:
            continue
        which = f"VIN {vin}" if stage == 1 else f"VIN {vin} at manufacturer stage {stage}"
        for path, line, column in holders:
            others = ", ".join(p for p, _, _ in holders if p != path)
            findings.append(
                Finding(
                    "record.duplicate-vin",
                    Severity.ERROR,
                    f"{which} is also used by {others}",
                    path,
                    line,
                    column,
                    "vin",
                    "each vehicle has exactly one record per manufacturer stage; remove or correct the duplicate",
                    (vin,),
                )
            )
    return findings


def record_stage(record: Record, index: ApprovalIndex) -> int:
    """Return the manufacturer stage of a record that is not checked in this run."""
    resolved, _ = resolve(record, index)
    if resolved is None or record.vin is None:
        return 1
    approval, variant, version = resolved
    return build_effective(record, approval, variant, version, CHECK_DATETIME)[0].stage
