"""CoC data trees: typing a file's values, merging layers, checking the merged structure.

A CoC tree is the YAML under a `CocDataGroup` or `Header` key: mappings for IVI groups, lists
of row mappings for IVI tables and scalars for leaves, all keeping their file and position.
Typing happens once per file; merging and the structure check happen per record, because only
the merged tree (approval, then variant, then version, then record) is a whole certificate.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

from ecoc.findings import Finding, Severity
from ecoc.ivi import spec as ivi_spec
from ecoc.ivi.spec import ElementSpec
from ecoc.ivi.values import parse_value, retyped_by_yaml
from ecoc.yamlload import Mapping, Node, Scalar, Sequence, Source

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def join_path(parent: str, key: str) -> str:
    """Extend a YAML path such as `CocDataGroup.AxleTable[1]` by one mapping key."""
    if not _PLAIN_KEY.match(key):
        key = '"' + key.replace('"', '\\"') + '"'
    return f"{parent}.{key}" if parent else key


def _where_else(name: str) -> str | None:
    spec = ivi_spec.elements_by_name().get(name)
    if spec is None:
        return None
    parent = spec.xpath.rsplit("/", 1)[0]
    return parent.replace("InitialVehicleInformation/", "")


def _unknown_key_hint(key: str, spec: ElementSpec) -> str:
    elsewhere = _where_else(key)
    if elsewhere is not None:
        return f"{key} belongs under {elsewhere}, not under {spec.name}"
    close = difflib.get_close_matches(key, list(spec.by_name), n=3, cutoff=0.75)
    if close:
        return "did you mean " + " or ".join(close) + "? Keys are IVI 2.0 element names, spelled as in the XSD"
    return f"use an IVI 2.0 element name that {spec.name} contains"


class TreeTyper:
    """Type every value of one file's CoC trees and report what does not fit the schema."""

    def __init__(self, findings: list[Finding], *, overlay: bool,
                 restricted: Callable[[ElementSpec], str | None] | None = None) -> None:
        self.findings = findings
        # In overlay layers (variants, versions, records) a null removes an inherited value.
        self.overlay = overlay
        # Returns why an element may not be written in this layer, or None when it may.
        self.restricted = restricted

    def error(self, rule: str, message: str, node_or_pos: Node | tuple[int, int], source: str,
              path: str, hint: str, severity: Severity = Severity.ERROR) -> None:
        if isinstance(node_or_pos, tuple):
            line, column = node_or_pos
        else:
            line, column = node_or_pos.line, node_or_pos.column
        self.findings.append(Finding(rule, severity, message, source, line, column, path, hint))

    def type_group(self, node: Node, spec: ElementSpec, path: str) -> bool:
        """Type a mapping that stands for `spec` (a group, or one row of a table)."""
        if not isinstance(node, Mapping):
            self.error("model.shape", f"{spec.name} must be a mapping of IVI elements",
                       node, node.source.path, path, f"write the elements of {spec.name} as keys under it")
            return False
        for key in list(node):
            child_spec = spec.by_name.get(key)
            child_path = join_path(path, key)
            if child_spec is None:
                self.error("model.unknown-key", f"{key} is not an element of {spec.name}",
                           node.key_position(key), node.source.path, child_path,
                           _unknown_key_hint(key, spec))
                del node[key]
                continue
            reason = self.restricted(child_spec) if self.restricted else None
            if reason is not None:
                self.error("model.misplaced", f"{key} cannot be set here: {reason}",
                           node.key_position(key), node.source.path, child_path,
                           "remove the key from this file")
                del node[key]
                continue
            if not self.type_element(node[key], child_spec, child_path):
                del node[key]
        return True

    def type_element(self, node: Node, spec: ElementSpec, path: str) -> bool:
        """Type the value of one element. Returns False when the value is unusable."""
        if isinstance(node, Scalar) and node.is_null:
            if node.text == "":
                self.error("model.empty-value", f"{spec.name} has no value", node,
                           node.source.path, path,
                           "write a value, or remove the key if the element does not apply")
                return False
            if not self.overlay:
                self.error("model.null", f"{spec.name} is null, but there is no inherited value to remove",
                           node, node.source.path, path,
                           "remove the key; null only removes a value set in an approval, variant or version")
                return False
            return True
        if spec.kind == "leaf":
            return self.type_leaf(node, spec, path)
        if spec.kind == "group":
            return self.type_group(node, spec, path)
        return self.type_table(node, spec, path)

    def type_leaf(self, node: Node, spec: ElementSpec, path: str) -> bool:
        if not isinstance(node, Scalar):
            self.error("model.shape", f"{spec.name} must be a single value, not a "
                       f"{'list' if isinstance(node, Sequence) else 'mapping'}",
                       node, node.source.path, path, f"write {spec.simple.describe()}")  # type: ignore[union-attr]
            return False
        simple = spec.simple
        assert simple is not None
        value, problem = parse_value(node.text, simple)
        if problem is not None:
            # The key stays, without a typed value, so that the structure check does not also
            # report it as missing; nothing renders from a layer with such a value.
            self.error(problem.rule, f"{spec.name}: {problem.message}", node, node.source.path,
                       path, problem.hint)
            return True
        node.value = value
        if node.plain and simple.kind == "text":
            retyped = retyped_by_yaml(node.text)
            if retyped is not None:
                rule = "model.number-in-text" if retyped == "number" else "model.boolean-in-text"
                self.error(rule,
                           f"{spec.name} is text, but the unquoted value {node.text} reads as a {retyped} to other YAML tools",
                           node, node.source.path, path,
                           f"quote it: '{node.text}'", severity=Severity.WARNING)
        return True

    def type_table(self, node: Node, spec: ElementSpec, path: str) -> bool:
        if not isinstance(node, Sequence):
            self.error("model.shape", f"{spec.name} must be a list of rows", node,
                       node.source.path, path,
                       f"write each {spec.row_name} as a list item ('- ') under {spec.name}")
            return False
        kept = []
        for index, row in enumerate(node):
            row_path = f"{path}[{index}]"
            if isinstance(row, Mapping):
                self.type_group(row, spec, row_path)
                kept.append(row)
            else:
                self.error("model.shape", f"each row of {spec.name} must be a mapping of "
                           f"{spec.row_name} elements", row, row.source.path, row_path,
                           f"write the row as keys such as {spec.children[0].name}: …")
        node[:] = kept
        return True


