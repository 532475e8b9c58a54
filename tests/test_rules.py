"""The readiness rules: every rule's examples, the rule file format, waivers and owners."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks_support import make_fleet
from conftest import PROJECT
from ecoc.check import RuleRun
from ecoc.cli import main
from ecoc.config import open_repository
from ecoc.rules.catalogue import load_catalogue
from ecoc.rules.evaluate import VersionMemo
from ecoc.rules.examples import run_example
from ecoc.runner import RunOptions, run_check
from test_check import APPROVAL, OTHER_RECORD, RECORD, edit

CATALOGUE = load_catalogue(PROJECT)
RULES = CATALOGUE.rules


def test_catalogue_loads_without_findings() -> None:
    assert CATALOGUE.findings == []
    assert RULES


@pytest.mark.parametrize("rule", RULES, ids=[rule.id for rule in RULES])
def test_rule_accepts_its_passing_example(rule) -> None:  # type: ignore[no-untyped-def]
    findings, problems = run_example(CATALOGUE, rule, rule.spec.examples.passing)
    assert problems == []
    assert findings == []


@pytest.mark.parametrize("rule", RULES, ids=[rule.id for rule in RULES])
def test_rule_rejects_its_failing_example(rule) -> None:  # type: ignore[no-untyped-def]
    findings, problems = run_example(CATALOGUE, rule, rule.spec.examples.failing)
    assert problems == []
    assert [f.rule for f in findings] == [rule.id]
    assert "?" not in findings[0].message


SIGNER_NAMES = {
    "TBC": True,
    "TO BE DEFINED": True,
    "SIGNER NAME": True,
    "JOHN DOE": True,
    "UNKNOWN SIGNER": True,
    "FIRSTNAME LASTNAME": True,
    "xxxxx xxxxx": True,
    "N.N.": True,
    "T.B.C.": True,
    "  tbc. ": True,
    "FIXME": True,
    "NAME SURNAME": True,
    "ERIKA MUSTERMANN": True,
    "TODO: fill in": True,
    "Not applicable": True,
    "PLACEHOLDER NAME": True,
    "Jan de Vries": False,
    "Anna Testa": False,
    "Maria Unknown-Smith": False,
    "Nina Placeholder-Berg": False,
}


@pytest.mark.parametrize(("name", "placeholder"), SIGNER_NAMES.items())
def test_signer_placeholder_names(name: str, placeholder: bool) -> None:
    rule = CATALOGUE.by_id()["signer.name-not-placeholder"]
    data = {"CocDataGroup": {"SigningAuthorityTable": [{"SignerName": name}]}}
    findings, problems = run_example(CATALOGUE, rule, data)
    assert problems == []
    assert bool(findings) is placeholder


# ---- the rule file format -------------------------------------------------------------------

GOOD_RULE = """\
  - id: test.speed-known
    title: The maximum speed is given
    severity: warning
    check: has(coc.MaximumSpeed)
    message: no maximum speed
    path: CocDataGroup.MaximumSpeed
    examples:
      pass: {CocDataGroup: {MaximumSpeed: 100}}
      fail: {CocDataGroup: {VehicleCategory: M1}}
"""


def check_json(repo: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, object]]]:
    code = main(["--repo", str(repo), "check", "--no-cache", "--format", "json", *args])
    return code, json.loads(capsys.readouterr().out)["findings"]


def write_rules(repo: Path, name: str, text: str) -> None:
    (repo / "rules" / name).write_text(text, encoding="utf-8")


def test_rule_with_unknown_field(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rules(
        example_repo,
        "broken.yaml",
        "rules:\n" + GOOD_RULE.replace("    severity: warning\n", "    severity: warning\n    colour: red\n"),
    )
    code, findings = check_json(example_repo, capsys)
    broken = [f for f in findings if f["rule"] == "rules.invalid"]
    assert len(broken) == 1
    assert (broken[0]["file"], broken[0]["line"]) == ("rules/broken.yaml", 5)
    assert "colour" in str(broken[0]["message"])
    assert code == 1


def test_rule_that_does_not_compile(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rules(
        example_repo, "broken.yaml", "rules:\n" + GOOD_RULE.replace("has(coc.MaximumSpeed)", "coc.MaximumSpeed >")
    )
    code, findings = check_json(example_repo, capsys)
    broken = [f for f in findings if f["rule"] == "rules.invalid"]
    assert len(broken) == 1
    assert broken[0]["line"] == 5
    assert "does not compile" in str(broken[0]["message"])
    assert code == 1


def test_other_rules_still_run_beside_a_broken_one(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rules(example_repo, "broken.yaml", "rules:\n  - id: Bad Id\n")
    write_rules(example_repo, "extra.yaml", "rules:\n" + GOOD_RULE.replace("has(coc.MaximumSpeed)", "false"))
    code, findings = check_json(example_repo, capsys)
    assert any(f["rule"] == "rules.invalid" and f["file"] == "rules/broken.yaml" for f in findings)
    assert sum(len(f["records"]) for f in findings if f["rule"] == "test.speed-known") == 12
    assert code == 1


def test_placeholder_spanning_lines(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rule = GOOD_RULE.replace("has(coc.MaximumSpeed)", "false").replace(
        "    message: no maximum speed\n",
        "    message: |-\n      speed {{ coc.MaximumSpeed\n        * 2.0 }} is doubled\n",
    )
    write_rules(example_repo, "extra.yaml", "rules:\n" + rule)
    _, findings = check_json(example_repo, capsys)
    messages = {
        f["message"] for f in findings if f["rule"] == "test.speed-known" and "XNHKH16S1TE100214" in f["records"]
    }  # type: ignore[operator]
    assert messages == {"speed 356 is doubled"}


def test_library_functions_and_quoted_names(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    axles = "coc.AxleTable.map(a, a.TechnicallyPermissibleMassAxle)"
    rule = GOOD_RULE.replace("has(coc.MaximumSpeed)", "false").replace(
        "    message: no maximum speed\n",
        f'    message: "{{{{ {axles}.sum() }}}} kg, at most {{{{ math.greatest({axles}) }}}} kg,'
        " {{ coc['MaximumSpeed'] }} km/h\"\n",
    )
    write_rules(example_repo, "extra.yaml", "rules:\n" + rule)
    _, findings = check_json(example_repo, capsys)
    messages = {
        f["message"] for f in findings if f["rule"] == "test.speed-known" and "XNHKH16S1TE100214" in f["records"]
    }  # type: ignore[operator]
    assert messages == {"2000 kg, at most 1040 kg, 178 km/h"}


AXLE_RULE = """\
rules:
  - id: test.axle-light
    title: Every axle carries less than 1000 kg
    severity: warning
    check: coc.AxleTable.all(a, a.TechnicallyPermissibleMassAxle < 1000.0)
    message: an axle carries 1000 kg or more
    path: "PATH"
    examples:
      pass: {CocDataGroup: {AxleTable: [{TechnicallyPermissibleMassAxle: 900}]}}
      fail: {CocDataGroup: {AxleTable: [{TechnicallyPermissibleMassAxle: 1100}]}}
