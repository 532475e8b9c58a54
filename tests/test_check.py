"""`ecoc check` on the example repository with one thing broken at a time.

Each test breaks one record or approval the way a real edit could, and checks that the
finding names the rule, the file, the line, the column and the YAML path of the problem.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ecoc.cli import main

RECORD = "records/XNHKH16S1TE100214.yaml"
OTHER_RECORD = "records/XNHKH16S8TE103871.yaml"
APPROVAL = "approvals/e4-2018-858-04127-01.yaml"


def edit(repo: Path, relative: str, old: str | bytes, new: str | bytes, count: int = 1) -> None:
    path = repo / relative
    data = path.read_bytes()
    old_bytes = old.encode() if isinstance(old, str) else old
    new_bytes = new.encode() if isinstance(new, str) else new
    assert data.count(old_bytes) >= count, f"{old!r} not in {relative}"
    path.write_bytes(data.replace(old_bytes, new_bytes, count))


def check(repo: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, object]]]:
    code = main(["--repo", str(repo), "check", "--no-cache", "--format", "json", *args])
    document = json.loads(capsys.readouterr().out)
    return code, document["findings"]


def only(findings: list[dict[str, object]], rule: str) -> dict[str, object]:
    matching = [f for f in findings if f["rule"] == rule]
    assert len(matching) == 1, f"expected one {rule} finding, got {findings}"
    return matching[0]


def test_example_repository_is_clean(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, findings = check(example_repo, capsys)
    assert findings == []
    assert code == 0


def test_example_repository_validates_against_official_xsd(
    example_repo: Path, official_xsd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, findings = check(example_repo, capsys, "--xsd", str(official_xsd))
    assert findings == []
    assert code == 0


@pytest.mark.parametrize(
    "case,old,new,rule,line,column",
    [
        ("duplicate_key", "variant: KH16F\n", "variant: KH16F\nvariant: KH16F\n", "yaml.duplicate-key", 5, 1),
        (
            "anchor_and_alias",
            "variant: KH16F\nversion: KH16F-S17\n",
            "variant: &v KH16F\nversion: *v\n",
            "yaml.anchor",
            4,
            10,
        ),
        ("merge_key", "MassGroup:\n", "MassGroup:\n    <<: {ActualMass: 1}\n", "yaml.merge-key", 13, 5),
        ("explicit_tag", "ActualMass: 1478", "ActualMass: !!int 1478", "yaml.tag", 13, 17),
        ("tab_indentation", "  IntendedCountryRegistration", "\tIntendedCountryRegistration", "yaml.tab", 7, 1),
        ("invalid_utf8", "NL\n", "N\xe9\n".encode("latin-1"), "yaml.encoding", 7, 33),
        ("several_documents", "vin:", "---\nvin: X\n---\nvin:", "yaml.multiple-documents", 4, 1),
        (
            "impossible_date",
            "DateManufactureVehicle: 2026-02-12",
            "DateManufactureVehicle: 2026-02-30",
            "model.date",
            9,
            27,
        ),
        (
            "date_in_another_format",
            "DateManufactureVehicle: 2026-02-12",
            "DateManufactureVehicle: 12.02.2026",
            "model.date",
            9,
            27,
        ),
        ("unknown_element", "ActualMass: 1478", "ActualMas: 1478", "model.unknown-key", 13, 5),
        ("element_in_wrong_group", "ActualMass: 1478", "Length: 4310", "model.unknown-key", 13, 5),
        (
            "derived_element_set",
            "MassGroup:",
            "VehicleIdentificationNumber: XNHKH16S1TE100214\n  MassGroup:",
            "model.misplaced",
            12,
            3,
        ),
        (
            "approval_element_in_record",
            "MassGroup:",
            "TypeApprovalIssueDate: 2026-01-01\n  MassGroup:",
            "model.misplaced",
            12,
            3,
        ),
        ("group_written_as_value", "MassGroup:\n    ActualMass: 1478", "MassGroup: 1478", "model.shape", 12, 14),
        ("invalid_code", "IntendedCountryRegistration: NL", "IntendedCountryRegistration: nl", "model.code", 7, 32),
        ("exponent_number", "ActualMass: 1478", "ActualMass: 1.478e3", "model.integer", 13, 17),
        (
            "decimal_places",
            "WltpRoadLoadCoefficientF1: 0.214",
            "WltpRoadLoadCoefficientF1: 0.2140001",
            "model.decimal",
            30,
            32,
        ),
        ("value_out_of_range", "ActualMass: 1478", "ActualMass: 1000000", "model.range", 13, 17),
        ("empty_value", "ActualMass: 1478", "ActualMass:", "model.empty-value", 13, 16),
        ("vin_with_letter_o", "vin: XNHKH16S1TE100214", "vin: XNHKH16S1TEO00214", "vin.format", 2, 6),
        ("vin_too_short", "vin: XNHKH16S1TE100214", "vin: XNHKH16S1TE10021", "vin.format", 2, 6),
        (
            "unknown_approval",
            "approval: e4*2018/858*04127*01",
            "approval: e4*2018/858*04127*02",
            "record.approval-unknown",
            3,
            11,
        ),
        ("unknown_variant", "variant: KH16F", "variant: KH16G", "record.variant-unknown", 4, 10),
        ("unknown_version", "version: KH16F-S17", "version: KH16F-S18", "record.version-unknown", 5, 10),
        ("missing_vin_key", "vin: XNHKH16S1TE100214\n", "", "model.required", 2, 1),
    ],
)
def test_broken_record(
    case: str,
    old: str,
    new: str | bytes,
    rule: str,
    line: int,
    column: int,
    example_repo: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    edit(example_repo, RECORD, old, new)
    code, findings = check(example_repo, capsys)
    finding = only(findings, rule)
    assert (finding["file"], finding["line"], finding["column"]) == (RECORD, line, column), finding
    assert finding["severity"] == "error"
    assert finding["message"] and finding["hint"]
    assert code == 1


def test_control_character_in_text(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, APPROVAL, "SignerName: ANNELIES BRUGMAN", 'SignerName: "ANNELIES\\x07BRUGMAN"')
    code, findings = check(example_repo, capsys)
    finding = only(findings, "model.control-character")
    assert finding["file"] == APPROVAL
    assert finding["path"] == "CocDataGroup.SigningAuthorityTable[0].SignerName"
    assert "U+0007" in str(finding["message"])
    assert code == 1


def test_raw_control_character(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "NL\n", "N\x07L\n")
    code, findings = check(example_repo, capsys)
    finding = only(findings, "yaml.syntax")
    assert (finding["line"], finding["column"]) == (7, 33)
    assert code == 1


def test_number_in_text_field_is_a_warning(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, APPROVAL, "ManufacturerAddressLine2: 5652 XT", "ManufacturerAddressLine2: 05652")
    code, findings = check(example_repo, capsys)
    finding = only(findings, "model.number-in-text")
    assert finding["severity"] == "warning"
    assert (finding["file"], finding["line"]) == (APPROVAL, 37)
    assert "'05652'" in str(finding["hint"])
    assert code == 0


def test_number_like_code_is_a_warning(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(
        example_repo,
        APPROVAL,
        "    - CodeForBodywork: AB\n",
        "    - CodeForBodywork: AB\n      CodeForBodyworkSupplementTable:\n        - CodeForBodyworkSupplement: 01\n",
    )
    code, findings = check(example_repo, capsys)
    finding = only(findings, "model.number-like-code")
    assert finding["severity"] == "warning"
    assert (
        finding["path"] == "CocDataGroup.BodyworkTable[0].CodeForBodyworkSupplementTable[0].CodeForBodyworkSupplement"
    )
    assert code == 0


def test_number_code_that_survives_is_not_flagged(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "Colour: '8'", "Colour: 8")
    code, findings = check(example_repo, capsys)
    assert findings == []
    assert code == 0


def test_empty_record_file(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / RECORD).write_bytes(b"")
    code, findings = check(example_repo, capsys)
    finding = only(findings, "yaml.empty")
    assert (finding["file"], finding["line"]) == (RECORD, 1)
    assert code == 1


def test_bom_and_crlf_are_accepted(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = example_repo / RECORD
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    code, findings = check(example_repo, capsys)
    assert findings == []
    assert code == 0


def test_duplicate_vin(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, OTHER_RECORD, "vin: XNHKH16S8TE103871", "vin: XNHKH16S1TE100214")
    code, findings = check(example_repo, capsys)
    duplicates = [f for f in findings if f["rule"] == "record.duplicate-vin"]
    assert sorted(f["file"] for f in duplicates) == [RECORD, OTHER_RECORD]
    assert all(f["line"] == 2 and f["column"] == 6 for f in duplicates)
    assert code == 1


def test_duplicate_vin_also_gave_duplicate_reference_id(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Without an issued block the reference id derives from the VIN, so a copy shares both.
    shutil.copy(example_repo / RECORD, example_repo / "records" / "XNHKH16S1TE100214-copy.yaml")
    code, findings = check(example_repo, capsys)
    assert len([f for f in findings if f["rule"] == "record.duplicate-vin"]) == 2
    assert [f for f in findings if f["rule"] == "record.duplicate-reference-id"] == []
    assert code == 1


def test_duplicate_vin_outside_the_checked_path(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, OTHER_RECORD, "vin: XNHKH16S8TE103871", "vin: XNHKH16S1TE100214")
    code, findings = check(example_repo, capsys, str(example_repo / RECORD))
    assert [f["file"] for f in findings if f["rule"] == "record.duplicate-vin"] == [RECORD]
    assert code == 1


def test_vin_check_digit_is_a_warning(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "vin: XNHKH16S1TE100214", "vin: XNHKH16S2TE100214")
    code, findings = check(example_repo, capsys)
    finding = only(findings, "vin.check-digit")
    assert finding["severity"] == "warning"
    assert finding["record"] == "XNHKH16S2TE100214"
    assert code == 0


def test_invalid_value_in_approval_names_the_records(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, APPROVAL, "          MaximumSpeed: 178", "          MaximumSpeed: fast")
    code, findings = check(example_repo, capsys)
    finding = only(findings, "model.decimal")
    assert (finding["file"], finding["line"], finding["column"]) == (APPROVAL, 149, 25)
    assert finding["path"] == "variants.KH16F.versions.KH16F-S17.CocDataGroup.MaximumSpeed"
    assert code == 1


def test_missing_required_element_in_approval(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, APPROVAL, "  MakeTable:\n    - Make: HALVARD\n", "")
    code, findings = check(example_repo, capsys)
    finding = only(findings, "model.required")
    assert finding["file"] == APPROVAL
    assert "MakeTable" in str(finding["message"])
    assert len(finding["records"]) == 4  # every record of the approval
    assert finding["record"] is None
    assert code == 1


def test_null_in_approval(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, APPROVAL, "  FuelType: M", "  FuelType: null")
    code, findings = check(example_repo, capsys)
    assert only(findings, "model.null")["line"] == 24
    assert code == 1


def test_null_in_record_removes_an_inherited_value(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "CocDataGroup:\n", "CocDataGroup:\n  CommercialNameTable: null\n")
    code, findings = check(example_repo, capsys)
    assert findings == []
    assert code == 0


def test_table_with_other_row_count_replaces(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = example_repo / RECORD
    path.write_text(path.read_text().replace("    - {}\n", ""))
    code, findings = check(example_repo, capsys)
    note = only(findings, "model.table-replaced")
    assert note["severity"] == "info"
    assert note["path"] == "CocDataGroup.EnergyConvertorTable"
    assert only(findings, "model.required")["file"] == RECORD
    assert code == 1


@pytest.mark.parametrize(
    "case,old,new,rule",
    [
        (
            "approval_number_format",
            "TypeApprovalNumber: e4*2018/858*04127*01",
            "TypeApprovalNumber: E4-2018-858-04127-01",
            "approval.number-format",
        ),
        (
            "approval_number_of_uk_authority",
            "TypeApprovalNumber: e4*2018/858*04127*01",
            "TypeApprovalNumber: e11*2018/858*04127*01",
            "approval.authority",
        ),
        (
            "ecode_against_declared_country",
            "CocDataGroup:\n",
            "Header:\n  DesignatedTypeApprovalCountry: e9\nCocDataGroup:\n",
            "approval.ecode-country",
        ),
    ],
)
def test_broken_approval(
    case: str, old: str, new: str, rule: str, example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(example_repo, APPROVAL, old, new)
    code, findings = check(example_repo, capsys, str(example_repo / APPROVAL))
    finding = only(findings, rule)
    assert finding["file"] == APPROVAL
    assert code == 1


def test_xsd_violation_maps_to_yaml_line(
    example_repo: Path, official_xsd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A schema stricter than the model: the XSD error points at the YAML line of the value."""
    folder = tmp_path / "stricter"
    folder.mkdir()
    shutil.copy(official_xsd.parent / "xmldsig-core-schema.xsd", folder)
    text = official_xsd.read_text(encoding="utf-8")
    marker = '<xs:simpleType name="Text52">'
    assert marker in text
    stricter = text.replace(
        marker + '\n        <xs:restriction base="xs:string">',
        marker + '\n        <xs:restriction base="xs:string">\n            <xs:pattern value="[A-G]+"/>',
        1,
    )
    assert stricter != text
    (folder / "IVI-2.0.xsd").write_text(stricter, encoding="utf-8")
    import hashlib

    digest = hashlib.sha256((folder / "IVI-2.0.xsd").read_bytes()).hexdigest()
    edit(
        example_repo,
        "ecoc.yaml",
        "sha256: ec7335836a4334db33e34d309f009c544abb4030118984a41b1cba818a18160c",
        f"sha256: {digest}",
    )
    code, findings = check(example_repo, capsys, "--xsd", str(folder / "IVI-2.0.xsd"))
    xsd = [f for f in findings if f["rule"] == "xsd.invalid"]
    assert xsd, findings
    make = [
        f
        for f in xsd
        if f["file"] == APPROVAL and f["path"] == "/InitialVehicleInformation/CocDataGroup/MakeTable/MakeGroup[1]/Make"
    ]
    assert make and all((f["file"], f["line"], f["column"]) == (APPROVAL, 30, 13) for f in make)
    assert len(make[0]["records"]) == 4
    assert code == 1


