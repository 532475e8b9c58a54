"""`ecoc status`: each record's state, what it lacks, the next action and its owners."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import html

from conftest import git
from ecoc.cli import main
from ecoc.config import open_repository
from ecoc.evidence import write_attempt, write_certificate
from ecoc.runner import RecordResult, RunOptions, run_check
from test_changes import write_waiver
from test_check import APPROVAL, OTHER_RECORD, RECORD, edit

VIN = "XNHKH16S1TE100214"


@pytest.fixture
def repo(example_repo: Path) -> Path:
    git(example_repo, "branch", "-M", "main")
    return example_repo


def status(repo: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, dict[str, object]]]:
    code = main(["--repo", str(repo), "status", "--format", "json", *args])
    document = json.loads(capsys.readouterr().out)
    return code, {row["vin"]: row for row in document["records"]}


def issue(
    repo: Path,
    vin: str,
    delivery: dict[str, str] | None = None,
    digest: str | None = None,
    digests: dict[str, object] | None = None,
    transport: str | None = None,
) -> None:
    """Write the evidence the release job would write for the record's current data."""
    results: dict[str, RecordResult] = {}
    record = f"records/{vin}.yaml"
    run_check(
        open_repository(repo, explicit=True),
        RunOptions([repo / record], keep_render=True),
        sink=lambda result: results.setdefault(result.relative, result),
    )
    result = results[record]
    manifest = {
        "vin": vin,
        "record": record,
        "stage": 1,
        "version": 1,
        "reference_id": result.summary.reference_id,
        "version_datetime": "2026-11-02T10:00:00Z",
        "content_digest": digest or result.content_digest,
        "data_digest": digest or result.data_digest,
    }
    if digests is not None:
        manifest["digests"] = digests
    if transport is not None:
        manifest["transport"] = transport
    folder = f"signed/{vin}/stage-1/v1"
    write_certificate(repo, folder, b"<signed/>", manifest)
    if delivery is not None:
        attempt = {"status": delivery["status"], "message": delivery.get("reason", "")}
        write_attempt(repo, folder, attempt, b"{}", "application/json")