"""
HEAVY_AXLE = "lists.range(size(coc.AxleTable)).filter(i, coc.AxleTable[i].TechnicallyPermissibleMassAxle >= 1000.0)[0]"
AXLE_MASS = "CocDataGroup.AxleTable[{{ INDEX }}].TechnicallyPermissibleMassAxle"
TYRE = "CocDataGroup.AxleTable[{{ 1 }}].TyreAxleTable[{{ coc.AxleTable[1].TyreAxleTable[9].TyreNumber }}].TyreNumber"


@pytest.mark.parametrize(
    ("rule_path", "path", "file", "line"),
    [
        # The heavy axle's mass is inherited: the finding points at the approval line.
        (
            AXLE_MASS.replace("INDEX", HEAVY_AXLE),
            "CocDataGroup.AxleTable[0].TechnicallyPermissibleMassAxle",
            APPROVAL,
            171,
        ),
        # A placeholder that cannot be evaluated leaves the table, which the record overrides.
        (AXLE_MASS.replace("INDEX", "coc.AxleTable[7].AxleTrack"), "CocDataGroup.AxleTable", RECORD, 14),
        # In a nested path, the finding keeps the rows whose placeholders could be evaluated.
        (TYRE, "CocDataGroup.AxleTable[1].TyreAxleTable", RECORD, 20),
    ],
)
def test_finding_points_at_failing_row(
    example_repo: Path, capsys: pytest.CaptureFixture[str], rule_path: str, path: str, file: str, line: int
) -> None:
    write_rules(example_repo, "extra.yaml", AXLE_RULE.replace("PATH", rule_path))
    _, findings = check_json(example_repo, capsys)
    finding = next(f for f in findings if f["rule"] == "test.axle-light" and RECORD.split("/")[1][:-5] in f["records"])  # type: ignore[operator]
    assert (finding["file"], finding["line"], finding["path"]) == (file, line, path)


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("check: has(coc.MaximumSpeed)", "check: has(coc.MaximumSpeeed)", "MaximumSpeeed"),
        ("check: has(coc.MaximumSpeed)", "check: has(coc.MassGruop.ActualMass)", "MassGruop"),
        ("check: has(coc.MaximumSpeed)", "check: record.vim != ''", "record.vim"),
        ("message: no maximum speed", "message: 'speed {{ coc.MaxSpeed }}'", "MaxSpeed"),
        ("path: CocDataGroup.MaximumSpeed", "path: CocDataGroup.MasGroup.ActualMass", "MasGroup"),
        ("severity: warning\n", "severity: warning\n    applies: {categories: [m1]}\n", "categories value m1"),
        ("severity: warning\n", "severity: warning\n    applies: {frameworks: ['2018/85']}\n", "frameworks value"),
        ("severity: warning\n", "severity: warning\n    applies: {energy_sources: [petrol]}\n", "petrol"),
    ],
)
def test_rule_with_unknown_name(
    example_repo: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, named: str
) -> None:
    assert old in GOOD_RULE
    write_rules(example_repo, "broken.yaml", "rules:\n" + GOOD_RULE.replace(old, new))
    code, findings = check_json(example_repo, capsys)
    broken = [f for f in findings if f["rule"] == "rules.invalid"]
    assert len(broken) == 1
    assert named in str(broken[0]["message"])
    assert broken[0]["file"] == "rules/broken.yaml"
    assert not any(f["rule"] == "test.speed-known" for f in findings)
    assert code == 1


def test_rule_with_duplicate_id(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The new file sorts before masses.yaml, yet neither definition may win.
    write_rules(
        example_repo,
        "a-team.yaml",
        "rules:\n" + GOOD_RULE.replace("test.speed-known", "mass.running-order-within-maximum"),
    )
    code, findings = check_json(example_repo, capsys)
    broken = sorted(str(f["file"]) for f in findings if f["rule"] == "rules.invalid")
    assert broken == ["rules/a-team.yaml", "rules/masses.yaml"]
    assert not any(f["rule"] == "mass.running-order-within-maximum" for f in findings)
    assert code == 1


def test_rule_with_builtin_id(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rules(example_repo, "extra.yaml", "rules:\n" + GOOD_RULE.replace("test.speed-known", "vin.format"))
    code, findings = check_json(example_repo, capsys)
    broken = [f for f in findings if f["rule"] == "rules.invalid"]
    assert len(broken) == 1
    assert "built into ecoc" in str(broken[0]["message"])
    assert code == 1


LET_RULE = """\
rules:
  - id: test.let
    title: Let values stand for their expressions
    severity: warning
    let:
      speed: coc.MaximumSpeed
      limit: 175.0
      fast: speed > limit
    check: "!fast"
    message: "speed {{ speed }} km/h above {{ limit }}; 'speed' and limit stay text in strings"
    path: CocDataGroup.MaximumSpeed
    examples:
      pass: {CocDataGroup: {MaximumSpeed: 170}}
      fail: {CocDataGroup: {MaximumSpeed: 180}}
