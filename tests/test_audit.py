"""`ecoc audit`: the evidence archive verified offline, and each way an insider could alter it found."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from conftest import git
from ecoc.cli import main
from pki import Pki
from test_release import RECORDS, VIN, release

OTHER = "XNHKH16S8TE103871"


@pytest.fixture
def released(repo: Path, seal: list[str], tmp_path: Path, seal_pki: Pki) -> Path:
    assert release(repo, seal, tmp_path / "outbox") == 0
    (tmp_path / "root.pem").write_bytes(seal_pki.root.pem())
    return repo


def audit(repo: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    trust = repo.parent / "root.pem"
    code = main(["--repo", str(repo), "audit", "--trust", str(trust), "--format", "json", *extra])
    return code, json.loads(capsys.readouterr().out)


def located(report: dict[str, object]) -> list[tuple[str, str]]:
    entries = report["entries"]
    assert isinstance(entries, list)
    problems = [*report["problems"], *(p for entry in entries for p in entry["problems"])]  # type: ignore[misc]
    return sorted((str(p["file"]), str(p["check"])) for p in problems)


def folder(vin: str) -> str:
    return f"signed/{vin}/stage-1/v1"


def test_untouched_archive_verifies(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = audit(released, capsys)
    assert code == 0
    assert report["discrepancies"] == 0
    assert len(report["entries"]) == RECORDS  # type: ignore[arg-type]
    assert report["ledger_lines"] == 2 * RECORDS


def change_signed_bytes(repo: Path) -> None:
    path = repo / folder(VIN) / "certificate.xml"
    path.write_bytes(path.read_bytes().replace(b"<MaximumSpeed>178<", b"<MaximumSpeed>188<"))


def edit_manifest(repo: Path) -> None:
    path = repo / folder(VIN) / "manifest.json"
    manifest = json.loads(path.read_bytes())
    manifest["record"] = f"records/{OTHER}.yaml"
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def ledger_lines(repo: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    path = repo / "signed" / "ledger.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in change(path.read_bytes().splitlines())))


def swap_receipts(repo: Path) -> None:
    first, second = repo / folder(VIN) / "receipt-1.json", repo / folder(OTHER) / "receipt-1.json"
    one, two = first.read_bytes(), second.read_bytes()
    first.write_bytes(two)
    second.write_bytes(one)


def inserted_line(lines: list[bytes]) -> list[bytes]:
    forged = json.loads(lines[3])
    forged["vin"] = "XNHKH16S1TE999999"
    return [*lines[:4], json.dumps(forged, sort_keys=True).encode(), *lines[4:]]


def commit_file(repo: Path, relative: str) -> None:
    """Add a file below signed/ and commit it, as someone outside a release could."""
    (repo / relative).write_text("added later\n", encoding="utf-8")
    git(repo, "add", relative)
    git(repo, "commit", "-q", "-m", "add a file")


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (change_signed_bytes, (f"{folder(VIN)}/certificate.xml", "signature")),
        (change_signed_bytes, (f"{folder(VIN)}/certificate.xml", "manifest")),
        (change_signed_bytes, (f"{folder(VIN)}/certificate.xml", "ledger")),
        (edit_manifest, (f"{folder(VIN)}/manifest.json", "ledger")),
        (lambda repo: ledger_lines(repo, lambda lines: lines[:5] + lines[6:]), ("signed/ledger.jsonl:6", "ledger")),
        (
            lambda repo: ledger_lines(repo, lambda lines: [*lines[:2], lines[3], lines[2], *lines[4:]]),
            ("signed/ledger.jsonl:3", "ledger"),
        ),
        (lambda repo: ledger_lines(repo, inserted_line), ("signed/ledger.jsonl:5", "ledger")),
        (swap_receipts, (f"{folder(VIN)}/receipt-1.json", "receipt")),
        (swap_receipts, (f"{folder(OTHER)}/receipt-1.json", "receipt")),
        (
            lambda repo: (repo / folder(VIN) / "delivery-1.json").unlink(),
            (f"{folder(VIN)}/delivery-1.json", "ledger"),
        ),
        (
            lambda repo: (repo / folder(VIN) / "extra.txt").write_text("added later\n"),
            (f"{folder(VIN)}/extra.txt", "git"),
        ),
        (lambda repo: commit_file(repo, f"{folder(VIN)}/extra.txt"), (f"{folder(VIN)}/extra.txt", "ledger")),
    ],
    ids=[
        "signed-bytes-signature",
        "signed-bytes-manifest",
        "signed-bytes-ledger",
        "manifest",
        "ledger-line-deleted",
        "ledger-lines-reordered",
        "ledger-line-inserted",
        "receipts-swapped-first",
        "receipts-swapped-second",
        "delivery-deleted",
        "file-added",
        "file-added-and-committed",
    ],
)
def test_tampering_is_found_and_located(
    released: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[Path], None],
    expected: tuple[str, str],
) -> None:
    tamper(released)
    code, report = audit(released, capsys)
    assert code == 1
    assert expected in located(report)


def test_record_history_rewritten_after_signing_is_found(
    released: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = json.loads((released / folder(VIN) / "manifest.json").read_bytes())["source_commit"]
    # Replace the whole history by one commit with the same files; a new clone has only that commit.
    git(released, "checkout", "-q", "--orphan", "rewritten")
    git(released, "commit", "-q", "-m", "history rewritten")
    git(released, "branch", "-q", "-D", "main")
    git(released, "branch", "-q", "-M", "main")
    clone = tmp_path / "auditor"
    git(tmp_path, "clone", "-q", f"file://{released}", str(clone))
    assert not git(clone, "cat-file", "-t", source, check=False)
    code, report = audit(clone, capsys, "--vin", VIN)
    assert code == 1
    problems = report["entries"][0]["problems"]  # type: ignore[index]
    assert [p["check"] for p in problems] == ["source"]
    assert f"the source commit {source[:12]} is not in this repository" in problems[0]["message"]


def test_record_changed_at_its_source_commit_is_found(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A forged manifest that names another commit, whose record differs from what was signed;
    # the ledger would flag the manifest too, so the audit looks at the render on its own.
    record = released / "records" / f"{VIN}.yaml"
    record.write_bytes(record.read_bytes().replace(b"ActualMass: 1478", b"ActualMass: 1479"))
    git(released, "commit", "-q", "-am", "change the mass after signing")
    manifest_path = released / folder(VIN) / "manifest.json"
    manifest = json.loads(manifest_path.read_bytes())
    manifest["source_commit"] = git(released, "rev-parse", "HEAD").strip()
    manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    code, report = audit(released, capsys, "--vin", VIN)
    assert code == 1
    problems = report["entries"][0]["problems"]  # type: ignore[index]
    source = [p for p in problems if p["check"] == "source"]
    assert len(source) == 1
    assert "ActualMass" in source[0]["message"]
    assert source[0]["file"] == f"{folder(VIN)}/certificate.xml"


def test_audit_of_some_vehicles_and_dates(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = audit(released, capsys, "--vin", VIN, "--vin", OTHER)
    assert code == 0
    assert sorted(entry["vin"] for entry in report["entries"]) == sorted([VIN, OTHER])  # type: ignore[union-attr]
    code, report = audit(released, capsys, "--since", "2999-01-01")
    assert code == 0
    assert report["entries"] == []


def test_audit_needs_the_full_history(released: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shallow = tmp_path / "shallow"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{released}", str(shallow)], check=True, capture_output=True
    )
    (tmp_path / "shallow-root.pem").write_bytes((released.parent / "root.pem").read_bytes())
    code = main(["--repo", str(shallow), "audit", "--trust", str(released.parent / "root.pem")])
    assert code == 3
    assert "git fetch --unshallow" in capsys.readouterr().err


def test_audit_report_as_html_and_text(
    released: Path, capsys: pytest.CaptureFixture[str], browser: webdriver.Chrome
) -> None:
    change_signed_bytes(released)
    trust = released.parent / "root.pem"
    out = released.parent / "audit.html"
    arguments = ["--repo", str(released), "audit", "--trust", str(trust), "--format", "html", "--output", str(out)]
    assert main(arguments) == 1
    browser.get(out.as_uri())
    assert browser.find_element(By.ID, "verdict").text.endswith("discrepancies")
    # The page names the anchors the chains were checked against, as the text report does.
    assert browser.find_element(By.ID, "anchors").text.startswith("CN=Halvard Test Root CA")
    row = browser.find_element(By.ID, f"entry-{folder(VIN)}")
    assert "signature:" in row.text
    other = browser.find_element(By.ID, f"entry-{folder(OTHER)}")
    assert other.text.endswith("verified")
    capsys.readouterr()
    assert main(["--repo", str(released), "audit", "--trust", str(trust)]) == 1
    text = capsys.readouterr().out
    assert f"{folder(VIN)}/certificate.xml: signature: " in text
    assert text.rstrip().endswith("discrepancies")


def test_parallel_audit_finds_the_same(
    released: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    change_signed_bytes(released)
    _, serial = audit(released, capsys, "-j", "1")
    monkeypatch.setattr("ecoc.audit.PARALLEL_THRESHOLD", 0)
    monkeypatch.setattr("ecoc.audit.CHUNK_SIZE", 5)
    code, parallel = audit(released, capsys, "-j", "2")
    assert code == 1
    assert located(parallel) == located(serial)
    assert [entry["folder"] for entry in parallel["entries"]] == [entry["folder"] for entry in serial["entries"]]  # type: ignore[union-attr]


def rechain(repo: Path) -> None:
    """Rebuild the ledger's hash chain over the current files, as an insider with write access could."""
    path = repo / "signed" / "ledger.jsonl"
    previous = "0" * 64
    out = []
    for line in path.read_bytes().splitlines():
        event = json.loads(line)
        event["prev"] = previous
        event["files"] = {
            name: hashlib.sha256((repo / name).read_bytes()).hexdigest()
            for name in event.get("files", {})
            if (repo / name).is_file()
        }
        new = json.dumps(event, sort_keys=True).encode()
        out.append(new + b"\n")
        previous = hashlib.sha256(new).hexdigest()
    path.write_bytes(b"".join(out))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("correction_reason", "customer asked for a lower mass", "the manifest's correction_reason differs"),
        ("approval_number", "e4*2018/858*09999*00", "the manifest's approval_number differs"),
        ("data_digest", "0" * 64, "the manifest's data_digest differs"),
        ("signer.serial", "1", "the manifest names the signer's issuer"),
    ],
)
def test_manifest_rewritten_with_a_rebuilt_ledger_is_found(
    released: Path, capsys: pytest.CaptureFixture[str], key: str, value: str, expected: str
) -> None:
    path = released / folder(VIN) / "manifest.json"
    manifest = json.loads(path.read_bytes())
    if "." in key:
        outer, inner = key.split(".")
        manifest[outer][inner] = value
    else:
        manifest[key] = value
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    rechain(released)
    git(released, "commit", "-q", "-am", "rewrite a manifest")
    code, report = audit(released, capsys, "--vin", VIN)
    assert code == 1
    messages = [p["message"] for p in report["entries"][0]["problems"]]  # type: ignore[index]
    assert any(message.startswith(expected) for message in messages), messages


