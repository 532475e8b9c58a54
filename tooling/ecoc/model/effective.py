"""The effective CoC of a record: its layers merged, plus the values ecoc derives."""

from __future__ import annotations

from dataclasses import dataclass

from ecoc.findings import Finding, Severity
from ecoc.ivi import header as ivi_header
from ecoc.ivi import spec as ivi_spec
from ecoc.model.approval import Approval, Variant, Version
from ecoc.model.coc import Replacement, check_structure, format_path, merge, nulls
from ecoc.model.record import Record
from ecoc.yamlload import Mapping, Scalar, Sequence, Source

DEFAULT_VERSION_NUMBER = 1


@dataclass(eq=False, slots=True)
class Effective:
    """The merged header and CoC trees of one record, ready to render."""

    record: Record
    approval: Approval
    header: Mapping
    coc: Mapping
    stage: int
    version_number: int
    # The version's merged CocDataGroup, which the record's tree shares unchanged subtrees with.
    base_coc: Mapping | None = None

    @property
    def vin(self) -> str:
        assert self.record.vin is not None
        return self.record.vin.text


def _derived(text: str, value: object, at: Scalar | Mapping | None, source: Source) -> Scalar:
    line, column = (at.line, at.column) if at is not None else (1, 1)
    scalar = Scalar(text, line, column, False, at.source if at is not None else source)
    scalar.value = value
    return scalar


def _own_copy(node: object, line: int, column: int, source: Source) -> Mapping:
    copy = Mapping(line, column, source)
    if isinstance(node, Mapping):
        copy.line, copy.column, copy.source = node.line, node.column, node.source
        copy.update(node)
        copy.key_positions = node.key_positions
    return copy


def _replacement_note(entry: Replacement, vin: str) -> Finding:
    steps, new, old = entry
    name = next((step for step in reversed(steps) if isinstance(step, str)), "the table")
    rows = f"{len(new)} row{'' if len(new) == 1 else 's'}"
    return Finding(
        "model.table-replaced",
        Severity.INFO,
        f"{name} has {rows} here and {len(old)} in {old.source.path}:{old.line}, "
        "so it replaces the inherited table instead of updating its rows",
        new.source.path,
        new.line,
        new.column,
        format_path("", steps),
        "to update the inherited rows one by one, give as many rows (write {} for a row that stays as it is)",
        (vin,),
    )


def _stage(coc: Mapping) -> int:
    """Return the manufacturer stage of the certificate: the highest ManufacturerStageNumber."""
    table = coc.get("ManufacturerTable")
    stages = (
        [
            stage.value
            for row in table
            if isinstance(row, Mapping) and isinstance(stage := row.get("ManufacturerStageNumber"), Scalar)
        ]
        if isinstance(table, Sequence)
        else []
    )
    numbers = [stage for stage in stages if isinstance(stage, int)]
    return max(numbers) if numbers else 1


def build_effective(
    record: Record, approval: Approval, variant: Variant, version: Version, version_datetime: str
) -> tuple[Effective, list[Finding]]:
    """Merge approval, variant, version and record, add derived values, check the structure."""
    assert record.vin is not None
    source = record.source
    base_header, base_coc, replaced_below = approval.base(variant, version)
    replaced: list[Replacement] = []
    header = _own_copy(merge(base_header, record.header, replaced, ("Header",)), 1, 1, source)
    coc = _own_copy(merge(base_coc, record.coc, replaced, ("CocDataGroup",)), 1, 1, source)
    vin = record.vin.text

    coc["VehicleIdentificationNumber"] = _derived(vin, vin, record.vin, source)
    coc["Variant"] = _derived(variant.name, variant.name, record.variant, source)
    coc["Version"] = _derived(version.name, version.name, record.version, source)

    stage = _stage(coc)
    number_node = header.get("IviVersionNumber")
    version_number = (
        number_node.value
        if isinstance(number_node, Scalar) and isinstance(number_node.value, int)
        else DEFAULT_VERSION_NUMBER
    )
    if not isinstance(number_node, Scalar):
        header["IviVersionNumber"] = _derived(str(version_number), version_number, record.vin, source)
    header["IviVersionNumberXsd"] = _derived(
        ivi_header.IVI_VERSION_NUMBER_XSD, ivi_header.IVI_VERSION_NUMBER_XSD, record.vin, source
    )
    findings: list[Finding] = []
    issued = record.issued
    if issued is not None and issued["IviVersionNumber"].value == version_number:
        # This version was issued before: a re-send must carry its id and time unchanged.
        header["IviReferenceId"] = issued["IviReferenceId"]
        header["IviVersionDateTime"] = issued["IviVersionDateTime"]
    else:
        reference = ivi_header.reference_id(vin, stage, version_number)
        header["IviReferenceId"] = _derived(reference, reference, record.vin, source)
        header["IviVersionDateTime"] = _derived(version_datetime, version_datetime, None, source)
    if issued is not None and issued["IviVersionNumber"].value > version_number:  # type: ignore[operator]
        number = issued["IviVersionNumber"]
        findings.append(
            Finding(
                "record.issued-version",
                Severity.ERROR,
                f"IviVersionNumber {number.text} was issued already, "
                f"but the record's IviVersionNumber is {version_number}",
                source.path,
                number.line,
                number.column,
                "issued.IviVersionNumber",
                f"set Header.IviVersionNumber to {number.text} or higher; version numbers never go down",
                (vin,),
            )
        )

    if "DesignatedTypeApprovalCountry" not in header and approval.number_text is not None:
        country = ivi_header.approval_country(approval.number_text)
        if country is not None:
            header["DesignatedTypeApprovalCountry"] = _derived(country, country, approval.number, source)
    findings += [_replacement_note(entry, vin) for entry in replaced_below + replaced]
    removed_header = nulls(record.header, "Header") if record.header is not None else {}
    removed_coc = nulls(record.coc, "CocDataGroup") if record.coc is not None else {}
    # An approval number that names no country gives no DesignatedTypeApprovalCountry, and
    # approval.number-format reports it. The record cannot set it, so its absence is no finding of its own.
    country = "DesignatedTypeApprovalCountry"
    skip = frozenset({country}) if country not in header else frozenset()
    own = record.coc if record.coc is not None else record.root
    check_structure(header, ivi_spec.header(), "Header", vin, findings, removed=removed_header, skip=skip)
    check_structure(coc, ivi_spec.coc_data_group(), "CocDataGroup", vin, findings, removed=removed_coc, own=own)
    base = base_coc if isinstance(base_coc, Mapping) else None
    return Effective(record, approval, header, coc, stage, version_number, base), findings


def set_issue(effective: Effective, version_number: int, reference_id: str, version_datetime: str) -> None:
    """Give the certificate the header of one issued version: its number, id and time."""
    header = effective.header
    at = effective.record.vin
    source = effective.record.source
    header["IviVersionNumber"] = _derived(str(version_number), version_number, at, source)
    header["IviReferenceId"] = _derived(reference_id, reference_id, at, source)
    header["IviVersionDateTime"] = _derived(version_datetime, version_datetime, None, source)
    effective.version_number = version_number
