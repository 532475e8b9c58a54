"""Run the readiness rules on one record's effective certificate.

Rules read four CEL variables:

- `coc`: the CocDataGroup, with IVI element names as keys, tables as lists of rows, every
  number as a double (write `1.0` in arithmetic), dates as `YYYY-MM-DD` text, codes and texts
  as strings. It holds only the elements some rule names, because building it dominates the
  cost of running the rules.
- `header`: the content fields of the Header (IntendedCountryRegistration and the others).
- `record`: facts about the record: `vin`, `approval`, `variant`, `version`, `category`,
  `stage` (StageOfCompletion), `stage_number`, `framework` (the act of the approval number,
  such as `2018/858`), `authority` (its e-code) and `energy_sources` (every EnergySource code).
- `today`: the date of the check as `YYYY-MM-DD`.

Most records of a version differ from it in a few values (the VIN, the actual mass, the
WLTP values, the tyres), and a rule's result depends only on the values it names. So the
records are compared with their version node by node (inherited nodes are the very objects of
the version), and a rule's findings are reused for every record that has the same values at
the places it reads. Rules that read the VIN run for every record. The rules that do run see
a context with only the elements they name.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from ecoc.findings import Finding, Severity
from ecoc.identifiers import parse_approval_number
from ecoc.model.coc import VEHICLE_VALUES, nulls
from ecoc.model.effective import Effective
from ecoc.rules.catalogue import Catalogue, Rule, UncompiledExpression, static_path
from ecoc.rules.celimport import add_stdlib_to_context, cel
from ecoc.yamlload import Mapping, Node, Scalar, Sequence

_PATH_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass
class VersionMemo:
    """Rule results reused between the records of one version."""

    # Which rules apply and how their results are reused, by the record's facts and the places
    # where it differs from its version.
    plans: dict[tuple[Any, ...], _Plan] = field(default_factory=dict)


def _value(scalar: Scalar) -> Any:
    value = scalar.value
    if isinstance(value, bool):  # pragma: no cover - the model has no booleans
        return value
    if isinstance(value, int | Decimal):
        return float(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def plain(node: Node, names: frozenset[str]) -> Any:
    """Convert a tree into CEL input, keeping only the keys in `names`."""
    if isinstance(node, Scalar):
        return _value(node)
    if isinstance(node, Mapping):
        return {key: plain(value, names) for key, value in node.items() if key in names}
    return [plain(item, names) for item in node]


def energy_sources(coc: Mapping) -> list[str]:
    """Every EnergySource and AdditionalEnergySource code of the vehicle, in order."""
    codes: list[str] = []
    convertors = coc.get("EnergyConvertorTable")
    if not isinstance(convertors, Sequence):
        return codes
    for convertor in convertors:
        if not isinstance(convertor, Mapping):
            continue
        for table, name in (
            ("EnergySourceTable", "EnergySource"),
            ("AdditionalEnergySourceTable", "AdditionalEnergySource"),
        ):
            rows = convertor.get(table)
            for row in rows if isinstance(rows, Sequence) else ():
                code = row.get(name) if isinstance(row, Mapping) else None
                if isinstance(code, Scalar) and isinstance(code.value, str) and code.value not in codes:
                    codes.append(code.value)
    return codes


def _text(coc: Mapping, name: str) -> str | None:
    node = coc.get(name)
    return node.value if isinstance(node, Scalar) and isinstance(node.value, str) else None


def record_facts(effective: Effective) -> dict[str, Any]:
    record = effective.record
    number = effective.approval.number_text or ""
    parsed = parse_approval_number(number)
    return {
        "vin": effective.vin,
        "approval": number,
        "variant": record.variant.text if record.variant else "",
        "version": record.version.text if record.version else "",
        "category": _text(effective.coc, "VehicleCategory") or "",
        "stage": _text(effective.coc, "StageOfCompletion") or "",
        "stage_number": float(effective.stage),
        "framework": parsed.act if parsed else "",
        "authority": parsed.authority if parsed else "",
        "energy_sources": energy_sources(effective.coc),
    }


def applies(rule: Rule, facts: dict[str, Any]) -> bool:
    """Check a rule's selectors against the record's facts."""
    selectors = rule.spec.applies
    if selectors.categories and not any(fnmatch.fnmatchcase(facts["category"], p) for p in selectors.categories):
        return False
    if selectors.stages and facts["stage"] not in selectors.stages:
        return False
    if selectors.frameworks and facts["framework"] not in selectors.frameworks:
        return False
    if selectors.energy_sources and not set(selectors.energy_sources) & set(facts["energy_sources"]):
        return False
    return not (selectors.approval_number and re.search(selectors.approval_number, facts["approval"]) is None)


def locate(effective: Effective, path: str) -> tuple[str, int, int]:
    """Return the file, line and column of the deepest node a rule's path reaches."""
    steps = [(name, int(index) if index else None) for name, index in _PATH_STEP.findall(path)]
    head = steps[0][0] if steps else "CocDataGroup"
    record_node = effective.record.root
    node: Node | None
    if head == "record":
        field_name = steps[1][0] if len(steps) > 1 else "vin"
        node = record_node.get(field_name) if record_node is not None else None
        node = node or record_node
        steps = []
    else:
        node = effective.header if head == "Header" else effective.coc
        steps = steps[1:]
    for position, (name, index) in enumerate(steps):
        following: Node | None = None
        if isinstance(node, Mapping) and name:
            following = node.get(name)
        elif isinstance(node, Sequence) and index is not None and index < len(node):
            following = node[index]
        if following is None:
            # The path ends early. When the record removed it with a null, that null is the place.
            removed = _removed_by_record(effective, path)
            if removed is not None:
                return removed.source.path, removed.line, removed.column
            if any(missing in VEHICLE_VALUES for missing, _ in steps[position:]):
                # A value of one vehicle goes into its record, whatever file the group above comes from.
                own = effective.record.coc or record_node
                if own is not None:
                    return own.source.path, own.line, own.column
            break
        node = following
        if index is not None and isinstance(node, Sequence) and index < len(node):
            node = node[index]
    if node is None:
        return effective.record.source.path, 1, 1
    return node.source.path, node.line, node.column