def test_outbox_receipt_of_other_bytes_is_found(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    receipt = released / folder(VIN) / "receipt-1.json"
    note = json.loads(receipt.read_bytes())
    note["sha256"] = "ab" * 32
    receipt.write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    delivery = released / folder(VIN) / "delivery-1.json"
    result = json.loads(delivery.read_bytes())
    result["receipt"]["sha256"] = hashlib.sha256(receipt.read_bytes()).hexdigest()
    delivery.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    rechain(released)
    git(released, "commit", "-q", "-am", "rewrite a receipt")
    code, report = audit(released, capsys, "--vin", VIN)
    assert code == 1
    messages = [p["message"] for p in report["entries"][0]["problems"]]  # type: ignore[index]
    assert "the receipt gives the sha256 of the delivered file, which is not that of the certificate" in messages


def edit_delivery(repo: Path, key: str, value: str) -> None:
    """Change one field of VIN's first delivery result and rebuild the ledger chain over it."""
    delivery = repo / folder(VIN) / "delivery-1.json"
    result = json.loads(delivery.read_bytes())
    result[key] = value
    delivery.write_text(json.dumps(result, indent=2), encoding="utf-8")
    rechain(repo)


def history_finding_on_the_result(repo: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """Audit, expect history findings on VIN's delivery result and the ledger, and return the first."""
    code, report = audit(repo, capsys)
    assert code == 1
    where = located(report)
    assert (f"{folder(VIN)}/delivery-1.json", "history") in where
    assert any(file.startswith("signed/ledger.jsonl:") and check == "history" for file, check in where)
    [problem] = [
        p
        for p in report["problems"]  # type: ignore[union-attr]
        if p["file"] == f"{folder(VIN)}/delivery-1.json" and p["check"] == "history"
    ]
    return problem  # type: ignore[no-any-return]


def test_archive_readme_is_no_discrepancy(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (released / "signed" / "README.md").is_file()
    code, report = audit(released, capsys)
    assert code == 0
    assert report["discrepancies"] == 0


def test_truncated_ledger_is_found_in_history(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger_lines(released, lambda lines: lines[:-2])
    git(released, "commit", "-q", "-am", "tidy the ledger")
    code, report = audit(released, capsys)
    assert code == 1
    remaining = 2 * RECORDS - 2
    assert (f"signed/ledger.jsonl:{remaining + 1}", "history") in located(report)


def test_rebuilt_chain_still_shows_the_edit(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_delivery(released, "status", "rejected")
    git(released, "commit", "-q", "-am", "correct a delivery result")
    problem = history_finding_on_the_result(released, capsys)
    assert "changed this file after it was committed" in problem["message"]


def test_deleted_evidence_is_found_in_history(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in sorted((released / folder(VIN)).iterdir()):
        path.unlink()
    ledger_lines(released, lambda lines: [line for line in lines if VIN.encode() not in line])
    rechain(released)
    git(released, "commit", "-q", "-am", "remove a vehicle")
    parent = git(released, "rev-parse", "HEAD~1")[:12]
    code, report = audit(released, capsys)
    assert code == 1
    assert (f"{folder(VIN)}/certificate.xml", "history") in located(report)
    # The message says how to restore the file, from the commit before the one that deleted it.
    [deleted] = [
        p
        for p in report["problems"]  # type: ignore[union-attr]
        if p["file"] == f"{folder(VIN)}/certificate.xml" and p["check"] == "history"
    ]
    assert f"(git checkout {parent} -- {folder(VIN)}/certificate.xml)" in deleted["message"]


def test_swapped_evidence_folders_are_found(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = released / folder(VIN), released / folder(OTHER)
    first.rename(released / "swap")
    second.rename(first)
    (released / "swap").rename(second)
    code, report = audit(released, capsys)
    assert code == 1
    assert (f"{folder(VIN)}/manifest.json", "manifest") in located(report)
    [entry] = [e for e in report["entries"] if e["folder"] == folder(VIN)]  # type: ignore[union-attr]
    assert f"the manifest is about {OTHER} stage 1 version 1" in entry["problems"][0]["message"]


def test_manifest_signer_edit_is_found(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = released / folder(VIN) / "manifest.json"
    manifest = json.loads(path.read_bytes())
    manifest["signer"]["subject"] = "CN=Someone Else"
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    code, report = audit(released, capsys, "--vin", VIN)
    assert code == 1
    messages = [p["message"] for p in report["entries"][0]["problems"]]  # type: ignore[index]
    assert any(m.startswith("the manifest names signer CN=Someone Else, but CN=Halvard Motors") for m in messages)


def test_manifest_record_digest_edit_is_found(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = released / folder(VIN) / "manifest.json"
    manifest = json.loads(path.read_bytes())
    manifest["digests"]["record"] = "0" * 64
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    code, report = audit(released, capsys, "--vin", VIN)
    assert code == 1
    messages = [p["message"] for p in report["entries"][0]["problems"]]  # type: ignore[index]
    assert f"the record sha256 differs from records/{VIN}.yaml at commit" in " ".join(messages)


def test_text_audit_of_a_vin_says_what_was_signed_and_delivered(
    released: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads((released / folder(VIN) / "manifest.json").read_bytes())
    capsys.readouterr()
    trust = str(released.parent / "root.pem")
    assert main(["--repo", str(released), "audit", "--trust", trust, "--vin", VIN]) == 0
    text = capsys.readouterr().out
    assert (
        f"{folder(VIN)}: IviVersionNumber 1, IviReferenceId {manifest['reference_id']}, signed "
        f"{manifest['signed_at']} by {manifest['signer']['subject']} from commit {manifest['source_commit'][:12]}, "
        "delivery accepted by the outbox, not yet known to the authority: verified"
    ) in text


def test_outbox_delivery_read_as_accepted_by_the_authority(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    trust = str(released.parent / "root.pem")
    assert main(["--repo", str(released), "audit", "--trust", trust, "--vin", VIN]) == 0
    text = capsys.readouterr().out
    assert "delivery accepted: verified" not in text
    assert "delivery accepted by the outbox, not yet known to the authority: verified" in text
    assert main(["--repo", str(released), "history", VIN]) == 0
    assert "written to the outbox, not yet known to the authority" in capsys.readouterr().out


def test_deleted_entries_are_counted_against_the_ledger(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(released / folder(VIN))
    git(released, "commit", "-q", "-am", "remove a vehicle")
    capsys.readouterr()
    main(["--repo", str(released), "audit", "--trust", str(released.parent / "root.pem")])
    text = capsys.readouterr().out
    assert (
        f"{RECORDS - 1} of {RECORDS - 1} evidence entries verified (the ledger names 1 more, which are missing)" in text
    )


def test_anchors_from_the_audited_repository_are_warned_about(
    released: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (released / "keys").mkdir()
    shutil.copy(released.parent / "root.pem", released / "keys" / "root.pem")
    with (released / "ecoc.yaml").open("a", encoding="utf-8") as handle:
        handle.write("\nsigning:\n  trust: [keys/root.pem]\n")
    git(released, "add", "-A")
    git(released, "commit", "-q", "-m", "Add a trust anchor")
    capsys.readouterr()
    assert main(["--repo", str(released), "audit"]) == 0
    err = capsys.readouterr().err
    assert "the trust anchors come from signing.trust of the repository being audited" in err
    assert "signing.trust or an anchor file changed after the first evidence: " in err
    assert ": Add a trust anchor" in err


def test_audit_with_another_ecoc_version_says_so(
    released: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ecoc

    signed_with = ecoc.__version__
    monkeypatch.setattr("ecoc.cli.__version__", "9.9.9")
    capsys.readouterr()
    main(["--repo", str(released), "audit", "--trust", str(released.parent / "root.pem")])
    err = capsys.readouterr().err
    assert f"entries were signed with ecoc {signed_with}, and this is ecoc 9.9.9" in err


def test_audit_of_a_vin_without_evidence(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = audit(released, capsys, "--vin", "XNHKH16S1TE100299")
    assert code == 1
    assert report["problems"][0]["message"] == "XNHKH16S1TE100299 has no evidence in signed/"  # type: ignore[index]
    capsys.readouterr()
    assert main(["--repo", str(released), "audit", "--vin", "nonsense"]) == 2
    assert "--vin 'nonsense' is not a VIN" in capsys.readouterr().err


def test_one_deleted_ledger_line_is_one_numbering_problem(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger_lines(released, lambda lines: lines[:5] + lines[6:])
    _, report = audit(released, capsys)
    numbering = [p for p in report["problems"] if "says it is number" in p["message"]]  # type: ignore[union-attr]
    assert len(numbering) == 1


def test_swapped_ledger_lines_report_only_the_two_lines(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger_lines(released, lambda lines: [lines[0], lines[2], lines[1], *lines[3:]])
    _, report = audit(released, capsys)
    numbering = [p for p in report["problems"] if "says it is number" in p["message"]]  # type: ignore[union-attr]
    assert [p["message"] for p in numbering] == [
        "line 2 says it is number 3: a line was deleted, inserted or moved before it",
        "line 3 says it is number 2: a line was deleted, inserted or moved before it",
    ]


def test_merge_that_drops_evidence_is_found(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A branch from before the delivery results, merged with "ours" and fast-forwarded: main moves on
    # without a force push, and its tree no longer has the results.
    git(released, "checkout", "-q", "-b", "evil", "HEAD~1")
    git(released, "merge", "-q", "-s", "ours", "main", "-m", "Merge main")
    git(released, "checkout", "-q", "main")
    git(released, "merge", "-q", "--ff-only", "evil")
    assert not (released / folder(VIN) / "delivery-1.json").exists()
    problem = history_finding_on_the_result(released, capsys)
    merge = git(released, "rev-parse", "HEAD").strip()
    assert problem["message"].startswith(f"commit {merge[:12]} by ")
    assert "deleted this file" in problem["message"]


def test_ordinary_merges_after_a_release_verify(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A pull request branched before the release, and main merged into it, then merged back.
    git(released, "checkout", "-q", "-b", "feature", "HEAD~2")
    (released / "NOTES.txt").write_text("a reviewer's notes\n", encoding="utf-8")
    git(released, "add", "NOTES.txt")
    git(released, "commit", "-q", "-m", "Add notes")
    git(released, "merge", "-q", "--no-ff", "main", "-m", "Merge main into feature")
    git(released, "checkout", "-q", "main")
    git(released, "merge", "-q", "--no-ff", "feature", "-m", "Merge pull request #7 from feature")
    code, report = audit(released, capsys)
    assert code == 0, located(report)


def test_delivery_status_differing_from_its_ledger_line(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_delivery(released, "status", "rejected")
    code, report = audit(released, capsys)
    assert code == 1
    messages = [p["message"] for p in report["problems"] if p["file"] == f"{folder(VIN)}/delivery-1.json"]  # type: ignore[union-attr]
    assert any(m.startswith("the delivery result says rejected, but ledger line") for m in messages)


def test_uncommitted_removal_is_found(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in sorted((released / folder(VIN)).iterdir()):
        path.unlink()
    ledger_lines(released, lambda lines: [line for line in lines if VIN.encode() not in line])
    rechain(released)
    code, report = audit(released, capsys)
    assert code == 1
    assert (f"{folder(VIN)}/certificate.xml", "git") in located(report)
    [problem] = [p for p in report["problems"] if p["file"] == f"{folder(VIN)}/certificate.xml"]  # type: ignore[union-attr]
    assert problem["message"].startswith("deleted and not committed; evidence is never deleted or rewritten")
    assert "git restore --staged --worktree" in problem["message"]
    assert "commit it" not in problem["message"]


def test_entry_with_a_rewritten_file_is_not_verified(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_delivery(released, "message", "accepted after a second look")
    git(released, "commit", "-q", "-am", "reword a result", "--author", "Rel Bot <bot@halvard.invalid>")
    code, report = audit(released, capsys)
    assert code == 1
    [entry] = [e for e in report["entries"] if e["folder"] == folder(VIN)]  # type: ignore[union-attr]
    assert entry["ok"] is False
    assert entry["elsewhere"] >= 1
    [problem] = [
        p
        for p in report["problems"]  # type: ignore[union-attr]
        if p["file"] == f"{folder(VIN)}/delivery-1.json" and p["check"] == "history"
    ]
    assert " by Rel Bot <bot@halvard.invalid> on " in problem["message"]
    assert "(committed by ecoc tests <tests@ecoc.invalid> on " in problem["message"]
    capsys.readouterr()
    main(["--repo", str(released), "audit", "--trust", str(released.parent / "root.pem")])
    out = capsys.readouterr().out
    assert f"{RECORDS - 1} of {RECORDS} evidence entries verified" in out


def test_report_names_the_audited_commit_and_branch(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = git(released, "rev-parse", "HEAD").strip()
    code, report = audit(released, capsys)
    assert code == 0
    assert report["commit"] == head
    assert report["branch"] == "main"
    git(released, "checkout", "-q", "-b", "audit-old", "HEAD~2")
    capsys.readouterr()
    main(["--repo", str(released), "audit", "--trust", str(released.parent / "root.pem")])
    captured = capsys.readouterr()
    assert "this audits the archive of branch audit-old, not of main" in captured.err
    assert f"audited signed/ at commit {git(released, 'rev-parse', 'HEAD').strip()[:12]} on branch audit-old" in (
        captured.out
    )


def test_appended_line_without_a_release_trailer(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Forged evidence that only appends: a second, rejected delivery with a properly chained line.
    target = released / folder(VIN)
    forged = {"status": "rejected", "message": "invalid", "attempt": 2, "receipt": None, "reference_id": None}
    (target / "delivery-2.json").write_text(json.dumps(forged), encoding="utf-8")
    path = released / "signed" / "ledger.jsonl"
    lines = path.read_bytes().splitlines()
    event = {
        "event": "delivery",
        "status": "rejected",
        "vin": VIN,
        "stage": 1,
        "version": 1,
        "folder": folder(VIN),
        "files": {
            f"{folder(VIN)}/delivery-2.json": hashlib.sha256((target / "delivery-2.json").read_bytes()).hexdigest()
        },
        "seq": len(lines) + 1,
        "prev": hashlib.sha256(lines[-1]).hexdigest(),
    }
    path.write_bytes(path.read_bytes() + json.dumps(event, sort_keys=True).encode() + b"\n")
    git(released, "add", "-A")
    git(released, "commit", "-q", "-m", "Record 1 delivery result(s), 0 accepted")
    code, report = audit(released, capsys)
    assert code == 1
    [problem] = [p for p in report["problems"] if p["check"] == "history"]  # type: ignore[union-attr]
    assert problem["file"] == f"signed/ledger.jsonl:{len(lines) + 1}"
    assert f"without the trailer 'Ecoc-Delivery: {VIN} v1  rejected'" in problem["message"]


def test_forged_delivery_entry_is_not_verified(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    test_appended_line_without_a_release_trailer(released, capsys)
    _, report = audit(released, capsys)
    [entry] = [e for e in report["entries"] if e["folder"] == folder(VIN)]  # type: ignore[union-attr]
    assert entry["ok"] is False
    assert report["trust_anchors"]
    assert "files that differ from the commit" in report["checks"]  # type: ignore[operator]


def test_uncommitted_removal_of_signed_keeps_the_summary_honest(
    released: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(released / "signed")
    capsys.readouterr()
    assert main(["--repo", str(released), "audit", "--trust", str(released.parent / "root.pem")]) == 1
    captured = capsys.readouterr()
    assert "nothing was released from this repository" not in captured.err
    assert "file(s) below signed/ differ from the commit; the counts below are of the files as they are now" in (
        captured.out
    )


def test_receipt_of_an_interrupted_release_says_to_run_it_again(
    released: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A release killed after a delivery leaves its files uncommitted and in no ledger event.
    (released / folder(VIN) / "receipt-2.json").write_bytes(b"{}")
    code, report = audit(released, capsys)
    assert code == 1
    problems = [p for p in report["problems"] if p["file"] == f"{folder(VIN)}/receipt-2.json"]  # type: ignore[union-attr]
    # The file is reported once, as not committed, and not again for being in no ledger event.
    [uncommitted] = problems
    assert uncommitted["check"] == "git"
    assert "run ecoc release again to finish that release" in uncommitted["message"]
