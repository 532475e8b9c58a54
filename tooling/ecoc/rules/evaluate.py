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

A rule whose expressions read only elements that the record takes unchanged from its version
(not the header, the VIN or the stage) gives the same result for every such record, so it runs
once per version; the others run per record, on a context that holds only what they read.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import cel
from cel.stdlib import add_stdlib_to_context

from ecoc.findings import Finding, Severity
from ecoc.identifiers import parse_approval_number
from ecoc.model.effective import Effective
from ecoc.rules.catalogue import Catalogue, Rule, static_path
from ecoc.yamlload import Mapping, Node, Scalar, Sequence

_PATH_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass
class VersionMemo:
    """Findings of rules that gave the same result for every record of one version."""

    results: dict[str, Finding | None] = field(default_factory=dict)
    # Which rules apply and which run per record, by the record's facts and overridden elements.
    plans: dict[tuple[Any, ...], _Plan] = field(default_factory=dict)
    # For each plan whose shared rules have all run: their findings.
    shared_findings: dict[tuple[Any, ...], list[Finding]] = field(default_factory=dict)


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
    for name, index in steps:
        following: Node | None = None
        if isinstance(node, Mapping) and name:
            following = node.get(name)
        elif isinstance(node, Sequence) and index is not None and index < len(node):
            following = node[index]
        if following is None:
            break
        node = following
        if index is not None and isinstance(node, Sequence) and index < len(node):
            node = node[index]
    if node is None:
        return effective.record.source.path, 1, 1
    return node.source.path, node.line, node.column


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ", ".join(_show(item) for item in value) if value else "none"
    if value is None:
        return "none"
    return str(value)


def _fill(parts: list[str | Any], context: Any) -> str | None:
    """Join text and placeholder values; None when a placeholder cannot be evaluated."""
    filled = []
    for part in parts:
        if isinstance(part, str):
            filled.append(part)
            continue
        try:
            filled.append(_show(part.execute(context)))
        except Exception:
            return None
    return "".join(filled)


def _message(rule: Rule, context: Any) -> str:
    filled = _fill(rule.message_parts, context)
    if filled is not None:
        return filled
    # A placeholder over missing data shows a gap, not a crash.
    return "".join(part if isinstance(part, str) else (_fill([part], context) or "?") for part in rule.message_parts)


def _failure(rule: Rule, effective: Effective, context: Any) -> Finding:
    path = _fill(rule.path_parts, context) if rule.path_parts else None
    if path is None or not path.startswith(("CocDataGroup", "Header", "record")):
        path = static_path(rule.spec.path)
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


def _broken(rule: Rule, error: Exception, effective: Effective) -> Finding:
    return Finding(
        "rules.failed",
        Severity.ERROR,
        f"rule {rule.id} could not be evaluated: {str(error).splitlines()[0]}",
        rule.file,
        rule.line,
        1,
        None,
        "fix the rule's expression: CEL does not mix types, so compare numbers with numbers",
        (effective.vin,),
    )


def _run(rule: Rule, effective: Effective, context: Any) -> Finding | None:
    """Evaluate one rule; None when it holds or does not apply."""
    try:
        if rule.condition is not None and rule.condition.execute(context) is not True:
            return None
        if rule.assertion.execute(context) is True:
            return None
    except KeyError:
        return None  # the rule reads an element the certificate does not have: it does not apply
    except Exception as exc:
        return _broken(rule, exc, effective)
    return _failure(rule, effective, context)


@dataclass(frozen=True)
class _Plan:
    """The rules that apply to records of one kind, and which of them run per record."""

    # Rules whose result holds for every record of the version that leaves their elements alone.
    shared: tuple[Rule, ...]
    # Rules that run for every record.
    own: tuple[Rule, ...]
    # Element names the own rules read, and whether they read the header.
    own_names: frozenset[str]
    own_header: bool


def _overridden(coc: Mapping, base_coc: Mapping | None) -> frozenset[str] | None:
    """The CocDataGroup elements in which the record differs from its version; None without a version."""
    if base_coc is None:
        return None
    keys = set(coc.keys()) | set(base_coc.keys())
    return frozenset(name for name in keys if coc.get(name) is not base_coc.get(name))


def _plan(catalogue: Catalogue, facts: dict[str, Any], overridden: frozenset[str] | None) -> _Plan:
    shared: list[Rule] = []
    own: list[Rule] = []
    for rule in catalogue.rules:
        if not applies(rule, facts):
            continue
        if (
            overridden is not None
            and rule.coc_names is not None
            and not rule.per_record
            and rule.coc_names.isdisjoint(overridden)
        ):
            shared.append(rule)
        else:
            own.append(rule)
    names = frozenset(name for rule in own for name in rule.field_names)
    return _Plan(tuple(shared), tuple(own), names, any(rule.reads_header for rule in own))


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


_HEADER_NAMES = frozenset({"IntendedCountryRegistration", "DesignatedTypeApprovalCountry", "IviVersionNumber"})


def evaluate(
    catalogue: Catalogue, effective: Effective, base_coc: Mapping | None, memo: VersionMemo, today: str
) -> list[Finding]:
    """Run every rule that applies to the record and return the findings of those that fail."""
    facts = record_facts(effective)
    overridden = _overridden(effective.coc, base_coc)
    key = (
        facts["category"],
        facts["stage"],
        facts["approval"],
        tuple(facts["energy_sources"]),
        overridden,
    )
    plan = memo.plans.get(key)
    if plan is None:
        plan = memo.plans[key] = _plan(catalogue, facts, overridden)
    known = memo.shared_findings.get(key)
    if known is not None:
        # Every shared rule has run for an earlier record of this kind: only the own rules remain.
        findings = [replace(finding, records=(effective.vin,)) for finding in known]
        pending = [(rule, False) for rule in plan.own]
        names, header = plan.own_names, plan.own_header
    else:
        findings = []
        pending = [(rule, False) for rule in plan.own]
        for rule in plan.shared:
            if rule.id in memo.results:
                result = memo.results[rule.id]
                if result is not None:
                    findings.append(replace(result, records=(effective.vin,)))
            else:
                pending.append((rule, True))
        names = frozenset(name for rule, _ in pending for name in rule.field_names)
        header = any(rule.reads_header for rule, _ in pending)
    if pending:
        findings += _run_pending(pending, effective, facts, names, header, memo, today)
    if known is None:
        memo.shared_findings[key] = [
            result for rule in plan.shared if (result := memo.results.get(rule.id)) is not None
        ]
    return findings


def _run_pending(
    pending: list[tuple[Rule, bool]],
    effective: Effective,
    facts: dict[str, Any],
    names: frozenset[str],
    header: bool,
    memo: VersionMemo,
    today: str,
) -> list[Finding]:
    """Run rules on one record; the context holds only the elements in `names`.

    Converting the certificate into CEL values costs more than running most rules, hence the
    pruning.
    """
    context = _context()
    context.add_variable("coc", {key: plain(value, names) for key, value in effective.coc.items() if key in names})
    context.add_variable("header", plain(effective.header, names | _HEADER_NAMES) if header else {})
    context.add_variable("record", facts)
    context.add_variable("today", today)
    findings = []
    for rule, shared in pending:
        finding = _run(rule, effective, context)
        if shared:
            memo.results[rule.id] = finding
        if finding is not None:
            findings.append(finding)
    return findings