def _removed_by_record(effective: Effective, path: str) -> Scalar | None:
    """Return the record's null that removed `path` or an element above it, if there is one."""
    record = effective.record
    removed: dict[str, Scalar] = {}
    if record.header is not None:
        removed.update(nulls(record.header, "Header"))
    if record.coc is not None:
        removed.update(nulls(record.coc, "CocDataGroup"))
    for where, scalar in removed.items():
        if path == where or path.startswith((where + ".", where + "[")):
            return scalar
    return None


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ", ".join(_show(item) for item in value) if value else "none"
    if value is None:
        return "none"
    return str(value)


def _execute(program: Any, context: Any) -> Any:
    """Run a compiled expression, letting Ctrl-C through.

    The CEL library turns an exception raised inside a Python function, such as KeyboardInterrupt
    during `replace`, into a RuntimeError. Treated as a broken rule, an interrupt would block one
    record and let the command go on.
    """
    try:
        return program.execute(context)
    except RuntimeError as exc:
        if "KeyboardInterrupt" in str(exc):
            raise KeyboardInterrupt from exc
        raise


def _fill(parts: list[str | Any], context: Any) -> tuple[str, bool]:
    """Join text and placeholder values up to the first placeholder that cannot be evaluated.

    Return the text and whether every placeholder could be evaluated.
    """
    filled = []
    for part in parts:
        if isinstance(part, str):
            filled.append(part)
            continue
        try:
            filled.append(_show(_execute(part, context)))
        except Exception:
            return "".join(filled), False
    return "".join(filled), True


# While `ecoc rules test` runs the examples: (rule id, placeholder number, error) of each
# placeholder that could not be filled in, so that a broken message fails the test.
_GAPS: list[tuple[str, int, str]] | None = None


@contextlib.contextmanager
def message_gaps() -> Iterator[list[tuple[str, int, str]]]:
    global _GAPS
    gaps: list[tuple[str, int, str]] = []
    _GAPS = gaps
    try:
        yield gaps
    finally:
        _GAPS = None


def _evaluation_error(exc: Exception) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return f"the data has no {exc.args[0]}"
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _message(rule: Rule, context: Any) -> str:
    text, complete = _fill(rule.message_parts, context)
    if complete:
        return text
    # A placeholder over missing data shows a gap, not a crash.
    shown = []
    number = 0
    for part in rule.message_parts:
        if isinstance(part, str):
            shown.append(part)
            continue
        try:
            shown.append(_show(_execute(part, context)))
        except Exception as exc:
            shown.append("?")
            if _GAPS is not None:
                _GAPS.append((rule.id, number, _evaluation_error(exc)))
        number += 1
    return "".join(shown)


def _fill_path(rule: Rule, context: Any) -> str:
    """Fill in the rule's path up to the first placeholder that cannot be evaluated.

    The finding then points at the deepest node that is known, such as the row of a failing
    nested table.
    """
    path, complete = _fill(rule.path_parts, context)
    if not complete:
        return path.rstrip(".[")
    return path if path.startswith(("CocDataGroup", "Header", "record")) else static_path(rule.spec.path)


def _failure(rule: Rule, effective: Effective, context: Any) -> Finding:
    path = _fill_path(rule, context) if rule.path_parts else rule.spec.path
    file, line, column = locate(effective, path)
    return Finding(
        rule.id,
        rule.severity,
        _message(rule, context),
        file,
        line,
        column,
        path,
        rule.spec.hint or rule.spec.title,
        (effective.vin,),
    )