def test_record_file_named_after_another_vin(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / RECORD).rename(example_repo / "records" / "XNHKH16S1TE999999.yaml")
    code, findings = check(example_repo, capsys)
    finding = only(findings, "record.file-name")
    assert finding["severity"] == "warning"
    assert "XNHKH16S1TE100214.yaml" in str(finding["hint"])
    assert code == 0


def test_version_number_below_the_issued_one(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(
        example_repo,
        RECORD,
        "Header:\n",
        "issued:\n  IviVersionNumber: 2\n  IviReferenceId: 5b1c2f0e-7d3a-4c9b-9e21-3f6a0d4b8c17\n"
        "  IviVersionDateTime: 2026-02-13T09:00:00+01:00\n  content_sha256: " + "0" * 64 + "\nHeader:\n",
    )
    code, findings = check(example_repo, capsys)
    finding = only(findings, "record.issued-version")
    assert (finding["line"], finding["path"]) == (7, "issued.IviVersionNumber")
    assert code == 1


def test_issued_block_with_a_bad_reference_id(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(
        example_repo,
        RECORD,
        "Header:\n",
        "issued:\n  IviVersionNumber: 1\n  IviReferenceId: not-a-uuid\n"
        "  IviVersionDateTime: 2026-02-13T09:00:00+01:00\n  content_sha256: " + "0" * 64 + "\nHeader:\n",
    )
    code, findings = check(example_repo, capsys)
    assert only(findings, "model.pattern")["path"] == "issued.IviReferenceId"
    assert code == 1


def test_disabled_warning_is_not_reported(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "vin: XNHKH16S1TE100214", "vin: XNHKH16S2TE100214")
    edit(example_repo, "ecoc.yaml", "version: 1", "version: 1\ndisable: [vin.check-digit]")
    code, findings = check(example_repo, capsys)
    assert [f["rule"] for f in findings] == ["record.file-name"]
    assert code == 0


def test_error_rules_cannot_be_disabled(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, "ecoc.yaml", "version: 1", "version: 1\ndisable: [vin.format, mass.actual-within-maximum]")
    code = main(["--repo", str(example_repo), "check"])
    assert code == 3
    assert "vin.format, mass.actual-within-maximum cannot be disabled" in capsys.readouterr().err


def test_record_of_an_unreadable_approval(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / APPROVAL).write_bytes(b"CocDataGroup:\n  Type: caf\xe9\n")
    code, findings = check(example_repo, capsys, str(example_repo / RECORD))
    finding = only(findings, "record.approval-unknown")
    assert f"cannot be read from {APPROVAL}" in str(finding["message"])
    assert "did you mean" not in str(finding["hint"])
    assert only(findings, "yaml.encoding")["file"] == APPROVAL
    assert code == 1


def test_errors_in_the_approval_of_a_checked_record(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, APPROVAL, "TypeApprovalIssueDate: 2025-11-20", "TypeApprovalIssueDate: 2025-11-31")
    code, findings = check(example_repo, capsys, str(example_repo / RECORD))
    finding = only(findings, "model.date")
    assert finding["file"] == APPROVAL
    assert finding["records"] == ["XNHKH16S1TE100214"]
    assert code == 1


def test_unclosed_quote_points_where_it_opens(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "Colour: '8'", "Colour: '8")
    code, findings = check(example_repo, capsys)
    finding = only(findings, "yaml.syntax")
    assert (finding["line"], finding["column"]) == (26, 15)
    assert code == 1


def test_exponent_in_whole_number_suggests_digits(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1.478e3")
    _, findings = check(example_repo, capsys)
    assert "1478" in str(only(findings, "model.integer")["hint"])


def test_required_element_removed_by_the_record(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "CocDataGroup:\n", "CocDataGroup:\n  MakeTable: null\n")
    code, findings = check(example_repo, capsys)
    finding = only(findings, "model.required")
    assert (finding["file"], finding["line"], finding["column"]) == (RECORD, 9, 14)
    assert finding["path"] == "CocDataGroup.MakeTable"
    assert code == 1


def test_unclosed_quote_in_the_middle_of_a_file(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "DateManufactureVehicle: 2026-02-12", "DateManufactureVehicle: '2026-02-12")
    _, findings = check(example_repo, capsys)
    assert "line 9 opens a quoted value" in str(only(findings, "yaml.syntax")["hint"])


def test_dangling_link_as_approval(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / APPROVAL).unlink()
    (example_repo / APPROVAL).symlink_to(example_repo / "nowhere.yaml")
    code, findings = check(example_repo, capsys, str(example_repo / RECORD))
    assert only(findings, "io.read")["file"] == APPROVAL
    assert f"{APPROVAL} cannot be read" in str(only(findings, "record.approval-unknown")["hint"])
    assert code == 1


def test_decimal_in_whole_number_suggests_digits(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1478.0")
    _, findings = check(example_repo, capsys)
    assert "digits only: 1478" in str(only(findings, "model.integer")["hint"])


def test_negative_whole_number_is_not_told_to_keep_its_sign(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: -1478")
    _, findings = check(example_repo, capsys)
    finding = only(findings, "model.integer")
    assert finding["message"] == "ActualMass: '-1478' is negative"
    assert "-1478" not in str(finding["hint"])
    assert str(finding["hint"]).endswith("the schema allows no sign")


def test_number_with_a_leading_zero_is_warned_about(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 01470")
    code, findings = check(example_repo, capsys)
    finding = only(findings, "model.leading-zero")
    assert finding["severity"] == "warning"
    assert finding["message"] == (
        "ActualMass: the unquoted 01470 has a leading zero, and other YAML tools read it as the octal number 824"
    )
    assert finding["hint"] == "write it without the leading zero: 1470"
    assert code == 0


def test_missing_value_of_one_vehicle_is_reported_in_its_record(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(example_repo, RECORD, "  DateManufactureVehicle: 2026-02-12\n", "")
    _, findings = check(example_repo, capsys)
    finding = only(findings, "structure.date-of-manufacture-present")
    assert finding["file"] == RECORD


def test_mistyped_approval_number_adds_no_finding_about_the_country(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in (APPROVAL, RECORD):
        edit(example_repo, path, "e4*2018/858*04127*01", "E4*2018/858*04127*01")
    _, findings = check(example_repo, capsys, str(example_repo / RECORD))
    rules = {f["rule"] for f in findings}
    assert "approval.number-format" in rules
    assert not [f for f in findings if "DesignatedTypeApprovalCountry" in f["message"] and f["file"] == RECORD]


def test_approval_finding_names_only_records_of_its_version(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A wrong value in one version concerns its records only; in a version without records, none.
    edit(example_repo, APPROVAL, "          MaximumSpeed: 178", "          MaximumSpeed: fast")
    edit(
        example_repo,
        APPROVAL,
        "    versions:\n      KH16F-S17:\n",
        "    versions:\n      KH16F-X99:\n        CocDataGroup:\n          MaximumSpeed: slow\n      KH16F-S17:\n",
    )
    _, findings = check(example_repo, capsys)
    by_version = {str(f["path"]).split(".")[3]: f["records"] for f in findings if f["file"] == APPROVAL}
    assert by_version["KH16F-S17"] == ["XNHKH16S1TE100214", "XNHKH16S8TE103871"]
    assert by_version["KH16F-X99"] == []


def test_symlink_loop_as_record(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / "records" / "loop-a.yaml").symlink_to("loop-b")
    (example_repo / "records" / "loop-b").symlink_to("loop-a.yaml")
    code, findings = check(example_repo, capsys)
    finding = only(findings, "io.read")
    assert finding["file"] == "records/loop-a.yaml"
    assert "leads back to itself" in str(finding["hint"])
    assert code == 1
    assert main(["--repo", str(example_repo), "codeowners", "--check"]) == 1
    assert "records/loop-a.yaml:1:1: error io.read" in capsys.readouterr().err


def test_link_to_an_enclosing_folder_is_not_followed(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example_repo / "records" / "up").symlink_to("..")
    (example_repo / "records" / "self").symlink_to(".")
    code, findings = check(example_repo, capsys)
    assert findings == []
    assert code == 0


def test_approval_with_empty_review_owners(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with (example_repo / APPROVAL).open("a", encoding="utf-8") as handle:
        handle.write("owners:\n  review: []\n")
    code, findings = check(example_repo, capsys)
    finding = only(findings, "model.invalid")
    assert (finding["file"], finding["path"]) == (APPROVAL, "owners.review")
    assert "leave out owners.review" in str(finding["hint"])
    assert code == 1


def test_dangling_approval_link_is_reported_in_a_full_check(
    example_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (example_repo / "approvals" / "extra.yaml").symlink_to(example_repo / "nowhere.yaml")
    code, findings = check(example_repo, capsys)
    assert only(findings, "io.read")["file"] == "approvals/extra.yaml"
    assert code == 1


def test_one_character_vin_is_counted_in_the_singular(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "vin: XNHKH16S1TE100214", "vin: X")
    _, findings = check(example_repo, capsys)
    finding = only(findings, "vin.format")
    assert "'X' has 1 character;" in str(finding["message"])


def test_vin_format_message_repeated_the_value(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "vin: XNHKH16S1TE100214", "vin: 12345")
    _, findings = check(example_repo, capsys)
    message = str(only(findings, "vin.format")["message"])
    assert message.startswith("vin: '12345' has 5 characters;")
    assert message.count("12345") == 1


@pytest.mark.parametrize("element", ["VehicleCategory: N1", "StageOfCompletion: I"])
def test_record_cannot_change_the_type_category_or_stage(
    example_repo: Path, capsys: pytest.CaptureFixture[str], element: str
) -> None:
    edit(example_repo, RECORD, "CocDataGroup:\n", f"CocDataGroup:\n  {element}\n")
    code, findings = check(example_repo, capsys)
    finding = only(findings, "model.misplaced")
    assert finding["path"] == f"CocDataGroup.{element.split(':')[0]}"
    assert "property of the vehicle type" in str(finding["message"]) + str(finding["hint"])
    assert code == 1


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("Remark: x", "Remark belongs in a row of CocDataGroup.RemarkTable, not under CocDataGroup"),
        (
            "RollingResistanceClass: B",
            "RollingResistanceClass belongs in a row of CocDataGroup.AxleTable[n].TyreAxleTable, "
            "not under CocDataGroup",
        ),
    ],
)
def test_misplaced_key_hint_names_yaml_keys(
    example_repo: Path, capsys: pytest.CaptureFixture[str], key: str, hint: str
) -> None:
    edit(example_repo, RECORD, "CocDataGroup:\n", f"CocDataGroup:\n  {key}\n")
    _, findings = check(example_repo, capsys)
    assert only(findings, "model.unknown-key")["hint"] == hint


def test_copied_record_hint_spoke_of_imports_only(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    issued = (
        "issued:\n  IviVersionNumber: 1\n  IviReferenceId: 5b1c2f0e-7d3a-4c9b-9e21-3f6a0d4b8c17\n"
        "  IviVersionDateTime: 2026-02-14T07:48:44Z\n  content_sha256: " + "0" * 64 + "\n"
    )
    for relative in (RECORD, OTHER_RECORD):
        path = example_repo / relative
        path.write_text(path.read_text(encoding="utf-8") + issued, encoding="utf-8")
    main(["--repo", str(example_repo), "check", "--format", "json"])
    findings = json.loads(capsys.readouterr().out)["findings"]
    [hint, _] = [f["hint"] for f in findings if f["rule"] == "record.duplicate-reference-id"]
    assert "A record file copied from another keeps that record's issued block" in hint
    assert "An imported record keeps the id of its message" in hint
