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
from ecoc.ivi.values import loses_text_as_number, parse_value, retyped_by_yaml
from ecoc.yamlload import Mapping, Node, Scalar, Sequence, Source

# Elements whose value differs from vehicle to vehicle, so that only a record gives them.
VEHICLE_VALUES: frozenset[str] = frozenset(
    {
        "DateManufactureVehicle",
        "SignatureDate",
        "ActualMass",
        "ProductionYearSmallSeries",
        "ProductionSequentialNumberSmallSeries",
    }
)

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
# A number written with a leading zero, and one whose digits YAML 1.1 reads as octal.
LEADING_ZERO = re.compile(r"0[0-9]")
OCTAL = re.compile(r"0[0-7]+\Z")


def join_path(parent: str, key: str) -> str:
    """Extend a YAML path such as `CocDataGroup.AxleTable[1]` by one mapping key."""
    if not _PLAIN_KEY.match(key):
        key = '"' + key.replace('"', '\\"') + '"'
    return f"{parent}.{key}" if parent else key


def _where_else(name: str) -> tuple[str, bool] | None:
    """Return the YAML path where an element belongs, and whether that is a row of a table.

    A table's rows are list items in YAML, so the row's group name of the XSD is left out, and a
    row on the way is written [n], as in CocDataGroup.AxleTable[n].TyreAxleTable.
    """
    by_name = ivi_spec.elements_by_name()
    spec = by_name.get(name)
    if spec is None:
        return None
    steps: list[tuple[str, bool]] = []
    row_name: str | None = None
    for step in spec.xpath.replace("InitialVehicleInformation/", "").split("/")[:-1]:
        if step == row_name:
            row_name = None
            continue  # the row's group name, which YAML leaves out
        table = by_name.get(step)
        is_table = table is not None and table.kind == "table"
        row_name = table.row_name if table is not None and is_table else None
        steps.append((step, is_table))
    if not steps:
        return None
    path = ".".join(f"{step}[n]" if is_table else step for step, is_table in steps[:-1])
    last, in_row = steps[-1]
    return (f"{path}.{last}" if path else last), in_row


def _unknown_key_hint(key: str, spec: ElementSpec) -> str:
    elsewhere = _where_else(key)
    if elsewhere is not None:
        path, in_row = elsewhere
        if in_row:
            return f"{key} belongs in a row of {path}, not under {spec.name}"
        return f"{key} belongs under {path}, not under {spec.name}"
    close = difflib.get_close_matches(key, list(spec.by_name), n=3, cutoff=0.75)
    if close:
        return "did you mean " + " or ".join(close) + "? Keys are IVI 2.0 element names, spelled as in the XSD"
    return f"use an IVI 2.0 element name that {spec.name} contains"


PathSteps = tuple[str | int, ...]


def format_path(prefix: str, steps: PathSteps) -> str:
    """Write a YAML path: mapping keys joined by dots, list positions in brackets."""
    path = prefix
    for step in steps:
        path = f"{path}[{step}]" if isinstance(step, int) else join_path(path, step)
    return path


