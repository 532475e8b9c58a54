"""`ecoc render`: canonical, deterministic bytes with derived header fields."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pytest
from lxml import etree

from conftest import git
from ecoc.cli import main
from ecoc.ivi.header import approval_country, reference_id
from ecoc.ivi.spec import NAMESPACE
from ecoc.ivi.xsd import SchemaLocation, load
from test_check import APPROVAL, OTHER_RECORD, RECORD, edit

VIN = "XNHKH16S1TE100214"
Q = f"{{{NAMESPACE}}}"


def render(repo: Path, out: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["--repo", str(repo), "render", "--out", str(out), *args])
    return code, capsys.readouterr().err


def header(path: Path) -> dict[str, str]:
    root = etree.parse(str(path)).getroot()
    return {etree.QName(e).localname: e.text or "" for e in root.find(f"{Q}Header")}


def test_every_record_renders_valid_xml(
    example_repo: Path, official_xsd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = render(example_repo, tmp_path / "out", capsys, "--xsd", str(official_xsd))
    assert code == 0, err
    files = sorted((tmp_path / "out").glob("*.xml"))
    assert len(files) == len(list((example_repo / "records").glob("*.yaml")))
    schema = load(SchemaLocation(official_xsd, "test"), relaxed=True)
    for path in files:
        assert schema.validate_bytes(path.read_bytes()) == [], path.name


def test_render_is_deterministic(example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert render(example_repo, tmp_path / "a", capsys)[0] == 0
    assert render(example_repo, tmp_path / "b", capsys, "--jobs", "1")[0] == 0
    for first in (tmp_path / "a").iterdir():
        assert first.read_bytes() == (tmp_path / "b" / first.name).read_bytes()


def test_key_order_in_yaml_does_not_change_the_bytes(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert render(example_repo, tmp_path / "before", capsys)[0] == 0
    path = example_repo / RECORD
    text = path.read_text()
    head, coc = text.split("CocDataGroup:\n", 1)
    path.write_text("CocDataGroup:\n" + coc + head)
    assert render(example_repo, tmp_path / "after", capsys)[0] == 0
    assert (tmp_path / "before" / f"{VIN}.xml").read_bytes() == (tmp_path / "after" / f"{VIN}.xml").read_bytes()


def test_output_is_canonical(example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "WltpRoadLoadCoefficientF2: 0.03690", "WltpRoadLoadCoefficientF2: 0.036900")
    assert render(example_repo, tmp_path / "out", capsys)[0] == 0
    data = (tmp_path / "out" / f"{VIN}.xml").read_bytes()
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<InitialVehicleInformation xmlns=')
    assert b"<WltpRoadLoadCoefficientF2>0.0369</WltpRoadLoadCoefficientF2>" in data
    assert b"\r" not in data and data.endswith(b"</InitialVehicleInformation>\n")
    # Elements follow the order of the schema, also inside xs:all groups.
    names = re.findall(rb"<(\w+)>", data)
    assert names.index(b"VehicleIdentificationNumber") < names.index(b"TypeApprovalType") < names.index(b"Type")


def test_header_fields_are_derived(example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    committed = git(example_repo, "log", "-1", "--format=%cI").strip()
    assert render(example_repo, tmp_path / "out", capsys)[0] == 0
    fields = header(tmp_path / "out" / f"{VIN}.xml")
    assert fields["IviReferenceId"] == reference_id(VIN, 1, 1)
    assert uuid.UUID(fields["IviReferenceId"]).version == 4
    assert fields["IviVersionNumberXsd"] == "2.0"
    assert fields["IviVersionNumber"] == "1"
    assert fields["IviVersionDateTime"] == committed
    assert fields["DesignatedTypeApprovalCountry"] == "e4"
    assert fields["IntendedCountryRegistration"] == "NL"


def test_correction_gets_a_new_reference_id(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(example_repo, RECORD, "Header:\n", "Header:\n  IviVersionNumber: 2\n")
    assert render(example_repo, tmp_path / "out", capsys)[0] == 0
    fields = header(tmp_path / "out" / f"{VIN}.xml")
    assert fields["IviVersionNumber"] == "2"
    assert fields["IviReferenceId"] == reference_id(VIN, 1, 2) != reference_id(VIN, 1, 1)


def test_version_number_is_record_only(example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, APPROVAL, "CocDataGroup:\n", "Header:\n  IviVersionNumber: 2\nCocDataGroup:\n")
    code, err = render(example_repo, tmp_path / "out", capsys)
    assert "model.misplaced" in err
    assert code == 1


def test_reference_id_matches_the_schema_pattern() -> None:
    pattern = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
    for serial in range(200):
        assert pattern.match(reference_id(f"XNHKH16S1TE{serial:06d}", 1, 1))


@pytest.mark.parametrize(
    "number,country",
    [
        ("e4*2018/858*04127*01", "e4"),
        ("e13*168/2013*01303*00", "e13"),
        ("e06*2007/46*0289*09", "e6"),
        ("X*1", None),
    ],
)
def test_country_from_approval_number(number: str, country: str | None) -> None:
    assert approval_country(number) == country


def test_source_date_epoch_sets_the_time(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1780000000")
    assert render(example_repo, tmp_path / "out", capsys)[0] == 0
    assert header(tmp_path / "out" / f"{VIN}.xml")["IviVersionDateTime"] == "2026-05-28T20:26:40Z"


def test_invalid_datetime_option(example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = render(example_repo, tmp_path / "out", capsys, "--datetime", "yesterday")
    assert code == 2
    assert "--datetime yesterday" in err


def test_no_commit_to_take_the_time_from(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    shutil.rmtree(example_repo / ".git")
    code, err = render(example_repo, tmp_path / "out", capsys)
    assert code == 3
    assert "--datetime" in err


def test_blocked_record_is_not_written(example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: -1478")
    code, err = render(example_repo, tmp_path / "out", capsys)
    assert code == 1
    assert not (tmp_path / "out" / f"{VIN}.xml").exists()
    assert len(list((tmp_path / "out").glob("*.xml"))) == 11
    assert "rendered 11 of 12 records" in err


def test_duplicate_vin_writes_neither(example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, OTHER_RECORD, "vin: XNHKH16S8TE103871", f"vin: {VIN}")
    code, _ = render(example_repo, tmp_path / "out", capsys)
    assert code == 1
    assert not (tmp_path / "out" / f"{VIN}.xml").exists()


def test_output_folder_must_be_empty(example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert render(example_repo, out, capsys)[0] == 0
    (example_repo / OTHER_RECORD).unlink()
    git(example_repo, "commit", "-q", "-am", "remove a vehicle")
    code, err = render(example_repo, out, capsys)
    assert code == 2
    assert "not empty" in err and "--clean" in err
    code, err = render(example_repo, out, capsys, "--clean")
    assert code == 0, err
    assert not (out / "XNHKH16S8TE103871.xml").exists()
    assert len(list(out.glob("*.xml"))) == 11


def test_uncommitted_change_is_reported(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1490")
    code, err = render(example_repo, tmp_path / "out", capsys)
    assert code == 0
    assert f"differs from HEAD ({RECORD})" in err


def test_uncommitted_waiver_is_reported(example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / "rules" / "waivers.yaml").write_text("waivers: []\n", encoding="utf-8")
    code, err = render(example_repo, tmp_path / "out", capsys, "--datetime", "2026-12-01T10:00:00Z")
    assert code == 0
    assert "differs from HEAD (rules/waivers.yaml)" in err
    assert "rules nobody has reviewed" in err


def test_broken_rule_file_blocks_every_record(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(
        example_repo,
        "rules/masses.yaml",
        "TechnicallyPermissibleMaximumLadenMass",
        "TechnicallyPermissibleMaximumLadenMas",
    )
    code, err = render(example_repo, tmp_path / "out", capsys)
    assert code == 1
    assert "rules.invalid" in err
    assert "no record is rendered while a rule file has errors" in err
    assert list((tmp_path / "out").glob("*.xml")) == []


def test_error_in_approval_blocks_its_records(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(example_repo, APPROVAL, "TypeApprovalIssueDate: 2025-11-20", "TypeApprovalIssueDate: 2025-11-31")
    code, err = render(example_repo, tmp_path / "out", capsys, str(example_repo / RECORD))
    assert code == 1
    assert f"{APPROVAL}:" in err and "model.date" in err
    assert not (tmp_path / "out" / f"{VIN}.xml").exists()


def test_datetime_without_zone_is_refused(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = render(example_repo, tmp_path / "out", capsys, "--datetime", "2026-03-01T10:00:00")
    assert code == 2
    assert "no time zone" in err


def test_output_under_a_file_is_a_usage_error(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = render(example_repo, blocker / "sub", capsys)
    assert code == 2
    assert "Traceback" not in err


def test_clean_keeps_files_when_the_path_is_wrong(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert render(example_repo, out, capsys)[0] == 0
    code, _ = render(example_repo, out, capsys, "--clean", str(example_repo / "records" / "none.yaml"))
    assert code == 2
    (example_repo / "rules").mkdir(exist_ok=True)
    code, _ = render(example_repo, out, capsys, "--clean", str(example_repo / "rules"))
    assert code == 2
    assert len(list(out.glob("*.xml"))) == 12


def test_duplicated_approval_blocks_its_records(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (example_repo / APPROVAL).read_text().replace("Type: KH16", "Type: KH99")
    (example_repo / "approvals" / "dup.yaml").write_text(text)
    code, err = render(example_repo, tmp_path / "out", capsys)
    assert code == 1
    assert err.count("approval.duplicate") == 2
    assert len(list((tmp_path / "out").glob("*.xml"))) == 8