def _broken(rule: Rule, key: str, error: str, effective: Effective) -> Finding:
    """Report a rule that cannot be evaluated on this record, at the expression that failed."""
    if "Undefined variable or function" in error:
        hint = "rules read coc, header, record and today, and call the functions the README lists"
    elif "out of bounds" in error or "out of range" in error:
        hint = "guard the index with size(), or go through the list with exists() or all()"
    elif error.endswith("not true or false"):
        hint = "write the expression as a condition that is true or false"
    elif "division by zero" in error or "modulus by zero" in error:
        hint = "guard the division: test that the divisor is not 0 first, as in x != 0 && y / x > 1"
    else:
        hint = "fix the rule's expression: CEL does not mix types, so compare numbers with numbers"
    return Finding(
        "rules.failed",
        Severity.ERROR,
        f"rule {rule.id} could not be evaluated: {error.splitlines()[0]}",
        rule.file,
        rule.key_lines.get(key, rule.line),
        1,
        None,
        hint,
        (effective.vin,),
    )


def _uncompiled(rule: Rule, key: str, reason: str, effective: Effective) -> Finding:
    """Report a `when` or `check` that does not compile, as loading the rule file with validation would."""
    return Finding(
        "rules.invalid",
        Severity.ERROR,
        f"rule {rule.id}: the {key} does not compile: {reason}",
        rule.file,
        rule.key_lines.get(key, rule.line),
        rule.key_columns.get(key, 1),
        f"{rule.yaml_path}.{key}" if rule.yaml_path else None,
        "fix the CEL syntax, and see docs/rules.md for the variables and functions",
        (effective.vin,),
    )


def _kind(value: Any) -> str:
    """Name the CEL type of a value that should have been a boolean."""
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    return "null" if value is None else f"a {type(value).__name__}"


def _run(rule: Rule, effective: Effective, context: Any) -> Finding | None:
    """Evaluate one rule; None when it holds or does not apply."""
    key = "when"
    try:
        if rule.condition is not None:
            result = _execute(rule.condition, context)
            if result is not True:
                if result is False:
                    return None
                return _broken(rule, "when", f"the when expression gave {_kind(result)}, not true or false", effective)
        key = "check"
        result = _execute(rule.assertion, context)
    except KeyError:
        return None  # the rule reads an element the certificate does not have: it does not apply
    except UncompiledExpression as exc:
        return _uncompiled(rule, key, str(exc), effective)
    except Exception as exc:
        return _broken(rule, key, str(exc), effective)
    if result is True:
        return None
    if result is not False:
        return _broken(rule, "check", f"the check expression gave {_kind(result)}, not true or false", effective)
    return _failure(rule, effective, context)


# A change of a record against its version: the key path (names and row indices) and the
# record's value there: a scalar value, MISSING, a row count, or a frozen subtree.
Change = tuple[tuple[str | int, ...], Any]
MISSING = object()
# The last step of the path of a row-count change, and the first of a header field.
ROWS = "#rows"
HEADER = "#header"


def _frozen(node: Node) -> Any:
    if isinstance(node, Scalar):
        return node.value
    if isinstance(node, Mapping):
        return tuple((key, _frozen(value)) for key, value in node.items())
    return tuple(_frozen(item) for item in node)


def _diff(
    record: Node | None, base: Node | None, path: tuple[str | int, ...], names: frozenset[str], out: list[Change]
) -> None:
    """Collect where `record` differs from `base` under element names some rule reads.

    Nodes the record inherits are the very objects of its version, so identity decides.
    """
    if isinstance(record, Mapping) and isinstance(base, Mapping):
        get = base.get
        for key, value in record.items():
            inherited = get(key)
            if value is not inherited and key in names:
                _diff(value, inherited, (*path, key), names, out)
        if not record.keys() >= base.keys():
            out += [((*path, key), MISSING) for key in base.keys() - record.keys() if key in names]
    elif isinstance(record, Sequence) and isinstance(base, Sequence):
        if len(record) != len(base):
            out.append(((*path, ROWS), len(record)))
        for index, value in enumerate(record):
            inherited = base[index] if index < len(base) else None
            if value is not inherited:
                _diff(value, inherited, (*path, index), names, out)
    else:
        out.append((path, MISSING if record is None else _frozen(record)))


def changes(effective: Effective, base_coc: Mapping, names: frozenset[str]) -> list[Change]:
    """Where the record differs from its version, under element names some rule reads.

    The header belongs to the record alone, so each of its fields counts as a change.
    """
    found: list[Change] = []
    if effective.coc is not base_coc:
        _diff(effective.coc, base_coc, (), names, found)
    header = effective.header
    if header is not None:
        found += [((HEADER, key), _frozen(value)) for key, value in header.items() if key in names]
    return found


