from __future__ import annotations

import copy
from pathlib import Path

import pytest
from lxml import etree

from ecoc.cli import main
from ecoc.ivi import spec as ivi_spec
from ecoc.ivi.header import reference_id
from ecoc.ivi.spec import ElementSpec
from ecoc.ivi.values import parse_value
from ecoc.ivi.xsd import SchemaLocation, load

NS = ivi_spec.NAMESPACE
Q = f"{{{NS}}}"


def canonical(element: etree._Element, spec: ElementSpec) -> object:
    """A comparable form of an element: xs:all groups as dicts, tables as lists, typed leaves."""
    if spec.kind == "leaf":
        assert spec.simple is not None
        text = element.text or ""
        value, problem = parse_value(
            text.strip() if spec.simple.kind not in ("text", "code", "pattern") else text, spec.simple
        )
        assert problem is None, (spec.xpath, text)
        return value
    children = [c for c in element if isinstance(c.tag, str)]
    if spec.kind == "table":
        return [canonical_group(row, spec) for row in children]
    return canonical_group(element, spec)


def canonical_group(element: etree._Element, spec: ElementSpec) -> dict[str, object]:
    result: dict[str, object] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue
        name = etree.QName(child).localname
        assert name not in result, f"{name} repeated in {spec.name}"
        result[name] = canonical(child, spec.by_name[name])
    return result


def content(path_or_bytes: Path | bytes) -> tuple[dict[str, object], object]:
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    header = canonical_group(root.find(f"{Q}Header"), ivi_spec.header())
    coc = canonical_group(root.find(f"{Q}CocDataGroup"), ivi_spec.coc_data_group())
    return header, coc