"""


def test_let_values_in_rule(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rules(example_repo, "extra.yaml", LET_RULE)
    _, findings = check_json(example_repo, capsys)
    messages = {f["message"] for f in findings if f["rule"] == "test.let" and "XNHKH16S1TE100214" in f["records"]}  # type: ignore[operator]
    assert messages == {"speed 178 km/h above 175; 'speed' and limit stay text in strings"}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("      limit: 175.0", "      limit: 175.0 +", "the let value limit does not compile"),
        ("      limit: 175.0", "      coc: 175.0", "cannot name a let value"),
    ],
)
def test_invalid_let_value(
    example_repo: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: str
) -> None:
    write_rules(example_repo, "extra.yaml", LET_RULE.replace(old, new))
    code, findings = check_json(example_repo, capsys)
    broken = [f for f in findings if f["rule"] == "rules.invalid"]
    assert len(broken) == 1
    assert expected in str(broken[0]["message"])
    assert broken[0]["line"] == 7
    assert code == 1


def test_rule_file_with_yaml_error(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rules(example_repo, "broken.yaml", "rules:\n\t- id: x\n")
    code, findings = check_json(example_repo, capsys)
    assert [f["rule"] for f in findings] == ["yaml.tab"]
    assert code == 1


@pytest.mark.parametrize(
    ("check", "hint"),
    [
        ("coc.MaximumSpeed + 1 > 0", "compare numbers with numbers"),
        ("coc.MaximumSpeed.isBlank()", "functions the README lists"),
        ("coc.AxleTable[5].AxleTrack > 0.0", "guard the index with size()"),
        ("coc.MaximumSpeed", "true or false"),
        ("int(coc.MaximumSpeed) / 0 > 1", "guard the division"),
    ],
)
def test_rule_evaluation_error_reported_once(
    example_repo: Path, capsys: pytest.CaptureFixture[str], check: str, hint: str
) -> None:
    write_rules(example_repo, "extra.yaml", "rules:\n" + GOOD_RULE.replace("has(coc.MaximumSpeed)", check))
    code, findings = check_json(example_repo, capsys)
    failed = [f for f in findings if f["rule"] == "rules.failed"]
    assert len(failed) == 1
    assert (failed[0]["file"], failed[0]["line"]) == ("rules/extra.yaml", 5)
    assert hint in str(failed[0]["hint"])
    assert len(failed[0]["records"]) == 12  # type: ignore[arg-type]
    assert code == 1


def test_selectors_limit_a_rule(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rule = GOOD_RULE.replace("has(coc.MaximumSpeed)", "false").replace(
        "    severity: warning\n", "    severity: warning\n    applies: {categories: [N1], energy_sources: ['20']}\n"
    )
    write_rules(example_repo, "extra.yaml", "rules:\n" + rule)
    _, findings = check_json(example_repo, capsys)
    flagged = sorted(r for f in findings if f["rule"] == "test.speed-known" for r in f["records"])
    assert flagged == ["XNHDR1A87TE303318", "XNHDR1M67TE300087", "XNHDR1M69TE301452", "XNHDR2A8XTE305120"]


def test_inherited_value_points_at_the_approval(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, APPROVAL, "          MassInRunningOrder: 1465", "          MassInRunningOrder: 2465")
    code, findings = check_json(example_repo, capsys)
    finding = next(f for f in findings if f["rule"] == "mass.running-order-within-maximum")
    assert finding["file"] == APPROVAL
    assert "2465" in str(finding["message"])
    assert len(finding["records"]) >= 1
    assert code == 1


def speed_rule(check: str) -> str:
    return "rules:\n" + GOOD_RULE.replace("has(coc.MaximumSpeed)", check)


def flagged_records(findings: list[dict[str, object]]) -> list[str]:
    """The records of version KH16F-S17 that test.speed-known flags."""
    records = (r for f in findings if f["rule"] == "test.speed-known" for r in f["records"])  # type: ignore[attr-defined]
    return sorted(r for r in records if r in ("XNHKH16S1TE100214", "XNHKH16S8TE103871"))


@pytest.mark.parametrize(
    ("check", "override", "expected"),
    [
        ("coc.MaximumSpeed <= 178.0", "190", ["XNHKH16S8TE103871"]),
        ("coc.MaximumSpeed < 178.0", "170", ["XNHKH16S1TE100214"]),
    ],
)
def test_reuse_respects_record_override(
    example_repo: Path, capsys: pytest.CaptureFixture[str], check: str, override: str, expected: list[str]
) -> None:
    # Both records share version KH16F-S17 (MaximumSpeed 178); the second overrides the speed.
    write_rules(example_repo, "extra.yaml", speed_rule(check))
    edit(example_repo, OTHER_RECORD, "CocDataGroup:\n", f"CocDataGroup:\n  MaximumSpeed: {override}\n")
    for jobs in ("1", "4"):
        _, findings = check_json(example_repo, capsys, "-j", jobs)
        assert flagged_records(findings) == expected


def test_reuse_skips_rules_reading_vin(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rules(example_repo, "extra.yaml", speed_rule("\"!record.vin.endsWith('871')\""))
    _, findings = check_json(example_repo, capsys, "-j", "1")
    assert flagged_records(findings) == ["XNHKH16S8TE103871"]


REUSE_RULES = """\
rules:
  - id: test.country
    title: Not registered in the Netherlands
    severity: warning
    check: header.IntendedCountryRegistration != 'NL'
    message: registered in {{ header.IntendedCountryRegistration }}
    path: Header.IntendedCountryRegistration
    examples: {pass: {}, fail: {}}
  - id: test.tyre-class
    title: No tyre of rolling resistance class C
    severity: warning
    check: >-
      coc.AxleTable.all(a, !has(a.TyreAxleTable)
      || a.TyreAxleTable.all(t, !has(t.RollingResistanceClass) || t.RollingResistanceClass != 'C'))
    message: a tyre of class C
    path: >-
      CocDataGroup.AxleTable[{{ lists.range(size(coc.AxleTable)).filter(i,
      has(coc.AxleTable[i].TyreAxleTable) && coc.AxleTable[i].TyreAxleTable.exists(t,
      has(t.RollingResistanceClass) && t.RollingResistanceClass == 'C'))[0] }}]
    examples: {pass: {}, fail: {}}
  - id: test.light
    title: Actual mass below 2000 kg
    severity: warning
    check: "!has(coc.MassGroup.ActualMass) || coc.MassGroup.ActualMass < 2000.0"
    message: actual mass {{ coc.MassGroup.ActualMass }} kg
    path: CocDataGroup.MassGroup.ActualMass
    examples: {pass: {}, fail: {}}
  - id: test.speed
    title: A version-level value
    severity: warning
    check: coc.MaximumSpeed < 175.0
    message: "{{ coc.MaximumSpeed }} km/h"
    path: CocDataGroup.MaximumSpeed
    examples: {pass: {}, fail: {}}