def _copy_mapping(base: Mapping) -> Mapping:
    merged = Mapping(base.line, base.column, base.source)
    merged.update(base)
    merged.key_positions = base.key_positions
    return merged


def merge(base: Node | None, overlay: Node | None) -> Node | None:
    """Lay `overlay` over `base` without changing either.

    Mappings merge key by key and a null in the overlay removes the key. A table in the
    overlay with as many rows as the base table updates those rows one by one; a table with
    another number of rows replaces the base table. Scalars replace.
    """
    if overlay is None:
        return base
    if base is None:
        return strip_nulls(overlay)
    if isinstance(base, Mapping) and isinstance(overlay, Mapping):
        merged = _copy_mapping(base)
        for key, value in overlay.items():
            if isinstance(value, Scalar) and value.is_null:
                merged.pop(key, None)
                continue
            merged[key] = merge(base.get(key), value)  # type: ignore[assignment]
        return merged
    if isinstance(base, Sequence) and isinstance(overlay, Sequence) and len(base) == len(overlay):
        rows = Sequence(overlay.line, overlay.column, overlay.source)
        rows.extend(merge(b, o) for b, o in zip(base, overlay))  # type: ignore[misc]
        return rows
    return overlay


def strip_nulls(node: Node) -> Node | None:
    """Copy an overlay subtree that has nothing to lay over, leaving out its nulls."""
    if isinstance(node, Scalar):
        return None if node.is_null else node
    if isinstance(node, Mapping):
        cleaned = Mapping(node.line, node.column, node.source)
        cleaned.key_positions = node.key_positions
        for key, value in node.items():
            kept = strip_nulls(value)
            if kept is not None:
                cleaned[key] = kept
        return cleaned
    rows = Sequence(node.line, node.column, node.source)
    rows.extend(row for row in (strip_nulls(item) for item in node) if row is not None)
    return rows


