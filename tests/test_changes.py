"""`ecoc check --base REF`: what a change touches, and how readiness moved since the base."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import git
from ecoc.cli import main
from ecoc.files import list_yaml, pick_yaml
from pki import Pki
from test_check import APPROVAL, OTHER_RECORD, RECORD, edit

OTHER_APPROVAL_RECORD = "records/XNHDR1M67TE300087.yaml"
BALLAST = "ballast for the type test, accepted in writing"


def base_check(repo: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object], str]:
    code = main(["--repo", str(repo), "check", "--format", "json", *args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def checked_files(document: dict[str, object]) -> int:
    return document["summary"]["records"]  # type: ignore[index,no-any-return]


def changes(document: dict[str, object]) -> dict[str, dict[str, object]]:
    return {c["file"]: c for c in document["base"]["changes"]}  # type: ignore[index]


def test_change_to_one_record_checks_that_record(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 99999")
    code, document, err = base_check(example_repo, capsys, "--base", "HEAD")
    assert checked_files(document) == 1
    change = changes(document)[RECORD]
    assert (change["before"], change["after"]) == ("ready", "blocked")
    assert "mass.actual-within-maximum" in [f["rule"] for f in change["added"]]  # type: ignore[union-attr]
    assert change["resolved"] == []
    assert "since HEAD: 1 newly blocked, 0 newly ready" in err
    assert code == 1


def test_fixed_record_is_newly_ready(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 99999")
    commit(example_repo, "break")
    edit(example_repo, RECORD, "ActualMass: 99999", "ActualMass: 1478")
    code, document, err = base_check(example_repo, capsys, "--base", "HEAD")
    change = changes(document)[RECORD]
    assert (change["before"], change["after"]) == ("blocked", "ready")
    assert "mass.actual-within-maximum" in [f["rule"] for f in change["resolved"]]  # type: ignore[union-attr]
    assert "0 newly blocked, 1 newly ready" in err
    assert code == 0


def test_moved_lines_are_no_change(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 99999")
    commit(example_repo, "break")
    text = (example_repo / RECORD).read_text(encoding="utf-8")
    (example_repo / RECORD).write_text("# a comment moves every line\n" + text, encoding="utf-8")
    code, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert checked_files(document) == 1
    assert changes(document) == {}
    assert code == 1


def test_change_to_an_approval_checks_its_records_only(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, APPROVAL, "MaximumSpeed: 178", "MaximumSpeed: 260")
    code, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    approval_records = [p.name for p in (example_repo / "records").glob("XNHKH16*.yaml")]
    assert checked_files(document) == len(approval_records) == 4
    assert {Path(f).name for f in changes(document)} == {Path(RECORD).name, Path(OTHER_RECORD).name}
    assert all(c["after"] == "blocked" for c in changes(document).values())
    assert code == 1


def test_change_to_the_rules_checks_every_record(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = example_repo / "rules" / "extra.yaml"
    rules.write_text(
        "rules:\n"
        "  - id: test.speed-below-175\n"
        "    title: Slow vehicles only\n"
        "    severity: warning\n"
        "    when: has(coc.MaximumSpeed)\n"
        "    check: coc.MaximumSpeed < 175.0\n"
        "    message: maximum speed {{ coc.MaximumSpeed }} km/h\n"
        "    path: CocDataGroup.MaximumSpeed\n"
        "    examples:\n"
        "      pass: {CocDataGroup: {MaximumSpeed: 170}}\n"
        "      fail: {CocDataGroup: {MaximumSpeed: 180}}\n",
        encoding="utf-8",
    )
    code, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert checked_files(document) == 12
    changed = changes(document)
    assert changed
    assert all(c["before"] == c["after"] == "ready" for c in changed.values())
    assert all([f["rule"] for f in c["added"]] == ["test.speed-below-175"] for c in changed.values())  # type: ignore[union-attr]
    assert code == 0


def test_new_record_duplicates_a_vin(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(example_repo / RECORD, example_repo / "records" / "XNHKH16S1TE100214-copy.yaml")
    code, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    changed = changes(document)
    new = changed["records/XNHKH16S1TE100214-copy.yaml"]
    assert (new["before"], new["after"]) == ("absent", "blocked")
    old = changed[RECORD]
    assert (old["before"], old["after"]) == ("ready", "blocked")
    assert "record.duplicate-vin" in [f["rule"] for f in old["added"]]  # type: ignore[union-attr]
    assert code == 1


def test_deleted_record_is_absent_now(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / OTHER_APPROVAL_RECORD).unlink()
    code, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    change = changes(document)[OTHER_APPROVAL_RECORD]
    assert (change["before"], change["after"]) == ("ready", "absent")
    assert checked_files(document) == 0
    assert code == 0


def test_deleted_record_was_not_counted(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / OTHER_APPROVAL_RECORD).unlink()
    _, document, err = base_check(example_repo, capsys, "--base", "HEAD")
    assert "since HEAD: 0 newly blocked, 0 newly ready, 1 removed" in err
    counts = document["base"]["counts"]  # type: ignore[index]
    assert counts == {"newly_blocked": 0, "newly_ready": 0, "removed": 1, "certificate_changed": 0}
    assert main(["--repo", str(example_repo), "check", "--base", "HEAD", "--format", "markdown"]) == 0
    comment = capsys.readouterr().out
    assert "since `HEAD`: 0 newly blocked, 0 newly ready, 1 removed." in comment
    assert "| XNHDR1M67TE300087 | ready | **absent** | none | removed |" in comment


def test_comment_summary_hid_certificate_changes(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, APPROVAL, "MaximumSpeed: 178", "MaximumSpeed: 179")
    edit(example_repo, RECORD, "    - Colour: '8'\n", "    - Colour: '08'\n")
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert document["base"]["counts"]["certificate_changed"] == 1  # type: ignore[index]
    # The record with an invalid colour code renders no certificate, so its change is not known.
    assert changes(document)[RECORD]["certificate_changed"] is None
    assert changes(document)[OTHER_RECORD]["certificate_changed"] is True
    main(["--repo", str(example_repo), "check", "--base", "HEAD", "--format", "markdown"])
    comment = capsys.readouterr().out
    assert "since `HEAD`: 1 newly blocked, 0 newly ready, 1 record with changed certificate content." in comment
    assert "| ready | ready | none | changed |" in comment
    assert "| not rendered |" in comment
    assert "A record listed below without an edit of its own is listed because of these files." in comment


def test_text_report_lists_the_changes(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 99999")
    main(["--repo", str(example_repo), "check", "--base", "HEAD"])
    out = capsys.readouterr().out
    assert "readiness since HEAD:\n  records/XNHKH16S1TE100214.yaml: ready -> blocked\n    + error mass." in out


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("no-such-branch", "--base no-such-branch: no such commit in this repository"),
        ("--output=/tmp/x", "is not a commit or branch name"),
        ("HEAD~5", "no such commit"),
    ],
)
def test_unknown_base_is_a_usage_error(
    example_repo: Path, capsys: pytest.CaptureFixture[str], base: str, expected: str
) -> None:
    code = main(["--repo", str(example_repo), "check", "--base", base])
    assert code == 2
    assert expected in capsys.readouterr().err


def test_shallow_clone_says_how_to_fetch_the_history(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    commit(example_repo, "second")
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{example_repo}", str(shallow))
    code = main(["--repo", str(shallow), "check", "--base", "HEAD~1"])
    assert code == 2
    assert "this clone is shallow" in capsys.readouterr().err


def test_base_outside_git_is_a_configuration_error(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(example_repo, plain, ignore=shutil.ignore_patterns(".git"))
    code = main(["--repo", str(plain), "check", "--base", "main"])
    assert code == 3
    assert "is not a git repository" in capsys.readouterr().err


def test_base_with_paths_is_refused(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--repo", str(example_repo), "check", "--base", "HEAD", str(example_repo / RECORD)]) == 2
    assert "takes no PATHS" in capsys.readouterr().err


def test_new_waiver_checks_the_records_it_names(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 99999")
    edit(example_repo, OTHER_RECORD, "ActualMass: 1496", "ActualMass: 99999")
    commit(example_repo, "too heavy")
    write_waiver(example_repo, "wltp.test-mass-not-below-actual-mass", "XNHKH16S1*", waiver_id="W-7", reason=BALLAST)
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert checked_files(document) == 1
    change = changes(document)[RECORD]
    assert [(f["rule"], f["waiver"]) for f in change["added"]] == [  # type: ignore[union-attr]
        ("wltp.test-mass-not-below-actual-mass", "W-7")
    ]
    assert [(f["rule"], f["waiver"]) for f in change["resolved"]] == [  # type: ignore[union-attr]
        ("wltp.test-mass-not-below-actual-mass", None)
    ]
    assert OTHER_RECORD not in changes(document)


def test_unreadable_waiver_file_checks_every_record(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / "rules" / "waivers.yaml").write_text("waivers: [unclosed\n", encoding="utf-8")
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert checked_files(document) == 12


def test_expired_waiver_blocks_every_record_in_the_diff(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / "rules" / "waivers.yaml").write_text(
        "waivers:\n"
        "  - id: W-8\n"
        "    rule: wltp.test-mass-not-below-actual-mass\n"
        "    records: [XNHKH16S1TE100214]\n"
        "    reason: ballast for the type test, accepted in writing\n"
        '    approved_by: "@halvard-motors/compliance-review"\n'
        "    expires: 2020-01-01\n",
        encoding="utf-8",
    )
    code, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert changes(document)[RECORD]["after"] == "blocked"
    repository = document["base"]["repository"]  # type: ignore[index]
    assert [f["rule"] for f in repository["added"]] == ["waiver.expired"]
    assert code == 1


def test_copied_record_keeps_its_own_findings(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(example_repo / RECORD, example_repo / "records" / "copy.yaml")
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    original = changes(document)[RECORD]
    copy = changes(document)["records/copy.yaml"]
    assert original["added"]
    assert all(f["file"] == RECORD for f in original["added"])  # type: ignore[union-attr]
    assert {f["rule"] for f in copy["added"]} >= {"record.file-name", "record.duplicate-vin"}  # type: ignore[union-attr]
    assert all(f["file"] == "records/copy.yaml" for f in copy["added"])  # type: ignore[union-attr]


def test_first_commit_compares_with_an_empty_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import PROJECT

    repo = tmp_path / "fresh"
    shutil.copytree(PROJECT / "records", repo / "records")
    shutil.copytree(PROJECT / "approvals", repo / "approvals")
    shutil.copytree(PROJECT / "rules", repo / "rules")
    shutil.copy(PROJECT / "ecoc.yaml", repo / "ecoc.yaml")
    git(repo, "init", "-q")
    code, document, _ = base_check(repo, capsys, "--base", "HEAD")
    assert checked_files(document) == 12
    assert {(c["before"], c["after"]) for c in changes(document).values()} == {("absent", "ready")}
    assert code == 0


def test_first_change_with_settings_named_a_temporary_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import PROJECT

    repo = tmp_path / "fresh"
    repo.mkdir()
    (repo / "README.md").write_text("Compliance data of Halvard Motors\n", encoding="utf-8")
    git(repo, "init", "-q")
    commit(repo, "start the repository")
    shutil.copytree(PROJECT / "records", repo / "records")
    shutil.copytree(PROJECT / "approvals", repo / "approvals")
    shutil.copytree(PROJECT / "rules", repo / "rules")
    shutil.copy(PROJECT / "ecoc.yaml", repo / "ecoc.yaml")
    code, document, err = base_check(repo, capsys, "--base", "HEAD")
    assert document["base"]["problem"] is None  # type: ignore[index]
    assert {(c["before"], c["after"]) for c in changes(document).values()} == {("absent", "ready")}
    assert "since HEAD: 0 newly blocked, 12 newly ready" in err
    assert "ecoc-base-" not in err
    assert code == 0


def test_seal_in_the_repository_was_missing_from_the_base(
    example_repo: Path, capsys: pytest.CaptureFixture[str], seal_pki: Pki
) -> None:
    files = seal_pki.write(example_repo / "seal")
    (files["key"]).unlink()  # only the certificate belongs in the repository
    with (example_repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
        handle.write("\nsigning:\n  cert: seal/" + files["cert"].name + "\n")
    commit(example_repo, "name the seal")
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 99999")
    _, document, err = base_check(example_repo, capsys, "--base", "HEAD")
    assert "since HEAD: 1 newly blocked, 0 newly ready" in err
    assert document["base"]["repository"] == {"added": [], "resolved": []}  # type: ignore[index]
    assert checked_files(document) == 1


def test_report_names_an_unknown_format(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--repo", str(example_repo), "check", "--report", "xml=out.xml"]) == 2
    assert "--report xml=out.xml: unknown format xml" in capsys.readouterr().err


SLOW_RULE = (
    "rules:\n"
    "  - id: test.speed-below-175\n"
    "    title: Slow vehicles only\n"
    "    severity: error\n"
    "{applies}"
    "    when: has(coc.MaximumSpeed)\n"
    "    check: coc.MaximumSpeed < 175.0\n"
    "    message: maximum speed {{{{ coc.MaximumSpeed }}}} km/h\n"
    "    path: CocDataGroup.MaximumSpeed\n"
    "{doc}"
    "    examples:\n"
    "      pass: {{CocDataGroup: {{MaximumSpeed: 170}}}}\n"
    "      fail: {{CocDataGroup: {{MaximumSpeed: 180}}}}\n"
)
ONE_APPROVAL = '    applies:\n      approval_number: "\\\\*04127\\\\*"\n'


def test_rule_for_one_approval_checks_its_records(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = example_repo / "rules" / "extra.yaml"
    rules.write_text(SLOW_RULE.format(applies=ONE_APPROVAL, doc=""), encoding="utf-8")
    code, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    approval_records = [p for p in (example_repo / "records").glob("XNHKH16*.yaml")]
    assert checked_files(document) == len(approval_records) == 4
    changed = changes(document)
    assert changed
    assert all(Path(path).name.startswith("XNHKH16") for path in changed)
    # The base is checked with its own rules, so the new rule's findings show as added.
    assert all((c["before"], c["after"]) == ("ready", "blocked") for c in changed.values())
    assert all([f["rule"] for f in c["added"]] == ["test.speed-below-175"] for c in changed.values())  # type: ignore[union-attr]
    assert code == 1


def test_rule_documentation_change_checks_no_record(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = example_repo / "rules" / "extra.yaml"
    rules.write_text(SLOW_RULE.format(applies="", doc=""), encoding="utf-8")
    commit(example_repo, "slow vehicles")
    rules.write_text(
        SLOW_RULE.format(applies="", doc="    doc: Fast vehicles need another approval.\n"), encoding="utf-8"
    )
    code, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert checked_files(document) == 0
    assert changes(document) == {}
    assert code == 0


def test_rule_moved_to_another_file_checks_no_record(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / "rules" / "extra.yaml").write_text(SLOW_RULE.format(applies="", doc=""), encoding="utf-8")
    commit(example_repo, "slow vehicles")
    (example_repo / "rules" / "extra.yaml").rename(example_repo / "rules" / "speed.yaml")
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert checked_files(document) == 0


def test_owners_setting_change_checks_no_record(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, "ecoc.yaml", "@halvard-motors/homologation", "@halvard-motors/type-approval")
    code, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert checked_files(document) == 0
    assert code == 0


def test_checked_setting_change_checks_every_record(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with (example_repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
        handle.write("disable: [vin.check-digit]\n")
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert checked_files(document) == 12


def break_base_settings(repo: Path) -> None:
    """Commit settings that cannot be read, and put the good ones back in the working tree."""
    settings = repo / "ecoc.yaml"
    good = settings.read_text(encoding="utf-8")
    settings.write_text(good + "disable: [unclosed\n", encoding="utf-8")
    commit(repo, "break the settings")
    settings.write_text(good, encoding="utf-8")


def test_unreadable_base_settings_still_check_the_change(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    break_base_settings(example_repo)
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 99999")
    code, document, err = base_check(example_repo, capsys, "--base", "HEAD")
    assert checked_files(document) == 12
    problem = document["base"]["problem"]  # type: ignore[index]
    assert problem.startswith("the base HEAD cannot be checked: HEAD:ecoc.yaml:")
    assert "ecoc-base-" not in problem
    assert changes(document)[RECORD]["before"] == "unknown"
    assert "since HEAD: 0 newly blocked, 0 newly ready" in err
    assert "cannot be checked" in err
    assert code == 1


def write_waiver(
    repo: Path,
    rule: str,
    records: str,
    expires: str = "2099-01-01",
    waiver_id: str = "W-9",
    reason: str = "accepted in writing by the authority",
) -> None:
    """Write rules/waivers.yaml with one waiver."""
    (repo / "rules" / "waivers.yaml").write_text(
        "waivers:\n"
        f"  - id: {waiver_id}\n"
        f"    rule: {rule}\n"
        f"    records: [{records}]\n"
        f"    reason: {reason}\n"
        '    approved_by: "@halvard-motors/compliance-review"\n'
        f"    expires: {expires}\n",
        encoding="utf-8",
    )


def test_waiver_that_blocks_every_record_checks_every_record(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The waiver names no record, but an expired waiver blocks them all.
    write_waiver(example_repo, "vin.check-digit", '"ZZZ*"', "2020-01-01")
    code, document, err = base_check(example_repo, capsys, "--base", "HEAD")
    assert checked_files(document) == 12
    assert len(changes(document)) == 12
    assert all((c["before"], c["after"]) == ("ready", "blocked") for c in changes(document).values())
    assert "12 newly blocked" in err
    assert code == 1


def test_new_waiver_that_accepts_nothing_is_reported_unused(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_waiver(example_repo, "vin.check-digit", '"XNHDR*"')
    code, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    repository = document["base"]["repository"]  # type: ignore[index]
    assert [(f["rule"], f["file"]) for f in repository["added"]] == [("waiver.unused", "rules/waivers.yaml")]
    assert code == 0


def test_check_that_cannot_run_says_so_in_the_annotations_and_comment(
    example_repo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with (example_repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
        handle.write("xsd: [\n")
    comment, sarif = tmp_path / "report" / "comment.md", tmp_path / "report" / "ecoc.sarif"
    code = main(
        [
            *("--repo", str(example_repo), "check", "--base", "HEAD", "--format", "github"),
            *("--report", f"markdown={comment}", "--report", f"sarif={sarif}"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 3
    # The annotation is on ecoc.yaml, which the message names relative to the repository.
    assert captured.out.startswith("::error file=ecoc.yaml,line=")
    assert ",title=ecoc check could not run::invalid settings: " in captured.out
    text = comment.read_text(encoding="utf-8")
    assert text.startswith("<!-- ecoc-readiness-report -->\n### ecoc could not check this change")
    assert "\n\necoc.yaml:" in text
    assert str(example_repo) not in text
    # A SARIF report without the findings would read as a clean result.
    assert not sarif.exists()


def test_report_path_that_is_a_folder_writes_no_report(
    example_repo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "folder").mkdir()
    comment, output = tmp_path / "comment.md", tmp_path / "out.md"
    code = main(
        [
            *("--repo", str(example_repo), "check", "--base", "HEAD", "--output", str(output)),
            *("--report", f"markdown={comment}", "--report", f"sarif={tmp_path / 'folder'}"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"--report sarif={tmp_path / 'folder'}: {tmp_path / 'folder'} is a folder" in err
    assert not comment.exists()
    assert not output.exists()


def test_report_path_below_a_file_names_that_file(
    example_repo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "plain").write_text("", encoding="utf-8")
    code = main(["--repo", str(example_repo), "check", "--output", str(tmp_path / "plain" / "out.md")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"lies below {tmp_path / 'plain'}, which is a file" in err


def _selected_rule(example_repo: Path, applies: str) -> None:
    (example_repo / "rules" / "extra.yaml").write_text(SLOW_RULE.format(applies=applies, doc=""), encoding="utf-8")


def _checked_names(document: dict[str, object]) -> set[str]:
    return {Path(str(c["file"])).name for c in changes(document).values()}


def test_rule_for_one_category_checks_its_records(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _selected_rule(example_repo, '    applies:\n      categories: ["N*"]\n')
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    # Only the N1 approval's four vans; the M1 cars of the other two approvals are left out.
    assert checked_files(document) == 4
    assert all(name.startswith("XNHDR") for name in _checked_names(document))


def test_rule_for_an_energy_source_checks_matching_approvals(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _selected_rule(example_repo, "    applies:\n      energy_sources: ['20']\n")
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert checked_files(document) == 4


def test_record_that_sets_its_category_is_checked_for_a_category_rule(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A record can set the element a selector reads, so its approval alone does not rule it out.
    edit(example_repo, RECORD, "CocDataGroup:\n", "CocDataGroup:\n  VehicleCategory: N1\n")
    commit(example_repo, "an M1 car certified as N1")
    _selected_rule(example_repo, '    applies:\n      categories: ["N*"]\n')
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert checked_files(document) == 5


def test_row_inserted_above_a_finding_is_no_change(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "    - Colour: '8'\n", "    - Colour: '8'\n    - Colour: 'ZZ'\n")
    commit(example_repo, "an unknown colour code")
    edit(example_repo, RECORD, "    - Colour: '8'\n", "    - Colour: '2'\n    - Colour: '8'\n")
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    findings = [(f["rule"], f["path"]) for f in document["findings"]]  # type: ignore[attr-defined]
    assert ("model.code", "CocDataGroup.ColourTable[2].Colour") in findings
    # The finding moved from ColourTable[1] to ColourTable[2], as a line moves, and is the same.
    assert changes(document) == {}


def test_renamed_record_is_not_newly_ready(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    git(example_repo, "mv", RECORD, "records/kh16-first.yaml")
    _, document, err = base_check(example_repo, capsys, "--base", "HEAD")
    # One change, under the new file: the move adds only the warning about the file name.
    [change] = changes(document).values()
    assert (change["file"], change["renamed_from"]) == ("records/kh16-first.yaml", RECORD)
    assert (change["before"], change["after"]) == ("ready", "ready")
    assert [f["rule"] for f in change["added"]] == ["record.file-name"]  # type: ignore[union-attr]
    assert change["resolved"] == []
    assert "since HEAD: 0 newly blocked, 0 newly ready" in err


def test_record_moved_to_a_folder_is_no_change(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / "records" / "kh16").mkdir()
    git(example_repo, "mv", RECORD, "records/kh16/" + RECORD.rsplit("/", 1)[1])
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert changes(document) == {}


def test_value_change_without_readiness_change_was_not_listed(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    _, document, err = base_check(example_repo, capsys, "--base", "HEAD")
    change = changes(document)[RECORD]
    assert (change["before"], change["after"], change["added"], change["resolved"]) == ("ready", "ready", [], [])
    assert change["certificate_changed"] is True
    assert "since HEAD: 0 newly blocked, 0 newly ready, 1 record with changed certificate content" in err
    assert main(["--repo", str(example_repo), "check", "--base", "HEAD"]) == 0
    text = capsys.readouterr().out
    assert f"  {RECORD}: ready\n    certificate content changed\n" in text
    assert main(["--repo", str(example_repo), "check", "--base", "HEAD", "--format", "markdown"]) == 0
    comment = capsys.readouterr().out
    assert "| record | before | after | findings | certificate |" in comment
    assert "| ready | ready | none | changed |" in comment


def test_reports_did_not_name_the_changed_values(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, APPROVAL, "MaximumSpeed: 178", "MaximumSpeed: 179")
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert document["base"]["values"] == [  # type: ignore[index]
        {"item": "29", "label": "Maximum speed", "before": "178 km/h", "after": "179 km/h", "records": 2},
        {"item": "13.2", "label": "Actual mass", "before": "1478 kg", "after": "1479 kg", "records": 1},
    ]
    assert document["base"]["values_from"] == 2  # type: ignore[index]
    main(["--repo", str(example_repo), "check", "--base", "HEAD"])
    text = capsys.readouterr().out
    assert "certificate values that change, in the 2 records with changed certificate content:\n" in text
    assert "  29 Maximum speed: 178 km/h -> 179 km/h (2 records)\n" in text
    main(["--repo", str(example_repo), "check", "--base", "HEAD", "--format", "markdown"])
    comment = capsys.readouterr().out
    assert "### Certificate values that change" in comment
    assert "| 13.2 | Actual mass | 1478 kg | 1479 kg | 1 |" in comment


def test_values_are_counted_over_a_sample(
    example_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecoc import changes as changes_module

    monkeypatch.setattr(changes_module, "VALUE_SAMPLE", 1)
    edit(example_repo, APPROVAL, "MaximumSpeed: 178", "MaximumSpeed: 179")
    main(["--repo", str(example_repo), "check", "--base", "HEAD"])
    text = capsys.readouterr().out
    assert "certificate values that change, in the first 1 of 2 records with changed certificate content:" in text
    assert "  29 Maximum speed: 178 km/h -> 179 km/h (1 record)\n" in text


def test_moved_record_values_compare_with_its_old_file(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / "records" / "kh16").mkdir()
    moved = "records/kh16/" + RECORD.rsplit("/", 1)[1]
    git(example_repo, "mv", RECORD, moved)
    edit(example_repo, moved, "ActualMass: 1478", "ActualMass: 1479")
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert [(v["label"], v["before"], v["after"]) for v in document["base"]["values"]] == [  # type: ignore[index]
        ("Actual mass", "1478 kg", "1479 kg")
    ]


def test_comment_change_leaves_the_certificate_alone(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1478  # weighed again")
    _, document, err = base_check(example_repo, capsys, "--base", "HEAD")
    assert changes(document) == {}
    assert "certificate" not in err


def test_renamed_record_with_a_new_value_was_not_listed(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / "records" / "kh16").mkdir()
    moved = "records/kh16/" + RECORD.rsplit("/", 1)[1]
    git(example_repo, "mv", RECORD, moved)
    edit(example_repo, moved, "ActualMass: 1478", "ActualMass: 1479")
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    [change] = changes(document).values()
    assert (change["file"], change["renamed_from"], change["certificate_changed"]) == (moved, RECORD, True)


def test_record_whose_rules_did_not_run_resolves_nothing(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 99999")
    commit(example_repo, "too heavy")
    edit(example_repo, RECORD, "    - Colour: '8'\n", "    - Colour: '08'\n")
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    change = changes(document)[RECORD]
    # An invalid colour code keeps the rules from running, so the mass finding is not resolved.
    assert [f["rule"] for f in change["resolved"]] == []  # type: ignore[union-attr]
    assert sorted(f["rule"] for f in change["added"]) == ["model.code", "rules.skipped"]  # type: ignore[union-attr]


def test_comment_warns_without_the_official_schema(
    example_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ECOC_XSD", raising=False)
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    assert main(["--repo", str(example_repo), "check", "--base", "HEAD", "--format", "markdown"]) == 0
    comment = capsys.readouterr().out
    assert "> [!WARNING]" in comment
    assert "ECOC\\_XSD" in comment


def test_two_reports_in_one_file_are_rejected(
    example_repo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "report.md"
    code = main(["--repo", str(example_repo), "check", "--output", str(target), "--report", f"sarif={target}"])
    assert code == 2
    assert f"--report sarif={target} names the same file as --output" in capsys.readouterr().err
    assert not target.exists()


def test_new_version_without_records_is_named(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (example_repo / APPROVAL).read_text(encoding="utf-8")
    block = text[text.index("      KH16F-L19:") :]
    block = block[: block.index("\n\n") + 1] if "\n\n" in block else block
    (example_repo / APPROVAL).write_text(
        text.rstrip("\n") + "\n" + block.replace("KH16F-L19:", "KH16F-L21:"), encoding="utf-8"
    )
    _, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    added = document["base"]["repository"]["added"]  # type: ignore[index]
    [unchecked] = [f for f in added if f["rule"] == "approval.version-unchecked"]
    assert unchecked["message"].startswith("version KH16F-L21 of variant ")
    assert unchecked["file"] == APPROVAL


def test_changed_record_linked_outside_is_refused(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_bytes((example_repo / RECORD).read_bytes().replace(b"ActualMass: 1478", b"ActualMass: 1479"))
    (example_repo / RECORD).unlink()
    (example_repo / RECORD).symlink_to(outside)
    code = main(["--repo", str(example_repo), "check", "--base", "HEAD"])
    err = capsys.readouterr().err
    assert code == 3
    assert f"error: {RECORD} is a symbolic link to {outside}, outside the repository" in err


def test_named_records_listed_like_the_walk(tmp_path: Path) -> None:
    records = tmp_path / "records"
    (records / "batch").mkdir(parents=True)
    (records / ".hidden").mkdir()
    (records / "folder.yaml").mkdir()
    for name in ("a.yaml", "b.yml", "batch/c.yaml", ".hidden/d.yaml", "notes.txt", ".e.yaml"):
        (records / name).write_text("vin: X\n", encoding="utf-8")
    (records / "dangling.yaml").symlink_to(tmp_path / "missing.yaml")
    (records / "inside.yaml").symlink_to(records / "a.yaml")
    walked = list_yaml(tmp_path, "records")
    named = {relative for _, relative in walked} | {
        "records/.hidden/d.yaml",
        "records/notes.txt",
        "records/.e.yaml",
        "records/folder.yaml",
        "records/gone.yaml",
        "records/../ecoc.yaml",
        "approvals/a.yaml",
    }
    assert pick_yaml(tmp_path, "records", frozenset(named)) == walked
    assert [relative for _, relative in walked] == [
        "records/a.yaml",
        "records/b.yml",
        "records/batch/c.yaml",
        "records/dangling.yaml",
        "records/inside.yaml",
    ]


@pytest.mark.parametrize("broken", [False, True])
def test_base_copy_is_removed_after_the_check(
    example_repo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    broken: bool,
) -> None:
    temporary = tmp_path / "temporary"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    if broken:
        # The settings fail while git still copies the base on its thread.
        (example_repo / "ecoc.yaml").write_text("schema: [\n", encoding="utf-8")
    code = main(["--repo", str(example_repo), "check", "--base", "HEAD"])
    capsys.readouterr()
    assert code == (3 if broken else 0)
    assert list(temporary.iterdir()) == []


@pytest.mark.parametrize(("changed", "loads"), [(RECORD, 1), (APPROVAL, 3)])
def test_base_parsed_unchanged_approvals_again(
    example_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, changed: str, loads: int
) -> None:
    from ecoc import runner

    calls = []
    original = runner.load_approvals

    def counting(paths: list[tuple[str, str]]) -> object:
        calls.append(paths)
        return original(paths)

    monkeypatch.setattr(runner, "load_approvals", counting)
    # The approvals are parsed here, and at the base only when an approval file differs. The
    # value comparison renders both sides and parses again only on the side whose files differ.
    old, new = (
        ("ActualMass: 1478", "ActualMass: 1479") if changed == RECORD else ("MaximumSpeed: 178", "MaximumSpeed: 179")
    )
    edit(example_repo, changed, old, new)
    code, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert code == 0
    assert len(calls) == loads
    assert {change["file"] for change in document["base"]["changes"]} >= {RECORD}  # type: ignore[index]


def test_unchecked_base_called_certificates_not_rendered(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    break_base_settings(example_repo)
    main(["--repo", str(example_repo), "check", "--base", "HEAD", "--format", "markdown"])
    comment = capsys.readouterr().out
    assert "not rendered" not in comment
    assert "base not checked" in comment
    assert "so the state of each checked record there is unknown." in comment
    assert "counts as new" not in comment


def test_killed_check_left_its_base_copy(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A check killed with SIGKILL cannot remove its copy of the base; the next one removes it.
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    ended = subprocess.Popen(["true"])
    ended.wait()
    hours_ago = time.time() - 2 * 3600
    left = {
        "abandoned": f"ecoc-base-{ended.pid}-a1b2",
        "just made": f"ecoc-base-{ended.pid}-c3d4",
        "running": f"ecoc-base-{os.getppid()}-e5f6",
        "not ours": "ecoc-basement",
    }
    for name in left.values():
        (temporary / name).mkdir()
        (temporary / name / "ecoc.yaml").write_text("version: 1\n", encoding="utf-8")
    for key in ("abandoned", "running", "not ours"):
        os.utime(temporary / left[key], (hours_ago, hours_ago))
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    code, document, _ = base_check(example_repo, capsys, "--base", "HEAD")
    assert code == 0
    assert checked_files(document) == 1
    remaining = {path.name for path in temporary.iterdir()}
    assert left["abandoned"] not in remaining
    assert remaining == {left["just made"], left["running"], left["not ours"]}


def test_unchanged_broken_rule_hint(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Unchanged rule files compile each expression when it first runs. A broken one fails where
    # it runs, on both sides, and the full check still names it.
    from test_rules import GOOD_RULE

    broken_check = GOOD_RULE.replace("has(coc.MaximumSpeed)", "coc.MaximumSpeed >")
    broken_message = (
        GOOD_RULE.replace("test.speed-known", "test.speed-shown")
        .replace("has(coc.MaximumSpeed)", "false")
        .replace("message: no maximum speed", "message: speed {{ coc.MaximumSpeed + }}")
    )
    (example_repo / "rules" / "broken.yaml").write_text("rules:\n" + broken_check + broken_message, encoding="utf-8")
    commit(example_repo, "add two broken rules")
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    code, document, err = base_check(example_repo, capsys, "--base", "HEAD")
    assert "Traceback" not in err
    assert code == 1
    assert checked_files(document) == 1
    found = {(f["rule"], f["message"]) for f in document["findings"]}  # type: ignore[attr-defined]
    assert ("test.speed-shown", "speed ?") in found
    # At the check's own line and column, with the hint of the full check.
    [broken] = [f for f in document["findings"] if f["rule"] == "rules.invalid"]  # type: ignore[attr-defined]
    assert broken["message"].startswith("rule test.speed-known: the check does not compile: ")
    assert (broken["file"], broken["line"], broken["column"]) == ("rules/broken.yaml", 5, 12)
    assert broken["hint"].startswith("fix the CEL syntax")
    assert broken["records"] == [Path(RECORD).stem]
    change = changes(document)[RECORD]
    assert (change["before"], change["after"]) == ("blocked", "blocked")
    code, document, _ = base_check(example_repo, capsys, "--no-cache")
    invalid = [f for f in document["findings"] if f["rule"] == "rules.invalid"]  # type: ignore[attr-defined]
    assert len(invalid) == 2
    assert code == 1
