"""`ecoc history VIN`: a vehicle's timeline from one git log pass and the evidence ledger."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from conftest import git
from ecoc.cli import main
from pki import Pki
from test_release import VIN, release


def history(repo: Path, capsys: pytest.CaptureFixture[str], vin: str = VIN) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["--repo", str(repo), "history", vin, "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["vin"] == vin
    return document["events"]  # type: ignore[no-any-return]


def commit_as(repo: Path, author: str, message: str) -> None:
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            f"user.name={author}",
            "-c",
            "user.email=people@halvard.invalid",
            "commit",
            "-q",
            "-am",
            message,
        ],
        check=True,
        capture_output=True,
    )


def test_timeline_lists_changes_approvals_and_evidence(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = repo / "records" / f"{VIN}.yaml"
    record.write_bytes(record.read_bytes().replace(b"ActualMass: 1478", b"ActualMass: 1480"))
    commit_as(repo, "Ingrid Maas", "Weigh the vehicle again (#41)")
    approval = repo / "approvals" / "e4-2018-858-04127-01.yaml"
    approval.write_bytes(approval.read_bytes().replace(b"MaximumSpeed: 178", b"MaximumSpeed: 177", 1))
    commit_as(repo, "Ruud Bakker", "Merge pull request #42 from halvard/top-speed\n\nCorrect the top speed")
    assert release(repo, seal, tmp_path / "outbox") == 0
    record.write_bytes(
        record.read_bytes().replace(b"ActualMass: 1480", b"ActualMass: 1482")
        + b"correction_reason: weighed with the tow bar fitted\n"
    )
    commit_as(repo, "Ingrid Maas", "Correct the actual mass (#43)")
    assert release(repo, seal, tmp_path / "outbox") == 0

    events = history(repo, capsys)
    kinds = [event["kind"] for event in events]
    assert kinds.count("record") == 3  # the first commit, and two changes
    mass = [event for event in events if event["pull_request"] == 41]
    assert len(mass) == 1
    assert mass[0]["author"] == "Ingrid Maas <people@halvard.invalid>"
    assert {
        "file": f"records/{VIN}.yaml",
        "path": "CocDataGroup.MassGroup.ActualMass",
        "before": "1478",
        "after": "1480",
    } in mass[0]["changes"]  # type: ignore[operator]
    speed = [event for event in events if event["pull_request"] == 42]
    assert [event["kind"] for event in speed] == ["approval"]
    assert any(change["before"] == "178" and change["after"] == "177" for change in speed[0]["changes"])  # type: ignore[union-attr]
    evidence = [kind for kind in kinds if kind in ("signed", "delivered", "correction")]
    assert evidence == ["signed", "delivered", "correction", "delivered"]
    correction = next(event for event in events if event["kind"] == "correction")
    assert "weighed with the tow bar fitted" in str(correction["summary"])
    # The outbox took the files: whether the authority accepts them is not known yet.
    delivered = next(event for event in events if event["kind"] == "delivered")
    assert str(delivered["summary"]).startswith(
        "IviVersionNumber 1: written to the outbox, not yet known to the authority: wrote "
    )
    # Each evidence event names the release commit that published it.
    signed = next(event for event in events if event["kind"] == "signed")
    assert signed["commit"] == git(repo, "log", "-1", "--format=%H", "--grep=^Sign ", "HEAD~2").strip()
    assert signed["author"]
    dates = [str(event["date"]) for event in events]
    assert all(date.endswith("Z") for date in dates)
    assert dates == sorted(dates)

    capsys.readouterr()
    assert main(["--repo", str(repo), "history", VIN]) == 0
    text = capsys.readouterr().out
    assert f"records/{VIN}.yaml: CocDataGroup.MassGroup.ActualMass: 1480 -> 1482" in text
    assert "(pull request #43)" in text
    for format_ in ("markdown", "html"):
        assert main(["--repo", str(repo), "history", VIN, "--format", format_]) == 0
        assert "#42" in capsys.readouterr().out


def test_record_with_an_unusual_file_name(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unusual = f"records/{VIN}-Zoë «2CV» Ünïcode.yaml"
    git(repo, "mv", f"records/{VIN}.yaml", unusual)
    git(repo, "commit", "-q", "-m", "rename the record")
    path = repo / unusual
    path.write_bytes(path.read_bytes().replace(b"ActualMass: 1478", b"ActualMass: 1490"))
    git(repo, "commit", "-q", "-am", "weigh again")
    events = history(repo, capsys)
    changes = [change for event in events for change in event["changes"]]  # type: ignore[attr-defined]
    assert {"file": unusual, "path": "CocDataGroup.MassGroup.ActualMass", "before": "1478", "after": "1490"} in changes


def test_shallow_clone_gets_the_fetch_hint(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shallow = tmp_path / "shallow"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow)], check=True, capture_output=True
    )
    assert main(["--repo", str(shallow), "history", VIN]) == 3
    assert "git fetch --unshallow" in capsys.readouterr().err


def test_text_that_is_not_a_vin_never_reaches_git(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--repo", str(repo), "history", "--", "--output=/tmp/x"]) == 2
    assert "is not a VIN" in capsys.readouterr().err
    assert main(["--repo", str(repo), "history", "XNHKH16S1TE999999"]) == 2
    assert "VIN XNHKH16S1TE999999 not found" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give the folder away")
def test_repository_of_another_owner_gets_the_safe_directory_hint(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    shutil.copytree(repo, other, symlinks=True)
    subprocess.run(["chown", "-R", "65534:65534", str(other)], check=True)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    assert main(["--repo", str(other), "history", VIN]) == 3
    err = capsys.readouterr().err
    assert "safe.directory" in err


def test_timeline_page_in_a_browser(repo: Path, tmp_path: Path, browser: webdriver.Chrome) -> None:
    record = repo / "records" / f"{VIN}.yaml"
    record.write_bytes(record.read_bytes().replace(b"ActualMass: 1478", b"ActualMass: 1480"))
    commit_as(repo, "Ingrid Maas", "Weigh <the> vehicle again (#41)")
    page = tmp_path / "history.html"
    assert main(["--repo", str(repo), "history", VIN, "--format", "html", "--output", str(page)]) == 0
    browser.get(page.as_uri())
    rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "tr.event")]
    # The first commit adds the record, its approval and the rules; the second changes the record.
    assert sorted(row.split()[1] for row in rows[:3]) == ["approval", "record", "rules"]
    assert rows[-1].split()[1] == "record"
    assert "#41" in rows[-1]
    assert "Weigh <the> vehicle again" in rows[-1]
    assert "CocDataGroup.MassGroup.ActualMass: 1478 → 1480" in rows[-1]


def test_history_without_commits_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    (root / "ecoc.yaml").write_text("version: 1\n", encoding="utf-8")
    git(root, "init", "-q")
    assert main(["--repo", str(root), "history", VIN]) == 3
    assert "no commit yet, so there is no history to show" in capsys.readouterr().err


def test_commit_of_a_merged_pull_request_names_it(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    git(repo, "checkout", "-q", "-b", "halvard/colour")
    record = repo / "records" / f"{VIN}.yaml"
    record.write_bytes(record.read_bytes().replace(b"ActualMass: 1478", b"ActualMass: 1481"))
    commit_as(repo, "Paula Verhoef", "Weigh with the spare wheel")
    git(repo, "checkout", "-q", "main")
    (repo / "NOTES.txt").write_text("unrelated work on main\n", encoding="utf-8")
    git(repo, "add", "NOTES.txt")
    git(repo, "commit", "-q", "-m", "Add notes")
    git(repo, "merge", "-q", "--no-ff", "halvard/colour", "-m", "Merge pull request #12 from halvard/colour")
    events = history(repo, capsys)
    [weighed] = [event for event in events if event["summary"] == "Weigh with the spare wheel"]
    assert weighed["pull_request"] == 12
    assert weighed["author"] == "Paula Verhoef <people@halvard.invalid>"
    first = [event for event in events if event["kind"] == "record" and event is not weighed]
    assert all(event["pull_request"] is None for event in first)


def test_merged_change_is_dated_and_named_by_its_merge(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    git(repo, "checkout", "-q", "-b", "halvard/weight")
    record = repo / "records" / f"{VIN}.yaml"
    record.write_bytes(record.read_bytes().replace(b"ActualMass: 1478", b"ActualMass: 1481"))
    # The author's date lies before the record was added; the change took effect at the merge.
    git(repo, "add", "-A")
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=Bob",
            "-c",
            "user.email=bob@halvard.invalid",
            "commit",
            "-q",
            "-m",
            "Weigh again",
            "--date",
            "2020-01-01T10:00:00Z",
        ],
        check=True,
    )
    git(repo, "checkout", "-q", "main")
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=Carol",
            "-c",
            "user.email=carol@halvard.invalid",
            "merge",
            "-q",
            "--no-ff",
            "halvard/weight",
            "-m",
            "Merge pull request #9 from halvard/weight",
        ],
        check=True,
    )
    merge = git(repo, "rev-parse", "HEAD").strip()
    events = history(repo, capsys)
    [weighed] = [event for event in events if event["summary"] == "Weigh again"]
    assert weighed["merge_commit"] == merge
    assert weighed["merged_by"] == "Carol <carol@halvard.invalid>"
    assert weighed["authored"] == "2020-01-01T10:00:00Z"
    # It comes after the commit that added the record, not before it.
    added = next(event for event in events if event["kind"] == "record")
    assert events.index(added) < events.index(weighed)
    main(["--repo", str(repo), "history", VIN])
    text = capsys.readouterr().out
    assert f"(pull request #9, merged by Carol <carol@halvard.invalid> in {merge[:12]}): Weigh again" in text


def test_history_names_the_seal_and_trust_changes_and_foreign_evidence(
    repo: Path, seal: list[str], seal_pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert release(repo, seal, tmp_path / "outbox") == 0
    (repo / "keys").mkdir()
    (repo / "keys" / "root.pem").write_bytes(seal_pki.root.pem())
    with (repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
        handle.write("\nsigning:\n  trust: [keys/root.pem]\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Trust the seal's root")
    # A delivery event appended by hand, outside any release, with a file of its own.
    note = repo / "signed" / VIN / "stage-1" / "v1" / "note.txt"
    note.write_text("withdrawn\n", encoding="utf-8")
    ledger = repo / "signed" / "ledger.jsonl"
    last = json.loads(ledger.read_bytes().splitlines()[-1])
    files = {f"signed/{VIN}/stage-1/v1/note.txt": "0" * 64}
    forged = {**last, "vin": VIN, "seq": last["seq"] + 1, "status": "failed", "files": files}
    ledger.write_bytes(ledger.read_bytes() + json.dumps(forged, sort_keys=True).encode() + b"\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Withdraw by hand")
    events = history(repo, capsys)
    [signed] = [event for event in events if event["kind"] == "signed"]
    assert " by CN=Halvard Motors B.V. eCoC seal" in signed["summary"]
    assert " from commit " in signed["summary"]
    [settings] = [event for event in events if event["kind"] == "settings"]
    assert [change["path"] for change in settings["changes"]] == ["signing.trust[0]"]
    [forged_event] = [
        event for event in events if event["summary"].endswith("not written by an ecoc release (run ecoc audit)")
    ]
    assert forged_event["kind"] == "delivery-failed"


def test_waiver_that_covers_the_vin_by_pattern_is_in_the_history(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_changes import write_waiver

    write_waiver(repo, "vin.check-digit", '"XNHKH16S*"', waiver_id="W-12")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Waive the check digit of the KH16S series")
    events = history(repo, capsys)
    [waiver] = [event for event in events if event["kind"] == "waivers"]
    assert waiver["summary"] == (
        "Waive the check digit of the KH16S series (waivers for this vehicle: W-12 (vin.check-digit))"
    )


def test_unreadable_ledger_is_named_in_history(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert release(repo, seal, tmp_path / "outbox") == 0
    (repo / "signed" / "ledger.jsonl").write_text("this is not json\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["--repo", str(repo), "history", VIN]) == 0
    assert "1 line(s) of signed/ledger.jsonl are not JSON, so their events are left out" in capsys.readouterr().err
    (repo / "signed" / "ledger.jsonl").write_text("", encoding="utf-8")
    assert main(["--repo", str(repo), "history", VIN]) == 0
    assert f"signed/ledger.jsonl lists no event of {VIN}, though signed/{VIN} contains evidence" in (
        capsys.readouterr().err
    )


def test_added_files_are_one_line_in_text(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The example repository's first commit adds the record and its approval with all their values.
    capsys.readouterr()
    assert main(["--repo", str(repo), "history", VIN]) == 0
    text = capsys.readouterr().out
    assert "approvals/e4-2018-858-04127-01.yaml: added with " in text
    assert "(none) ->" not in text
    # JSON keeps every value.
    first = history(repo, capsys)[0]
    assert len(first["changes"]) > 10  # type: ignore[arg-type]


def test_new_version_looked_like_a_new_file(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    approval = repo / "approvals" / "e4-2018-858-04127-01.yaml"
    approval.write_bytes(approval.read_bytes().replace(b"      KH16F-S17:", b"      KH16F-S18:"))
    record = repo / "records" / f"{VIN}.yaml"
    record.write_bytes(record.read_bytes().replace(b"version: KH16F-S17", b"version: KH16F-S18"))
    commit_as(repo, "Ingrid Maas", "Add the version with 18-inch wheels")
    capsys.readouterr()
    assert main(["--repo", str(repo), "history", VIN]) == 0
    text = capsys.readouterr().out
    assert "approvals/e4-2018-858-04127-01.yaml: version KH16F-S18 of variant KH16F added with " in text
    # The first commit added the whole file.
    assert "approvals/e4-2018-858-04127-01.yaml: added with " in text
    events = history(repo, capsys)
    [added] = [event for event in events if event["added_part"] is not None]
    assert added["added_part"] == "version KH16F-S18 of variant KH16F"
