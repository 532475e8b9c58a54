from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from ecoc.ivi.spec import elements_by_name
from ecoc.ivi.values import format_decimal, parse_value, retyped_by_yaml


def simple(element: str):
    spec = elements_by_name()[element]
    assert spec.simple is not None
    return spec.simple


@pytest.mark.parametrize(
    "element,text,expected",
    [
        ("ManufacturerAddressLine2", "02142", "02142"),
        ("ManufacturerCountryOfResidence", "NO", "NO"),
        ("MaximumSpeed", "1.10", Decimal("1.10")),
        ("DateManufactureVehicle", "2024-01-18", dt.date(2024, 1, 18)),
        ("NumberOfAxles", "02", 2),
        ("Colour", "8", "8"),
        ("WltpRoadLoadCoefficientF1", "-0.142", Decimal("-0.142")),
    ],
)
def test_values_mean_what_the_field_expects(element: str, text: str, expected: object) -> None:
    value, problem = parse_value(text, simple(element))
    assert problem is None
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "element,text,rule",
    [
        ("MaximumSpeed", "1e3", "model.decimal"),
        ("MaximumSpeed", "180,5", "model.decimal"),
        ("MaximumSpeed", "1.555", "model.decimal"),
        ("MaximumSpeed", "1000", "model.range"),
        ("MaximumSpeed", "-1", "model.range"),
        ("NumberOfAxles", "1.0", "model.integer"),
        ("NumberOfAxles", "1_000", "model.integer"),
        ("NumberOfAxles", "+2", "model.integer"),
        ("NumberOfAxles", "100", "model.range"),
        ("DateManufactureVehicle", "2024-02-30", "model.date"),
        ("DateManufactureVehicle", "18.01.2024", "model.date"),
        ("DateManufactureVehicle", "20240118", "model.date"),
        ("Colour", "11", "model.code"),
        ("VehicleCategory", "m1", "model.code"),
        ("Make", "A" * 53, "model.length"),
        ("Make", "", "model.empty-value"),
        ("Make", "TOY\x07OTA", "model.control-character"),
        ("Make", "TOYOTA\n", "model.control-character"),
        ("VehicleIdentificationNumber", "abc", "model.length"),
    ],
)
def test_invalid_values_are_rejected(element: str, text: str, rule: str) -> None:
    value, problem = parse_value(text, simple(element))
    assert value is None
    assert problem is not None
    assert problem.rule == rule
    assert problem.hint


def test_exponent_hint_gives_fixed_notation() -> None:
    _, problem = parse_value("1e2", simple("MaximumSpeed"))
    assert problem is not None
    assert "100" in problem.hint


def test_code_hint_names_the_right_case() -> None:
    _, problem = parse_value("m1", simple("VehicleCategory"))
    assert problem is not None
    assert "'M1'" in problem.hint


def test_impossible_date_says_why() -> None:
    _, problem = parse_value("2024-02-30", simple("DateManufactureVehicle"))
    assert problem is not None
    assert "2024-02-30" in problem.message


@pytest.mark.parametrize(
    "value,text",
    [
        (Decimal("180.00"), "180"),
        (Decimal("0.00000001"), "0.00000001"),
        (Decimal("1E+1"), "10"),
        (Decimal("-0.0"), "0"),
        (Decimal("0.570"), "0.57"),
    ],
)
def test_decimals_are_written_in_fixed_notation(value: Decimal, text: str) -> None:
    assert format_decimal(value) == text


@pytest.mark.parametrize(
    "text,kind",
    [
        ("1140", "number"),
        ("02142", "number"),
        ("1e3", "number"),
        ("0x1A", "number"),
        ("NO", "boolean"),
        ("yes", "boolean"),
        ("BRUSSELS", None),
        ("1119NC", None),
        ("225/60R18", None),
    ],
)
def test_texts_other_yaml_tools_would_retype(text: str, kind: str | None) -> None:
    assert retyped_by_yaml(text) == kind


@pytest.mark.parametrize(
    "text,valid",
    [
        ("2026-03-01T10:00:00+14:00", True),
        ("2026-03-01T10:00:00-14:00", True),
        ("2026-03-01T10:00:00Z", True),
        ("2026-03-01T10:00:00+14:30", False),
        ("2026-03-01T10:00:00+15:00", False),
    ],
)
def test_time_zone_offset_within_the_schema_range(text: str, valid: bool) -> None:
    _, problem = parse_value(text, simple("IviVersionDateTime"))
    assert (problem is None) is valid
