"""Run a rule on its examples, as `ecoc rules test` and the test suite do.

An example is a partial certificate written like the CoC data of a record file:

```yaml
pass:
  CocDataGroup:
    VehicleCategory: M1
    MassGroup: {MassInRunningOrder: 1465, TechnicallyPermissibleMaximumLadenMass: 1935}
  record: {approval: e4*2018/858*04127*01}     # optional facts, see ecoc.rules.evaluate
```
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from ecoc.findings import Finding, Severity
from ecoc.ivi import spec as ivi_spec
from ecoc.model.approval import Approval
from ecoc.model.coc import TreeTyper
from ecoc.model.effective import Effective
from ecoc.model.record import Record
from ecoc.rules.catalogue import PLACEHOLDER, Catalogue, Rule
from ecoc.rules.evaluate import VersionMemo, applies, evaluate, message_gaps, record_facts
from ecoc.yamlload import Mapping, Node, Scalar, Sequence, Source

EXAMPLE_VIN = "XNHEXAMPLE0000000"
EXAMPLE_TODAY = "2026-12-01"


def to_nodes(data: Any, source: Source) -> Node:
    """Turn plain example data (texts, dicts, lists) back into position-keeping nodes."""
    if isinstance(data, dict):
        mapping = Mapping(1, 1, source)
        for key, value in data.items():
            mapping[str(key)] = to_nodes(value, source)
        return mapping
    if isinstance(data, list):
        sequence = Sequence(1, 1, source)
        sequence.extend(to_nodes(item, source) for item in data)
        return sequence
    return Scalar("" if data is None else str(data), 1, 1, False, source)


def example_effective(rule: Rule, data: dict[str, Any]) -> tuple[Effective, list[Finding]]:
    """Build the effective certificate an example stands for; typing problems are returned."""
    source = Source(f"{rule.file} ({rule.id} example)")
    problems: list[Finding] = []
    typer = TreeTyper(problems, overlay=False)
    trees: dict[str, Mapping] = {}
    for key, spec in (("Header", ivi_spec.header()), ("CocDataGroup", ivi_spec.coc_data_group())):
        node = to_nodes(data.get(key, {}), source)
        assert isinstance(node, Mapping)
        typer.type_root(node, spec, key)
        trees[key] = node
    facts = data.get("record", {})
    record = Record(source, "")
    record.vin = Scalar(str(facts.get("vin", EXAMPLE_VIN)), 1, 1, False, source)
    record.variant = Scalar(str(facts.get("variant", "V")), 1, 1, False, source)
    record.version = Scalar(str(facts.get("version", "V-1")), 1, 1, False, source)
    approval = Approval(source, "")
    number = facts.get("approval") or _text(trees["CocDataGroup"], "TypeApprovalNumber") or "e4*2018/858*00001*00"
    approval.number = Scalar(str(number), 1, 1, False, source)
    approval.number.value = str(number)
    stage_text = str(facts.get("stage_number", 1))
    stage = int(stage_text) if stage_text.isdigit() else 1  # check_examples reports a wrong value
    effective = Effective(record, approval, trees["Header"], trees["CocDataGroup"], stage, 1)
    return effective, problems


def _text(mapping: Mapping, name: str) -> str | None:
    node = mapping.get(name)
    return node.text if isinstance(node, Scalar) else None


def run_example(catalogue: Catalogue, rule: Rule, data: dict[str, Any]) -> tuple[list[Finding], list[Finding]]:
    """Return the rule's findings on an example, and any problem typing the example itself."""
    effective, problems = example_effective(rule, data)
    single = Catalogue([rule], [], catalogue.digest)
    today = str(data.get("record", {}).get("today", EXAMPLE_TODAY))
    return evaluate(single, effective, None, VersionMemo(), today), problems


