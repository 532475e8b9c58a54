"""Mistakes a rule author makes, each reported where it is written, with what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecoc.findings import Finding
from ecoc.rules.catalogue import load_catalogue
from ecoc.rules.examples import check_examples

RULE = """\
rules:
  - id: test.width
    title: The width stays below 2.6 m
    severity: warning
    let:
      group: coc.DimensionGroup
    check: group.Width < 2600.0
    message: "width {{ group.Width }} mm"
    path: CocDataGroup.DimensionGroup.Width
    examples:
      pass: {CocDataGroup: {VehicleCategory: M1, DimensionGroup: {Width: 1900}}}
      fail: {CocDataGroup: {VehicleCategory: M1, DimensionGroup: {Width: 2700}}}
"""


def problems(tmp_path: Path, old: str, new: str) -> list[Finding]:
    text = RULE.replace(old, new)
    assert text != RULE
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "test.yaml").write_text(text, encoding="utf-8")
    catalogue = load_catalogue(tmp_path)
    assert catalogue.rules == []
    return catalogue.findings


def test_rule_loads_as_written(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "test.yaml").write_text(RULE, encoding="utf-8")
    catalogue = load_catalogue(tmp_path)
    assert catalogue.findings == []
    assert check_examples(catalogue) == {}


def test_misspelt_element_in_let_points_at_the_let_value(tmp_path: Path) -> None:
    [finding] = problems(tmp_path, "group: coc.DimensionGroup", "group: coc.DimensionGrup")
    assert (finding.line, finding.path) == (6, "rules[0].let.group")
    assert "the let value group names DimensionGrup" in finding.message
    assert finding.hint == "did you mean DimensionGroup?"


def test_undefined_variable_is_reported_when_the_rule_loads(tmp_path: Path) -> None:
    [finding] = problems(tmp_path, "check: group.Width", "check: grup.Width")
    assert (finding.line, finding.path) == (7, "rules[0].check")
    assert "uses grup, which is no variable" in finding.message
    assert finding.hint is not None and finding.hint.startswith("did you mean group?")


def test_let_value_using_a_later_one(tmp_path: Path) -> None:
    [finding] = problems(
        tmp_path, "      group: coc.DimensionGroup\n", "      a: b\n      b: a\n      group: coc.DimensionGroup\n"
    )
    assert finding.path == "rules[0].let.a"
    assert "uses the let value b, which is defined after it" in finding.message


def test_let_value_using_itself(tmp_path: Path) -> None:
    [finding] = problems(tmp_path, "group: coc.DimensionGroup", "group: group.DimensionGroup")
    assert "the let value group uses itself" in finding.message


def test_syntax_error_is_reported_in_the_text_as_written(tmp_path: Path) -> None:
    [finding] = problems(tmp_path, "check: group.Width < 2600.0", "check: group.Width <")
    assert finding.path == "rules[0].check"
    assert "the check expression does not compile: mismatched input '<EOF>' at character 14" in finding.message
    assert "(coc.DimensionGroup)" not in finding.message


def test_deep_nesting_is_reported_without_parser_internals(tmp_path: Path) -> None:
    deep = "(" * 120 + "1" + ")" * 120
    [finding] = problems(tmp_path, "check: group.Width < 2600.0", f"check: {deep} == 1")
    assert "nests brackets or operators deeper than the CEL parser allows" in finding.message
    assert "ParseError" not in finding.message


def test_unknown_applies_key_suggests_an_applies_key(tmp_path: Path) -> None:
    [finding] = problems(tmp_path, "    let:\n", "    applies: {category: [M1]}\n    let:\n")
    assert finding.message == "unknown key category"
    assert finding.hint == "did you mean categories?"


def test_rule_path_that_is_no_path_says_what_a_path_is(tmp_path: Path) -> None:
    [finding] = problems(tmp_path, "path: CocDataGroup.DimensionGroup.Width", "path: vin")
    assert finding.hint is not None and "record.vin" in finding.hint


def test_let_named_after_a_variable_has_a_plain_path(tmp_path: Path) -> None:
    [finding] = problems(tmp_path, "      group: coc.DimensionGroup\n", "      coc: coc.DimensionGroup\n")
    assert finding.path == "rules[0].let.coc"


def test_rule_that_is_no_mapping(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "test.yaml").write_text(RULE.replace("rules:\n", "rules:\n  - 12\n"), encoding="utf-8")
    catalogue = load_catalogue(tmp_path)
    [finding] = catalogue.findings
    assert finding.message == "rules[0] needs a mapping, not the single value '12'"
    assert [rule.id for rule in catalogue.rules] == ["test.width"]


def test_waivers_in_a_rule_file_say_where_waivers_belong(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "more-waivers.yaml").write_text("waivers: []\n", encoding="utf-8")
    findings = load_catalogue(tmp_path).findings
    assert any(f.hint and "waivers belong in a file named waivers.yaml" in f.hint for f in findings)


@pytest.mark.parametrize("placeholder", ["coc.AxleTable[5].AxleNumber", "1 / 0"])
def test_broken_placeholder_fails_the_rule_test(tmp_path: Path, placeholder: str) -> None:
    (tmp_path / "rules").mkdir()
    text = RULE.replace('message: "width {{ group.Width }} mm"', f'message: "width {{{{ {placeholder} }}}} mm"')
    (tmp_path / "rules" / "test.yaml").write_text(text, encoding="utf-8")
    catalogue = load_catalogue(tmp_path)
    assert catalogue.findings == []
    [finding] = check_examples(catalogue)["test.width"]
    assert finding.rule == "rules.example"
    assert f"the placeholder {{{{ {placeholder} }}}} cannot be evaluated" in finding.message


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ("{stage_number: x}", "record.stage_number 'x', which is not a whole number from 1"),
        ("{stage_number: [1]}", "record.stage_number ['1'], which is not a whole number from 1"),
        ("{today: 2025-02-30}", "record.today '2025-02-30', which is not a date written YYYY-MM-DD"),
        ("{vin: [1]}", "record.vin ['1'], which is not a text"),
    ],
)
def test_wrong_example_fact_fails_the_rule_test(tmp_path: Path, facts: str, expected: str) -> None:
    (tmp_path / "rules").mkdir()
    text = RULE.replace("fail: {CocDataGroup:", f"fail: {{record: {facts}, CocDataGroup:")
    (tmp_path / "rules" / "test.yaml").write_text(text, encoding="utf-8")
    [finding] = check_examples(load_catalogue(tmp_path))["test.width"]
    assert finding.message == f"the fail example of test.width has {expected}"


def test_misspelt_name_in_an_index_is_reported(tmp_path: Path) -> None:
    [finding] = problems(tmp_path, "check: group.Width", 'check: coc["DimensionGrup"].Width')
    assert "names DimensionGrup" in finding.message
    assert finding.hint == "did you mean DimensionGroup?"


def test_unknown_example_key_names_pass_and_fail(tmp_path: Path) -> None:
    [finding] = [f for f in problems(tmp_path, "      pass:", "      passes:") if "passes" in f.message]
    assert finding.message == "unknown key passes"
    assert finding.hint == "did you mean pass?"


def test_expression_that_is_no_text(tmp_path: Path) -> None:
    [finding] = problems(tmp_path, "check: group.Width < 2600.0", "check: [a, b]")
    assert finding.message == "check needs a text, not a list"


def test_bad_rule_id_says_what_an_id_looks_like(tmp_path: Path) -> None:
    [finding] = problems(tmp_path, "id: test.width", "id: Width Check")
    assert finding.hint is not None and "joined by a dot" in finding.hint


def test_close_variable_name_is_suggested(tmp_path: Path) -> None:
    [finding] = problems(tmp_path, "      group: coc.DimensionGroup", "      group: cco.DimensionGroup")
    assert finding.hint is not None and finding.hint.startswith("did you mean coc?")


def test_example_finding_points_at_the_example(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    text = RULE.replace("Width: 2700}}}", "Width: 2500}}}")
    (tmp_path / "rules" / "test.yaml").write_text(text, encoding="utf-8")
    catalogue = load_catalogue(tmp_path)
    [finding] = check_examples(catalogue)["test.width"]
    assert finding.path == "rules[0].examples.fail"
    line = text.splitlines()[finding.line - 1]
    assert line[finding.column - 1 :].startswith("fail:")