"""


def test_reused_results_match_fresh_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Records of one version share a rule's result when they agree on every value it reads; the
    # findings must be what evaluating every record afresh gives, each pointing at its own record.
    fleet = make_fleet(tmp_path / "fleet", 96)
    (fleet / "rules" / "reuse.yaml").write_text(REUSE_RULES, encoding="utf-8")
    records = sorted((fleet / "records").rglob("*.yaml"))
    for number, path in enumerate(records):
        text = path.read_text(encoding="utf-8")
        if number % 3 == 0:
            text = text.replace("RollingResistanceClass: B", "RollingResistanceClass: C", 1)
        if number % 4 == 0:
            text = re.sub(r"IntendedCountryRegistration: \w+", "IntendedCountryRegistration: NL", text)
        if number % 5 == 0:
            text = text.replace("CocDataGroup:\n", "CocDataGroup:\n  MaximumSpeed: 170\n", 1)
        elif number % 7 == 0:
            text = text.replace("CocDataGroup:\n", "CocDataGroup:\n  MaximumSpeed: null\n", 1)
        path.write_text(text, encoding="utf-8")
    repository = open_repository(fleet)
    reused = run_check(repository, RunOptions(jobs=1)).findings
    monkeypatch.setattr(RuleRun, "memo", lambda self, approval, variant, version: VersionMemo())
    fresh = run_check(repository, RunOptions(jobs=1)).findings
    assert reused == fresh
    counts = {
        rule: sum(len(f.records) for f in fresh if f.rule == rule)
        for rule in ("test.country", "test.tyre-class", "test.light", "test.speed")
    }
    assert all(0 < count < len(records) for count in counts.values()), counts
    for finding in fresh:
        if finding.rule in ("test.country", "test.light") and finding.file and finding.file.startswith("records/"):
            assert finding.file.endswith(f"/{finding.records[0]}.yaml")


# ---- waivers ----------------------------------------------------------------------------------

WAIVER = """\
waivers:
  - id: W-1
    rule: {rule}
    records: [{records}]
    reason: accepted by the approval authority in writing
    approved_by: "@halvard-motors/compliance-review"
    expires: {expires}