def check_structure(node: Mapping, spec: ElementSpec, path: str, record: str,
                    findings: list[Finding]) -> None:
    """Report required elements and table rows missing from a merged tree."""
    for child in spec.children:
        value = node.get(child.name)
        if value is None:
            if child.required:
                findings.append(Finding(
                    "model.required", Severity.ERROR,
                    f"{spec.name if spec.kind == 'group' else spec.row_name} is missing "
                    f"{child.name}, which the IVI 2.0 schema requires",
                    node.source.path, node.line, node.column, path,
                    f"add {child.name} ({_describe(child)})", (record,)))
            continue
        if child.kind == "group" and isinstance(value, Mapping):
            check_structure(value, child, join_path(path, child.name), record, findings)
        elif child.kind == "table" and isinstance(value, Sequence):
            table_path = join_path(path, child.name)
            if len(value) < max(child.row_min, 1):
                findings.append(Finding(
                    "model.required", Severity.ERROR,
                    f"{child.name} needs at least {max(child.row_min, 1)} rows, it has {len(value)}",
                    value.source.path, value.line, value.column, table_path,
                    f"add rows of {child.row_name} or remove {child.name}", (record,)))
            for index, row in enumerate(value):
                if isinstance(row, Mapping):
                    check_structure(row, child, f"{table_path}[{index}]", record, findings)


def _describe(spec: ElementSpec) -> str:
    if spec.kind == "leaf" and spec.simple is not None:
        return spec.simple.describe()
    if spec.kind == "table":
        return f"a list of {spec.row_name} rows"
    return "a mapping of its elements"


def same_value(base: Node, target: Node) -> bool:
    """Compare two trees by their typed values (so `180` equals `180.00`)."""
    if isinstance(base, Scalar) and isinstance(target, Scalar):
        return base.value == target.value and type(base.value) is type(target.value)
    if isinstance(base, Mapping) and isinstance(target, Mapping):
        return base.keys() == target.keys() and all(same_value(base[k], target[k]) for k in base)
    if isinstance(base, Sequence) and isinstance(target, Sequence):
        return len(base) == len(target) and all(same_value(b, t) for b, t in zip(base, target))
    return False


def difference(base: Node | None, target: Node, source: Source) -> Node | None:
    """Compute the smallest overlay that `merge` lays over `base` to give `target`.

    Returns None when `base` already equals `target`. Keys of `base` missing from `target`
    become nulls, tables of another length are replaced whole, rows that already match
    become empty mappings so that the rows after them keep their positions.
    """
    if base is None:
        return target
    if isinstance(base, Mapping) and isinstance(target, Mapping):
        overlay = Mapping(target.line, target.column, target.source)
        for key, value in target.items():
            change = difference(base.get(key), value, source)
            if change is not None:
                overlay[key] = change
        for key in base:
            if key not in target:
                null = Scalar("null", target.line, target.column, True, source)
                overlay[key] = null
        return overlay if overlay else None
    if isinstance(base, Sequence) and isinstance(target, Sequence) and len(base) == len(target):
        rows = Sequence(target.line, target.column, target.source)
        changed = False
        for old, new in zip(base, target):
            change = difference(old, new, source)
            if change is None:
                change = Mapping(new.line, new.column, new.source)
            else:
                changed = True
            rows.append(change)
        return rows if changed else None
    if same_value(base, target):
        return None
    return target