def test_records_on_main_are_approved(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, rows = status(repo, capsys)
    assert {row["state"] for row in rows.values()} == {"approved"}
    assert rows[VIN]["owners"] == ["@halvard-motors/ecoc-release"]
    assert rows[VIN]["next_action"] == "the release job signs and delivers it"
    assert code == 0


def test_changed_record_is_ready_until_merged(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    _, rows = status(repo, capsys)
    assert rows[VIN]["state"] == "ready"
    assert rows[VIN]["owners"] == ["@halvard-motors/compliance-review"]
    assert rows["XNHKH16S8TE103871"]["state"] == "approved"


def test_changed_approval_makes_its_records_ready(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(repo, APPROVAL, "MaximumSpeed: 178", "MaximumSpeed: 177")
    _, rows = status(repo, capsys)
    assert rows[VIN]["state"] == "ready"
    assert rows["XNHDR1M67TE300087"]["state"] == "approved"


def test_blocked_record_names_what_is_missing(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(repo, RECORD, "ActualMass: 1478", "ActualMass: 99999")
    code, rows = status(repo, capsys)
    row = rows[VIN]
    assert row["state"] == "blocked"
    assert any(str(item).startswith("mass.actual-within-maximum (records/") for item in row["missing"])  # type: ignore[attr-defined]
    assert str(row["next_action"]).startswith("fix the data: ")
    assert row["owners"] == ["@halvard-motors/homologation"]
    assert code == 1


def test_evidence_of_this_content_is_signed(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    issue(repo, VIN)
    _, rows = status(repo, capsys)
    assert rows[VIN]["state"] == "signed"
    assert rows[VIN]["missing"] == ["the authority's receipt"]


def test_accepted_receipt_is_delivered(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    issue(repo, VIN, {"status": "accepted"})
    code, rows = status(repo, capsys)
    assert rows[VIN]["state"] == "delivered"
    assert rows[VIN]["owners"] == []
    assert code == 0


def test_rejected_receipt_names_the_reason(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    issue(repo, VIN, {"status": "rejected", "reason": "VIN already registered"})
    code, rows = status(repo, capsys)
    assert rows[VIN]["state"] == "rejected"
    assert rows[VIN]["missing"] == ["rejected by the authority: VIN already registered"]
    assert "correction_reason" in str(rows[VIN]["next_action"])
    assert code == 1


def test_changed_data_of_a_delivered_record_needs_a_correction(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    issue(repo, VIN, {"status": "accepted"}, digest="0" * 64)
    code, rows = status(repo, capsys)
    assert rows[VIN]["state"] == "blocked"
    assert str(rows[VIN]["missing"][0]).startswith("release.correction-required (records/")  # type: ignore[index]
    assert code == 1


def test_unreadable_manifest_is_reported(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = repo / "signed" / VIN / "stage-1" / "v1"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{not json", encoding="utf-8")
    main(["--repo", str(repo), "status"])
    err = capsys.readouterr().err
    assert f"signed/{VIN}/stage-1/v1/manifest.json:1:1: error io.read: cannot read the evidence manifest" in err


def test_named_main_branch_must_exist(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--repo", str(repo), "status", "--main", "release-2027"]) == 2
    assert "--main release-2027: no such commit in this repository" in capsys.readouterr().err


def test_missing_default_main_branch_approves_nothing(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    git(repo, "branch", "-M", "trunk")
    code = main(["--repo", str(repo), "status", "--format", "json"])
    captured = capsys.readouterr()
    rows = json.loads(captured.out)["records"]
    assert {row["state"] for row in rows} == {"ready"}
    assert (
        "no record counts as approved, because the main branch main (main_branch in ecoc.yaml) is neither a branch "
        "here nor origin/main"
    ) in captured.err
    assert code == 0


def test_status_pages(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(repo, OTHER_RECORD, "ActualMass:", "ActualMass: 99999\n    # was:")
    assert main(["--repo", str(repo), "status", "--format", "html", "--output", str(tmp_path / "status.html")]) == 1
    page = html.fromstring((tmp_path / "status.html").read_bytes())
    assert page.get_element_by_id("count-blocked").text_content() == "1"
    assert page.get_element_by_id("count-approved").text_content() == "11"
    row = page.get_element_by_id("record-XNHKH16S8TE103871")
    assert "blocked" in row.text_content()
    head = git(repo, "rev-parse", "HEAD")[:12]
    # Both boards name the commit and branch they describe.
    assert page.get_element_by_id("scope").text_content().endswith(f", of commit {head} on branch main.")
    assert main(["--repo", str(repo), "status", "--format", "markdown"]) == 1
    markdown = capsys.readouterr().out
    assert markdown.startswith(f"## eCoC status\n\nAs of commit {head} on branch main.\n")
    main(["--repo", str(repo), "status", "--format", "json"])
    document = json.loads(capsys.readouterr().out)
    assert (document["commit"][:12], document["branch"]) == (head, "main")
    assert document["generated"]
    assert "| XNHKH16S8TE103871 | **blocked** |" in markdown
    assert main(["--repo", str(repo), "status"]) == 1
    text = capsys.readouterr().out
    assert "XNHKH16S8TE103871  blocked   @halvard-motors/homologation\n    missing: " in text
    assert text.endswith("1 blocked, 0 ready, 11 approved, 0 signed, 0 delivered, 0 rejected of 12 records\n")


def test_repository_template_replaces_ecocs(repo: Path, tmp_path: Path) -> None:
    (repo / "templates").mkdir()
    (repo / "templates" / "status.html.j2").write_text("<p>{{ rows | length }} vehicles</p>\n", encoding="utf-8")
    assert main(["--repo", str(repo), "status", "--format", "html", "--output", str(tmp_path / "s.html")]) == 0
    assert (tmp_path / "s.html").read_text(encoding="utf-8") == "<p>12 vehicles</p>\n"


def test_broken_template_is_a_configuration_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "templates").mkdir()
    (repo / "templates" / "status.html.j2").write_text("<p>\n{% for row in rows %}\n</p>\n", encoding="utf-8")
    assert main(["--repo", str(repo), "status", "--format", "html"]) == 3
    err = capsys.readouterr().err
    assert "status.html.j2:" in err
    assert "the template is not valid Jinja2" in err


def test_record_blocked_by_a_waiver_goes_to_the_reviewers(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_waiver(repo, "vin.check-digit", VIN, "2020-01-01", waiver_id="W-3")
    _, rows = status(repo, capsys)
    row = rows[VIN]
    assert row["state"] == "blocked"
    assert str(row["next_action"]).startswith("fix the waiver: ")
    assert row["owners"] == ["@halvard-motors/compliance-review"]


def test_expired_seal_goes_to_the_release_owners(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pki import DAY, NOW, issue

    root = issue("Halvard Test Root CA", ca=True)
    seal = issue("Halvard Motors B.V. eCoC seal", root, not_before=NOW - 400 * DAY, not_after=NOW - 5 * DAY)
    (tmp_path / "seal.pem").write_bytes(seal.pem())
    with (repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
        handle.write(f"signing:\n  cert: {tmp_path / 'seal.pem'}\n")
    _, rows = status(repo, capsys)
    row = rows[VIN]
    assert row["state"] == "blocked"
    assert str(row["next_action"]).startswith("fix the seal: ")
    assert row["owners"] == ["@halvard-motors/ecoc-release"]


def test_remote_main_stands_for_a_missing_main(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A CI checkout: the reviewed data is on origin/main, and no local main exists.
    git(repo, "update-ref", "refs/remotes/origin/main", "HEAD")
    git(repo, "checkout", "-q", "--detach")
    git(repo, "branch", "-D", "main")
    code = main(["--repo", str(repo), "status", "--format", "json"])
    captured = capsys.readouterr()
    rows = json.loads(captured.out)["records"]
    assert {row["state"] for row in rows} == {"approved"}
    assert code == 0


def _version_findings(repo: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    main(["--repo", str(repo), "check", "--no-cache", "--format", "json"])
    findings = json.loads(capsys.readouterr().out)["findings"]
    return [f for f in findings if f["rule"] == "record.version-number"]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (
            1,
            "Header.IviVersionNumber 1 is not used: the evidence archive holds IviVersionNumber 1, so the "
            "correction is released as 2",
        ),
        (5, "Header.IviVersionNumber 5 skips IviVersionNumber 2 to 4: the evidence archive holds 1 as the latest"),
    ],
)
def test_written_version_number_that_the_release_overrides_is_reported(
    repo: Path, capsys: pytest.CaptureFixture[str], written: int, expected: str
) -> None:
    issue(repo, VIN, {"status": "accepted"}, digest="0" * 64)
    edit(
        repo,
        RECORD,
        "  IntendedCountryRegistration: NL\n",
        f"  IntendedCountryRegistration: NL\n  IviVersionNumber: {written}\n",
    )
    with (repo / RECORD).open("a", encoding="utf-8") as handle:
        handle.write("correction_reason: actual mass was measured without the tow bar\n")
    [finding] = _version_findings(repo, capsys)
    assert finding["message"] == expected
    assert (finding["severity"], finding["path"], finding["line"]) == ("warning", "Header.IviVersionNumber", 8)


def test_written_version_number_of_unchanged_data_is_reported(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    issue(repo, VIN, {"status": "accepted"})
    edit(
        repo,
        RECORD,
        "  IntendedCountryRegistration: NL\n",
        "  IntendedCountryRegistration: NL\n  IviVersionNumber: 3\n",
    )
    [finding] = _version_findings(repo, capsys)
    assert str(finding["message"]).startswith(
        "Header.IviVersionNumber 3 is not used: the data equals IviVersionNumber 1"
    )


def test_correction_names_the_approval_file_that_changed(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    record_sha = hashlib.sha256((repo / RECORD).read_bytes()).hexdigest()
    digests = {"record": record_sha, "approval": {APPROVAL: "0" * 64}}
    issue(repo, VIN, {"status": "accepted"}, digest="0" * 64, digests=digests)
    main(["--repo", str(repo), "check", "--no-cache", "--format", "json"])
    findings = json.loads(capsys.readouterr().out)["findings"]
    [finding] = [f for f in findings if f["rule"] == "release.correction-required"]
    assert str(finding["message"]).endswith(f"; changed since it was signed: {APPROVAL}")
    assert str(finding["hint"]).endswith(
        "the record file is as it was signed, so the change came from its approval file"
    )


def test_outbox_delivery_is_not_called_the_authoritys_acceptance(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issue(repo, VIN, {"status": "accepted"}, transport="outbox")
    _, rows = status(repo, capsys)
    assert rows[VIN]["state"] == "delivered"
    assert "the certificate is in the outbox" in str(rows[VIN]["next_action"])
    assert "accepted" not in str(rows[VIN]["next_action"])


def test_unmerged_waiver_approves_no_record(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    git(repo, "checkout", "-q", "-b", "waiver")
    write_waiver(repo, "vin.check-digit", VIN, "2099-01-01", waiver_id="W-4")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "waiver")
    code = main(["--repo", str(repo), "status", "--format", "json"])
    captured = capsys.readouterr()
    rows = json.loads(captured.out)["records"]
    # The waiver decides readiness and is not on main yet, so records are ready, not approved.
    assert {row["state"] for row in rows} == {"ready"}
    assert "because rules/waivers.yaml differs from the main branch main" in captured.err
    assert code == 0


def test_damaged_delivery_result_is_named_and_goes_to_the_release_owners(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issue(repo, VIN, {"status": "accepted"})
    delivery = repo / "signed" / VIN / "stage-1" / "v1" / "delivery-1.json"
    delivery.write_bytes(delivery.read_bytes() + b"x\n")
    main(["--repo", str(repo), "check", "--no-cache", "--format", "json"])
    findings = json.loads(capsys.readouterr().out)["findings"]
    [damaged] = [f for f in findings if f["rule"] == "io.read"]
    assert damaged["file"] == f"signed/{VIN}/stage-1/v1/delivery-1.json"
    assert str(damaged["message"]).startswith("cannot read the delivery result: ")
    _, rows = status(repo, capsys)
    assert str(rows[VIN]["next_action"]).startswith("fix the evidence archive: ")
    assert rows[VIN]["owners"] == ["@halvard-motors/ecoc-release"]


def test_status_of_one_record_counts_in_the_singular(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in (repo / "records").glob("*.yaml"):
        if path.name != f"{VIN}.yaml":
            path.unlink()
    main(["--repo", str(repo), "status"])
    assert capsys.readouterr().out.rstrip().endswith(" of 1 record")


def test_expired_waiver_keeps_delivered_records_delivered(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    issue(repo, VIN, {"status": "accepted"})
    write_waiver(repo, "vin.check-digit", VIN, "2020-01-01", waiver_id="W-4")
    _, rows = status(repo, capsys)
    assert rows[VIN]["state"] == "delivered"
    assert str(rows[VIN]["missing"][0]).startswith("for a correction: waiver.expired (rules/")  # type: ignore[index]
    assert rows["XNHKH16S8TE103871"]["state"] == "blocked"


def test_correction_is_named_in_the_check_and_status(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    issue(repo, VIN, {"status": "accepted"}, digest="0" * 64)
    with (repo / RECORD).open("a", encoding="utf-8") as handle:
        handle.write("correction_reason: actual mass was measured without the tow bar\n")
    main(["--repo", str(repo), "check", "--no-cache", "--format", "json"])
    findings = json.loads(capsys.readouterr().out)["findings"]
    [finding] = [f for f in findings if f["rule"] == "release.correction"]
    assert finding["severity"] == "info"
    assert finding["path"] == "correction_reason"
    assert str(finding["message"]).startswith("merging releases IviVersionNumber 2 (IviReferenceId ")
    assert str(finding["message"]).endswith(
        "as a correction of IviVersionNumber 1, which was delivered: actual mass was measured without the tow bar"
    )
    _, rows = status(repo, capsys)
    assert rows[VIN]["state"] == "ready"
    assert str(rows[VIN]["next_action"]).startswith("review the correction and merge")


def test_deleted_record_of_a_delivered_vehicle_is_an_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    issue(repo, VIN, {"status": "accepted"})
    (repo / RECORD).unlink()
    code = main(["--repo", str(repo), "check", "--no-cache", "--format", "json"])
    findings = json.loads(capsys.readouterr().out)["findings"]
    [finding] = [f for f in findings if f["rule"] == "record.removed-after-signing"]
    assert finding["file"] == RECORD
    assert finding["message"] == (
        f"VIN {VIN} has an issued certificate (signed/{VIN}/stage-1/v1/manifest.json), but its record "
        f"{RECORD} no longer exists"
    )
    assert code == 1


def test_pull_request_deleting_a_delivered_record_fails(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    issue(repo, VIN, {"status": "accepted"})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "deliver")
    (repo / RECORD).unlink()
    code = main(["--repo", str(repo), "check", "--base", "HEAD", "--format", "json"])
    document = json.loads(capsys.readouterr().out)
    added = document["base"]["repository"]["added"]
    assert [f["rule"] for f in added] == ["record.removed-after-signing"]
    assert code == 1


def test_next_action_names_the_element_and_the_problem(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(repo, RECORD, "Colour: '8'", "Colour: '11'")
    _, rows = status(repo, capsys)
    action = str(rows[VIN]["next_action"])
    assert action.startswith("fix the data: Colour: '11' is not a code of ")
    assert "; " in action


def test_markdown_board_stays_within_a_job_summary(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecoc import status as board

    edit(repo, OTHER_RECORD, "ActualMass:", "ActualMass: 99999\n    # was:")
    monkeypatch.setattr(board, "MARKDOWN_LIMIT", 1200)
    main(["--repo", str(repo), "status", "--format", "markdown"])
    text = capsys.readouterr().out
    assert len(text) <= 1200 + 200
    # The blocked record comes first, so a cut board still lists it.
    assert "| XNHKH16S8TE103871 | **blocked** |" in text
    assert "more records are not listed, to stay within the size of a job summary" in text


def test_base_check_knows_the_evidence_at_the_base(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The record was changed after delivery, so it needs a correction both at the base and here.
    issue(repo, VIN, {"status": "accepted"}, digest="0" * 64)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "deliver, then change")
    with (repo / RECORD).open("a", encoding="utf-8") as handle:
        handle.write("# a comment only\n")
    main(["--repo", str(repo), "check", "--base", "HEAD", "--format", "json"])
    document = json.loads(capsys.readouterr().out)
    assert document["base"]["changes"] == []
