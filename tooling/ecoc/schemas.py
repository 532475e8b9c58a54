"""JSON Schemas of approval and record files, for editors that complete and check YAML as people type.

`ecoc schema export` writes them from the IVI 2.0 model that ecoc checks against. Each element
gets its CoC item number and label as its description, and its type, code list and limits.
Tables become lists of rows, and the keys that belong to ecoc itself are described too. An
editor with a YAML language server reads them through the `# yaml-language-server: $schema=...`
line at the top of a file. They help while typing, and `ecoc check` stays the judge: it also
reports what a schema cannot express, such as a value that a lower layer may not override.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from ecoc.ivi import spec as ivi_spec
from ecoc.ivi.items import item, label
from ecoc.ivi.spec import ElementSpec, SimpleType
from ecoc.model.layers import APPROVAL_ONLY, DERIVED, RECORD_ONLY, TYPE_ONLY

DRAFT = "http://json-schema.org/draft-07/schema#"
SCHEMA_FOLDER = "schemas"
SCHEMA_FILES = {"approval": "approval.schema.json", "record": "record.schema.json"}


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _simple(simple: SimpleType) -> dict[str, Any]:
    schema: dict[str, Any]
    if simple.kind == "code":
        # An unquoted numeric code reads as a number; ecoc accepts it and reports it as a hint.
        values: list[Any] = list(simple.enumeration)
        values += [int(code) for code in simple.enumeration if code.isdigit() and str(int(code)) == code]
        schema = {"enum": values}
    elif simple.kind in ("integer", "decimal"):
        schema = {"type": "integer" if simple.kind == "integer" else "number"}
        if simple.min_inclusive is not None:
            schema["minimum"] = _number(simple.min_inclusive)
        if simple.max_inclusive is not None:
            schema["maximum"] = _number(simple.max_inclusive)
        # A quoted number such as '1478' is valid too: ecoc reads every value as text.
        digits = "^[+-]?[0-9]+$" if simple.kind == "integer" else "^[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)$"
        return {"anyOf": [schema, {"type": "string", "pattern": digits}, {"type": "null"}]}
    elif simple.kind == "date":
        schema = {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
    else:
        schema = {"type": "string"}
        if simple.min_length:
            schema["minLength"] = simple.min_length
        if simple.max_length is not None:
            schema["maxLength"] = simple.max_length
        if simple.pattern is not None:
            schema["pattern"] = "^" + simple.pattern.pattern.removesuffix("\\Z") + "$"
    # A null in a variant, version or record removes the value it would inherit.
    return {"anyOf": [schema, {"type": "null"}]}


def _describe(spec: ElementSpec) -> str:
    number = item(spec.name)
    return f"CoC item {number}: {label(spec.name)}" if number else label(spec.name)


class _Builder:
    """Builds schemas with one definition per simple type and per group or table below the top."""

    def __init__(self) -> None:
        self.definitions: dict[str, Any] = {}

    def element(self, spec: ElementSpec) -> dict[str, Any]:
        if spec.kind == "leaf":
            assert spec.simple is not None
            key = f"type.{spec.simple.name}"
            if key not in self.definitions:
                self.definitions[key] = _simple(spec.simple)
            return {"description": _describe(spec), "$ref": f"#/definitions/{key}"}
        key = spec.xpath.replace("/", ".")
        if key not in self.definitions:
            self.definitions[key] = {}  # reserved first: a definition may refer to itself
            self.definitions[key] = self._compound(spec)
        return {"description": _describe(spec), "$ref": f"#/definitions/{key}"}

    def _compound(self, spec: ElementSpec) -> dict[str, Any]:
        row = {
            "type": "object",
            "properties": {child.name: self.element(child) for child in spec.children},
            "additionalProperties": False,
        }
        if spec.kind == "table":
            return {"anyOf": [{"type": "array", "items": row}, {"type": "null"}]}
        return row

    def top(self, spec: ElementSpec, left_out: frozenset[str]) -> dict[str, Any]:
        """Build a Header or CocDataGroup without the elements this layer may not set."""
        return {
            "type": "object",
            "description": _describe(spec),
            "properties": {child.name: self.element(child) for child in spec.children if child.name not in left_out},
            "additionalProperties": False,
        }


_OWNERS = {
    "type": "object",
    "description": "Who owns the data, reviews it and releases it: GitHub users, teams or e-mail addresses",
    "properties": {
        role: {
            "type": "array",
            "items": {"type": "string", "pattern": "^(@[A-Za-z0-9][A-Za-z0-9/_-]*|[^@\\s]+@[^@\\s]+)$"},
        }
        for role in ("data", "review", "release")
    },
    "additionalProperties": False,
}


def _layer(builder: _Builder, left_out: frozenset[str], extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "Header": builder.top(ivi_spec.header(), left_out),
            "CocDataGroup": builder.top(ivi_spec.coc_data_group(), left_out),
            **extra,
        },
        "additionalProperties": False,
    }


def approval_schema() -> dict[str, Any]:
    builder = _Builder()
    overlay_left_out = frozenset(DERIVED) | APPROVAL_ONLY | RECORD_ONLY
    version = _layer(builder, overlay_left_out, {})
    variant = _layer(
        builder,
        overlay_left_out,
        {
            "versions": {
                "type": "object",
                "description": "The versions of this variant, by name",
                "additionalProperties": version,
            }
        },
    )
    document = _layer(
        builder,
        frozenset(DERIVED) | RECORD_ONLY,
        {
            "variants": {
                "type": "object",
                "description": "The variants of this approval, by name",
                "additionalProperties": variant,
            },
            "owners": _OWNERS,
        },
    )
    return {"$schema": DRAFT, "title": "ecoc approval file", **document, "definitions": builder.definitions}


def record_schema() -> dict[str, Any]:
    builder = _Builder()
    text = {"type": "string"}
    extra = {
        "vin": {
            "type": "string",
            "description": "CoC item 0.10: the vehicle identification number",
            "pattern": "^[A-HJ-NPR-Z0-9]{17}$",
        },
        "approval": {"type": "string", "description": "The type-approval number, as in e4*2018/858*04127*01"},
        "variant": {**text, "description": "The variant of the approval"},
        "version": {**text, "description": "The version of the variant"},
        "correction_reason": {**text, "description": "Why an issued certificate is corrected"},
        "owners": _OWNERS,
        "issued": {
            "type": "object",
            "description": "The header of a certificate issued before ecoc managed the record",
            "properties": {
                "IviVersionNumber": {"type": "integer"},
                "IviReferenceId": text,
                "IviVersionDateTime": text,
                "content_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            },
            "additionalProperties": False,
        },
    }
    document = _layer(builder, frozenset(DERIVED) | APPROVAL_ONLY | TYPE_ONLY, extra)
    document["required"] = ["vin", "approval", "variant", "version"]
    return {"$schema": DRAFT, "title": "ecoc record file", **document, "definitions": builder.definitions}


def exported() -> dict[str, str]:
    """Return the text of each schema file, by file name."""
    return {
        name: json.dumps(schema, indent=1, ensure_ascii=False) + "\n"
        for name, schema in ((SCHEMA_FILES["approval"], approval_schema()), (SCHEMA_FILES["record"], record_schema()))
    }


def modeline(kind: str, file: Path, root: Path) -> str:
    """Return the first line that points an editor at the schema of an approval or record file."""
    target = os.path.relpath(root / SCHEMA_FOLDER / SCHEMA_FILES[kind], file.parent)
    return f"# yaml-language-server: $schema={Path(target).as_posix()}\n"
