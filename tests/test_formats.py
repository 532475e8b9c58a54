"""Report formats of `ecoc check`: SARIF, JUnit, GitHub workflow commands and Markdown."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
from lxml import etree

from conftest import git
from ecoc.cli import main
from ecoc.findings import Finding, Severity
from ecoc.formats import (
    FINGERPRINT_KEY,
    GITHUB_ANNOTATIONS_PER_KIND,
    MARKDOWN_MARKER,
    PREVIEW_ARTIFACT,
    PREVIEW_INDEX,
    CheckedRecord,
    RecordChange,
    Report,
    changes_text,
    format_check_text,
    format_github,
    format_junit,
    format_markdown,
    format_sarif,
)
from ecoc.report import summary_line
from test_changes import BALLAST, commit, write_waiver
from test_check import APPROVAL, OTHER_RECORD, RECORD, edit
from test_workflows import steps, workflow

VIN = "XNHKH16S1TE100214"

SARIF_SCHEMA = "@microsoft/jest-sarif/lib/schemas/sarif-2.1.0-rtm.5.json"


def sarif_schema() -> dict[str, object]:
    modules = os.environ.get("ECOC_NODE_MODULES")
    path = Path(modules) / SARIF_SCHEMA if modules else None
    if path is None or not path.is_file():
        message = "set ECOC_NODE_MODULES to a node_modules folder with the npm package @microsoft/jest-sarif"
        if os.environ.get("ECOC_REQUIRE_OFFICIAL") == "1":
            pytest.fail(f"{message} (ECOC_REQUIRE_OFFICIAL=1 forbids skipping)")
        pytest.skip(message)
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def run(repo: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["--repo", str(repo), "check", "--no-cache", *args])
    return code, capsys.readouterr().out


def break_two_things(repo: Path) -> None:
    """Break a record value, and an approval value that the approval's records inherit."""
    edit(repo, RECORD, "ActualMass: 1478", "ActualMass: 99999")
    edit(repo, APPROVAL, "MaximumSpeed: 178", "MaximumSpeed: 260")