def _reads(rule: Rule, path: tuple[str | int, ...]) -> bool:
    """Whether the rule can see the value at `path`: it names every element on the way."""
    if path[0] == HEADER:
        return rule.reads_header and path[1] in rule.field_names
    return all(step in rule.field_names for step in path if isinstance(step, str) and step != ROWS)


@dataclass
class _Group:
    """Rules that read the same changes of a record, with their findings by the changed values."""

    rules: tuple[Rule, ...]
    positions: tuple[int, ...]
    results: dict[tuple[Any, ...], list[Finding]] = field(default_factory=dict)


@dataclass
class _Plan:
    """The rules that apply to records of one kind, and how their results can be reused."""

    # Rules that run for every record: they read the VIN, the stage or the header, or `coc` whole.
    own: tuple[Rule, ...]
    # The other rules, grouped by the changes they read; a group's findings are reused for every
    # record with the same values at those changes.
    groups: tuple[_Group, ...]


def _plan(catalogue: Catalogue, facts: dict[str, Any], paths: tuple[tuple[str | int, ...], ...] | None) -> _Plan:
    own: list[Rule] = []
    grouped: dict[tuple[int, ...], list[Rule]] = {}
    for rule in catalogue.rules:
        if not applies(rule, facts):
            continue
        if paths is None or rule.coc_names is None or rule.per_record:
            own.append(rule)
            continue
        positions = tuple(index for index, path in enumerate(paths) if _reads(rule, path))
        grouped.setdefault(positions, []).append(rule)
    return _Plan(tuple(own), tuple(_Group(tuple(rules), positions) for positions, rules in grouped.items()))


# Function libraries a rule can call beyond core CEL: `sum`, `min`, `max`, `join`, `trim`,
# `split`, `substring`, `math.greatest`, `lists.range`, `sort` and their kin.
FUNCTION_LIBRARIES = ("core", "strings", "math", "sets", "lists")
_CONTEXTS: list[Any] = []


def _context() -> Any:
    """The process's CEL context, with the function libraries registered once."""
    if not _CONTEXTS:
        context = cel.Context()
        add_stdlib_to_context(context, list(FUNCTION_LIBRARIES))
        _CONTEXTS.append(context)
    return _CONTEXTS[0]


def evaluate(
    catalogue: Catalogue, effective: Effective, base_coc: Mapping | None, memo: VersionMemo, today: str
) -> list[Finding]:
    """Run every rule that applies to the record and return the findings of those that fail."""
    facts = record_facts(effective)
    found = changes(effective, base_coc, catalogue.field_names) if base_coc is not None else None
    paths = tuple(path for path, _ in found) if found is not None else None
    key = (
        facts["category"],
        facts["stage"],
        facts["stage_number"],
        facts["approval"],
        tuple(facts["energy_sources"]),
        paths,
    )
    plan = memo.plans.get(key)
    if plan is None:
        plan = memo.plans[key] = _plan(catalogue, facts, paths)
    values = [value for _, value in found] if found is not None else []
    findings: list[Finding] = []
    pending = list(plan.own)
    missed: list[tuple[_Group, tuple[Any, ...]]] = []
    for group in plan.groups:
        group_key = tuple(values[position] for position in group.positions)
        known = group.results.get(group_key)
        if known is None:
            missed.append((group, group_key))
            pending += group.rules
        else:
            findings += [_for_record(finding, effective) for finding in known]
    if pending:
        results = _run_pending(pending, effective, facts, today)
        findings += [finding for rule in plan.own if (finding := results[rule.id]) is not None]
        for group, group_key in missed:
            group.results[group_key] = [finding for rule in group.rules if (finding := results[rule.id]) is not None]
            findings += group.results[group_key]
    return findings


def _for_record(finding: Finding, effective: Effective) -> Finding:
    """A reused finding, pointed at the node that holds the value for this record."""
    if finding.rule == "rules.failed" or finding.path is None:
        return replace(finding, records=(effective.vin,))
    file, line, column = locate(effective, finding.path)
    return replace(finding, file=file, line=line, column=column, records=(effective.vin,))


def _run_pending(
    rules: list[Rule], effective: Effective, facts: dict[str, Any], today: str
) -> dict[str, Finding | None]:
    """Run rules on one record; the context holds only the elements they name.

    Converting the certificate into CEL values costs more than running most rules, hence the
    pruning.
    """
    names = frozenset(name for rule in rules for name in rule.field_names)
    header = any(rule.reads_header for rule in rules)
    context = _context()
    context.add_variable("coc", {key: plain(value, names) for key, value in effective.coc.items() if key in names})
    context.add_variable("header", plain(effective.header, names) if header else {})
    context.add_variable("record", facts)
    context.add_variable("today", today)
    return {rule.id: _run(rule, effective, context) for rule in rules}
