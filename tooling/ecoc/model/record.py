"""Record files: one vehicle, its approval, variant and version, and its own values.

```yaml
vin: XHV1HT1H7TK000101
approval: e4*2018/858*00412*01
variant: HT1H
version: HT1H-16SE
Header:
  IntendedCountryRegistration: NL
CocDataGroup:
  DateManufactureVehicle: 2026-10-02
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ecoc.findings import Finding, Severity
from ecoc.ivi import spec as ivi_spec
from ecoc.ivi.spec import SimpleType
from ecoc.ivi.values import check_text, parse_value
from ecoc.model.approval import Owners
from ecoc.model.coc import join_path
from ecoc.model.layers import Layer, check_keys, type_layer
from ecoc.model.nodes import require_mapping, validate_node
from ecoc.yamlload import Mapping, Node, Scalar, Source, load_yaml

_SHA256 = re.compile(r"[0-9a-f]{64}\Z")

RECORD_KEYS = [
    "vin",
    "approval",
    "variant",
    "version",
    "correction_reason",
    "owners",
    "issued",
    "Header",
    "CocDataGroup",
]
# The header of a certificate version issued before ecoc managed the record (written by import).
ISSUED_KEYS = ("IviVersionNumber", "IviReferenceId", "IviVersionDateTime")
# With the sha256 of the issued content (see ecoc.ivi.render.content_digest).
ISSUED_DIGEST = "content_sha256"
_REQUIRED = ("vin", "approval", "variant", "version")


@dataclass(eq=False)
class Record:
    source: Source
    digest: str
    vin: Scalar | None = None
    approval: Scalar | None = None
    variant: Scalar | None = None
    version: Scalar | None = None
    correction_reason: Scalar | None = None
    owners: Owners | None = None
    issued: dict[str, Scalar] | None = None
    header: Mapping | None = None
    coc: Mapping | None = None
    root: Mapping | None = None
    findings: list[Finding] = field(default_factory=list)
    # Whether the record's Header and CocDataGroup hold only valid values.
    valid: bool = True

    @property
    def vin_text(self) -> str | None:
        return self.vin.text if self.vin is not None else None


def _issued_error(findings: list[Finding], rule: str, message: str, node: Node, path: str, hint: str) -> None:
    findings.append(Finding(rule, Severity.ERROR, message, node.source.path, node.line, node.column, path, hint))


def _issued(node: Node, findings: list[Finding]) -> dict[str, Scalar] | None:
    """Read the `issued` block: the header fields and content digest of a version issued before."""
    allowed = (*ISSUED_KEYS, ISSUED_DIGEST)
    if not isinstance(node, Mapping):
        _issued_error(
            findings,
            "model.shape",
            "issued must be a mapping",
            node,
            "issued",
            "write " + ", ".join(allowed) + " under it",
        )
        return None
    for key in node:
        if key not in allowed:
            line, column = node.key_position(key)
            findings.append(
                Finding(
                    "model.unknown-key",
                    Severity.ERROR,
                    f"unknown key {key} in issued",
                    node.source.path,
                    line,
                    column,
                    join_path("issued", key),
                    "issued contains " + ", ".join(allowed),
                )
            )
    issued: dict[str, Scalar] = {}
    for key in allowed:
        value = node.get(key)
        path = join_path("issued", key)
        if not isinstance(value, Scalar):
            _issued_error(
                findings,
                "model.required",
                f"issued has no {key}",
                node,
                path,
                f"add {key} as the issued certificate has it",
            )
            return None
        if key == ISSUED_DIGEST:
            if not _SHA256.match(value.text):
                _issued_error(
                    findings,
                    "model.pattern",
                    f"{key} {value.text!r} is not a sha256 digest",
                    value,
                    path,
                    "write the 64 lower-case hex digits that ecoc import wrote",
                )
                return None
            value.value = value.text
        else:
            simple = ivi_spec.elements_by_name()[key].simple
            assert simple is not None
            value.value, problem = parse_value(value.text, simple)
            if problem is not None:
                _issued_error(findings, problem.rule, f"{key}: {problem.message}", value, path, problem.hint)
                return None
        issued[key] = value
    return issued


def _text_500() -> SimpleType:
    """Return the type of a 500-character IVI text, which a correction reason is written as."""
    simple = ivi_spec.elements_by_name()["DescriptionCompletedAltered"].simple
    assert simple is not None
    return simple


def _scalar_key(root: Mapping, key: str, findings: list[Finding], source: Source) -> Scalar | None:
    node = root.get(key)
    if node is None:
        return None
    if not isinstance(node, Scalar):
        findings.append(
            Finding(
                "model.shape",
                Severity.ERROR,
                f"{key} must be a single value",
                source.path,
                node.line,
                node.column,
                key,
                f"write {key}: <value>",
            )
        )
        return None
    if node.is_null or node.text.strip() == "":
        findings.append(
            Finding(
                "model.empty-value",
                Severity.ERROR,
                f"{key} has no value",
                source.path,
                node.line,
                node.column,
                key,
                f"write the {key}",
            )
        )
        return None
    return node


def _check_required_keys(root: Mapping, source: Source, findings: list[Finding]) -> None:
    for key in _REQUIRED:
        if key not in root:
            findings.append(
                Finding(
                    "model.required",
                    Severity.ERROR,
                    f"the record has no {key}",
                    source.path,
                    root.line,
                    root.column,
                    key,
                    f"add {key}: at the top of the record",
                )
            )


def _check_correction_reason(reason: Scalar, source: Source, findings: list[Finding]) -> None:
    problem = check_text(reason.text, _text_500())
    if problem is not None:
        findings.append(
            Finding(
                problem.rule,
                Severity.ERROR,
                f"correction_reason: {problem.message}",
                source.path,
                reason.line,
                reason.column,
                "correction_reason",
                problem.hint,
            )
        )


def _type_vin(vin: Scalar, source: Source, findings: list[Finding]) -> None:
    simple = ivi_spec.elements_by_name()["VehicleIdentificationNumber"].simple
    assert simple is not None
    vin.value, problem = parse_value(vin.text, simple)
    if problem is not None:
        findings.append(
            Finding(
                "vin.format",
                Severity.ERROR,
                f"vin: {problem.message}",  # the message quotes the value
                source.path,
                vin.line,
                vin.column,
                "vin",
                "a VIN has exactly 17 characters: capital letters and digits",
            )
        )


def parse_record(data: bytes, source: Source, digest: str) -> Record:
    """Read one record file. Problems are collected in `Record.findings`."""
    record = Record(source, digest)
    findings = record.findings
    node, load_findings = load_yaml(data, source)
    findings.extend(load_findings)
    root, shape_findings = require_mapping(node, "a record file", source.path)
    findings.extend(shape_findings)
    if root is None:
        return record

    record.root = root
    check_keys(root, RECORD_KEYS, "a record file", "", findings)
    _check_required_keys(root, source, findings)
    record.vin = _scalar_key(root, "vin", findings, source)
    record.approval = _scalar_key(root, "approval", findings, source)
    record.variant = _scalar_key(root, "variant", findings, source)
    record.version = _scalar_key(root, "version", findings, source)
    record.correction_reason = _scalar_key(root, "correction_reason", findings, source)
    if record.correction_reason is not None:
        _check_correction_reason(record.correction_reason, source, findings)
    if record.vin is not None:
        _type_vin(record.vin, source, findings)

    if "owners" in root:
        record.owners, owner_findings = validate_node(Owners, root["owners"], "owners")
        findings.extend(owner_findings)
    if "issued" in root:
        record.issued = _issued(root["issued"], findings)
    record.header, record.coc, record.valid = type_layer(root, Layer.RECORD, "", findings)
    return record
