"""`ecoc preview`: the pages a reviewer opens, read in headless Chromium as a reader sees them."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree
from selenium import webdriver
from selenium.webdriver.common.by import By

from ecoc.cli import main
from test_check import OTHER_RECORD, RECORD, edit

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
    assert [line.text for line in changed] == ["Actual mass 99999 1478"]
    assert (
        changed[0].find_element(By.CLASS_NAME, "before").value_of_css_property("text-decoration-line") == "line-through"
    )
    vin_row = browser.find_element(By.CSS_SELECTOR, "tr[data-element='VehicleIdentificationNumber']")
    assert vin_row.text == f"0.10 Vehicle identification number {VIN}"
    findings = browser.find_element(By.ID, "findings").text
    assert "error mass.actual-within-maximum" in findings
    assert "Readiness: ready at HEAD, now blocked." in browser.find_element(By.ID, "readiness").text


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
    assert "would mix its files with the repository's data" in capsys.readouterr().err
    assert sorted(path.suffix for path in (example_repo / "records").iterdir()) == [".yaml"] * 12


def test_page_lists_what_changed(example_repo: Path, tmp_path: Path, browser: webdriver.Chrome) -> None:
    edit(example_repo, RECORD, "ActualMass: 1478", "ActualMass: 1479")
    out = tmp_path / "preview"
    assert preview(example_repo, out) == 0
    open_page(browser, out / "records" / f"{VIN}.html")
    assert browser.find_element(By.ID, "changes").text == "Actual mass: 1478 → 1479"
