"""`ecoc release`: selection, evidence, ledger, commits and pushes, on real git repositories."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from conftest import git
from ecoc.cli import main
from pki import DAY, NOW, Pki, make_pki
from simulators import NapSimulator, VcaSimulator

IVI = "{http://eu.ereg.initialvehicleinformation.v2}"
VIN = "XNHKH16S1TE100214"
RECORDS = 12


def merge(repo: Path) -> None:
    """Push the local main branch to origin, as merging the reviewed changes would put them there."""
    git(repo, "push", "-q", "origin", "main", check=False)


def run(repo: Path, seal: list[str], outbox: Path, *extra: str) -> int:
    """Run ecoc release to the outbox with the repository as it is."""
    return main(["--repo", str(repo), "release", "--transport", "outbox", "--outbox", str(outbox), *seal, *extra])


def release(repo: Path, seal: list[str], outbox: Path, *extra: str) -> int:
    """Run ecoc release to the outbox after the local commits reached origin's main, as a release runs after a merge."""
    merge(repo)
    return run(repo, seal, outbox, *extra)


def ledger(repo: Path) -> list[dict[str, object]]:
    lines = (repo / "signed" / "ledger.jsonl").read_bytes().splitlines()
    previous = "0" * 64
    events = []
    for number, line in enumerate(lines, start=1):
        event = json.loads(line)
        assert event["seq"] == number
        assert event["prev"] == previous, f"line {number} does not chain to the line before it"
        previous = hashlib.sha256(line).hexdigest()
        events.append(event)
    return events


def log_of(repo: Path, ref: str = "HEAD") -> list[str]:
    return git(repo, "log", "--format=%s", ref).splitlines()


