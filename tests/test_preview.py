"""`ecoc preview`: the pages a reviewer opens, read in headless Chromium as a reader sees them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree
from selenium import webdriver
from selenium.webdriver.common.by import By

from conftest import git
from ecoc.cli import main
from ecoc.ivi.items import label
from ecoc.preview import page_nodes
from ecoc.schemas import exported
from test_check import APPROVAL, OTHER_RECORD, RECORD, edit

VIN = "XNHKH16S1TE100214"
DATETIME = "2026-12-01T09:00:00+01:00"


def preview(repo: Path, out: Path, *args: str) -> int:
    return main(["--repo", str(repo), "preview", "--base", "HEAD", "--out", str(out), "--datetime", DATETIME, *args])


def open_page(browser: webdriver.Chrome, path: Path) -> None:
    browser.get(path.as_uri())


def test_changed_value_is_marked_with_its_old_value(
    example_repo: Path, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 99999")
    out = tmp_path / "preview"
    assert preview(example_repo, out) == 0
    open_page(browser, out / "index.html")
    row = browser.find_element(By.ID, f"record-{VIN}")
    assert row.text.split()[:4] == [VIN, "records/XNHKH16S1TE100214.yaml", "ready", "blocked"]
    assert row.find_element(By.CLASS_NAME, "values").text == "1"
    row.find_element(By.CLASS_NAME, "page").click()
    assert browser.title == f"{VIN}: certificate of conformity preview"
    changed = browser.find_elements(By.CSS_SELECTOR, "tr.value.changed")
    assert [line.text for line in changed] == ["13.2 Actual mass 99999 kg 1478 kg"]
    assert (
        changed[0].find_element(By.CLASS_NAME, "before").value_of_css_property("text-decoration-line") == "line-through"
    )
    vin_row = browser.find_element(By.CSS_SELECTOR, "tr[data-element='VehicleIdentificationNumber']")
    assert vin_row.text == f"0.10 Vehicle identification number {VIN}"
    findings = browser.find_element(By.ID, "findings").text
    assert "error mass.actual-within-maximum" in findings
    assert "Readiness: ready at HEAD, now blocked." in browser.find_element(By.ID, "readiness").text


def test_blocked_page_said_the_release_signs_it(example_repo: Path, tmp_path: Path) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 99999")
    edit(example_repo, OTHER_RECORD, "ActualMass: 1496", "ActualMass: 1497")
    out = tmp_path / "preview"
    preview(example_repo, out)
    pages = {path.name: path.read_text(encoding="utf-8") for path in (out / "records").glob("*.html")}
    blocked = next(text for name, text in pages.items() if VIN in name)
    ready = next(text for name, text in pages.items() if "XNHKH16S8TE103871" in name)
    assert "the release job signs this XML only after the blocking findings under Findings are resolved" in blocked
    assert "the release job signs the XML of this record" not in blocked
    assert "the release job signs the XML of this record." in ready


def test_waived_finding_is_not_drawn_as_a_blocking_error(
    example_repo: Path, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    from test_changes import BALLAST, write_waiver

    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 99999")
    write_waiver(example_repo, "wltp.test-mass-not-below-actual-mass", VIN, waiver_id="W-7", reason=BALLAST)
    out = tmp_path / "preview"
    preview(example_repo, out)
    open_page(browser, out / "records" / f"{VIN}.html")
    waived = browser.find_element(By.CSS_SELECTOR, "#findings li.waived")
    blocking = browser.find_element(By.CSS_SELECTOR, "#findings li.error:not(.waived)")
    assert "waived by W-7" in waived.text
    assert waived.value_of_css_property("color") != blocking.value_of_css_property("color")


def test_xml_matches_render_and_diff(example_repo: Path, tmp_path: Path) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    out = tmp_path / "preview"
    assert preview(example_repo, out) == 0
    rendered = tmp_path / "render"
    main(
        [
            "--repo",
            str(example_repo),
            "render",
            str(example_repo / RECORD),
            "--out",
            str(rendered),
            "--datetime",
            DATETIME,
        ]
    )
    assert (out / "records" / f"{VIN}.xml").read_bytes() == (rendered / f"{VIN}.xml").read_bytes()
    diff = (out / "records" / f"{VIN}.diff").read_text(encoding="utf-8")
    assert diff.startswith(f"--- {VIN}.xml at HEAD\n+++ {VIN}.xml\n")
    assert "-      <ActualMass>1478</ActualMass>\n+      <ActualMass>1479</ActualMass>\n" in diff
    assert sorted(path.name for path in (out / "records").iterdir()) == [f"{VIN}.diff", f"{VIN}.html", f"{VIN}.xml"]


def test_moved_record_is_one_record_with_an_empty_diff(
    example_repo: Path, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    (example_repo / "records" / "kh16").mkdir()
    git(example_repo, "mv", RECORD, f"records/kh16/{VIN}.yaml")
    out = tmp_path / "preview"
    assert preview(example_repo, out) == 0
    # The XML did not change, so there is no diff file, and the index says so instead of linking an empty one.
    assert sorted(path.name for path in (out / "records").iterdir()) == [f"{VIN}.html", f"{VIN}.xml"]
    open_page(browser, out / "index.html")
    row = browser.find_element(By.ID, f"record-{VIN}")
    assert row.find_element(By.CLASS_NAME, "files").text == "XML · XML unchanged"
    assert f"records/kh16/{VIN}.yaml, moved from {RECORD}" in row.text
    assert row.find_element(By.CLASS_NAME, "values").text == "0"
    assert [cell.text for cell in row.find_elements(By.CLASS_NAME, "state")] == ["ready", "ready"]
    row.find_element(By.CLASS_NAME, "page").click()
    assert browser.find_element(By.ID, "renamed-from").text == RECORD


def test_new_and_deleted_records(example_repo: Path, tmp_path: Path, browser: webdriver.Chrome) -> None:
    text = (example_repo / OTHER_RECORD).read_text(encoding="utf-8")
    (example_repo / OTHER_RECORD).unlink()
    new = example_repo / "records" / "XNHKH16S8TE103872.yaml"
    new.write_text(text.replace("XNHKH16S8TE103871", "XNHKH16S8TE103872"), encoding="utf-8")
    out = tmp_path / "preview"
    assert preview(example_repo, out) == 0
    open_page(browser, out / "index.html")
    gone = browser.find_element(By.ID, "record-XNHKH16S8TE103871")
    assert gone.text.split()[2:4] == ["ready", "absent"]
    assert gone.find_elements(By.CLASS_NAME, "page") == []
    added = browser.find_element(By.ID, "record-XNHKH16S8TE103872")
    assert added.text.split()[2:4] == ["absent", "ready"]
    removal = (out / "records" / "XNHKH16S8TE103871.diff").read_text(encoding="utf-8")
    assert removal.startswith("--- XNHKH16S8TE103871.xml at HEAD\n+++ XNHKH16S8TE103871.xml\n")
    assert all(line.startswith(("-", "@")) for line in removal.splitlines()[2:])


def test_data_is_shown_as_text_never_run(example_repo: Path, tmp_path: Path, browser: webdriver.Chrome) -> None:
    remark = "<script>document.title = 'replaced'</script><b>bold</b>"
    with (example_repo / RECORD).open("a", encoding="utf-8") as handle:
        handle.write(f'  RemarkTable:\n    - RemarkSubjectDescription: RMRKS\n      Remark: "{remark}"\n')
    out = tmp_path / "preview"
    assert preview(example_repo, out) == 0
    open_page(browser, out / "records" / f"{VIN}.html")
    assert browser.title == f"{VIN}: certificate of conformity preview"
    row = browser.find_element(By.CSS_SELECTOR, "tr[data-element='Remark']")
    assert remark in row.text
    assert browser.find_elements(By.CSS_SELECTOR, "#certificate b") == []


def test_preview_needs_an_empty_folder(example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    out = tmp_path / "preview"
    out.mkdir()
    (out / "notes.txt").write_text("keep\n")
    assert preview(example_repo, out) == 2
    assert "the folder is not empty" in capsys.readouterr().err
    (out / "records").mkdir()
    (out / "records" / "OLD.html").write_text("stale\n")
    assert preview(example_repo, out, "--clean") == 0
    assert not (out / "records" / "OLD.html").exists()
    assert (out / "notes.txt").exists()
    assert (out / "records" / f"{VIN}.html").exists()


def test_index_counts_in_agreeing_number(example_repo: Path, tmp_path: Path) -> None:
    def counted(out: Path) -> str:
        index = etree.fromstring((out / "index.html").read_bytes(), etree.HTMLParser())
        paragraph = index.find(".//p[@id='count']")
        assert paragraph is not None
        return "".join(paragraph.itertext())

    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    assert preview(example_repo, tmp_path / "one") == 0
    assert counted(tmp_path / "one") == "1 record changed or affected by the change."
    edit(example_repo, OTHER_RECORD, "ActualMass: 1496", "ActualMass: 1497")
    assert preview(example_repo, tmp_path / "two") == 0
    assert counted(tmp_path / "two") == "2 records changed or affected by the change."


def test_rule_change_previews_every_record(example_repo: Path, tmp_path: Path) -> None:
    (example_repo / "rules" / "more.yaml").write_text(
        "rules:\n"
        "  - id: test.speed-below-250\n"
        "    title: Speed below 250 km/h\n"
        "    severity: info\n"
        "    check: coc.MaximumSpeed < 250.0\n"
        "    message: maximum speed {{ coc.MaximumSpeed }} km/h\n"
        "    path: CocDataGroup.MaximumSpeed\n"
        "    examples:\n"
        "      pass: {CocDataGroup: {MaximumSpeed: 170}}\n"
        "      fail: {CocDataGroup: {MaximumSpeed: 260}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "preview"
    assert preview(example_repo, out) == 0
    pages = sorted((out / "records").glob("*.html"))
    assert len(pages) == 12
    for page in pages:
        document = etree.fromstring(page.read_bytes(), etree.HTMLParser())
        assert document.find(".//table[@id='certificate']") is not None


def test_failing_template_leaves_no_files(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    (example_repo / "templates").mkdir()
    (example_repo / "templates" / "coc.html.j2").write_text("<p>{{ 1 / 0 }}</p>\n", encoding="utf-8")
    out = tmp_path / "preview"
    assert preview(example_repo, out) == 3
    assert "template coc.html.j2 failed while rendering: ZeroDivisionError" in capsys.readouterr().err
    assert not out.exists() or list(out.rglob("*.*")) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{% include "nope.j2" %}', "template nope.j2 is missing from templates/ and from ecoc (used by coc.html.j2)"),
        ("{{ range(10 ** 9) | list | length }}", "template coc.html.j2 failed while rendering"),
    ],
)
def test_template_mistakes_are_reported(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    (example_repo / "templates").mkdir()
    (example_repo / "templates" / "coc.html.j2").write_text(text + "\n", encoding="utf-8")
    assert preview(example_repo, tmp_path / "preview") == 3
    assert expected in capsys.readouterr().err


def test_preview_stays_out_of_the_data(example_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    assert preview(example_repo, example_repo / "records", "--clean") == 2
    assert "lies in the repository's records/ folder, which contains data ecoc reads" in capsys.readouterr().err
    assert sorted(path.suffix for path in (example_repo / "records").iterdir()) == [".yaml"] * 12


def test_page_lists_what_changed(example_repo: Path, tmp_path: Path, browser: webdriver.Chrome) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    out = tmp_path / "preview"
    assert preview(example_repo, out) == 0
    open_page(browser, out / "records" / f"{VIN}.html")
    assert browser.find_element(By.ID, "changes").text == "13.2 Actual mass: 1478 kg → 1479 kg"


def test_removed_table_row_is_the_row_that_was_removed(
    example_repo: Path, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    edit(example_repo, APPROVAL, "    - AdvancedSafetySystem: ISA\n", "")
    out = tmp_path / "preview"
    assert preview(example_repo, out) == 0
    diff = (out / "records" / f"{VIN}.diff").read_text(encoding="utf-8")
    assert "-        <AdvancedSafetySystem>ISA</AdvancedSafetySystem>\n" in diff
    open_page(browser, out / "index.html")
    assert browser.find_element(By.ID, f"record-{VIN}").find_element(By.CLASS_NAME, "values").text == "1"
    open_page(browser, out / "records" / f"{VIN}.html")
    assert browser.find_element(By.ID, "removed").text == "Advanced safety system: ISA"
    assert browser.find_elements(By.CSS_SELECTOR, "tr.changed") == []
    assert browser.find_elements(By.ID, "changes") == []
    systems = browser.find_elements(By.CSS_SELECTOR, "tr[data-element='AdvancedSafetySystem'] .now")
    assert [system.text for system in systems] == ["AEBS", "ELKS", "DDAW", "ADDW", "EDR", "ESS", "AIF", "TPMS", "eCall"]


def _certificate(*rows: str) -> bytes:
    groups = "".join(f"<Row>{row}</Row>" for row in rows)
    return (
        '<InitialVehicleInformation xmlns="urn:test">'
        f"<CocDataGroup><TyreTable>{groups}</TyreTable></CocDataGroup>"
        "</InitialVehicleInformation>"
    ).encode()


def _tyre(size: str, rim: str) -> str:
    return f"<TyreSize>{size}</TyreSize><RimSize>{rim}</RimSize>"


def test_added_table_row_is_the_only_change() -> None:
    base = _certificate(_tyre("195/65R15", "6J"), _tyre("205/55R16", "7J"))
    now = _certificate(_tyre("195/65R15", "6J"), _tyre("225/45R17", "7.5J"), _tyre("205/55R16", "7J"))
    nodes, removed = page_nodes(now, base)
    rows = nodes[0].children[0].children
    assert [row.changed for row in rows] == [False, True, False]
    assert [(value.value, value.before) for value in rows[1].children] == [("225/45R17", None), ("7.5J", None)]
    assert removed == []


def test_table_rows_pair_by_shared_values() -> None:
    base = _certificate(_tyre("195/65R15", "6J"), _tyre("205/55R16", "7J"), _tyre("225/45R17", "7.5J"))
    now = _certificate(_tyre("195/65R15", "6J"), _tyre("225/45R17", "8J"))
    nodes, removed = page_nodes(now, base)
    rows = nodes[0].children[0].children
    assert [row.changed for row in rows] == [False, True]
    assert [(value.value, value.before) for value in rows[1].children if value.changed] == [("8J", "7.5J")]
    assert [(value.label, value.before) for value in removed] == [("Tyre size", "205/55R16"), ("Rim size", "7J")]


def test_unrenderable_record_lists_its_blocking_findings(
    example_repo: Path, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: heavy")
    out = tmp_path / "preview"
    assert preview(example_repo, out) == 0
    assert sorted(path.name for path in (out / "records").iterdir()) == [f"{VIN}.html"]
    open_page(browser, out / "index.html")
    row = browser.find_element(By.ID, f"record-{VIN}")
    assert row.find_element(By.CLASS_NAME, "values").text == "cannot be rendered: 1 blocking finding"
    assert row.find_element(By.CLASS_NAME, "files").text == "none"
    row.find_element(By.CLASS_NAME, "page").click()
    blocking = browser.find_element(By.ID, "blocking").text
    assert "error model.integer: ActualMass: 'heavy' is not a whole number" in blocking
    assert f"({RECORD}:13:17, at CocDataGroup.MassGroup.ActualMass)" in blocking
    assert "cannot render" in browser.find_element(By.ID, "readiness").text
    assert browser.find_elements(By.ID, "certificate") == []


def test_record_unrenderable_at_base_gets_no_diff(
    example_repo: Path, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: heavy")
    git(example_repo, "commit", "-q", "-am", "break the record")
    edit(example_repo, RECORD, "ActualMass: heavy", "ActualMass: 1478")
    out = tmp_path / "preview"
    assert preview(example_repo, out) == 0
    assert sorted(path.name for path in (out / "records").iterdir()) == [f"{VIN}.html", f"{VIN}.xml"]
    open_page(browser, out / "index.html")
    row = browser.find_element(By.ID, f"record-{VIN}")
    assert row.find_element(By.CLASS_NAME, "values").text == "not rendered at HEAD"
    assert row.find_element(By.CLASS_NAME, "files").text == "XML"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("VehicleCertified155Indicator", "Vehicle certified 155 indicator"),
        ("ManufacturerAddressLine1", "Manufacturer address line 1"),
        ("Maximum30MinutesPower", "Maximum 30 minutes power"),
        ("TestWltpType1Group", "Test WLTP type 1 group"),
        ("LocationVin23Wheel", "Location VIN 23 wheel"),
        ("Iso7638ConnectorIndicator", "ISO 7638 connector indicator"),
        ("WltpCo2Combined", "WLTP CO2 combined"),
        ("WhtcCh4", "WHTC CH4"),
        ("TypeIHcNox", "Type I HC NOx"),
        ("WltpRoadLoadCoefficientF0", "WLTP road load coefficient F0"),
        ("MassInRunningOrder", "Mass in running order"),
    ],
)
def test_label_keeps_numbers_apart_from_words(name: str, expected: str) -> None:
    assert label(name) == expected


def test_schema_description_uses_spaced_label() -> None:
    schema = json.loads(exported()["record.schema.json"])
    described = json.dumps(schema)
    assert '"CoC item 0.5: Manufacturer address line 1"' in described
    assert "line1" not in described


def test_removed_value_shows_item_and_label(example_repo: Path, tmp_path: Path, browser: webdriver.Chrome) -> None:
    edit(example_repo, RECORD, "            WltpCo2ExtraHigh: 133\n", "")
    out = tmp_path / "preview"
    assert preview(example_repo, out) == 0
    open_page(browser, out / "records" / f"{VIN}.html")
    assert browser.find_element(By.ID, "removed").text == "49 WLTP CO2 extra high: 133"


@pytest.mark.parametrize(
    ("element", "number"),
    [
        ("Wheelbase", "4"),
        ("ActualMass", "13.2"),
        ("NumberOfPoweredAxles", "3"),
        ("WltpFuelConsumptionCombined", "49"),
        ("GearboxType", "28"),
        ("CodeForBodywork", "38"),
        ("SoundLevelDriveBy", "46"),
    ],
)
def test_elements_the_rules_cite_have_their_item_number(element: str, number: str) -> None:
    from ecoc.ivi.items import item

    assert item(element) == number


def test_index_lists_newly_blocked_records_first(example_repo: Path, tmp_path: Path) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    edit(example_repo, OTHER_RECORD, "ActualMass: 1496", "ActualMass: 99999")
    out = tmp_path / "preview"
    preview(example_repo, out)
    index = etree.HTML((out / "index.html").read_bytes())
    rows = [row.get("id") for row in index.iter("tr") if row.get("id")]
    assert rows == ["record-XNHKH16S8TE103871", f"record-{VIN}"]


def test_page_shows_units_and_what_codes_stand_for(
    example_repo: Path, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    out = tmp_path / "preview"
    preview(example_repo, out)
    open_page(browser, out / "records" / f"{VIN}.html")
    length = browser.find_element(By.CSS_SELECTOR, "tr[data-element='Length'] .now")
    assert length.text.endswith(" mm")
    source = browser.find_element(By.CSS_SELECTOR, "tr[data-element='EnergySource'] .now")
    assert source.text == "10 (petrol)"


def test_preview_warned_about_its_own_normal_use(
    example_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    capsys.readouterr()
    assert main(["--repo", str(example_repo), "preview", "--base", "HEAD", "--out", str(tmp_path / "a")]) == 0
    assert "commit first" not in capsys.readouterr().err
    assert main(["--repo", str(example_repo), "-v", "preview", "--base", "HEAD", "--out", str(tmp_path / "b")]) == 0
    assert "differs from HEAD" in capsys.readouterr().err
    # ecoc render, whose files may be signed, still warns.
    assert main(["--repo", str(example_repo), "render", "--out", str(tmp_path / "c")]) == 0
    assert "commit first to render what is released" in capsys.readouterr().err