def run(repo: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--repo", str(repo), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_official_examples_survive_import_and_render(
    official_examples: list[Path], official_xsd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = load(SchemaLocation(official_xsd, "test"), relaxed=True)
    for original in official_examples:
        # One repository per example: the Toyota specimens share one IviReferenceId.
        repo = tmp_path / original.stem
        repo.mkdir()
        (repo / "ecoc.yaml").write_text("version: 1\n")
        code, _, err = run(repo, "import", "ivi", str(original), capsys=capsys)
        assert code == 0, err
        out_dir = tmp_path / f"{original.stem}-rendered"
        code, _, err = run(
            repo,
            "render",
            "--xsd",
            str(official_xsd),
            "--out",
            str(out_dir),
            "--datetime",
            "2026-12-01T10:00:00+01:00",
            capsys=capsys,
        )
        assert code == 0, err
        vin = etree.parse(str(original)).findtext(f".//{Q}VehicleIdentificationNumber")
        rendered = (out_dir / f"{vin}.xml").read_bytes()
        assert schema.validate_bytes(rendered) == [], original.name
        original_header, original_coc = content(original)
        rendered_header, rendered_coc = content(rendered)
        assert rendered_coc == original_coc, original.name
        assert rendered_header == original_header, original.name


def test_shared_reference_id_is_an_error(
    official_examples: list[Path], empty_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toyota = [p for p in official_examples if "toyota" in p.name.lower()]
    assert len(toyota) >= 2
    # The examples share one IviReferenceId, which two vehicles' certificates cannot: nothing is written.
    code, _, err = run(empty_repo, "import", "ivi", *map(str, toyota), capsys=capsys)
    assert code == 1
    assert "import.conflict" in err
    assert "is also the id of" in err
    assert not list((empty_repo / "records").glob("*.yaml"))
    # Imported one at a time, the second finds the first's record.
    assert run(empty_repo, "import", "ivi", str(toyota[0]), capsys=capsys)[0] == 0
    code, _, err = run(empty_repo, "import", "ivi", str(toyota[1]), capsys=capsys)
    assert code == 1
    assert "is also the id of records/" in err


def vehicle_variant(example: Path, vin: str, changes: dict[str, str]) -> bytes:
    """A copy of an example message with another VIN and some values changed."""
    tree = etree.parse(str(example))
    root = tree.getroot()
    root.find(f".//{Q}VehicleIdentificationNumber").text = vin
    # Another vehicle's certificate has an IviReferenceId of its own.
    root.find(f".//{Q}IviReferenceId").text = reference_id(vin, 1, 1)
    for name, value in changes.items():
        root.find(f".//{Q}{name}").text = value
    for signature in root.findall("{http://www.w3.org/2000/09/xmldsig#}Signature"):
        root.remove(signature)
    return etree.tostring(copy.deepcopy(root), xml_declaration=True, encoding="UTF-8")


def test_vehicles_of_one_approval_extend_the_same_file(
    official_examples: list[Path],
    official_xsd: Path,
    empty_repo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = next(p for p in official_examples if "rav4" in p.name.lower())
    messages = {
        "JTMM1C0MPTEST0002": {"DateManufactureVehicle": "2024-02-01", "ActualMass": "1712"},
        "JTMM1C0MPTEST0003": {"Length": "4610"},
        "JTMM1C0MPTEST0004": {"Version": "AXAL52L-ANXPBW(2X)", "Height": "1690"},
        "JTMM1C0MPTEST0005": {"Version": "AXAL52L-ANXPBW(3X)", "Width": "1860"},
    }
    files = []
    for vin, changes in messages.items():
        path = tmp_path / f"{vin}.xml"
        path.write_bytes(vehicle_variant(example, vin, changes))
        files.append(path)
    code, out, err = run(empty_repo, "import", "ivi", str(example), capsys=capsys)
    assert code == 0, err
    code, out, err = run(empty_repo, "import", "ivi", *map(str, files), capsys=capsys)
    assert code == 0, err
    assert "extended approvals/e6-2007-46-0289-09.yaml" in out
    assert sorted(p.name for p in (empty_repo / "approvals").iterdir()) == ["e6-2007-46-0289-09.yaml"]
    approval_text = (empty_repo / "approvals" / "e6-2007-46-0289-09.yaml").read_text()
    assert "AXAL52L-ANXPBW(2X):" in approval_text
    assert "AXAL52L-ANXPBW(3X):" in approval_text
    # A value that differs from the version's is carried by the vehicle's own record.
    assert "Length: 4610" in (empty_repo / "records" / "JTMM1C0MPTEST0003.yaml").read_text()

    out_dir = tmp_path / "out"
    code, _, err = run(
        empty_repo,
        "render",
        "--xsd",
        str(official_xsd),
        "--out",
        str(out_dir),
        "--datetime",
        "2026-12-01T10:00:00Z",
        capsys=capsys,
    )
    assert code == 0, err
    for path in [example, *files]:
        vin = etree.parse(str(path)).findtext(f".//{Q}VehicleIdentificationNumber")
        assert content(out_dir / f"{vin}.xml")[1] == content(path)[1], vin


HOSTILE = {
    "doctype_with_entities": b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<InitialVehicleInformation xmlns="http://eu.ereg.initialvehicleinformation.v2">&lol2;</InitialVehicleInformation>""",
    "external_entity": b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<InitialVehicleInformation xmlns="http://eu.ereg.initialvehicleinformation.v2">&xxe;</InitialVehicleInformation>""",
    "not_well_formed": b"<InitialVehicleInformation><Header></InitialVehicleInformation>",
    "ivi_1x_namespace": b"<InitialVehicleInformation><Header/></InitialVehicleInformation>",
    "wrong_root": b'<Invoice xmlns="urn:x"/>',
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_or_foreign_xml_is_rejected(
    case: str, empty_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{case}.xml"
    path.write_bytes(HOSTILE[case])
    code, _, err = run(empty_repo, "import", "ivi", str(path), capsys=capsys)
    assert code == 1
    assert f"{path}:" in err
    assert "nothing was written" in err
    assert "root:" not in err  # no /etc/passwd content
    assert not (empty_repo / "approvals").exists()
    assert not (empty_repo / "records").exists()


def test_invalid_value_in_message_writes_nothing(
    official_examples: list[Path], empty_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = official_examples[0]
    good = tmp_path / "good.xml"
    good.write_bytes(vehicle_variant(example, "WVWZZZ1KZAW000001", {}))
    bad = tmp_path / "bad.xml"
    bad.write_bytes(vehicle_variant(example, "WVWZZZ1KZAW000002", {"TypeApprovalIssueDate": "2022-02-30"}))
    code, _, err = run(empty_repo, "import", "ivi", str(good), str(bad), capsys=capsys)
    assert code == 1
    assert f"{bad}:" in err
    assert "error import.invalid-value: TypeApprovalIssueDate: 2022-02-30 is not a date in the calendar" in err
    assert "nothing was written" in err
    assert not (empty_repo / "records").exists()


def test_existing_record_is_never_overwritten(
    official_examples: list[Path], empty_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = official_examples[0]
    assert run(empty_repo, "import", "ivi", str(example), capsys=capsys)[0] == 0
    record = next((empty_repo / "records").iterdir())
    record.write_text(record.read_text() + "# reviewed\n")
    code, _, err = run(empty_repo, "import", "ivi", str(example), capsys=capsys)
    assert code == 1
    assert "already exists" in err
    assert record.read_text().endswith("# reviewed\n")


def test_broken_approval_is_not_extended(
    official_examples: list[Path], empty_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = next(p for p in official_examples if "rav4" in p.name.lower())
    assert run(empty_repo, "import", "ivi", str(example), capsys=capsys)[0] == 0
    approval = empty_repo / "approvals" / "e6-2007-46-0289-09.yaml"
    approval.write_text(approval.read_text().replace("TypeApprovalType: EU", "TypeApprovalType: XX"))
    before = approval.read_bytes()
    second = tmp_path / "second.xml"
    second.write_bytes(vehicle_variant(example, "JTMM1C0MPTEST0009", {"Version": "AXAL52L-ANXPBW(9Z)"}))
    code, _, err = run(empty_repo, "import", "ivi", str(second), capsys=capsys)
    assert code == 1
    assert "has errors" in err
    assert approval.read_bytes() == before
    assert not (empty_repo / "records" / "JTMM1C0MPTEST0009.yaml").exists()


def test_unreadable_approval_file_is_not_overwritten(
    official_examples: list[Path], empty_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = next(p for p in official_examples if "rav4" in p.name.lower())
    approval = empty_repo / "approvals" / "e6-2007-46-0289-09.yaml"
    approval.parent.mkdir()
    approval.write_bytes(b"CocDataGroup:\n  Type: caf\xe9\n")
    code, _, err = run(empty_repo, "import", "ivi", str(example), capsys=capsys)
    assert code == 1
    assert "cannot be read as approval" in err
    assert approval.read_bytes() == b"CocDataGroup:\n  Type: caf\xe9\n"


def test_changed_data_of_an_issued_certificate_is_blocked(
    official_examples: list[Path], empty_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = next(p for p in official_examples if "rav4" in p.name.lower())
    assert run(empty_repo, "import", "ivi", str(example), capsys=capsys)[0] == 0
    record = empty_repo / "records" / "JTMM1C0MPTEST0001.yaml"
    record.write_text(record.read_text().replace("ActualMass: 1707", "ActualMass: 1750"))
    code, _, err = run(
        empty_repo, "render", "--out", str(tmp_path / "out"), "--datetime", "2026-12-01T10:00:00Z", capsys=capsys
    )
    assert code == 1
    assert "record.issued-changed" in err
    assert not (tmp_path / "out" / "JTMM1C0MPTEST0001.xml").exists()
    # A correction gets a new identity and renders.
    record.write_text(
        record.read_text()
        .replace("vin: JTMM1C0MPTEST0001\n", "vin: JTMM1C0MPTEST0001\ncorrection_reason: actual mass measured again\n")
        .replace("Header:\n", "Header:\n  IviVersionNumber: 2\n")
    )
    code, _, err = run(
        empty_repo,
        "render",
        "--clean",
        "--out",
        str(tmp_path / "out"),
        "--datetime",
        "2026-12-01T10:00:00Z",
        capsys=capsys,
    )
    assert code == 0, err


def test_vehicle_without_an_element_of_its_version(
    official_examples: list[Path], empty_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = next(p for p in official_examples if "rav4" in p.name.lower())
    tree = etree.parse(str(example))
    root = tree.getroot()
    root.find(f".//{Q}VehicleIdentificationNumber").text = "JTMM1C0MPTEST0023"
    root.find(f".//{Q}IviReferenceId").text = reference_id("JTMM1C0MPTEST0023", 1, 1)
    speed = root.find(f".//{Q}MaximumSpeed")
    speed.getparent().remove(speed)
    second = tmp_path / "second.xml"
    second.write_bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
    code, _, err = run(empty_repo, "import", "ivi", str(example), str(second), capsys=capsys)
    assert code == 0, err
    assert "MaximumSpeed: null" in (empty_repo / "records" / "JTMM1C0MPTEST0023.yaml").read_text()


def test_same_vin_twice_in_one_batch(
    official_examples: list[Path], empty_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = official_examples[0]
    code, _, err = run(empty_repo, "import", "ivi", str(example), str(example), capsys=capsys)
    assert code == 1
    assert "twice in this import" in err


def test_comment_inside_a_value_is_ignored(
    official_examples: list[Path], empty_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = next(p for p in official_examples if "rav4" in p.name.lower())
    text = example.read_text(encoding="utf-8").replace("<Make>TOYOTA</Make>", "<Make>TOY<!-- note -->OTA</Make>")
    path = tmp_path / "commented.xml"
    path.write_text(text, encoding="utf-8")
    code, _, err = run(empty_repo, "import", "ivi", str(path), capsys=capsys)
    assert code == 0, err
    assert "Make: TOYOTA" in (empty_repo / "approvals" / "e6-2007-46-0289-09.yaml").read_text()


def test_invalid_vin_is_reported_once(
    official_examples: list[Path], empty_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "long-vin.xml"
    path.write_bytes(vehicle_variant(official_examples[0], "XNHKH16S1TE1002145", {}))
    code, _, err = run(empty_repo, "import", "ivi", str(path), capsys=capsys)
    assert code == 1
    assert "VehicleIdentificationNumber" in err
    assert "has no VehicleIdentificationNumber" not in err