def test_sarif_validates_against_the_sarif_schema(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema = sarif_schema()
    break_two_things(example_repo)
    code, out = run(example_repo, capsys, "--format", "sarif")
    log = json.loads(out)
    jsonschema.validate(log, schema)
    results = log["runs"][0]["results"]
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert code == 1
    assert {r["ruleId"] for r in results} == {r["id"] for r in rules}
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        location = result["locations"][0]["physicalLocation"]
        assert not location["artifactLocation"]["uri"].startswith("/")
        assert location["region"]["startLine"] >= 1
    speed = next(r for r in results if r["ruleId"] == "tyre.speed-category-covers-maximum-speed")
    assert speed["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == APPROVAL
    assert "XNHKH16S1TE100214" in speed["properties"]["records"]
    described = next(r for r in rules if r["id"] == "tyre.speed-category-covers-maximum-speed")
    assert described["defaultConfiguration"]["level"] == "error"
    assert described["shortDescription"]["text"].startswith("The speed category")


def test_sarif_fingerprint_survives_a_moved_line(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    break_two_things(example_repo)
    _, before = run(example_repo, capsys, "--format", "sarif")
    text = (example_repo / RECORD).read_text(encoding="utf-8")
    (example_repo / RECORD).write_text("# moved down by a comment\n" + text, encoding="utf-8")
    _, after = run(example_repo, capsys, "--format", "sarif")

    def prints(out: str) -> set[str]:
        return {r["partialFingerprints"][FINGERPRINT_KEY] for r in json.loads(out)["runs"][0]["results"]}

    assert prints(before) == prints(after)


def test_sarif_fingerprint_separates_waived_records(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, APPROVAL, "MaximumSpeed: 178", "MaximumSpeed: 260")
    (example_repo / "rules" / "waivers.yaml").write_text(
        "waivers:\n"
        "  - id: W-9\n"
        "    rule: tyre.speed-category-covers-maximum-speed\n"
        "    records: [XNHKH16S1*]\n"
        "    reason: winter tyres with a speed limiter, accepted in writing\n"
        '    approved_by: "@halvard-motors/compliance-review"\n'
        "    expires: 2099-01-01\n",
        encoding="utf-8",
    )
    code, out = run(example_repo, capsys, "--format", "sarif")
    results = [
        r for r in json.loads(out)["runs"][0]["results"] if r["ruleId"] == "tyre.speed-category-covers-maximum-speed"
    ]
    assert code == 1
    assert [r["properties"]["records"] for r in results] == [[VIN], ["XNHKH16S8TE103871"]]
    assert [bool(r.get("suppressions")) for r in results] == [True, False]
    assert results[0]["locations"] == results[1]["locations"]
    assert results[0]["partialFingerprints"] != results[1]["partialFingerprints"]


def test_sarif_fingerprint_separates_waived_groups() -> None:
    def speed(records: tuple[str, ...], waiver: str | None) -> Finding:
        return Finding(
            "test.rule", Severity.ERROR, "too fast", APPROVAL, 7, 3, "CocDataGroup.MaximumSpeed", None, records, waiver
        )

    findings = [speed(("A", "B"), "W-1"), speed(("C", "D"), None), Finding("other.rule", Severity.ERROR, "x", APPROVAL)]
    summary = {"errors": 2, "warnings": 0, "info": 0, "waived": 1, "records": 4, "approvals": 1}
    results = json.loads(format_sarif(Report(findings, summary)))["runs"][0]["results"]
    prints = [r["partialFingerprints"][FINGERPRINT_KEY] for r in results]
    assert len(set(prints)) == 3


def test_junit_has_a_test_case_per_record(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    break_two_things(example_repo)
    code, out = run(example_repo, capsys, "--format", "junit")
    root = etree.fromstring(out.encode())
    records = root.find("testsuite[@name='records']")
    assert records is not None
    cases = records.findall("testcase")
    assert len(cases) == 12
    failed = {case.get("name") for case in cases if case.find("failure") is not None}
    assert failed == {"XNHKH16S1TE100214", "XNHKH16S8TE103871"}
    assert root.get("failures") == "2"
    assert code == 1


def test_junit_holds_control_characters_of_the_data(tmp_path: Path) -> None:
    finding = Finding("model.control-character", Severity.ERROR, "text with \x07 bell", "records/A.yaml", 3, 4)
    report = Report([finding], {"errors": 1}, [CheckedRecord("records/A.yaml", "A")])
    root = etree.fromstring(format_junit(report).encode())
    failure = root.find(".//failure")
    assert failure is not None and "\\x07" in (failure.text or "")


SUMMARY = {"errors": 0, "warnings": 0, "info": 0, "waived": 0, "records": 1, "approvals": 0}


def finding(number: int, severity: Severity = Severity.ERROR, line: int | None = None) -> Finding:
    return Finding("test.rule", severity, f"problem {number}", "records/A.yaml", line or number, 1, records=("A",))


def test_github_annotations_stop_at_limit() -> None:
    findings = [finding(n) for n in range(1, 26)] + [finding(n, Severity.WARNING) for n in range(30, 33)]
    report = Report(findings, {"errors": 25, "warnings": 3, "info": 0, "records": 1, "approvals": 0})
    lines = format_github(report).splitlines()
    errors = [line for line in lines if line.startswith("::error ")]
    warnings = [line for line in lines if line.startswith("::warning ")]
    notices = [line for line in lines if line.startswith("::notice ")]
    assert len(errors) == GITHUB_ANNOTATIONS_PER_KIND
    assert len(warnings) == 3
    assert len(notices) == 1
    assert "15 more findings are not shown as annotations" in notices[0]
    assert any("problem 25" in line and not line.startswith("::") for line in lines)


def test_github_annotations_put_changed_lines_first() -> None:
    findings = [finding(n) for n in range(1, 31)]
    report = Report(findings, SUMMARY, changed_lines={"records/A.yaml": frozenset({25, 26})})
    errors = [line for line in format_github(report).splitlines() if line.startswith("::error ")]
    assert "line=25," in errors[0]
    assert "line=26," in errors[1]


def test_github_commands_escape_their_data() -> None:
    odd = Finding("test.rule", Severity.WARNING, "50% done\nnext line", "records/a,b:c.yaml", 2, 3)
    line = format_github(Report([odd], SUMMARY)).splitlines()[0]
    assert line.startswith("::warning file=records/a%2Cb%3Ac.yaml,line=2,col=3,")
    assert line.endswith("::50%25 done%0Anext line")


def test_text_and_github_note_unused_xsd() -> None:
    warnings = [finding(n, Severity.WARNING) for n in range(1, 16)]
    summary = {"errors": 0, "warnings": 15, "info": 0, "waived": 0, "records": 1, "approvals": 0}
    without = Report(warnings, summary, official_schema=False)
    text = format_check_text(without)
    lines = format_github(without).splitlines()
    annotations = [line for line in lines if line.startswith("::warning ")]
    assert "note: The official IVI XSD was not used, so ecoc checked against its built-in IVI 2.0 model only." in text
    assert "Pass the path of the official IVI-2.0.xsd with --xsd, in ECOC_XSD, or as xsd.path in ecoc.yaml." in text
    assert lines[0].startswith("::warning title=ecoc checked without the official IVI XSD::The official IVI XSD")
    assert len(annotations) == GITHUB_ANNOTATIONS_PER_KIND
    assert "problem 15" in format_github(without)
    for official in (True, None):
        quiet = Report(warnings, summary, official_schema=official)
        assert "official IVI XSD" not in format_check_text(quiet)
        assert "official IVI XSD" not in format_github(quiet)


def test_markdown_warns_of_unused_xsd() -> None:
    records = [CheckedRecord("records/A.yaml", "A")]
    text = format_markdown(Report([], SUMMARY, records, official_schema=False))
    head = text.split("###")[0]
    assert "> [!WARNING]\n> The official IVI XSD was not used, so ecoc checked against its built-in" in head
    assert "IVI-2.0.xsd with --xsd, in ECOC\\_XSD, or as xsd.path in ecoc.yaml." in head
    for official in (True, None):
        assert "[!WARNING]" not in format_markdown(Report([], SUMMARY, records, official_schema=official))


def blocked_since_base() -> Report:
    """Return a report of O1 to O6, blocked at the base too, N1 and N2, newly blocked, and M1, with a new error."""
    old = {
        f"O{n}": Finding("old.rule", Severity.ERROR, "old", f"records/O{n}.yaml", 1, 1, records=(f"O{n}",))
        for n in range(1, 7)
    }
    new = {
        vin: Finding("new.rule", Severity.ERROR, "new", f"records/{vin}.yaml", 1, 1, records=(vin,))
        for vin in ("N1", "N2", "M1")
    }
    more = Finding("old.rule", Severity.ERROR, "old", "records/M1.yaml", 2, 1, records=("M1",))
    records = [CheckedRecord(f"records/{vin}.yaml", vin) for vin in ("M1", "N1", "N2", *old)]
    changes = [
        RecordChange("records/M1.yaml", "M1", "blocked", "blocked", added=(new["M1"],)),
        RecordChange("records/N1.yaml", "N1", "ready", "blocked", added=(new["N1"],)),
        RecordChange("records/N2.yaml", "N2", "absent", "blocked", added=(new["N2"],)),
        *(
            RecordChange(
                f"records/{vin}.yaml", vin, "blocked", "blocked", resolved=(replace(finding, rule="gone.rule"),)
            )
            for vin, finding in old.items()
        ),
    ]
    findings = [more, *new.values(), *old.values()]
    summary = {"errors": len(findings), "warnings": 0, "info": 0, "waived": 0, "records": 9, "approvals": 0}
    return Report(findings, summary, records, base="origin/main", changes=changes)


def test_markdown_expands_newly_blocked_records_first() -> None:
    text = format_markdown(blocked_since_base())
    sections = re.findall(r"<details( open)?><summary><b>(\w+)</b>", text)
    assert [vin for _, vin in sections] == ["N1", "N2", "M1", "O1", "O2", "O3", "O4", "O5", "O6"]
    assert [vin for opened, vin in sections if opened] == ["N1", "N2", "M1"]
    changes = text.split("### Changes since the base")[1].split("###")[0]
    rows = [
        line.split(" | ")[0].lstrip("| ")
        for line in changes.splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    assert rows[1:4] == ["N1", "N2", "M1"]


def test_markdown_puts_new_blocking_findings_first() -> None:
    blocking = format_markdown(blocked_since_base()).split("### Blocking findings")[1].split("###")[0]
    rows = [line for line in blocking.splitlines() if line.startswith("| ") and "`" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| **new**"] * 3 + ["| "] * 7


def test_markdown_without_base_expands_first_five() -> None:
    records = [CheckedRecord(f"records/V{n}.yaml", f"V{n}") for n in range(7)]
    findings = [Finding("test.rule", Severity.ERROR, "x", r.file, 1, 1, records=(str(r.vin),)) for r in records]
    text = format_markdown(Report(findings, {"errors": 7}, records))
    assert re.findall(r"<details open><summary><b>(\w+)</b>", text) == ["V0", "V1", "V2", "V3", "V4"]


RUN_ARTIFACTS = "in the artifacts of https://github.com/halvard-motors/coc/actions/runs/7"


def test_markdown_names_the_previews_artifact() -> None:
    report = blocked_since_base()
    report.full_report = RUN_ARTIFACTS
    head = format_markdown(report).split("###")[0]
    assert (
        f"Previews of these records are {RUN_ARTIFACTS}, in the artifact `ecoc-report`: `preview/index.html` links "
        "the XML, the XML diff against the base and a readable CoC page of each." in head
    )
    report.base, report.changes = None, None
    assert "Previews" not in format_markdown(report)
    report.base, report.full_report = "origin/main", None
    assert "Previews" not in format_markdown(report)


def test_previews_artifact_matches_workflow() -> None:
    document = workflow("pr-readiness.yml")
    folder, _, index = PREVIEW_INDEX.rpartition("/")
    assert index == "index.html"
    preview = next(step for step in steps(document) if "ecoc preview" in step.get("run", ""))
    assert f"--out report/{folder}" in preview["run"]
    upload = next(step for step in steps(document) if step.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["name"] == PREVIEW_ARTIFACT
    assert upload["with"]["path"] == "report"


def test_markdown_summary_first_within_limit() -> None:
    records = [CheckedRecord(f"records/V{n:04}.yaml", f"V{n:04}") for n in range(400)]
    findings = [
        Finding("test.rule", Severity.ERROR, "x" * 300, f"records/V{n:04}.yaml", 1, 1, records=(f"V{n:04}",))
        for n in range(400)
    ]
    summary = {"errors": 400, "warnings": 0, "info": 0, "waived": 0, "records": 400, "approvals": 0}
    text = format_markdown(Report(findings, summary, records), full_report="in the ecoc-report artifact")
    assert len(text) <= 65_000
    assert text.startswith(MARKDOWN_MARKER + "\n## eCoC readiness: 400 of 400 records blocked")
    assert "| records checked | blocked |" in text.split("###")[0]
    assert "record sections are not shown. The full report is in the ecoc-report artifact." in text
    assert text.index("### Blocking findings") < text.index("### Blocked records")


def test_markdown_shows_a_shared_error_before_thousands_of_changes() -> None:
    vins = [f"V{n:05}" for n in range(3000)]
    records = [CheckedRecord(f"records/{vin}.yaml", vin) for vin in vins]
    shared = Finding("model.integer", Severity.ERROR, "1465.5 is not a whole number", "approvals/a.yaml", 153, 5)
    shared = Finding(shared.rule, shared.severity, shared.message, shared.file, 153, 5, records=tuple(vins))
    changes = [RecordChange(record.file, record.vin, "ready", "blocked", (shared,)) for record in records]
    summary = {"errors": 1, "warnings": 0, "info": 0, "waived": 0, "records": 3000, "approvals": 1}
    report = Report([shared], summary, records, base="origin/main", changes=changes)
    text = format_markdown(report)
    assert len(text) <= 65_000
    blocking = text.split("### Blocking findings")[1].split("###")[0]
    assert "| **new** | `model.integer` | `approvals/a.yaml:153:5` | 1465.5 is not a whole number | 3000 |" in blocking
    assert re.search(
        r"cut to stay within GitHub's size limit: \d+ changed records, \d+ record sections are not shown", text
    )
    assert "Run `ecoc check --base origin/main --output report.txt`" in text


def test_markdown_escapes_what_the_data_says() -> None:
    bad = Finding("test.rule", Severity.ERROR, "<script>x</script> | *bold*", "records/A.yaml", 1, 1, records=("A",))
    text = format_markdown(Report([bad], {"errors": 1}, [CheckedRecord("records/A.yaml", "A")]))
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert "\\| \\*bold\\*" in text


def test_one_check_writes_several_reports(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    break_two_things(example_repo)
    sarif, junit = tmp_path / "out" / "ecoc.sarif", tmp_path / "out" / "ecoc.xml"
    code, out = run(
        example_repo, capsys, "--format", "github", "--report", f"sarif={sarif}", "--report", f"junit={junit}"
    )
    assert code == 1
    # Without the official XSD a warning comes first; the findings follow.
    assert any(line.startswith("::error ") for line in out.splitlines())
    assert json.loads(sarif.read_text())["version"] == "2.1.0"
    assert etree.fromstring(junit.read_bytes()).get("failures") == "2"


def test_report_option_needs_a_format_and_a_file(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--repo", str(example_repo), "check", "--report", "sarif"]) == 2
    assert "--report sarif: expected FORMAT=FILE" in capsys.readouterr().err


def markdown_since_head(repo: Path, capsys: pytest.CaptureFixture[str]) -> str:
    main(["--repo", str(repo), "check", "--no-cache", "--base", "HEAD", "--format", "markdown"])
    return capsys.readouterr().out


def record_section(text: str, vin: str) -> str:
    start = text.index(f"<summary><b>{vin}</b>")
    return text[start : text.index("</details>", start)]


def test_markdown_cut_note_names_a_complete_format() -> None:
    records = [CheckedRecord(f"records/V{n:04}.yaml", f"V{n:04}") for n in range(400)]
    findings = [
        Finding("test.rule", Severity.ERROR, "x" * 300, f"records/V{n:04}.yaml", 1, 1, records=(f"V{n:04}",))
        for n in range(400)
    ]
    summary = {"errors": 400, "warnings": 0, "info": 0, "waived": 0, "records": 400, "approvals": 0}
    report = Report(findings, summary, records, base="origin/main", changes=[])
    note = format_markdown(report).split("\n---\n")[1]
    assert "--format markdown" not in note
    assert "Run `ecoc check --base origin/main --output report.txt` to write every finding" in note
    assert "add `--format json` to write JSON" in note


def test_markdown_names_the_files_of_a_renamed_record(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    git(example_repo, "mv", RECORD, "records/foo.yaml")
    text = markdown_since_head(example_repo, capsys)
    # One row for the vehicle, which names the file it was moved from.
    assert f"| {VIN} (moved from `{RECORD}`) | ready | ready | 1 added |" in text
    assert "absent" not in text


def test_markdown_marks_findings_the_change_added(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    break_two_things(example_repo)
    commit(example_repo, "too heavy and too fast")
    edit(example_repo, APPROVAL, "MaximumSpeed: 260", "MaximumSpeed: 178")
    edit(example_repo, RECORD, f"vin: {VIN}", "vin: XNHKH16S2TE100214")
    text = markdown_since_head(example_repo, capsys)
    section = record_section(text, "XNHKH16S2TE100214")
    assert "| change | severity | rule | where | message |" in section
    assert "|  | error | `mass.actual-within-maximum` |" in section
    assert "| **new** | warning | `vin.check-digit` |" in section
    resolved = section.split("Resolved since the base:")[1]
    assert "| error | `tyre.speed-category-covers-maximum-speed` | `approvals/e4-2018-858-04127-01.yaml` |" in resolved
    assert "mass.actual-within-maximum" not in resolved
    other = record_section(text, "XNHKH16S8TE103871")
    assert "(since the base: 1 resolved)" in other
    assert "`tyre.speed-category-covers-maximum-speed`" in other.split("Resolved since the base:")[1]


BROKEN_WAIVERS = "waivers: [unclosed\n"


def test_markdown_names_repository_blockers_once(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / "rules" / "waivers.yaml").write_text(BROKEN_WAIVERS, encoding="utf-8")
    code, text = run(example_repo, capsys, "--format", "markdown")
    blocked = text.split("### Blocked records\n\n")[1]
    section = record_section(text, VIN)
    assert code == 1
    assert text.count("every record (see Repository findings)") == 1
    assert blocked.startswith(
        "A repository finding blocks every record (see Repository findings): "
        "`yaml.syntax` at `rules/waivers.yaml:2:1`.\n\n<details"
    )
    assert "no findings of its own, blocked by repository findings" in section
    assert "| severity |" not in section
    assert "No finding of this record blocks it, only the repository findings named above." in section
    assert text.count("only the repository findings named above") == 12


def test_junit_fails_records_blocked_by_repository_findings(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (example_repo / "rules" / "waivers.yaml").write_text(BROKEN_WAIVERS, encoding="utf-8")
    _, out = run(example_repo, capsys, "--format", "junit")
    records = etree.fromstring(out.encode()).find("testsuite[@name='records']")
    assert records is not None
    assert records.get("failures") == "12"
    for case in records.findall("testcase"):
        failure = case.find("failure")
        assert failure is not None, case.get("name")
        assert failure.get("message") == "blocked by the repository finding yaml.syntax in rules/waivers.yaml:2"
        assert "rules/waivers.yaml:2:1: error yaml.syntax" in (failure.text or "")


def add_waiver(repo: Path) -> None:
    """Make both records of the approval too heavy, commit, then waive the WLTP warning of one of them."""
    edit(repo, RECORD, "ActualMass: 1478", "ActualMass: 99999")
    edit(repo, OTHER_RECORD, "ActualMass: 1496", "ActualMass: 99999")
    commit(repo, "too heavy")
    write_waiver(repo, "wltp.test-mass-not-below-actual-mass", "XNHKH16S1*", waiver_id="W-7", reason=BALLAST)


def test_text_diff_says_a_finding_is_now_waived(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_waiver(example_repo)
    main(["--repo", str(example_repo), "check", "--no-cache", "--base", "HEAD"])
    diff = capsys.readouterr().out.split("readiness since HEAD:\n")[1]
    assert f"  {RECORD}: blocked\n    ~ warning wltp.test-mass-not-below-actual-mass: WLTP test mass" in diff
    assert diff.rstrip().endswith("(now waived by W-7)")
    assert "+ warning" not in diff
    assert "- warning" not in diff


def test_markdown_counts_a_waived_finding_once(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_waiver(example_repo)
    text = markdown_since_head(example_repo, capsys)
    assert f"| {VIN} | blocked | blocked | 1 now waived |" in text
    section = record_section(text, VIN)
    assert "(since the base: 1 now waived)" in section
    assert "| now waived by W-7 | warning (waived: W-7) | `wltp.test-mass-not-below-actual-mass` |" in section
    assert "Resolved since the base" not in section


def test_text_diff_says_a_waiver_no_longer_applies() -> None:
    waived = Finding("test.rule", Severity.ERROR, "problem", "records/A.yaml", 3, 1, records=("A",), waiver="W-1")
    unwaived = Finding("test.rule", Severity.ERROR, "problem", "records/A.yaml", 3, 1, records=("A",))
    change = RecordChange("records/A.yaml", "A", "ready", "blocked", added=(unwaived,), resolved=(waived,))
    report = Report([unwaived], SUMMARY, [CheckedRecord("records/A.yaml", "A")], base="main", changes=[change])
    assert "    ~ error test.rule: problem (no longer waived by W-1)\n" in changes_text(report)
    assert "| A | ready | **blocked** | 1 no longer waived |" in format_markdown(report)


def test_count_phrases_agree_in_number() -> None:
    long = Finding("test.rule", Severity.WARNING, "x" * 5000, "records/A.yaml", 1, 1, records=("A",))
    summary = {"errors": 0, "warnings": 1, "info": 0, "waived": 0, "records": 1, "approvals": 1}
    text = format_markdown(Report([long], summary, [CheckedRecord("records/A.yaml", "A")]), limit=3000)
    assert "## eCoC readiness: 0 of 1 record blocked" in text
    assert "size limit: 1 record section is not shown." in text
    assert summary_line(summary) == "0 errors, 1 warning, 0 info in 1 record and 1 approval"


def test_findings_of_an_unparsable_record_name_it(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: [2031")
    base = ("--base", "HEAD")
    _, text = run(example_repo, capsys, *base, "--format", "markdown")
    _, document = run(example_repo, capsys, *base, "--format", "json")
    _, junit = run(example_repo, capsys, *base, "--format", "junit")
    blocking = text.split("### Blocking findings")[1].split("###")[0]
    row = next(line for line in blocking.splitlines() if "`yaml.syntax`" in line)
    assert row.endswith("| 1 |")
    assert f"<summary><b>{VIN}</b> ({RECORD})" in text
    finding = next(f for f in json.loads(document)["findings"] if f["rule"] == "yaml.syntax")
    assert finding["file"] == RECORD
    assert finding["record"] == VIN
    assert finding["records"] == [VIN]
    change = json.loads(document)["base"]["changes"][0]
    assert change["added"][0]["records"] == [VIN]
    cases = etree.fromstring(junit.encode()).findall("testsuite[@name='records']/testcase")
    assert [case.get("name") for case in cases] == [VIN]


def test_settings_change_alone_claimed_record_edits(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The change edits no record file, so the comment must not say it does.
    edit(example_repo, "ecoc.yaml", "version: 1", "version: 1\ndisable: [vin.check-digit]")
    text = markdown_since_head(example_repo, capsys)
    assert "Files other than records that the change edits: `ecoc.yaml` (changed)." in text
    assert "Besides record files" not in text


def test_approval_change_is_named_where_it_was_made(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, APPROVAL, "MaximumSpeed: 178", "MaximumSpeed: 260")
    text = markdown_since_head(example_repo, capsys)
    assert f"Files other than records that the change edits: `{APPROVAL}` (changed)." in text
    main(["--repo", str(example_repo), "check", "--no-cache", "--base", "HEAD", "--format", "github"])
    first = capsys.readouterr().out.splitlines()[0]
    line = next(
        number
        for number, text in enumerate((example_repo / APPROVAL).read_text().splitlines(), start=1)
        if "MaximumSpeed: 260" in text
    )
    # The edited line carries a notice, although the findings it causes sit elsewhere.
    assert first.startswith(
        f"::notice file={APPROVAL},line={line},title=ecoc readiness::since HEAD, with this change: "
    )
    assert "newly blocked" in first


def test_approval_value_change_without_new_blocks_had_no_notice(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(example_repo, APPROVAL, "MaximumSpeed: 178", "MaximumSpeed: 179")
    main(["--repo", str(example_repo), "check", "--no-cache", "--base", "HEAD", "--format", "github"])
    notices = [line for line in capsys.readouterr().out.splitlines() if "title=ecoc readiness" in line]
    assert len(notices) == 1
    assert notices[0].endswith(
        "0 records newly blocked, 0 records newly ready, 2 records with changed certificate content; "
        "the pull-request comment lists them"
    )


def test_json_and_sarif_say_whether_the_official_schema_was_used(
    example_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ECOC_XSD", raising=False)
    _, text = run(example_repo, capsys, "--format", "json")
    assert json.loads(text)["official_schema"] is False
    _, text = run(example_repo, capsys, "--format", "sarif")
    assert json.loads(text)["runs"][0]["properties"]["officialSchema"] is False


def test_sarif_stays_within_the_results_code_scanning_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    from ecoc import formats

    monkeypatch.setattr(formats, "SARIF_MAX_RESULTS", 50)
    warnings = [
        Finding("vin.check-digit", Severity.WARNING, "check digit", f"records/V{n:05}.yaml", 2, 6) for n in range(60)
    ]
    error = Finding("mass.actual-within-maximum", Severity.ERROR, "too heavy", "records/V99999.yaml", 13, 5)
    summary = {"errors": 1, "warnings": 60, "info": 0, "waived": 0, "records": 61, "approvals": 0}
    document = json.loads(formats.format_sarif(Report([*warnings, error], summary)))
    run = document["runs"][0]
    assert len(run["results"]) == 50
    # The blocking finding is kept, and the run says how many were left out.
    assert any(result["ruleId"] == "mass.actual-within-maximum" for result in run["results"])
    assert run["properties"]["omittedResults"] == 11
    notification = run["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"]
    assert notification.startswith("11 findings are left out")
    jsonschema.validate(document, sarif_schema())