"""


def waive(repo: Path, rule: str, records: str, expires: str = "2099-01-01") -> None:
    (repo / "rules" / "waivers.yaml").write_text(WAIVER.format(rule=rule, records=records, expires=expires))


def break_mass(repo: Path) -> None:
    write_rules(
        repo, "extra.yaml", "rules:\n" + GOOD_RULE.replace("has(coc.MaximumSpeed)", "record.vin != 'XNHKH16S1TE100214'")
    )


def test_waived_finding_is_reported_but_does_not_block(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    break_mass(example_repo)
    write_rules(
        example_repo,
        "extra.yaml",
        (example_repo / "rules" / "extra.yaml").read_text().replace("severity: warning", "severity: error"),
    )
    waive(example_repo, "test.speed-known", "XNHKH16S1TE100214")
    code = main(["--repo", str(example_repo), "check", "--no-cache", "--format", "json"])
    document = json.loads(capsys.readouterr().out)
    waived = [f for f in document["findings"] if f["waiver"] == "W-1"]
    assert [f["records"] for f in waived] == [["XNHKH16S1TE100214"]]
    assert document["summary"]["waived"] == 1
    assert document["summary"]["errors"] == 0
    assert code == 0
    main(["--repo", str(example_repo), "check", "--no-cache"])
    text = capsys.readouterr().out
    line = next(line for line in text.splitlines() if "XNHKH16S1TE100214" in line and "test.speed-known" in line)
    assert ": error test.speed-known: " in line
    assert line.endswith("(waived by W-1)")


def test_waiver_with_a_pattern(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rules(example_repo, "extra.yaml", "rules:\n" + GOOD_RULE.replace("has(coc.MaximumSpeed)", "false"))
    waive(example_repo, "test.speed-known", '"XNHDR*"')
    _, findings = check_json(example_repo, capsys)
    waived = [r for f in findings if f["waiver"] == "W-1" for r in f["records"]]
    assert len(waived) == 4 and all(vin.startswith("XNHDR") for vin in waived)


def test_expired_waiver(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    break_mass(example_repo)
    waive(example_repo, "test.speed-known", "XNHKH16S1TE100214", expires="2020-01-01")
    code, findings = check_json(example_repo, capsys)
    expired = [f for f in findings if f["rule"] == "waiver.expired"]
    assert len(expired) == 1 and "W-1" in str(expired[0]["message"])
    assert expired[0]["file"] == "rules/waivers.yaml"
    assert not any(f["waiver"] for f in findings)
    assert code == 1


def test_waiver_close_to_its_expiry_is_warned_about(
    example_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    break_mass(example_repo)
    waive(example_repo, "test.speed-known", "XNHKH16S1TE100214", expires="2026-12-08")
    monkeypatch.setenv("ECOC_TODAY", "2026-12-05")
    code, findings = check_json(example_repo, capsys)
    [expiring] = [f for f in findings if f["rule"] == "waiver.expiring"]
    assert expiring["severity"] == "warning"
    assert (expiring["file"], expiring["path"]) == ("rules/waivers.yaml", "waivers[0].expires")
    assert str(expiring["message"]).startswith(
        "waiver W-1 for rule test.speed-known expires on 2026-12-08, in 3 days; after that"
    )
    assert any(f["waiver"] == "W-1" for f in findings)
    assert code == 0


def test_waiver_problems_are_reported_together(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    waive(example_repo, "mass.no-such-rule", "XNHKH16S1TE100214", expires="2020-01-01")
    _, findings = check_json(example_repo, capsys)
    assert sorted(f["rule"] for f in findings) == ["waiver.expired", "waiver.unknown-rule"]


def test_unused_waiver(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    waive(example_repo, "mass.running-order-within-maximum", "XNHKH16S1TE100214")
    code, findings = check_json(example_repo, capsys)
    assert [f["rule"] for f in findings] == ["waiver.not-waivable"]
    waive(example_repo, "vin.check-digit", "XNHKH16S1TE100214")
    code, findings = check_json(example_repo, capsys)
    assert [f["rule"] for f in findings] == ["waiver.unused"]
    assert findings[0]["severity"] == "warning"
    assert code == 0


def test_waiver_for_an_unknown_rule(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    waive(example_repo, "mass.no-such-rule", "XNHKH16S1TE100214")
    code, findings = check_json(example_repo, capsys)
    assert [f["rule"] for f in findings] == ["waiver.unknown-rule"]
    assert code == 1


def test_waiver_without_approver(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    waive(example_repo, "vin.check-digit", "XNHKH16S1TE100214")
    edit(example_repo, "rules/waivers.yaml", '    approved_by: "@halvard-motors/compliance-review"\n', "")
    code, findings = check_json(example_repo, capsys)
    assert [f["rule"] for f in findings] == ["waiver.invalid"]
    assert "approved_by" in str(findings[0]["message"])
    assert code == 1


# ---- records across the repository ------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("records: [XNHKH16S1TE100214]", "records: [xnhkh16s1te100214]", "is not a VIN or VIN pattern"),
        ("records: [XNHKH16S1TE100214]", "records: [XNHKH16S1TE10021]", "stands for 16 characters"),
        ("records: [XNHKH16S1TE100214]", 'records: ["XNH[KH*"]', "has a [ without its ]"),
        ("records: [XNHKH16S1TE100214]", "records: []", "names no records"),
        ("reason: accepted by the approval authority in writing", "reason: ok", "too short"),
        ('approved_by: "@halvard-motors/compliance-review"', "approved_by: review team", "is not a GitHub user"),
        ("records: [XNHKH16S1TE100214]", "records: XNHKH16S1TE100214", "records needs a list"),
        ("id: W-1", "id: W 1", "'W 1' is not a valid id"),
        ("expires: 2099-01-01", "expires: 9999-99-99", "is not a day of the calendar"),
        ("expires: 2099-01-01", "expires: 2027-02-30", "is not a day of the calendar"),
        ("expires: 2099-01-01", "expires: 2027-2-3", "is not a date written YYYY-MM-DD"),
    ],
)
def test_invalid_waiver_field(
    example_repo: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: str
) -> None:
    waive(example_repo, "test.speed-known", "XNHKH16S1TE100214")
    edit(example_repo, "rules/waivers.yaml", old, new)
    code, findings = check_json(example_repo, capsys)
    invalid = [f for f in findings if f["rule"] == "waiver.invalid"]
    assert len(invalid) == 1
    assert expected in str(invalid[0]["message"])
    assert code == 1


def test_waiver_id_used_in_two_files(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    waive(example_repo, "test.speed-known", "XNHKH16S1TE100214")
    text = (example_repo / "rules" / "waivers.yaml").read_text(encoding="utf-8")
    (example_repo / "rules" / "waivers.yml").write_text(text, encoding="utf-8")
    code, findings = check_json(example_repo, capsys)
    invalid = [f for f in findings if f["rule"] == "waiver.invalid"]
    assert [str(f["message"]) for f in invalid] == ["waiver id W-1 is used twice, first at rules/waivers.yaml:2"]
    assert code == 1


def test_waiver_with_a_character_range(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rules(example_repo, "extra.yaml", "rules:\n" + GOOD_RULE.replace("has(coc.MaximumSpeed)", "false"))
    waive(example_repo, "test.speed-known", '"XNHKH16S[0-9]TE*"')
    _, findings = check_json(example_repo, capsys)
    waived = sorted(r for f in findings if f["waiver"] == "W-1" for r in f["records"])  # type: ignore[attr-defined]
    assert waived == ["XNHKH16S1TE100214", "XNHKH16S8TE103871"]


def test_vin_signed_from_another_record(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evidence = example_repo / "signed" / "XNHKH16S1TE100214" / "1"
    evidence.mkdir(parents=True)
    (evidence / "manifest.json").write_text(json.dumps({"vin": "XNHKH16S1TE100214", "record": "records/old.yaml"}))
    code, findings = check_json(example_repo, capsys)
    finding = next(f for f in findings if f["rule"] == "record.signed-elsewhere")
    assert finding["file"] == RECORD
    assert "records/old.yaml" in str(finding["message"])
    assert code == 1


def test_same_vin_at_two_stages_is_allowed(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    second = example_repo / "records" / "XNHKH16S1TE100214-stage2.yaml"
    second.write_text(
        (example_repo / RECORD)
        .read_text()
        .replace(
            "CocDataGroup:\n",
            "CocDataGroup:\n  ManufacturerTable:\n    - {}\n    - ManufacturerStageNumber: 2\n"
            "      ManufacturerName: CARROSSERIE VAN DAM B.V.\n      ManufacturerAddressLine1: INDUSTRIEWEG 4\n"
            "      ManufacturerPlaceOfResidence: TILBURG\n      ManufacturerCountryOfResidence: NETHERLANDS\n",
            1,
        )
    )
    _, findings = check_json(example_repo, capsys)
    assert not [f for f in findings if f["rule"] == "record.duplicate-vin"]


# ---- documentation and owners -----------------------------------------------------------------


def test_rules_documentation_is_current() -> None:
    from ecoc.rules.docs import markdown

    committed = (PROJECT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert committed == markdown(CATALOGUE), "docs/rules.md is out of date: run ecoc rules doc --output docs/rules.md"


def test_codeowners_matches_the_owners(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--repo", str(PROJECT), "codeowners", "--check"]) == 0


def test_codeowners_check_fails_on_drift(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--repo", str(example_repo), "codeowners", "--write"]) == 0
    edit(
        example_repo,
        "ecoc.yaml",
        '  review: ["@halvard-motors/compliance-review"]',
        '  review: ["@halvard-motors/quality"]',
    )
    capsys.readouterr()
    assert main(["--repo", str(example_repo), "codeowners", "--check"]) == 1
    assert "+* @halvard-motors/quality" in capsys.readouterr().out


def test_new_approval_with_default_owners_broke_the_owners_check(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--repo", str(example_repo), "codeowners", "--write"]) == 0
    copy = example_repo / "approvals" / "e4-2018-858-04127-02.yaml"
    copy.write_bytes((example_repo / APPROVAL).read_bytes().replace(b"04127*01", b"04127*02"))
    capsys.readouterr()
    assert main(["--repo", str(example_repo), "codeowners", "--check"]) == 0
    owners = (example_repo / ".github" / "CODEOWNERS").read_text(encoding="utf-8")
    # An approval with reviewers of its own still gets its line.
    assert "/approvals/e4-2018-858-03985-02.yaml @halvard-motors/lcv-homologation" in owners
    assert "e4-2018-858-04127" not in owners


def test_empty_release_owners_were_replaced_quietly(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["--repo", str(example_repo), "codeowners", "--write"]) == 0
    assert "owners.release" not in capsys.readouterr().err
    edit(example_repo, "ecoc.yaml", '  release: ["@halvard-motors/ecoc-release"]', "  release: []")
    assert main(["--repo", str(example_repo), "codeowners", "--write"]) == 0
    assert "owners.release in ecoc.yaml is empty, so the review owners also review signed/" in capsys.readouterr().err
    owners = (example_repo / ".github" / "CODEOWNERS").read_text(encoding="utf-8")
    assert "/signed/ @halvard-motors/compliance-review" in owners


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        (APPROVAL, "CocDataGroup:", "CocDataGroup: [broken"),
        (RECORD, "vin: XNHKH16S1TE100214", 'vin: XNHKH16S1TE100214\nowners: {review: ["van review team"]}'),
    ],
)
def test_codeowners_refuses_unreadable_owners(
    example_repo: Path, capsys: pytest.CaptureFixture[str], file: str, old: str, new: str
) -> None:
    assert main(["--repo", str(example_repo), "codeowners", "--write"]) == 0
    before = (example_repo / ".github" / "CODEOWNERS").read_text(encoding="utf-8")
    edit(example_repo, file, old, new)
    assert main(["--repo", str(example_repo), "codeowners", "--write"]) == 1
    assert f"{file}:" in capsys.readouterr().err
    assert (example_repo / ".github" / "CODEOWNERS").read_text(encoding="utf-8") == before
    assert main(["--repo", str(example_repo), "codeowners", "--check"]) == 1


def test_record_reviewers_add_to_approval(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(
        example_repo,
        RECORD,
        "vin: XNHKH16S1TE100214",
        'vin: XNHKH16S1TE100214\nowners: {review: ["@halvard-motors/fleet"]}',
    )
    assert main(["--repo", str(example_repo), "codeowners", "--write"]) == 0
    lines = (example_repo / ".github" / "CODEOWNERS").read_text(encoding="utf-8").splitlines()
    assert f"/{RECORD} @halvard-motors/compliance-review @halvard-motors/fleet" in lines


def test_codeowners_without_review_owners(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path / "new")]) == 0
    assert main(["--repo", str(tmp_path / "new"), "codeowners", "--write"]) == 1
    err = capsys.readouterr().err
    assert "names no review owners" in err
    # The finding points at the review key, not at the first line of ecoc.yaml.
    lines = (tmp_path / "new" / "ecoc.yaml").read_text(encoding="utf-8").splitlines()
    review = next(number for number, text in enumerate(lines, start=1) if text.strip().startswith("review:"))
    assert f"ecoc.yaml:{review}:" in err
    assert not (tmp_path / "new" / ".github" / "CODEOWNERS").exists()


def test_codeowners_check_and_write_exclude(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--repo", str(example_repo), "codeowners", "--check", "--write"]) == 2


def readme_rule() -> str:
    """The sample rule of the README."""
    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    start = text.index("```yaml\nrules:\n") + len("```yaml\n")
    return text[start : text.index("```", start)]


def test_readme_rule_passes_rules_test(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in (example_repo / "rules").glob("*.yaml"):
        path.unlink()
    write_rules(example_repo, "sample.yaml", readme_rule())
    code = main(["--repo", str(example_repo), "rules", "test"])
    captured = capsys.readouterr()
    assert "1 of 1 rules" in captured.err
    assert code == 0


SAMPLE = "mass.running-order-within-maximum"
PASSING_MASS = "VehicleCategory: M1, MassGroup: {MassInRunningOrder: 1465"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("MassInRunningOrder: 2000", "MassInRunningOrder: 1000", f"the fail example of {SAMPLE} passes"),
        (PASSING_MASS, PASSING_MASS.replace("1465", "9999"), f"the pass example of {SAMPLE} fails"),
        (PASSING_MASS, PASSING_MASS.replace("M1", "Q7"), "not valid IVI 2.0 data"),
        ("fail: {CocDataGroup: {VehicleCategory: M1,", "fail: {CocDataGroup: {VehicleCategory: O1,", "falls outside"),
        ("fail: {CocDataGroup:", "fail: {record: {aproval: x}, CocDataGroup:", "unknown key record.aproval"),
    ],
)
def test_rules_test_reports_wrong_example(
    example_repo: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: str
) -> None:
    rule = readme_rule()
    assert old in rule
    write_rules(example_repo, "sample.yaml", rule.replace(old, new))
    for path in (example_repo / "rules").glob("*.yaml"):
        if path.name != "sample.yaml":
            path.unlink()
    code = main(["--repo", str(example_repo), "rules", "test"])
    captured = capsys.readouterr()
    assert expected in captured.out
    assert "rules/sample.yaml:" in captured.out
    assert "0 of 1 rules" in captured.err
    assert code == 1


def test_rules_list_and_explain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--repo", str(PROJECT), "rules", "list"]) == 0
    listed = capsys.readouterr().out
    for rule in RULES:
        assert rule.id in listed
    assert main(["--repo", str(PROJECT), "rules", "explain", RULES[0].id]) == 0
    assert "passes:" in capsys.readouterr().out
    assert main(["--repo", str(PROJECT), "rules", "explain", "vin.format"]) == 0
    assert main(["--repo", str(PROJECT), "rules", "explain", "mass.nothing"]) == 2


def test_waiver_for_a_misspelt_rule_suggests_the_rule(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rules(example_repo, "extra.yaml", "rules:\n" + GOOD_RULE)
    waive(example_repo, "test.speed-knwn", "XNHKH16S1TE100214")
    _, findings = check_json(example_repo, capsys)
    [unknown] = [f for f in findings if f["rule"] == "waiver.unknown-rule"]
    assert unknown["hint"] == "did you mean test.speed-known?"
    lines = (example_repo / "rules" / "waivers.yaml").read_text().splitlines()
    assert lines[int(unknown["line"]) - 1].strip() == "rule: test.speed-knwn"  # type: ignore[call-overload]


def test_waiver_for_a_file_check_says_to_fix_the_file(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    waive(example_repo, "waiver.unused", "XNHKH16S1TE100214")
    _, findings = check_json(example_repo, capsys)
    [refused] = [f for f in findings if f["rule"] == "waiver.not-waivable"]
    assert "fix the file the finding names" in str(refused["hint"])


def test_ctrl_c_inside_a_rule_function_stops_the_check(
    example_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cel.stdlib

    from ecoc.rules import evaluate

    def interrupted(*_: object) -> object:
        raise KeyboardInterrupt

    # Ctrl-C arrives while the CEL library runs a function written in Python, as `replace` is.
    monkeypatch.setitem(cel.stdlib.EXTENSIONS["strings"], "replace", interrupted)
    monkeypatch.setattr(evaluate, "_CONTEXTS", [])
    code = main(["--repo", str(example_repo), "check", "--no-cache", "--format", "json"])
    captured = capsys.readouterr()
    assert code == 130
    assert captured.err.rstrip().endswith("interrupted")
    assert captured.out == ""


@pytest.mark.parametrize(
    ("rule_id", "severity"),
    [
        ("release.rejected", "error"),
        ("release.correction-required", "error"),
        ("signing.certificate-expiring", "warning"),
    ],
)
def test_release_and_seal_checks_are_explained(
    example_repo: Path, capsys: pytest.CaptureFixture[str], rule_id: str, severity: str
) -> None:
    assert main(["--repo", str(example_repo), "rules", "explain", rule_id]) == 0
    assert f"{rule_id} ({severity}, not waivable)" in capsys.readouterr().out


def test_waiver_findings_point_at_the_key(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    waive(example_repo, "mass.running-order-within-maximum", "XNHKH16S1TE100214")
    lines = (example_repo / "rules" / "waivers.yaml").read_text(encoding="utf-8").splitlines()
    _, findings = check_json(example_repo, capsys)
    [refused] = findings
    assert (refused["rule"], refused["path"]) == ("waiver.not-waivable", "waivers[0].rule")
    assert lines[int(refused["line"]) - 1].lstrip(" -").startswith("rule:")  # type: ignore[call-overload]
    waive(example_repo, "vin.check-digit", "XNHKH16S1TE100214", expires="2020-01-01")
    _, findings = check_json(example_repo, capsys)
    [expired] = findings
    assert (expired["rule"], expired["path"]) == ("waiver.expired", "waivers[0].expires")
    assert lines[int(expired["line"]) - 1].lstrip(" -").startswith("expires:")  # type: ignore[call-overload]


def _copy_record(repo: Path, source: str, vin: str) -> None:
    text = (repo / source).read_text(encoding="utf-8")
    old_vin = Path(source).stem
    (repo / "records" / f"{vin}.yaml").write_text(text.replace(old_vin, vin), encoding="utf-8")


@pytest.mark.parametrize(
    ("source", "vin"),
    [("records/XNHDR1M67TE300087.yaml", "XNHDR1M67TE309999"), (RECORD, "XNHKH16S1TE109999")],
    ids=["series-of-own-owners", "default-owners"],
)
def test_new_vehicle_needs_no_codeowners_line(
    example_repo: Path, capsys: pytest.CaptureFixture[str], source: str, vin: str
) -> None:
    assert main(["--repo", str(example_repo), "codeowners", "--write"]) == 0
    lines = (example_repo / ".github" / "CODEOWNERS").read_text(encoding="utf-8").splitlines()
    assert "/records/XNHDR* @halvard-motors/lcv-homologation @halvard-motors/compliance-review" in lines
    _copy_record(example_repo, source, vin)
    assert main(["--repo", str(example_repo), "codeowners", "--check"]) == 0


def test_series_shared_with_other_owners_gets_a_line_per_file(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A car whose VIN starts like the vans of the other approval rules out the XNHDR* pattern.
    _copy_record(example_repo, RECORD, "XNHDR9ZZ0TE100001")
    assert main(["--repo", str(example_repo), "codeowners", "--write"]) == 0
    lines = (example_repo / ".github" / "CODEOWNERS").read_text(encoding="utf-8").splitlines()
    assert not any(line.startswith("/records/XNHDR*") for line in lines)
    assert "/records/XNHDR1M67TE300087.yaml @halvard-motors/lcv-homologation @halvard-motors/compliance-review" in lines


def test_finding_about_a_removed_value_points_at_the_records_null(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(example_repo, RECORD, "CocDataGroup:\n", "CocDataGroup:\n  MaximumSpeed: null\n")
    lines = (example_repo / RECORD).read_text(encoding="utf-8").splitlines()
    _, findings = check_json(example_repo, capsys)
    [missing] = [f for f in findings if f["path"] == "CocDataGroup.MaximumSpeed"]
    assert missing["file"] == RECORD
    assert lines[int(missing["line"]) - 1] == "  MaximumSpeed: null"  # type: ignore[call-overload]


def test_rule_without_path_says_what_a_path_is(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rules(
        example_repo,
        "trial.yaml",
        "rules:\n  - id: trial.speed\n    title: t\n    severity: error\n    check: has(coc.MaximumSpeed)\n"
        "    message: m\n    examples:\n"
        "      pass: {CocDataGroup: {MaximumSpeed: 1}}\n      fail: {CocDataGroup: {}}\n",
    )
    _, findings = check_json(example_repo, capsys)
    [missing] = [f for f in findings if f["path"] == "rules[0].path"]
    assert missing["message"] == "missing key path"
    assert str(missing["hint"]).startswith("add path: a path starts with CocDataGroup, Header or record")


def test_waiver_with_two_problems_reports_both(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    waive(example_repo, "vin.check-digit", "XNHKH16S1TE100214")
    text = (example_repo / "rules" / "waivers.yaml").read_text(encoding="utf-8")
    second = text.split("\n", 1)[1].replace("rule: vin.check-digit", "rule: model.code")
    (example_repo / "rules" / "waivers.yaml").write_text(text + second, encoding="utf-8")
    _, findings = check_json(example_repo, capsys)
    rules = sorted(str(f["rule"]) for f in findings if str(f["rule"]).startswith("waiver."))
    # The second waiver repeats the id W-1 and names a rule that may not be waived. The first
    # accepts nothing, because its record's VIN has the right check digit.
    assert rules == ["waiver.invalid", "waiver.not-waivable", "waiver.unused"]
