"""JSON Schemas for editors: up to date, valid, and in agreement with the example files."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from conftest import PROJECT
from ecoc.cli import main
from ecoc.schemas import SCHEMA_FILES, exported

MODELINE = re.compile(r"# yaml-language-server: \$schema=(\S+)\n")


def as_editor_reads(path: Path) -> Any:
    """Load YAML as a YAML 1.2 language server does: dates stay text."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list):
            return [plain(item) for item in value]
        if isinstance(value, datetime.date):
            return value.isoformat()
        return value

    return plain(YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8")))


def validator(kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((PROJECT / "schemas" / SCHEMA_FILES[kind]).read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_committed_schemas_are_up_to_date() -> None:
    for name, text in exported().items():
        assert (PROJECT / "schemas" / name).read_text(encoding="utf-8") == text, f"run ecoc schema export ({name})"


@pytest.mark.parametrize("kind", ["approval", "record"])
def test_example_files_follow_their_schema(kind: str) -> None:
    check = validator(kind)
    files = sorted((PROJECT / f"{kind}s").glob("*.yaml"))
    assert files
    for path in files:
        line = MODELINE.match(path.read_text(encoding="utf-8"))
        assert line is not None, f"{path.name} has no yaml-language-server line"
        assert (path.parent / line.group(1)).resolve() == PROJECT / "schemas" / SCHEMA_FILES[kind]
        errors = [error.message for error in check.iter_errors(as_editor_reads(path))]
        assert errors == [], path.name


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("ActualMass: 1478", "ActualMas: 1478", "'ActualMas' was unexpected"),
        ("Colour: '8'", "Colour: '12'", "[{'Colour': '12'}] is not valid under any of the given schemas"),
        ("ActualMass: 1478", "ActualMass: 1000000", "1000000 is not valid under any of the given schemas"),
        ("vin: XNHKH16S1TE100214", "vin: XNHKH16S1TE10021O", "does not match"),
    ],
)
def test_schema_catches_typing_mistakes(tmp_path: Path, old: str, new: str, expected: str) -> None:
    path = tmp_path / "record.yaml"
    text = (PROJECT / "records" / "XNHKH16S1TE100214.yaml").read_text(encoding="utf-8")
    path.write_text(text.replace(old, new), encoding="utf-8")
    messages = [error.message for error in validator("record").iter_errors(as_editor_reads(path))]
    assert len(messages) == 1
    assert expected in messages[0]


@pytest.mark.parametrize("value", ["'1478'", '"1478"'])
def test_schema_accepts_quoted_numbers_that_check_accepts(
    tmp_path: Path, example_repo: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    record = "records/XNHKH16S1TE100214.yaml"
    text = (example_repo / record).read_text(encoding="utf-8").replace("ActualMass: 1478", f"ActualMass: {value}")
    (example_repo / record).write_text(text, encoding="utf-8")
    assert main(["--repo", str(example_repo), "check", "--no-cache", str(example_repo / record)]) == 0
    capsys.readouterr()
    assert [error.message for error in validator("record").iter_errors(as_editor_reads(example_repo / record))] == []


def test_schema_describes_entries_with_item_numbers() -> None:
    schema = json.loads((PROJECT / "schemas" / "record.schema.json").read_text(encoding="utf-8"))
    coc = schema["properties"]["CocDataGroup"]["properties"]
    assert coc["MaximumSpeed"]["description"] == "CoC item 29: Maximum speed"
    assert "Type" not in coc
    assert "VehicleIdentificationNumber" not in coc


def test_export_check_finds_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "schemas"
    assert main(["--repo", str(PROJECT), "schema", "export", "--out", str(out), "--check"]) == 1
    assert main(["--repo", str(PROJECT), "schema", "export", "--out", str(out)]) == 0
    assert main(["--repo", str(PROJECT), "schema", "export", "--out", str(out), "--check"]) == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(SCHEMA_FILES.values())
    assert "is missing; run ecoc schema export" in capsys.readouterr().err


def test_init_writes_the_schemas(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path / "new")]) == 0
    for name, text in exported().items():
        assert (tmp_path / "new" / "schemas" / name).read_text(encoding="utf-8") == text


def test_imported_files_point_at_the_schemas(example_repo: Path, official_examples: list[Path]) -> None:
    assert main(["--repo", str(example_repo), "import", "ivi", str(official_examples[0])]) == 0
    created = [
        path for path in (example_repo / "records").glob("*.yaml") if not (PROJECT / "records" / path.name).exists()
    ]
    assert created
    for path in created:
        assert path.read_text(encoding="utf-8").startswith(
            "# yaml-language-server: $schema=../schemas/record.schema.json\n"
        )
