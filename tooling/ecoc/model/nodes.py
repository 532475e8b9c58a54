"""Helpers shared by the approval, record and configuration models."""

from __future__ import annotations

import difflib
import typing
from typing import Any, TypeVar

import pydantic
import pydantic.fields

from ecoc.findings import Finding, Severity
from ecoc.model.coc import join_path
from ecoc.yamlload import Mapping, Node, Scalar, Sequence

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


def to_plain(node: Node) -> Any:
    """Turn a node into plain Python data: null scalars become None, others stay text."""
    if isinstance(node, Scalar):
        return None if node.is_null else node.text
    if isinstance(node, Mapping):
        return {key: to_plain(value) for key, value in node.items()}
    return [to_plain(item) for item in node]


def node_at(node: Node, location: tuple[int | str, ...]) -> tuple[Node, Mapping | None, str | None]:
    """Follow a pydantic error location into the node tree.

    Returns the deepest node reached, and the mapping and key where the walk stopped when the
    location names a key the data does not have (a missing or an extra field).
    """
    for step in location:
        if isinstance(node, Mapping) and isinstance(step, str):
            if step not in node:
                return node, node, step
            node = node[step]
        elif isinstance(node, Sequence) and isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            break
    return node, None, None


# pydantic's number limits, as words before the limit.
_LIMITS = {
    "less_than_equal": "is above the maximum",
    "less_than": "is not below",
    "greater_than_equal": "is below the minimum",
    "greater_than": "is not above",
}


def validate_node(
    model: type[ModelT], node: Node, path: str, hint: str = "see the README for the keys this file takes"
) -> tuple[ModelT | None, list[Finding]]:
    """Validate a YAML subtree with a pydantic model; errors become findings at their lines."""
    try:
        return model.model_validate(to_plain(node)), []
    except pydantic.ValidationError as exc:
        findings = []
        for error in exc.errors(include_url=False):
            location = tuple(error["loc"])
            target, parent, key = node_at(node, location)
            error_path = path
            for step in location:
                if step == "[key]":  # pydantic's step for a mapping key that failed, not a key of the file
                    continue
                error_path = f"{error_path}[{step}]" if isinstance(step, int) else join_path(error_path, str(step))
            owner, field = _field_at(model, location)
            if parent is not None and key is not None and key in parent.key_positions:
                line, column = parent.key_position(key)
            else:
                line, column = target.line, target.column
            if error["type"] == "extra_forbidden" and location:
                # An unknown key is reported where the key is written, not at its value.
                holder, _, _ = node_at(node, location[:-1])
                if isinstance(holder, Mapping) and str(location[-1]) in holder.key_positions:
                    line, column = holder.key_position(str(location[-1]))
            message = error["msg"].removeprefix("Value error, ")
            error_hint = hint
            if field is not None and field.description:
                error_hint = field.description
            if error["type"] == "extra_forbidden":
                known = [field.alias or name for name, field in owner.model_fields.items()]
                name = str(location[-1])
                close = difflib.get_close_matches(name, known, n=1)
                message = f"unknown key {name}"
                error_hint = f"did you mean {close[0]}?" if close else "known keys: " + ", ".join(known)
            elif error["type"] == "string_type":
                message = f"{location[-1] if location else 'the value'} needs a text, not {_shape(error['input'])}"
                error_hint = error_hint if field is not None and field.description else "write a single text value"
            elif error["type"] in ("model_type", "model_attributes_type", "dict_type"):
                message = f"{error_path or 'the value'} needs a mapping, not {_shape(error['input'])}"
                keys = [field.alias or name for name, field in owner.model_fields.items()]
                error_hint = "write it as keys with values; its keys are " + ", ".join(keys)
            elif error["type"] == "missing":
                message = f"missing key {location[-1]}"
                # The field's description gives what the key takes, as in "a path starts with CocDataGroup".
                error_hint = (
                    f"add {location[-1]}: {field.description}"
                    if field is not None and field.description
                    else (f"add {location[-1]}")
                )
            elif error["type"] in ("tuple_type", "list_type"):
                message = f"{location[-1]} needs a list, not {_shape(error['input'])}"
                error_hint = f"write {location[-1]}: [first, second], or one - item per line"
            elif error["type"] == "literal_error":
                expected = error.get("ctx", {}).get("expected", "")
                message = f"{error['input']!r} is not allowed here: use {expected}"
            elif error["type"] in _LIMITS:
                limit = next(iter(error.get("ctx", {}).values()), "")
                message = (
                    f"{location[-1] if location else 'the value'} {error['input']} {_LIMITS[error['type']]} {limit}"
                )
            elif error["type"] in ("int_parsing", "int_type", "int_from_float"):
                message = f"{location[-1] if location else 'the value'} needs a whole number, not {error['input']}"
            elif error["type"] in ("bool_parsing", "bool_type"):
                message = f"{location[-1] if location else 'the value'} needs true or false, not {error['input']}"
            elif error["type"] == "string_pattern_mismatch":
                message = f"{error['input']!r} is not a valid {location[-1]}"
            findings.append(
                Finding(
                    "model.invalid", Severity.ERROR, message, target.source.path, line, column, error_path, error_hint
                )
            )
        return None, findings


def _field_at(
    model: type[pydantic.BaseModel], location: tuple[int | str, ...]
) -> tuple[type[pydantic.BaseModel], pydantic.fields.FieldInfo | None]:
    """The model that holds the last step of `location`, and that step's field, when it is one."""
    owner = model
    field: pydantic.fields.FieldInfo | None = None
    for step in location:
        if isinstance(step, int) or step == "[key]":
            continue
        field = owner.model_fields.get(str(step))
        if field is None:
            return owner, None
        nested = _model_in(field.annotation)
        if nested is not None and step != location[-1]:
            owner = nested
    return owner, field


def _model_in(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The pydantic model an annotation holds, directly or as the item of a list or an optional."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _shape(value: object) -> str:
    """Name the YAML shape of a value, for messages."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"the single value {value!r}"


def scalar_text(node: Node | None) -> str | None:
    if isinstance(node, Scalar) and not node.is_null:
        return node.text
    return None


def unknown_key_finding(mapping: Mapping, key: str, known: list[str], what: str) -> Finding:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    hint = f"did you mean {close[0]}?" if close else "the keys of " + what + " are " + ", ".join(known)
    line, column = mapping.key_position(key)
    return Finding(
        "model.unknown-key",
        Severity.ERROR,
        f"unknown key {key} in {what}",
        mapping.source.path,
        line,
        column,
        join_path("", key),
        hint,
    )


def require_mapping(node: Node | None, what: str, source: str) -> tuple[Mapping | None, list[Finding]]:
    """Check that a file's root is a mapping."""
    if isinstance(node, Mapping):
        return node, []
    if node is None:
        return None, []
    if isinstance(node, Scalar) and node.is_null:
        return None, [
            Finding(
                "yaml.empty",
                Severity.ERROR,
                "the document is empty",
                source,
                node.line,
                node.column,
                hint=f"write {what} as key: value lines, or delete the file",
            )
        ]
    return None, [
        Finding(
            "model.shape",
            Severity.ERROR,
            f"{what} must be a mapping of keys",
            source,
            node.line,
            node.column,
            hint=f"write {what} as key: value lines",
        )
    ]