class TreeTyper:
    """Type every value of one file's CoC trees and report what does not fit the schema.

    Paths are kept as tuples of steps and written out only for a finding, because typing
    runs over every value of every file and nearly all values are fine.
    """

    def __init__(
        self,
        findings: list[Finding],
        *,
        overlay: bool,
        restricted: Callable[[ElementSpec], str | None] | None = None,
        restricted_names: frozenset[str] = frozenset(),
    ) -> None:
        self.findings = findings
        # In overlay layers (variants, versions, records) a null removes an inherited value.
        self.overlay = overlay
        # Returns why an element may not be written in this layer, or None when it may;
        # asked only about the elements in `restricted_names`.
        self.restricted = restricted
        self.restricted_names = restricted_names
        self.prefix = ""

    def error(
        self,
        rule: str,
        message: str,
        node_or_pos: Node | tuple[int, int],
        source: str,
        steps: PathSteps,
        hint: str,
        severity: Severity = Severity.ERROR,
    ) -> None:
        if isinstance(node_or_pos, tuple):
            line, column = node_or_pos
        else:
            line, column = node_or_pos.line, node_or_pos.column
        self.findings.append(
            Finding(rule, severity, message, source, line, column, format_path(self.prefix, steps), hint)
        )

    def type_root(self, node: Node, spec: ElementSpec, path: str) -> bool:
        """Type the tree of one layer's `Header` or `CocDataGroup`, found at YAML path `path`."""
        self.prefix = path
        return self.type_group(node, spec, ())

    def type_group(self, node: Node, spec: ElementSpec, steps: PathSteps) -> bool:
        """Type a mapping that stands for `spec` (a group, or one row of a table)."""
        if not isinstance(node, Mapping):
            self.error(
                "model.shape",
                f"{spec.name} must be a mapping of IVI elements",
                node,
                node.source.path,
                steps,
                f"write the elements of {spec.name} as keys under it",
            )
            return False
        by_name = spec.by_name
        restricted = self.restricted
        restricted_names = self.restricted_names
        for key in list(node):
            child_spec = by_name.get(key)
            if child_spec is None:
                self.error(
                    "model.unknown-key",
                    f"{key} is not an element of {spec.row_name or spec.name}",
                    node.key_position(key),
                    node.source.path,
                    (*steps, key),
                    _unknown_key_hint(key, spec),
                )
                del node[key]
                continue
            reason = restricted(child_spec) if restricted is not None and key in restricted_names else None
            if reason is not None:
                self.error(
                    "model.misplaced",
                    f"{key} cannot be set here: {reason}",
                    node.key_position(key),
                    node.source.path,
                    (*steps, key),
                    "remove the key from this file",
                )
                del node[key]
                continue
            value = node[key]
            if child_spec.kind == "leaf" and type(value) is Scalar and not value.is_null:
                self.type_leaf(value, child_spec, steps, key)
            elif not self.type_element(value, child_spec, (*steps, key)):
                del node[key]
        return True

    def type_element(self, node: Node, spec: ElementSpec, steps: PathSteps) -> bool:
        """Type the value of one element. Returns False when the value is unusable."""
        if isinstance(node, Scalar) and node.is_null:
            if node.text == "":
                self.error(
                    "model.empty-value",
                    f"{spec.name} has no value",
                    node,
                    node.source.path,
                    steps,
                    "write a value, or remove the key if the element does not apply",
                )
                return False
            if not self.overlay:
                self.error(
                    "model.null",
                    f"{spec.name} is null, but there is no inherited value to remove",
                    node,
                    node.source.path,
                    steps,
                    "remove the key; null only removes a value set in an approval, variant or version",
                )
                return False
            return True
        if spec.kind == "leaf":
            if not isinstance(node, Scalar):
                simple = spec.simple
                assert simple is not None
                self.error(
                    "model.shape",
                    f"{spec.name} must be a single value, not a {'list' if isinstance(node, Sequence) else 'mapping'}",
                    node,
                    node.source.path,
                    steps,
                    f"write {simple.describe()}",
                )
                return False
            self.type_leaf(node, spec, steps[:-1], spec.name)
            return True
        if spec.kind == "group":
            return self.type_group(node, spec, steps)
        return self.type_table(node, spec, steps)

    def type_leaf(self, node: Scalar, spec: ElementSpec, parent: PathSteps, key: str) -> None:
        """Type one scalar. An invalid value keeps its key, without a typed value, so that the
        structure check does not also report it as missing; nothing renders from such a layer."""
        simple = spec.simple
        assert simple is not None
        value, problem = parse_value(node.text, simple)
        if problem is not None:
            self.error(
                problem.rule, f"{spec.name}: {problem.message}", node, node.source.path, (*parent, key), problem.hint
            )
            return
        node.value = value
        if not node.plain:
            return
        if simple.kind == "text":
            retyped = retyped_by_yaml(node.text)
            if retyped is not None:
                rule = "model.number-in-text" if retyped == "number" else "model.boolean-in-text"
                self.error(
                    rule,
                    f"{spec.name} is text, but the unquoted value {node.text} reads as a {retyped} to other YAML tools",
                    node,
                    node.source.path,
                    (*parent, key),
                    f"quote it: '{node.text}'",
                    severity=Severity.WARNING,
                )
        elif simple.kind in ("integer", "decimal") and LEADING_ZERO.match(node.text):
            # YAML 1.1 tools, PyYAML among them, read 0 followed by digits as an octal number.
            octal = f"the octal number {int(node.text, 8)}" if OCTAL.match(node.text) else "something else"
            self.error(
                "model.leading-zero",
                f"{spec.name}: the unquoted {node.text} has a leading zero, and other YAML tools read it as {octal}",
                node,
                node.source.path,
                (*parent, key),
                f"write it without the leading zero: {value}",
                severity=Severity.WARNING,
            )
        elif simple.kind == "code" and loses_text_as_number(node.text):
            self.error(
                "model.number-like-code",
                f"{spec.name} code {node.text} is unquoted, "
                "and other YAML tools read it as a number that loses its form",
                node,
                node.source.path,
                (*parent, key),
                f"quote it: '{node.text}'",
                severity=Severity.WARNING,
            )

    def type_table(self, node: Node, spec: ElementSpec, steps: PathSteps) -> bool:
        if not isinstance(node, Sequence):
            self.error(
                "model.shape",
                f"{spec.name} must be a list of rows",
                node,
                node.source.path,
                steps,
                f"write each {spec.row_name} as a list item ('- ') under {spec.name}",
            )
            return False
        kept = []
        for index, row in enumerate(node):
            if isinstance(row, Mapping):
                self.type_group(row, spec, (*steps, index))
                kept.append(row)
            else:
                self.error(
                    "model.shape",
                    f"each row of {spec.name} must be a mapping of {spec.row_name} elements",
                    row,
                    row.source.path,
                    (*steps, index),
                    f"write the row as keys such as {spec.children[0].name}: …",
                )
        node[:] = kept
        return True