def check_examples(catalogue: Catalogue) -> dict[str, list[Finding]]:
    """Run every rule on its examples; findings, by rule id, for examples with the wrong result.

    The passing example must give no finding and the failing one exactly one finding of the rule,
    and both must be valid IVI 2.0 data.
    """
    findings: dict[str, list[Finding]] = {}
    for rule in catalogue.rules:
        for key, data, expected in (
            ("pass", rule.spec.examples.passing, 0),
            ("fail", rule.spec.examples.failing, 1),
        ):
            unknown = _unknown_keys(data)
            wrong_fact = _fact_problem(data)
            if wrong_fact is not None:
                message = f"the {key} example of {rule.id} has {wrong_fact}"
                hint = "give record facts as text: stage_number a whole number from 1, today a date written YYYY-MM-DD"
                findings.setdefault(rule.id, []).append(_example_finding(rule, key, message, hint))
                continue
            with message_gaps() as gaps:
                found, problems = run_example(catalogue, rule, data)
            own = [finding for finding in found if finding.rule == rule.id]
            others = [finding for finding in found if finding.rule != rule.id]
            if unknown:
                message = f"the {key} example of {rule.id} has the unknown key {unknown[0]}"
                hint = (
                    "an example holds CocDataGroup, Header and record (" + ", ".join(RECORD_KEYS) + "); "
                    "the other facts of record, such as category and energy_sources, come from CocDataGroup"
                )
            elif problems:
                message = f"the {key} example of {rule.id} is not valid IVI 2.0 data: {problems[0].message}"
                hint = problems[0].hint or "write the example as a record's CocDataGroup would be written"
            elif others:
                message = f"the {key} example of {rule.id} makes the rule fail to run: {others[0].message}"
                hint = others[0].hint or "fix the rule's expressions"
            elif len(own) != expected:
                verb = "passes" if expected else "fails"
                reason = own[0].message if own else _why_no_finding(rule, data)
                message = f"the {key} example of {rule.id} {verb}: {reason}"
                hint = "the failing example must break the rule, and the passing one hold or fall outside the rule"
            elif gaps:
                _, number, error = gaps[0]
                placeholders = PLACEHOLDER.findall(rule.spec.message)
                shown = placeholders[number].strip() if number < len(placeholders) else "?"
                message = (
                    f"the message of {rule.id} shows ? on the {key} example, because the placeholder "
                    f"{{{{ {shown} }}}} cannot be evaluated: {error}"
                )
                hint = "make each placeholder of the message work on data that breaks the rule; guard fields with has()"
            else:
                continue
            findings.setdefault(rule.id, []).append(_example_finding(rule, key, message, hint))
    return findings


def _example_finding(rule: Rule, key: str, message: str, hint: str) -> Finding:
    """Return a rules.example finding at the rule's pass or fail example."""
    line = rule.key_lines.get(key, rule.line)
    column = rule.key_columns.get(key, 1)
    path = f"{rule.yaml_path}.examples.{key}" if rule.yaml_path else f"examples.{key}"
    return Finding("rules.example", Severity.ERROR, message, rule.file, line, column, path, hint)


# The facts an example may set under `record`.
RECORD_KEYS = ("vin", "variant", "version", "approval", "stage_number", "today")


def _fact_problem(data: dict[str, Any]) -> str | None:
    """Describe the first record fact of an example that has a wrong type or form, or return None."""
    facts = data.get("record")
    if facts is None:
        return None
    if not isinstance(facts, dict):
        return "a record entry that is not a mapping of facts"
    for name in ("vin", "variant", "version", "approval"):
        if name in facts and not isinstance(facts[name], str | int):
            return f"record.{name} {facts[name]!r}, which is not a text"
    stage = facts.get("stage_number", 1)
    if isinstance(stage, bool) or not str(stage).isdigit() or int(str(stage)) < 1:
        return f"record.stage_number {stage!r}, which is not a whole number from 1"
    today = facts.get("today")
    if today is not None:
        valid = re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", str(today)) is not None
        try:
            datetime.date.fromisoformat(str(today))
        except ValueError:
            valid = False
        if not valid:
            return f"record.today {today!r}, which is not a date written YYYY-MM-DD"
    return None


def _unknown_keys(data: dict[str, Any]) -> list[str]:
    unknown = [str(key) for key in data if key not in ("CocDataGroup", "Header", "record")]
    facts = data.get("record")
    if isinstance(facts, dict):
        unknown += [f"record.{key}" for key in facts if key not in RECORD_KEYS]
    return unknown


def _why_no_finding(rule: Rule, data: dict[str, Any]) -> str:
    """Say why a rule gave no finding on an example: its selectors, or its expressions."""
    effective, _ = example_effective(rule, data)
    if not applies(rule, record_facts(effective)):
        return "no finding, because the example falls outside the rule's applies selectors"
    if rule.spec.when:
        return "no finding: the when condition is false, the check holds, or an element it reads is missing"
    return "no finding: the check holds, or an element it reads is missing"