def test_release_commits_signs_and_delivers(
    repo: Path, seal: list[str], seal_pki: Pki, tmp_path: Path, origin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outbox = tmp_path / "outbox"
    assert release(repo, seal, outbox) == 0
    out = capsys.readouterr().out
    assert out.count(".xml into the outbox\n") == RECORDS
    delivered = sorted(outbox.glob("*.xml"))
    assert len(delivered) == RECORDS
    folder = repo / "signed" / VIN / "stage-1" / "v1"
    certificate = (folder / "certificate.xml").read_bytes()
    manifest = json.loads((folder / "manifest.json").read_bytes())
    reference = manifest["reference_id"]
    assert (outbox / f"{reference}.xml").read_bytes() == certificate
    assert manifest["vin"] == VIN
    assert manifest["version"] == 1
    assert manifest["record"] == f"records/{VIN}.yaml"
    assert manifest["digests"]["certificate"] == hashlib.sha256(certificate).hexdigest()
    assert manifest["source_commit"] == git(repo, "rev-parse", "HEAD~2").strip()
    assert manifest["signer"]["subject"].startswith("CN=Halvard Motors B.V. eCoC seal")
    assert manifest["transport"] == "outbox"
    assert set(manifest["digests"]) >= {"record", "approval", "rules", "xsd", "certificate"}
    delivery = json.loads((folder / "delivery-1.json").read_bytes())
    assert delivery["status"] == "accepted"
    receipt = folder / delivery["receipt"]["file"]
    assert hashlib.sha256(receipt.read_bytes()).hexdigest() == delivery["receipt"]["sha256"]
    root = etree.fromstring(certificate)
    assert root.findtext(f"{IVI}Header/{IVI}IviReferenceId") == reference
    assert root.findtext(f"{IVI}Header/{IVI}IviVersionNumber") == "1"

    events = ledger(repo)
    assert [e["event"] for e in events] == ["signed"] * RECORDS + ["delivery"] * RECORDS
    assert log_of(repo)[:2] == [
        f"Record {RECORDS} delivery result(s), {RECORDS} written to the outbox",
        f"Sign {RECORDS} certificate(s) for delivery",
    ]
    body = git(repo, "log", "-1", "--format=%B", "HEAD~1")
    assert f"Ecoc-Signed: {VIN} v1 {reference}" in body
    assert git(repo, "rev-parse", "HEAD") == git(origin, "rev-parse", "main")
    assert git(repo, "status", "--porcelain") == ""

    trust = tmp_path / "root.pem"
    trust.write_bytes(seal_pki.root.pem())
    assert main(["verify", str(repo / "signed"), "--trust", str(trust)]) == 0


def test_second_release_finds_nothing_to_do(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert release(repo, seal, tmp_path / "outbox") == 0
    head = git(repo, "rev-parse", "HEAD")
    capsys.readouterr()
    assert release(repo, seal, tmp_path / "outbox") == 0
    assert git(repo, "rev-parse", "HEAD") == head
    assert "signed 0, sent 0" in capsys.readouterr().err


def test_dry_run_lists_and_changes_nothing(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert release(repo, seal, tmp_path / "outbox", "--dry-run") == 0
    captured = capsys.readouterr()
    assert captured.out.count("would sign and deliver") == RECORDS
    assert f"would sign and deliver {VIN} IviVersionNumber 1 from records/{VIN}.yaml" in captured.out
    assert git(repo, "rev-parse", "HEAD") == head
    assert not list((repo / "signed").rglob("manifest.json"))
    assert not (tmp_path / "outbox").exists()


def test_release_output_hid_where_and_by_which_seal(
    repo: Path, seal: list[str], seal_pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outbox = tmp_path / "outbox"
    assert release(repo, seal, outbox, "--dry-run") == 0
    err = capsys.readouterr().err
    subject = seal_pki.signer.certificate.subject.rfc4514_string()
    assert f"would deliver to the outbox {outbox.resolve()}, sealed by {subject}\n" in err
    assert release(repo, seal, outbox) == 0
    out = capsys.readouterr().out
    assert f"{VIN} v1 " in out
    assert ".xml into the outbox\n" in out
    assert ": accepted: " not in out


def test_correction_left_the_outdated_file_in_the_outbox_silently(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outbox = tmp_path / "outbox"
    assert release(repo, seal, outbox) == 0
    first = json.loads((repo / "signed" / VIN / "stage-1" / "v1" / "manifest.json").read_bytes())
    change_record(repo, b"ActualMass: 1478", b"ActualMass: 1482", "weighed with the tow bar fitted")
    capsys.readouterr()
    assert release(repo, seal, outbox) == 0
    err = capsys.readouterr().err
    assert f"the outbox still contains {first['reference_id']}.xml, IviVersionNumber 1 of {VIN}" in err
    # Once the uploader took the file away, the next correction logs no warning.
    (outbox / f"{first['reference_id']}.xml").unlink()
    second = json.loads((repo / "signed" / VIN / "stage-1" / "v2" / "manifest.json").read_bytes())
    (outbox / f"{second['reference_id']}.xml").unlink()
    change_record(repo, b"ActualMass: 1482", b"ActualMass: 1484")
    path = repo / "records" / f"{VIN}.yaml"
    path.write_bytes(path.read_bytes().replace(b"weighed with the tow bar fitted", b"weighed once more"))
    git(repo, "commit", "-q", "-am", "weigh again")
    assert release(repo, seal, outbox) == 0
    assert (repo / "signed" / VIN / "stage-1" / "v3" / "manifest.json").is_file()
    assert "the outbox still contains" not in capsys.readouterr().err


def test_limit_and_shards_bound_the_batch(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outbox = tmp_path / "outbox"
    assert release(repo, seal, outbox, "--limit", "2", "--dry-run") == 0
    assert f"2 certificates to sign ({RECORDS - 2} more left by --limit)" in capsys.readouterr().err
    assert release(repo, seal, outbox, "--limit", "2") == 0
    assert len(list(outbox.glob("*.xml"))) == 2
    assert f"0 blocked, {RECORDS - 2} ready ones left by --limit;" in capsys.readouterr().err
    counts = []
    for shard in ("1/3", "2/3", "3/3"):
        before = len(list(outbox.glob("*.xml")))
        assert release(repo, seal, outbox, "--shard", shard) == 0
        counts.append(len(list(outbox.glob("*.xml"))) - before)
    assert sum(counts) == RECORDS - 2
    ledger(repo)


def change_record(repo: Path, old: bytes, new: bytes, reason: str | None = None) -> None:
    path = repo / "records" / f"{VIN}.yaml"
    data = path.read_bytes()
    assert old in data
    data = data.replace(old, new)
    if reason is not None:
        data += f"correction_reason: {reason}\n".encode()
    path.write_bytes(data)
    git(repo, "commit", "-q", "-am", "change a record")


def findings_of(repo: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    main(["--repo", str(repo), "check", "--format", "json"])
    return [f for f in json.loads(capsys.readouterr().out)["findings"] if f["severity"] == "error"]


def test_correction_values_listed_a_placeholder_time(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert release(repo, seal, tmp_path / "outbox") == 0
    change_record(repo, b"ActualMass: 1478", b"ActualMass: 1482", "weighed with the tow bar fitted")
    capsys.readouterr()
    main(["--repo", str(repo), "check", "--base", "HEAD~1", "--format", "json"])
    values = json.loads(capsys.readouterr().out)["base"]["values"]
    assert [(v["label"], v["before"], v["after"]) for v in values] == [("Actual mass", "1478 kg", "1482 kg")]


def test_correction_required_named_no_value(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert release(repo, seal, tmp_path / "outbox") == 0
    change_record(repo, b"ActualMass: 1478", b"ActualMass: 1482")
    [error] = findings_of(repo, capsys)
    assert error["rule"] == "release.correction-required"
    # The reviewer learns what the correction corrects, against the certificate that was delivered.
    assert str(error["message"]).endswith("; changed values: 13.2 Actual mass: 1478 kg -> 1482 kg")


def test_changed_record_is_released_as_a_correction(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outbox = tmp_path / "outbox"
    assert release(repo, seal, outbox) == 0
    first = json.loads((repo / "signed" / VIN / "stage-1" / "v1" / "manifest.json").read_bytes())
    change_record(repo, b"ActualMass: 1478", b"ActualMass: 1482")
    errors = findings_of(repo, capsys)
    assert [(f["rule"], f["file"]) for f in errors] == [("release.correction-required", f"records/{VIN}.yaml")]
    assert "give correction_reason" in str(errors[0]["hint"])
    assert release(repo, seal, outbox) == 0
    assert not (repo / "signed" / VIN / "stage-1" / "v2").exists()

    path = repo / "records" / f"{VIN}.yaml"
    path.write_bytes(path.read_bytes() + b"correction_reason: actual mass was measured without the tow bar\n")
    git(repo, "commit", "-q", "-am", "correct the actual mass")
    assert findings_of(repo, capsys) == []
    assert release(repo, seal, outbox) == 0
    second = json.loads((repo / "signed" / VIN / "stage-1" / "v2" / "manifest.json").read_bytes())
    assert second["version"] == 2
    assert second["reference_id"] != first["reference_id"]
    assert second["correction_reason"] == "actual mass was measured without the tow bar"
    signed = etree.fromstring((repo / "signed" / VIN / "stage-1" / "v2" / "certificate.xml").read_bytes())
    assert signed.findtext(f"{IVI}Header/{IVI}IviVersionNumber") == "2"
    assert signed.findtext(f"{IVI}Header/{IVI}IviReferenceId") == second["reference_id"]

    # The same reason cannot cover a further change.
    change_record(repo, b"ActualMass: 1482", b"ActualMass: 1485")
    errors = findings_of(repo, capsys)
    assert [f["rule"] for f in errors] == ["release.correction-required"]
    assert "the correction_reason is the one given for that version" in str(errors[0]["message"])


def test_release_refuses_uncommitted_sources(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = repo / "records" / f"{VIN}.yaml"
    path.write_bytes(path.read_bytes().replace(b"ActualMass: 1478", b"ActualMass: 1482"))
    assert release(repo, seal, tmp_path / "outbox") == 3
    err = capsys.readouterr().err
    assert f"records/{VIN}.yaml" in err
    assert "commit or stash them" in err


def test_staged_rename_names_both_paths_whole(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    git(repo, "mv", f"records/{VIN}.yaml", "records/renamed.yaml")
    assert release(repo, seal, tmp_path / "outbox") == 3
    err = capsys.readouterr().err
    assert f"(records/renamed.yaml, records/{VIN}.yaml)" in err


def test_render_and_release_give_the_same_version_time(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A later commit of another file moves HEAD's time, but not the time of the data.
    (repo / "NOTES.txt").write_text("notes\n", encoding="utf-8")
    git(repo, "add", "NOTES.txt")
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=a", "-c", "user.email=a@b.invalid", "commit", "-q", "-m", "notes"],
        env={**os.environ, "GIT_COMMITTER_DATE": "2030-01-01T00:00:00Z"},
        check=True,
    )
    assert (
        main(["--repo", str(repo), "render", str(repo / "records" / f"{VIN}.yaml"), "--out", str(tmp_path / "render")])
        == 0
    )
    rendered = (tmp_path / "render" / f"{VIN}.xml").read_bytes()
    assert release(repo, seal, tmp_path / "outbox") == 0
    signed = (repo / "signed" / VIN / "stage-1" / "v1" / "certificate.xml").read_bytes()
    pattern = re.compile(rb"<IviVersionDateTime>([^<]+)<")
    assert pattern.search(rendered).group(1) == pattern.search(signed).group(1)  # type: ignore[union-attr]
    assert b"2030" not in pattern.search(rendered).group(1)  # type: ignore[union-attr]


def test_release_refuses_another_branch(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    assert release(repo, seal, tmp_path / "outbox") == 3
    assert "ecoc release runs on the main branch, and feature is checked out" in capsys.readouterr().err


# Pushes the other clone's commit once, right after the release recorded its signing commit.
PUSH_WHILE_SIGNING = """#!/bin/sh
[ "$1" = committed ] || exit 0
grep -q " refs/heads/main$" || exit 0
git log -1 --format=%s | grep -q "^Sign " || exit 0
rm -f "$0"
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE
git -C "{other}" push -q origin main
"""


def merge_while_signing(repo: Path, origin: Path, path: str, old: bytes, new: bytes) -> Path:
    """Commit a change of `path` in another clone, and return the clone, which pushes it while `repo` signs."""
    other = repo.parent / "other"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(other)], check=True)
    target = other / path
    data = target.read_bytes() if target.exists() else b""
    assert old in data
    target.write_bytes(data.replace(old, new, 1) if old else data + new)
    git(other, "add", path)
    git(other, "commit", "-q", "-m", "merge another pull request")
    hook = repo / ".git" / "hooks" / "reference-transaction"
    hook.write_text(PUSH_WHILE_SIGNING.format(other=other), encoding="utf-8")
    hook.chmod(0o755)
    return other


def test_lost_push_race_is_replayed(repo: Path, seal: list[str], tmp_path: Path, origin: Path) -> None:
    merge_while_signing(repo, origin, "README.txt", b"", b"merged while the release ran\n")

    assert release(repo, seal, tmp_path / "outbox") == 0
    subjects = log_of(origin, "main")
    assert subjects[:3] == [
        f"Record {RECORDS} delivery result(s), {RECORDS} written to the outbox",
        f"Sign {RECORDS} certificate(s) for delivery",
        "merge another pull request",
    ]
    assert git(repo, "rev-parse", "HEAD") == git(origin, "rev-parse", "main")
    assert len(ledger(repo)) == 2 * RECORDS


def test_release_without_transport_is_a_usage_error(
    repo: Path, seal: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--repo", str(repo), "release", *seal]) == 2
    assert "no transport for the certificates" in capsys.readouterr().err


def configure(repo: Path, service: NapSimulator | VcaSimulator, **changes: object) -> None:
    """Point release.* of ecoc.yaml at the simulator and commit it, as a release needs."""
    settings = service.settings(**changes).model_dump(mode="json", exclude_none=True)
    with (repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
        handle.write("\nrelease: " + json.dumps(settings) + "\n")
    git(repo, "commit", "-q", "-am", "deliver to the NAP")


def release_nap(repo: Path, seal: list[str], *extra: str) -> int:
    merge(repo)
    return main(["--repo", str(repo), "release", *seal, *extra])


@pytest.fixture
def nap(tmp_path: Path, seal_pki: Pki, official_xsd: Path) -> Iterator[NapSimulator]:
    with NapSimulator(tmp_path / "nap", trust=[seal_pki.root.certificate], schema=official_xsd) as simulator:
        yield simulator


def test_release_delivers_to_a_nap_over_tls(
    repo: Path, seal: list[str], nap: NapSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(repo, nap)
    assert release_nap(repo, seal) == 0
    assert len(nap.accepted_ids) == RECORDS
    folder = repo / "signed" / VIN / "stage-1" / "v1"
    delivery = json.loads((folder / "delivery-1.json").read_bytes())
    assert delivery["status"] == "accepted"
    assert delivery["receipt_id"]
    receipt = (folder / delivery["receipt"]["file"]).read_bytes()
    reference = json.loads((folder / "manifest.json").read_bytes())["reference_id"]
    [received] = [entry for entry in nap.received if entry.reference_id == reference]
    assert receipt == received.answer
    assert received.document == (folder / "certificate.xml").read_bytes()
    assert received.problems == []
    assert delivery["transport"] == "nap-soap"


def test_rejection_blocks_until_a_correction(
    repo: Path, seal: list[str], nap: NapSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(repo, nap)
    nap.scenario = "rejected"
    nap.reason = "ActualMass exceeds the technically permissible maximum laden mass"
    assert release_nap(repo, seal) == 1
    out = capsys.readouterr().out
    assert out.count(": rejected: ") == RECORDS
    errors = findings_of(repo, capsys)
    rejected = [f for f in errors if f["file"] == f"records/{VIN}.yaml"]
    assert [f["rule"] for f in rejected] == ["release.rejected"]
    assert nap.reason in str(rejected[0]["message"])
    main(["--repo", str(repo), "status", "--format", "json"])
    rows = {row["vin"]: row for row in json.loads(capsys.readouterr().out)["records"]}
    assert rows[VIN]["state"] == "rejected"
    assert nap.reason in str(rows[VIN]["missing"])

    # Nothing is sent again while the data stays as it was.
    nap.scenario = "accepted"
    received = len(nap.received)
    assert release_nap(repo, seal) == 0
    assert len(nap.received) == received

    change_record(repo, b"ActualMass: 1478", b"ActualMass: 1476", reason="actual mass measured again")
    assert release_nap(repo, seal) == 0
    assert (repo / "signed" / VIN / "stage-1" / "v2" / "delivery-1.json").exists()
    capsys.readouterr()
    main(["--repo", str(repo), "status", "--format", "json"])
    rows = {row["vin"]: row for row in json.loads(capsys.readouterr().out)["records"]}
    assert rows[VIN]["state"] == "delivered"


@pytest.mark.parametrize("scenario", ["server-error", "timeout", "malformed", "forbidden"])
def test_failed_delivery_is_sent_again(
    repo: Path, seal: list[str], nap: NapSimulator, capsys: pytest.CaptureFixture[str], scenario: str
) -> None:
    configure(repo, nap, read_timeout=0.5)
    nap.scenario = scenario
    assert release_nap(repo, seal, "--limit", "1") == 1
    out = capsys.readouterr().out
    assert out.count(": failed: ") == 1
    folder = next((repo / "signed").rglob("manifest.json")).parent
    assert json.loads((folder / "delivery-1.json").read_bytes())["status"] == "failed"
    main(["--repo", str(repo), "status", "--format", "json"])
    rows = {row["vin"]: row for row in json.loads(capsys.readouterr().out)["records"]}
    assert sorted(row["state"] for row in rows.values()).count("signed") == 1
    # The board says that the delivery failed, and why.
    [signed] = [row for row in rows.values() if row["state"] == "signed"]
    assert str(signed["missing"][0]).startswith("the authority's receipt: delivery failed once, last: ")

    nap.scenario = "accepted"
    assert release_nap(repo, seal, "--limit", "1") == 0
    attempts = [json.loads(p.read_bytes()) for p in sorted(folder.glob("delivery-*.json"))]
    assert [a["status"] for a in attempts] == ["failed", "accepted"]
    # A certificate the NAP took before it timed out is known there: the resend is a duplicate.
    assert attempts[1]["duplicate"] is (scenario == "timeout")
    reference = json.loads((folder / "manifest.json").read_bytes())["reference_id"]
    assert nap.accepted_ids.count(reference) == 1


def test_release_delivers_to_the_vca_and_polls_the_status(
    repo: Path,
    seal: list[str],
    seal_pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with VcaSimulator(tmp_path / "vca", trust=[seal_pki.root.certificate]) as vca:
        monkeypatch.setenv(vca.secret_variable, vca.client_secret)
        configure(repo, vca)
        assert release_nap(repo, seal) == 0
        assert len(vca.accepted_ids) == RECORDS
        assert vca.tokens_issued == 1
    folder = repo / "signed" / VIN / "stage-1" / "v1"
    delivery = json.loads((folder / "delivery-1.json").read_bytes())
    assert delivery["status"] == "accepted"
    assert delivery["transport"] == "vca-rest"
    receipt = json.loads((folder / delivery["receipt"]["file"]).read_bytes())
    assert receipt["status"] == "Accepted"
    captured = capsys.readouterr()
    assert vca.client_secret not in captured.out + captured.err
    assert vca.client_secret not in (repo / "signed" / "ledger.jsonl").read_text(encoding="utf-8")


def test_evidence_is_never_rewritten(repo: Path, seal: list[str], tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    assert release(repo, seal, outbox) == 0
    before = {path: path.read_bytes() for path in (repo / "signed").rglob("*") if path.is_file()}
    ledger_before = (repo / "signed" / "ledger.jsonl").read_bytes()
    change_record(repo, b"ActualMass: 1478", b"ActualMass: 1482", reason="actual mass measured with the tow bar")
    assert release(repo, seal, outbox) == 0
    for path, data in before.items():
        if path.name != "ledger.jsonl":
            assert path.read_bytes() == data, f"{path} was rewritten"
    ledger_after = (repo / "signed" / "ledger.jsonl").read_bytes()
    assert ledger_after.startswith(ledger_before)
    assert len(ledger(repo)) == 2 * RECORDS + 2


def test_release_keeps_unknown_files_in_signed(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert release(repo, seal, tmp_path / "outbox", "--limit", "1") == 0
    stray = repo / "signed" / "notes.txt"
    stray.write_text("auditor's working notes\n", encoding="utf-8")
    head = git(repo, "rev-parse", "HEAD")
    capsys.readouterr()
    assert release(repo, seal, tmp_path / "outbox") == 3
    err = capsys.readouterr().err
    assert "signed/notes.txt (not a file the release writes)" in err
    assert "move other files out of it" in err
    assert stray.read_text(encoding="utf-8") == "auditor's working notes\n"
    assert git(repo, "rev-parse", "HEAD") == head


def test_release_keeps_edited_evidence_for_review(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert release(repo, seal, tmp_path / "outbox", "--limit", "1") == 0
    manifest = next((repo / "signed").glob("*/stage-1/v1/manifest.json"))
    edited = manifest.read_bytes().replace(b'"transport": "outbox"', b'"transport": "nap-soap"')
    manifest.write_bytes(edited)
    ledger_file = repo / "signed" / "ledger.jsonl"
    ledger_file.write_bytes(ledger_file.read_bytes().splitlines(keepends=True)[0])
    capsys.readouterr()
    assert release(repo, seal, tmp_path / "outbox") == 3
    err = capsys.readouterr().err
    relative = manifest.relative_to(repo).as_posix()
    assert f"{relative} (differs from its committed version)" in err
    assert "signed/ledger.jsonl (lines changed or removed; the release only appends)" in err
    assert manifest.read_bytes() == edited
    assert len(ledger_file.read_bytes().splitlines()) == 1


def test_release_delivers_over_parallel_connections(repo: Path, seal: list[str], nap: NapSimulator) -> None:
    configure(repo, nap)
    assert release_nap(repo, seal) == 0
    assert len(nap.accepted_ids) == RECORDS
    assert nap.peak_connections >= 2
    assert nap.connections <= 4
    states = [json.loads(path.read_bytes())["status"] for path in (repo / "signed").rglob("delivery-1.json")]
    assert states == ["accepted"] * RECORDS
    events = ledger(repo)
    delivered = [event["vin"] for event in events if event["event"] == "delivery"]
    signed = [event["vin"] for event in events if event["event"] == "signed"]
    assert delivered == signed


def test_one_connection_delivers_in_turn(repo: Path, seal: list[str], nap: NapSimulator) -> None:
    settings = nap.settings().model_copy(update={"connections": 1}).model_dump(mode="json", exclude_none=True)
    with (repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
        handle.write("\nrelease: " + json.dumps(settings) + "\n")
    git(repo, "commit", "-q", "-am", "deliver over one connection")
    assert release_nap(repo, seal) == 0
    assert len(nap.accepted_ids) == RECORDS
    assert nap.connections == 1
    assert nap.peak_connections == 1


def test_outbox_file_stops_the_release_before_signing(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "outbox"
    blocker.write_text("not a folder\n", encoding="utf-8")
    head = git(repo, "rev-parse", "HEAD")
    assert release(repo, seal, blocker / "sub") == 3
    assert f"the outbox {blocker / 'sub'} lies below the file {blocker}, not a folder" in capsys.readouterr().err
    assert git(repo, "rev-parse", "HEAD") == head
    assert not (repo / "signed" / VIN).exists()


def test_named_remote_that_is_missing_stops_the_release(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
        handle.write("\nrelease: {remote: upstream}\n")
    git(repo, "commit", "-q", "-am", "push evidence to upstream")
    assert release(repo, seal, tmp_path / "outbox") == 3
    assert "the repository has no remote upstream to push the evidence to" in capsys.readouterr().err
    assert not (tmp_path / "outbox").exists()


def test_release_without_remote_says_the_evidence_stays(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    git(repo, "remote", "remove", "origin")
    assert release(repo, seal, tmp_path / "outbox") == 0
    assert "the repository has no remote origin, so the evidence stays in this clone" in capsys.readouterr().err


def test_no_push_with_a_remote_warns_that_other_clones_would_deliver_again(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert release(repo, seal, tmp_path / "outbox", "--no-push", "--limit", "1") == 0
    err = capsys.readouterr().err
    assert "--no-push keeps the evidence in this clone: a release from another clone of origin would sign" in err


def test_refused_push_quotes_the_remote_s_reason(
    repo: Path, seal: list[str], tmp_path: Path, origin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    merge(repo)
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\necho 'error: GH006: Protected branch update failed for refs/heads/main.' >&2\nexit 1\n",
        encoding="utf-8",
    )
    hook.chmod(0o755)
    assert run(repo, seal, tmp_path / "outbox") == 3
    assert "the remote says: error: GH006: Protected branch update failed for refs/heads/main." in (
        capsys.readouterr().err
    )


def test_stale_index_lock_stops_the_release_before_signing(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = repo / ".git" / "index.lock"
    lock.write_bytes(b"")
    assert release(repo, seal, tmp_path / "outbox") == 3
    err = capsys.readouterr().err
    assert "git's index is locked" in err
    assert f"delete {lock}" in err
    assert not (repo / "signed" / VIN).exists()


def test_push_to_a_missing_repository_names_the_reason(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    git(repo, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    assert release(repo, seal, tmp_path / "outbox") == 3
    err = capsys.readouterr().err
    assert "cannot fetch main from origin:" in err
    assert "does not appear to be a git repository" in err
    assert not (tmp_path / "outbox").exists()


def test_signed_commits_stay_signed(repo: Path, seal: list[str], tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("install ssh-keygen (Debian openssh-client) to sign git commits")
    key = tmp_path / "git-signing"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    git(repo, "config", "gpg.format", "ssh")
    git(repo, "config", "user.signingkey", str(key))
    git(repo, "config", "commit.gpgsign", "true")
    assert release(repo, seal, tmp_path / "outbox") == 0
    for ref in ("HEAD", "HEAD~1"):
        assert log_of(repo, ref)[0].startswith(("Record ", "Sign "))
        assert "-----BEGIN SSH SIGNATURE-----" in git(repo, "cat-file", "commit", ref)


def release_and_lose_a_result(repo: Path, seal: list[str], tmp_path: Path) -> Path:
    """Release everything, then commit the loss of VIN's delivery result; return its evidence folder."""
    assert release(repo, seal, tmp_path / "outbox") == 0
    folder = repo / "signed" / VIN / "stage-1" / "v1"
    git(repo, "rm", "-q", str(folder / "delivery-1.json"))
    git(repo, "commit", "-q", "-m", "lose a delivery result")
    return folder


def test_receipt_without_result_gets_the_next_attempt(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A run killed between writing the receipt and its delivery result leaves receipt-1 alone.
    folder = release_and_lose_a_result(repo, seal, tmp_path)
    assert release(repo, seal, tmp_path / "outbox") == 0
    assert (folder / "receipt-1.json").is_file()
    result = json.loads((folder / "delivery-2.json").read_bytes())
    assert result["status"] == "accepted"
    assert result["duplicate"] is True
    assert result["receipt"]["file"] == "receipt-2.json"


def test_release_keeps_a_certificate_no_manifest_names(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stray = repo / "signed" / VIN / "stage-1" / "v1" / "certificate.xml"
    stray.parent.mkdir(parents=True)
    stray.write_text("<draft/>\n", encoding="utf-8")
    assert release(repo, seal, tmp_path / "outbox") == 3
    assert f"signed/{VIN}/stage-1/v1/certificate.xml (no manifest beside it names this certificate)" in (
        capsys.readouterr().err
    )
    assert stray.read_text(encoding="utf-8") == "<draft/>\n"


def test_release_sees_ignored_files_in_signed(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / ".git" / "info" / "exclude").write_text("signed/scratch*\n", encoding="utf-8")
    scratch = repo / "signed" / "scratch.txt"
    scratch.write_text("kept out of git\n", encoding="utf-8")
    assert release(repo, seal, tmp_path / "outbox") == 3
    assert "signed/scratch.txt (not a file the release writes)" in capsys.readouterr().err
    assert scratch.is_file()


def test_dry_run_names_the_blocked_records(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = repo / "records" / f"{VIN}.yaml"
    path.write_bytes(path.read_bytes().replace(b"ActualMass: 1478", b"ActualMass: 99999"))
    git(repo, "commit", "-q", "-am", "too heavy")
    assert release(repo, seal, tmp_path / "outbox", "--dry-run") == 0
    captured = capsys.readouterr()
    assert f"blocked records/{VIN}.yaml: mass." in captured.out
    assert f"{RECORDS - 1} certificates to sign, 0 to deliver again, 1 blocked" in captured.err


def test_real_run_named_no_blocked_record(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outbox = tmp_path / "outbox"
    assert release(repo, seal, outbox) == 0
    change_record(repo, b"ActualMass: 1478", b"ActualMass: 1482")
    capsys.readouterr()
    assert release(repo, seal, outbox) == 0
    captured = capsys.readouterr()
    # The vehicle that waits for its correction is named, not only counted.
    assert f"blocked records/{VIN}.yaml: release.correction-required: " in captured.out
    assert "; 1 blocked; 0 commits" in captured.err


def test_summary_counts_duplicate_deliveries(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release_and_lose_a_result(repo, seal, tmp_path)
    capsys.readouterr()
    assert release(repo, seal, tmp_path / "outbox") == 0
    assert "sent 1: 1 written to the outbox (1 of them already there), 0 rejected, 0 failed;" in capsys.readouterr().err


def test_seal_without_its_issuer_is_refused_before_signing(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    without_chain = seal[:4]
    assert without_chain[0::2] == ["--key", "--cert"]
    head = git(repo, "rev-parse", "HEAD")
    issuer = "CN=Halvard Test Issuing CA,O=Halvard Motors B.V.,C=NL"
    for extra in ((), ("--dry-run",)):
        assert release(repo, without_chain, tmp_path / "outbox", *extra) == 3
        err = capsys.readouterr().err
        assert f"the seal's chain lacks {issuer}, the issuer of CN=Halvard Motors B.V. eCoC seal" in err
        assert f"pass the PEM certificates of {issuer} and of the CAs above it with --chain" in err
    assert git(repo, "rev-parse", "HEAD") == head
    assert not (repo / "signed" / VIN).exists()
    assert not (tmp_path / "outbox").exists()


def test_seal_outside_signing_trust_is_refused_before_signing(
    repo: Path, seal: list[str], seal_pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Another root with the same name, which only its key distinguishes.
    (repo / "trust.pem").write_bytes(make_pki().root.pem())
    with (repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
        handle.write("\nsigning: {trust: [trust.pem]}\n")
    git(repo, "add", "trust.pem", "ecoc.yaml")
    git(repo, "commit", "-q", "-m", "trust the seal's root")
    head = git(repo, "rev-parse", "HEAD")
    assert release(repo, seal, tmp_path / "outbox") == 3
    err = capsys.readouterr().err
    assert "the seal's chain lacks CN=Halvard Test Root CA,O=Halvard Motors B.V.,C=NL" in err
    # The hint offers --chain only for a CA below a trusted root, and otherwise a seal from such a CA.
    assert "is a CA below a root of signing.trust (CN=Halvard Test Root CA" in err
    assert "Otherwise the seal cannot sign here: get one from a CA under a root that signing.trust names" in err
    assert git(repo, "rev-parse", "HEAD") == head
    assert not (repo / "signed" / VIN).exists()

    (repo / "trust.pem").write_bytes(seal_pki.root.pem())
    git(repo, "commit", "-q", "-am", "trust the right root")
    assert release(repo, seal, tmp_path / "outbox") == 0
    assert len(list((tmp_path / "outbox").glob("*.xml"))) == RECORDS


def test_stale_clone_is_refused_before_signing(
    repo: Path, seal: list[str], tmp_path: Path, origin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(other)], check=True)
    change_record(other, b"ActualMass: 1478", b"ActualMass: 1482")
    git(other, "push", "-q", "origin", "main")
    head = git(repo, "rev-parse", "HEAD")

    assert run(repo, seal, tmp_path / "outbox") == 3
    err = capsys.readouterr().err
    assert "origin/main has 1 commit(s) that HEAD lacks, so this clone would sign old data" in err
    assert "git pull --ff-only origin main" in err
    assert git(repo, "rev-parse", "HEAD") == head
    assert not (repo / "signed" / VIN).exists()
    assert not (tmp_path / "outbox").exists()

    git(repo, "pull", "-q", "--ff-only", "origin", "main")
    assert run(repo, seal, tmp_path / "outbox") == 0
    manifest = json.loads((repo / "signed" / VIN / "stage-1" / "v1" / "manifest.json").read_bytes())
    record = (repo / "records" / f"{VIN}.yaml").read_bytes()
    assert b"ActualMass: 1482" in record
    assert manifest["digests"]["record"] == hashlib.sha256(record).hexdigest()


def test_unpushed_evidence_that_conflicts_with_the_remote_is_kept_and_named(
    repo: Path, seal: list[str], tmp_path: Path, origin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # This clone delivers with --no-push; another clone then releases the same certificates.
    assert release(repo, seal, tmp_path / "outbox", "--no-push", "--limit", "1") == 0
    head = git(repo, "rev-parse", "HEAD")
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(other)], check=True)
    # Another seal makes the other clone's evidence differ even when both runs sign in the same
    # second, where one seal's RSA signatures and the manifests' times would be equal.
    files = make_pki().write(tmp_path / "other-seal")
    other_seal = ["--key", str(files["key"]), "--cert", str(files["cert"]), "--chain", str(files["chain"])]
    assert run(other, other_seal, tmp_path / "other-outbox", "--limit", "1") == 0
    capsys.readouterr()
    # The dry run finds the conflict that the real run would meet.
    assert run(repo, seal, tmp_path / "outbox", "--dry-run") == 3
    err = capsys.readouterr().err
    assert "the evidence committed here and not pushed differs from the evidence on origin/main" in err
    assert run(repo, seal, tmp_path / "outbox") == 3
    assert "keep its delivery and receipt files" in capsys.readouterr().err
    # This clone's own commits, with the authority's answers, are still there.
    assert git(repo, "rev-parse", "HEAD") == head


def test_data_changed_while_signing_is_not_delivered(
    repo: Path, seal: list[str], tmp_path: Path, origin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = f"records/{VIN}.yaml"
    other = merge_while_signing(repo, origin, path, b"ActualMass: 1478", b"ActualMass: 1482")
    outbox = tmp_path / "outbox"

    assert release(repo, seal, outbox) == 3
    err = capsys.readouterr().err
    assert "while the release ran, origin/main received changes to the data of certificates" in err
    assert f"signed here: {path}" in err
    assert f"the {RECORDS} certificate(s) signed and not yet delivered were dropped" in err
    assert "run the release again to sign the new data" in err
    assert not list(outbox.glob("*.xml"))
    assert git(origin, "rev-parse", "main") == git(other, "rev-parse", "HEAD")
    assert not [subject for subject in log_of(origin, "main") if subject.startswith("Sign ")]
    assert git(repo, "rev-parse", "HEAD") == git(other, "rev-parse", "HEAD")
    assert git(repo, "status", "--porcelain") == ""
    assert not (repo / "signed" / VIN).exists()

    assert release(repo, seal, outbox) == 0
    manifest = json.loads((repo / "signed" / VIN / "stage-1" / "v1" / "manifest.json").read_bytes())
    assert manifest["source_commit"] == git(other, "rev-parse", "HEAD").strip()
    assert manifest["digests"]["record"] == hashlib.sha256((repo / path).read_bytes()).hexdigest()
    assert len(list(outbox.glob("*.xml"))) == RECORDS
    assert len(ledger(repo)) == 2 * RECORDS


def test_unpushed_local_commit_is_refused_before_signing(
    repo: Path, seal: list[str], tmp_path: Path, origin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change_record(repo, b"ActualMass: 1478", b"ActualMass: 1482")
    head = git(repo, "rev-parse", "HEAD")
    pushed = git(origin, "rev-parse", "main")

    assert run(repo, seal, tmp_path / "outbox") == 3
    err = capsys.readouterr().err
    assert f"HEAD has 1 commit(s) that origin/main lacks, first {head[:12]} (change a record)" in err
    assert "push them through review first" in err
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(origin, "rev-parse", "main") == pushed
    assert not (repo / "signed" / VIN).exists()
    assert not (tmp_path / "outbox").exists()


def expired_seal(folder: Path) -> list[str]:
    files = make_pki(not_before=NOW - 400 * DAY, not_after=NOW - DAY).write(folder)
    return ["--key", str(files["key"]), "--cert", str(files["cert"]), "--chain", str(files["chain"])]


def break_release(repo: Path, case: str) -> None:
    """Set up a condition that stops a release before anything is signed."""
    if case == "another branch":
        git(repo, "checkout", "-q", "-b", "feature")
    elif case == "uncommitted record":
        path = repo / "records" / f"{VIN}.yaml"
        path.write_bytes(path.read_bytes().replace(b"ActualMass: 1478", b"ActualMass: 1482"))
    elif case == "index lock":
        (repo / ".git" / "index.lock").write_bytes(b"")


@pytest.mark.parametrize(
    ("case", "message", "code"),
    [
        ("another branch", "ecoc release runs on the main branch, and feature is checked out", 3),
        ("uncommitted record", f"1 file(s) differ from the last commit (records/{VIN}.yaml)", 3),
        ("index lock", "git's index is locked", 3),
        ("expired seal", "is valid from", 3),
        ("no key", "no signing key", 2),
        ("no transport", "no transport for the certificates", 2),
    ],
)
def test_dry_run_fails_where_the_release_fails(
    repo: Path,
    seal: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    message: str,
    code: int,
) -> None:
    break_release(repo, case)
    options = ["--outbox", str(tmp_path / "outbox")]
    if case != "no transport":
        options = ["--transport", "outbox", *options]
    if case == "expired seal":
        options += expired_seal(tmp_path / "expired")
    elif case != "no key":
        options += seal
    head = git(repo, "rev-parse", "HEAD")
    capsys.readouterr()

    assert main(["--repo", str(repo), "release", "--dry-run", *options]) == code
    dry = capsys.readouterr()
    assert message in dry.err
    assert dry.out.count("would sign and deliver") == RECORDS
    assert "1 problem would stop the release" in dry.err
    assert main(["--repo", str(repo), "release", *options]) == code
    assert message in capsys.readouterr().err
    assert git(repo, "rev-parse", "HEAD") == head
    assert not (repo / "signed" / VIN).exists()
    assert not (tmp_path / "outbox").exists()


def test_dry_run_lists_every_problem(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for case in ("another branch", "uncommitted record", "index lock"):
        break_release(repo, case)
    assert run(repo, expired_seal(tmp_path / "expired"), tmp_path / "outbox", "--dry-run") == 3
    err = capsys.readouterr().err
    assert err.count("error: ") == 4
    assert "4 problems would stop the release" in err


def test_unusable_outbox_is_refused_before_signing(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The kernel's process file system takes no new folder, not even from root.
    outbox = Path("/proc/nope")
    head = git(repo, "rev-parse", "HEAD")
    for extra in (("--dry-run",), ()):
        assert release(repo, seal, outbox, *extra) == 3
        err = capsys.readouterr().err
        assert f"--outbox: the outbox {outbox} cannot be created: No such file or directory" in err
        assert "pass --outbox with a folder that can be created and written" in err
    assert git(repo, "rev-parse", "HEAD") == head
    assert not (repo / "signed" / VIN).exists()


def test_certificate_of_another_key_names_cert_and_key(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = make_pki().write(tmp_path / "other")
    mismatched = [*seal[:3], str(other["cert"]), *seal[4:]]
    assert release(repo, mismatched, tmp_path / "outbox") == 3
    err = capsys.readouterr().err
    assert f"{other['cert']}: the certificate does not belong to the key {seal[1]}" in err
    assert "pass the seal's certificate with --cert and its private key with --key" in err
    assert not (repo / "signed" / VIN).exists()


def test_outbox_of_the_environment_is_named(
    repo: Path, seal: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("not a folder\n", encoding="utf-8")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("ECOC_OUTBOX", "../afile")
    assert main(["--repo", str(repo), "release", "--transport", "outbox", *seal]) == 3
    err = capsys.readouterr().err
    assert f"ECOC_OUTBOX: the outbox {tmp_path / 'afile'} is a file, not a folder" in err
    assert "set ECOC_OUTBOX to a folder that can be created and written, or unset it" in err
    assert "--outbox" not in err


def test_key_alone_ignored_configured_cert(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = repo / "ecoc.yaml"
    signing = f"\nsigning:\n  cert: {seal[3]}\n  chain: {seal[5]}\n"
    settings.write_text(settings.read_text(encoding="utf-8") + signing, encoding="utf-8")
    git(repo, "commit", "-q", "-am", "name the seal certificate")
    assert release(repo, seal[:2], tmp_path / "outbox", "--dry-run") == 0
    err = capsys.readouterr().err
    assert "needs its certificate" not in err
    assert f"{RECORDS} certificates to sign" in err
    assert release(repo, seal[:2], tmp_path / "outbox") == 0
    manifest = json.loads((repo / "signed" / VIN / "stage-1" / "v1" / "manifest.json").read_bytes())
    assert str(manifest["signer"]["subject"]).startswith("CN=Halvard Motors B.V. eCoC seal")


def test_missing_key_file_gave_no_hint(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.key"
    assert release(repo, ["--key", str(missing), *seal[2:]], tmp_path / "outbox") == 3
    err = capsys.readouterr().err
    assert f"{missing}: cannot read the key file: No such file or directory" in err
    assert "hint: pass the seal's private key file with --key, or correct signing.key in ecoc.yaml" in err


def test_missing_chain_file_names_the_chain_option(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing-chain.pem"
    assert release(repo, [*seal[:5], str(missing)], tmp_path / "outbox") == 3
    err = capsys.readouterr().err
    assert f"{missing}: cannot read the --chain certificate file: No such file or directory" in err
    assert "pass --chain (or set signing.chain in ecoc.yaml) with the PEM file of the intermediate CA" in err


RELEASE_WHILE_SIGNING = """#!/bin/sh
[ "$1" = committed ] || exit 0
grep -q " refs/heads/main$" || exit 0
git log -1 --format=%s | grep -q "^Sign " || exit 0
rm -f "$0"
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE
"{python}" -m ecoc --repo "{other}" release --transport outbox --outbox "{outbox}" {seal} > /dev/null 2>&1
"""


def test_two_releases_at_once_deliver_each_certificate_once(
    repo: Path, seal: list[str], tmp_path: Path, origin: Path
) -> None:
    import sys

    # A second clone releases the same certificates after this one signed them and before it
    # pushes, in the same second, so both sign the same bytes.
    other = repo.parent / "other"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(other)], check=True)
    hook = repo / ".git" / "hooks" / "reference-transaction"
    quoted = " ".join(f'"{part}"' for part in seal)
    hook.write_text(
        RELEASE_WHILE_SIGNING.format(python=sys.executable, other=other, outbox=tmp_path / "other-outbox", seal=quoted),
        encoding="utf-8",
    )
    hook.chmod(0o755)
    assert release(repo, seal, tmp_path / "outbox") == 0
    assert len(list((tmp_path / "other-outbox").glob("*.xml"))) == RECORDS
    # This run found the certificates published by the other, and delivered none of them.
    assert not list((tmp_path / "outbox").glob("*.xml"))
    assert git(repo, "rev-parse", "HEAD") == git(origin, "rev-parse", "main")
    assert len(ledger(repo)) == 2 * RECORDS
    # With nothing delivered, this run commits no empty record of delivery results.
    assert not [subject for subject in log_of(origin, "main") if subject.startswith("Record 0 ")]


def test_failed_version_replaced_by_a_correction_is_not_sent(
    repo: Path, seal: list[str], nap: NapSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(repo, nap, read_timeout=0.5)
    nap.scenario = "server-error"
    assert release_nap(repo, seal, "--limit", "1") == 1
    folder = next((repo / "signed").rglob("manifest.json")).parent
    manifest = json.loads((folder / "manifest.json").read_bytes())
    record = repo / str(manifest["record"])
    text = record.read_text(encoding="utf-8")
    mass = re.search(r"ActualMass: ([0-9]+)", text)
    assert mass is not None
    lighter = text.replace(mass.group(0), f"ActualMass: {int(mass.group(1)) - 1}", 1)
    record.write_text(lighter + "correction_reason: actual mass re-measured\n", encoding="utf-8")
    git(repo, "commit", "-q", "-am", "correct the actual mass")
    nap.scenario = "accepted"
    capsys.readouterr()
    assert release_nap(repo, seal, "--limit", "1", "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"would not deliver {manifest['vin']} IviVersionNumber 1 ({folder.relative_to(repo)})" in out
    assert release_nap(repo, seal, "--limit", "1") == 0
    # Only the correction reaches the NAP: the outdated version 1 is not sent after it.
    assert manifest["reference_id"] not in nap.accepted_ids
    assert len(nap.accepted_ids) == 1


def test_endpoint_that_fails_every_delivery_stops_the_run_early(
    repo: Path, seal: list[str], nap: NapSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(repo, nap)
    nap.scenario = "server-error"
    assert release_nap(repo, seal) == 1
    captured = capsys.readouterr()
    failed = captured.out.count(": failed: ")
    # The deliveries under way when the fifth failure arrived still finish; the rest are not sent.
    assert 5 <= failed < RECORDS
    assert f", {RECORDS - failed} not sent after 5 failures in a row" in captured.err
    assert len(list((repo / "signed").rglob("delivery-*.json"))) == failed
    nap.scenario = "accepted"
    assert release_nap(repo, seal) == 0
    assert len(set(nap.accepted_ids)) == RECORDS


def test_dry_run_finds_a_nap_whose_server_certificate_is_not_trusted(
    repo: Path, seal: list[str], seal_pki: Pki, nap: NapSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong-ca.pem"
    wrong.write_bytes(seal_pki.root.pem())
    configure(repo, nap, ca=str(wrong))
    assert release_nap(repo, seal, "--dry-run") == 3
    err = capsys.readouterr().err
    assert "the server certificate of the NAP at " in err
    assert "every delivery would fail the same way" in err
    assert not nap.received


def test_acceptance_without_a_receipt_id_is_not_a_delivery(
    repo: Path, seal: list[str], nap: NapSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(repo, nap)
    nap.scenario = "no-receipt"
    assert release_nap(repo, seal, "--limit", "1") == 1
    assert "accepted the certificate but gave no ReceiptId, so the delivery is unproven" in capsys.readouterr().out
    folder = next((repo / "signed").rglob("manifest.json")).parent
    nap.scenario = "accepted"
    assert release_nap(repo, seal, "--limit", "1") == 0
    attempts = [json.loads(p.read_bytes()) for p in sorted(folder.glob("delivery-*.json"))]
    assert [(a["status"], a["receipt_id"]) for a in attempts] == [("failed", None), ("accepted", "NAP-000001")]


def test_failed_version_whose_record_changed_is_held_back(
    repo: Path, seal: list[str], nap: NapSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(repo, nap, read_timeout=0.5)
    nap.scenario = "server-error"
    assert release_nap(repo, seal, "--limit", "1") == 1
    folder = next((repo / "signed").rglob("manifest.json")).parent
    manifest = json.loads((folder / "manifest.json").read_bytes())
    record = repo / str(manifest["record"])
    text = record.read_text(encoding="utf-8")
    mass = re.search(r"ActualMass: ([0-9]+)", text)
    assert mass is not None
    # The data changes without a correction_reason: version 1 is outdated, and no correction is ready.
    record.write_text(text.replace(mass.group(0), f"ActualMass: {int(mass.group(1)) - 1}", 1), encoding="utf-8")
    git(repo, "commit", "-q", "-am", "change the actual mass")
    nap.scenario = "accepted"
    capsys.readouterr()
    assert release_nap(repo, seal, "--limit", "1", "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"would hold back {manifest['vin']} IviVersionNumber 1 ({folder.relative_to(repo)}): its record is " in out
    release_nap(repo, seal, "--limit", "1")
    assert f"held back {manifest['vin']} IviVersionNumber 1" in capsys.readouterr().out
    assert manifest["reference_id"] not in nap.accepted_ids


@pytest.mark.parametrize("hiding", ["ignored", "skip-worktree"])
def test_record_hidden_from_git_is_not_released(
    repo: Path, seal: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], hiding: str
) -> None:
    if hiding == "ignored":
        text = (repo / "records" / f"{VIN}.yaml").read_text(encoding="utf-8")
        (repo / "records" / "XNHKH16S1TE199999.yaml").write_text(
            text.replace(VIN, "XNHKH16S1TE199999"), encoding="utf-8"
        )
        (repo / ".git" / "info" / "exclude").write_text("records/XNHKH16S1TE199999.yaml\n", encoding="utf-8")
        hidden = "records/XNHKH16S1TE199999.yaml"
    else:
        hidden = f"records/{VIN}.yaml"
        git(repo, "update-index", "--skip-worktree", hidden)
        path = repo / hidden
        path.write_text(path.read_text(encoding="utf-8").replace("ActualMass: 1478", "ActualMass: 1477"))
    assert release(repo, seal, tmp_path / "outbox") == 3
    err = capsys.readouterr().err
    assert f"git does not show changes to 1 source file(s) ({hidden})" in err
    assert not (repo / "signed" / "ledger.jsonl").exists()
    # ecoc status does not count the hidden file as approved either.
    main(["--repo", str(repo), "status", "--format", "json"])
    rows = {row["file"]: row for row in json.loads(capsys.readouterr().out)["records"]}
    assert rows[hidden]["state"] == "ready"


@pytest.mark.parametrize(
    ("outbox", "problem"),
    [
        ("", "is the repository's own folder"),
        ("signed/out", "lies in the repository's signed/ folder"),
        ("build/outbox", "lies in the repository, and git does not ignore it"),
    ],
)
def test_outbox_in_the_repository_is_refused(
    repo: Path,
    seal: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    outbox: str,
    problem: str,
) -> None:
    monkeypatch.chdir(repo)
    merge(repo)
    code = main(["--repo", str(repo), "release", "--transport", "outbox", "--outbox", outbox, *seal])
    err = capsys.readouterr().err
    assert code == 3
    assert problem in err
    # The hint names where an outbox may go, not only that it must be writable.
    assert "pass --outbox with a folder outside the repository, or in a folder of it that git ignores" in err
    assert not (repo / "signed" / "ledger.jsonl").exists()


def test_ignored_outbox_in_the_repository_is_taken(
    repo: Path, seal: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / ".gitignore").write_text("/build/\n", encoding="utf-8")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore build output")
    monkeypatch.chdir(repo)
    assert release(repo, seal, Path("build/outbox")) == 0
    assert len(list((repo / "build" / "outbox").glob("*.xml"))) == RECORDS
    assert git(repo, "status", "--porcelain") == ""


def test_remote_without_the_branch_says_to_push_it(
    example_repo: Path,
    seal: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    official_xsd: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A release needs the official schema; without it the run stops before it reaches the remote.
    monkeypatch.setenv("ECOC_XSD", str(official_xsd))
    git(example_repo, "branch", "-M", "main")
    empty = tmp_path / "empty.git"
    subprocess.run(["git", "init", "-q", "--bare", str(empty)], check=True)
    git(example_repo, "remote", "add", "origin", str(empty))
    assert run(example_repo, seal, tmp_path / "outbox") == 3
    err = capsys.readouterr().err
    assert "cannot fetch main from origin: the remote has no branch main" in err
    assert "git push origin main" in err


def test_http_nap_endpoint_asks_for_https(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with (repo / "ecoc.yaml").open("a", encoding="utf-8") as handle:
        handle.write(
            "release:\n  transport: nap-soap\n"
            '  nap: {endpoint: "http://127.0.0.1:9/nap", client_cert: a.pem, client_key: a.key}\n'
        )
    assert main(["--repo", str(repo), "check"]) == 3
    assert "hint: write an https:// URL" in capsys.readouterr().err


def test_digest_of_a_file_changed_after_writing_is_read_again(tmp_path: Path) -> None:
    import os

    from ecoc.evidence import file_digests, write_certificate

    write_certificate(tmp_path, "signed/X/stage-1/v1", b"<signed/>", {"vin": "X"})
    target = tmp_path / "signed" / "X" / "stage-1" / "v1" / "certificate.xml"
    assert file_digests(tmp_path, ["signed/X/stage-1/v1/certificate.xml"]) == {
        "signed/X/stage-1/v1/certificate.xml": hashlib.sha256(b"<signed/>").hexdigest()
    }
    target.write_bytes(b"<changed/>")
    os.utime(target, ns=(1, 1))
    assert file_digests(tmp_path, ["signed/X/stage-1/v1/certificate.xml"]) == {
        "signed/X/stage-1/v1/certificate.xml": hashlib.sha256(b"<changed/>").hexdigest()
    }


@pytest.mark.parametrize("remote_moved", [False, True], ids=["same-remote", "remote-moved"])
def test_ctrl_c_during_delivery_keeps_the_answers_under_way(
    repo: Path,
    seal: list[str],
    nap: NapSimulator,
    capsys: pytest.CaptureFixture[str],
    origin: Path,
    tmp_path: Path,
    remote_moved: bool,
) -> None:
    import signal
    import sys
    import time

    configure(repo, nap, read_timeout=10.0)
    nap.scenario, nap.delay = "slow", 1.0
    merge(repo)
    process = subprocess.Popen(
        [sys.executable, "-m", "ecoc", "--repo", str(repo), "release", *seal],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not nap.received and time.monotonic() < deadline:
        time.sleep(0.02)
    assert nap.received, "no delivery reached the NAP"
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130
    # Every certificate the NAP received has its delivery result on disk, although the run was stopped.
    recorded = sorted((repo / "signed").rglob("delivery-*.json"))
    assert 0 < len(recorded) == len(nap.received) < RECORDS
    if remote_moved:
        # A reviewed change lands before the rerun: the answers on disk must still be kept.
        other = tmp_path / "other"
        subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(other)], check=True)
        (other / "NOTES.txt").write_text("merged while the release was stopped\n", encoding="utf-8")
        git(other, "add", "NOTES.txt")
        git(other, "commit", "-q", "-m", "Add notes")
        git(other, "push", "-q", "origin", "main")
    nap.scenario = "accepted"
    assert main(["--repo", str(repo), "release", *seal]) == 0
    # The rerun commits the results it found and sends only the rest, so nothing reaches the NAP twice.
    references = [entry.reference_id for entry in nap.received]
    assert len(references) == len(set(references)) == RECORDS