def _copy_mapping(base: Mapping) -> Mapping:
    merged = Mapping(base.line, base.column, base.source)
    merged.update(base)
    merged.key_positions = base.key_positions
    return merged


# A table in an overlay that replaced a table below it: its path, the new and the old rows.
Replacement = tuple[PathSteps, Sequence, Sequence]


def merge(
    base: Node | None, overlay: Node | None, replaced: list[Replacement] | None = None, steps: PathSteps = ()
) -> Node | None:
    """Lay `overlay` over `base` without changing either.

    Mappings merge key by key and a null in the overlay removes the key. A table in the
    overlay with as many rows as the base table updates those rows one by one; a table with
    another number of rows replaces the base table, and is listed in `replaced` when given.
    Scalars replace.
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
            merged[key] = merge(base.get(key), value, replaced, (*steps, key))  # type: ignore[assignment]
        return merged
    if isinstance(base, Sequence) and isinstance(overlay, Sequence):
        if len(base) == len(overlay):
            rows = Sequence(overlay.line, overlay.column, overlay.source)
            rows.extend(
                merge(b, o, replaced, (*steps, index))  # type: ignore[misc]
                for index, (b, o) in enumerate(zip(base, overlay, strict=True))
            )
            return rows
        if replaced is not None:
            replaced.append((steps, overlay, base))
    return overlay


def strip_nulls(node: Node) -> Node | None:
    """Leave out the nulls of an overlay subtree that has nothing to lay over.

    Returns `node` itself when it holds no null, so that the common case copies nothing.
    """
    if isinstance(node, Scalar):
        return None if node.is_null else node
    if isinstance(node, Mapping):
        cleaned: Mapping | None = None
        for key, value in node.items():
            kept = value if type(value) is Scalar and not value.is_null else strip_nulls(value)
            if kept is value and cleaned is None:
                continue
            if cleaned is None:
                cleaned = Mapping(node.line, node.column, node.source)
                cleaned.key_positions = node.key_positions
                for earlier, earlier_value in node.items():
                    if earlier == key:
                        break
                    cleaned[earlier] = earlier_value
            if kept is not None:
                cleaned[key] = kept
        return node if cleaned is None else cleaned
    rows = [strip_nulls(item) for item in node]
    if all(row is item for row, item in zip(rows, node, strict=True)):
        return node
    stripped = Sequence(node.line, node.column, node.source)
    stripped.extend(row for row in rows if row is not None)
    return stripped


def nulls(node: Node, prefix: str, steps: PathSteps = ()) -> dict[str, Scalar]:
    """Map the YAML path of every null in an overlay tree to its scalar."""
    found: dict[str, Scalar] = {}
    if isinstance(node, Mapping):
        for key, value in node.items():
            if isinstance(value, Scalar):
                if value.is_null:
                    found[format_path(prefix, (*steps, key))] = value
            else:
                found.update(nulls(value, prefix, (*steps, key)))
    elif isinstance(node, Sequence):
        for index, row in enumerate(node):
            found.update(nulls(row, prefix, (*steps, index)))
    return found


def _missing(
    node: Mapping,
    spec: ElementSpec,
    child: ElementSpec,
    prefix: str,
    steps: PathSteps,
    record: str,
    removed: dict[str, Scalar],
    own: Node | None = None,
) -> Finding:
    owner = spec.name if spec.kind == "group" else spec.row_name
    message = f"{owner} is missing {child.name}, which the IVI 2.0 schema requires"
    null = removed.get(format_path(prefix, (*steps, child.name))) if removed else None
    if null is not None:
        # The record (or a variant or version) removed an inherited value: point at that null.
        return Finding(
            "model.required",
            Severity.ERROR,
            f"{message}, and null here removes it",
            null.source.path,
            null.line,
            null.column,
            format_path(prefix, (*steps, child.name)),
            f"remove the null to keep the inherited {child.name}",
            (record,),
        )
    if own is not None and child.name in VEHICLE_VALUES and node.source.path != own.source.path:
        # A value of one vehicle belongs in its record, not in the approval file the group comes from.
        return Finding(
            "model.required",
            Severity.ERROR,
            message,
            own.source.path,
            own.line,
            own.column,
            format_path(prefix, (*steps, child.name)),
            f"add {child.name} ({_describe(child)}) to the record: it differs from vehicle to vehicle",
            (record,),
        )
    return Finding(
        "model.required",
        Severity.ERROR,
        message,
        node.source.path,
        node.line,
        node.column,
        format_path(prefix, steps),
        f"add {child.name} ({_describe(child)})",
        (record,),
    )


def check_structure(
    node: Mapping,
    spec: ElementSpec,
    prefix: str,
    record: str,
    findings: list[Finding],
    steps: PathSteps = (),
    removed: dict[str, Scalar] | None = None,
    own: Node | None = None,
    skip: frozenset[str] = frozenset(),
) -> None:
    """Report required elements and table rows missing from a merged tree.

    `removed` maps the YAML paths of nulls in the record to their scalars, so that a missing
    element that the record removed is reported where the record removes it. `own` is the
    record's node, where a missing value of one vehicle is reported. Elements in `skip` are not
    reported missing, because another finding already names their cause.
    """
    if node.complete and not removed:
        return
    found = len(findings)
    for child in spec.required_children:
        if child.name not in node and child.name not in skip:
            findings.append(_missing(node, spec, child, prefix, steps, record, removed or {}, own))
    by_name = spec.by_name
    for name, value in node.items():
        child = by_name[name]
        kind = child.kind
        if kind == "leaf":
            continue
        if kind == "group":
            if isinstance(value, Mapping):
                check_structure(value, child, prefix, record, findings, (*steps, name), removed, own)
            continue
        if not isinstance(value, Sequence):
            continue
        if len(value) < child.min_rows:
            findings.append(
                Finding(
                    "model.required",
                    Severity.ERROR,
                    f"{name} needs at least {child.min_rows} row{'' if child.min_rows == 1 else 's'}, "
                    f"it has {len(value)}",
                    value.source.path,
                    value.line,
                    value.column,
                    format_path(prefix, (*steps, name)),
                    f"add rows of {child.row_name} or remove {name}",
                    (record,),
                )
            )
        if child.has_structure:
            for index, row in enumerate(value):
                if isinstance(row, Mapping):
                    check_structure(row, child, prefix, record, findings, (*steps, name, index), removed, own)
    node.complete = len(findings) == found


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
        return len(base) == len(target) and all(same_value(b, t) for b, t in zip(base, target, strict=True))
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
        for old, new in zip(base, target, strict=True):
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
