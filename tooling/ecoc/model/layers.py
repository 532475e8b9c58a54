"""Which IVI elements each layer may set.

The effective CoC is the approval, then the variant, then the version, then the record, laid
over each other. Some elements identify the approval and belong to the approval file only;
some are derived by ecoc and are never written; the IVI version number counts corrections
of one vehicle's certificate and belongs to the record only.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from ecoc.findings import Finding
from ecoc.ivi import spec as ivi_spec
from ecoc.ivi.spec import ElementSpec
from ecoc.model.coc import TreeTyper, join_path
from ecoc.model.nodes import unknown_key_finding
from ecoc.yamlload import Mapping


class Layer(enum.Enum):
    APPROVAL = "approval"
    VARIANT = "variant"
    VERSION = "version"
    RECORD = "record"


DERIVED: dict[str, str] = {
    "VehicleIdentificationNumber": "ecoc takes it from the record's vin key",
    "Variant": "ecoc takes it from the variant's key under variants",
    "Version": "ecoc takes it from the version's key under versions",
    "IviReferenceId": "ecoc derives it from the VIN, the stage and the IVI version number",
    "IviVersionNumberXsd": "it is always 2.0",
    "IviVersionDateTime": "ecoc takes it from the commit being rendered",
}

APPROVAL_ONLY: frozenset[str] = frozenset(
    {
        "TypeApprovalNumber",
        "TypeApprovalIssueDate",
        "TypeApprovalType",
        "Type",
        "DesignatedTypeApprovalCountry",
    }
)

RECORD_ONLY: frozenset[str] = frozenset({"IviVersionNumber"})

# Properties of the vehicle type: its versions fix them, so one vehicle's record cannot change them.
TYPE_ONLY: frozenset[str] = frozenset({"VehicleCategory", "StageOfCompletion"})

RESTRICTED_NAMES = frozenset(DERIVED) | APPROVAL_ONLY | RECORD_ONLY | TYPE_ONLY


def restriction(layer: Layer) -> Callable[[ElementSpec], str | None]:
    """Return a function that says why an element may not be set in `layer`, or None."""

    def reason(spec: ElementSpec) -> str | None:
        name = spec.name
        if name in DERIVED:
            return DERIVED[name]
        if name in APPROVAL_ONLY and layer is not Layer.APPROVAL:
            return "it identifies the type approval and is set once, at the top of the approval file"
        if name in RECORD_ONLY and layer is not Layer.RECORD:
            return "it counts corrections of one vehicle's certificate, so it belongs in the record"
        if name in TYPE_ONLY and layer is Layer.RECORD:
            return "it is a property of the vehicle type, so the approval, its variant or its version sets it"
        return None

    return reason


def type_layer(
    container: Mapping, layer: Layer, path: str, findings: list[Finding]
) -> tuple[Mapping | None, Mapping | None, bool]:
    """Type the Header and CocDataGroup of one layer.

    Returns both trees and whether every value in them is valid, which rendering needs.
    """
    typer = TreeTyper(
        findings, overlay=layer is not Layer.APPROVAL, restricted=restriction(layer), restricted_names=RESTRICTED_NAMES
    )
    errors_before = sum(f.severity.blocking for f in findings)
    trees: list[Mapping | None] = []
    for key, spec in (("Header", ivi_spec.header()), ("CocDataGroup", ivi_spec.coc_data_group())):
        node = container.get(key)
        if node is not None and typer.type_root(node, spec, join_path(path, key)):
            trees.append(node)  # type: ignore[arg-type]
        else:
            trees.append(None)
    valid = sum(f.severity.blocking for f in findings) == errors_before
    return trees[0], trees[1], valid


def check_keys(mapping: Mapping, known: list[str], what: str, path: str, findings: list[Finding]) -> None:
    for key in list(mapping):
        if key not in known:
            finding = unknown_key_finding(mapping, key, known, what)
            findings.append(
                Finding(
                    finding.rule,
                    finding.severity,
                    finding.message,
                    finding.file,
                    finding.line,
                    finding.column,
                    join_path(path, key),
                    finding.hint,
                )
            )
            del mapping[key]
