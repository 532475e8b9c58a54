"""Type the text of a value for its IVI element, with the XSD's facets.

Values arrive as the exact text written in YAML (or XML). Each simple type accepts only its
own lexical form: a whole number is digits only, a decimal is fixed notation, a date is
`YYYY-MM-DD` and must exist in the calendar, a code must be one of the schema's values.
Nothing is guessed: `1e3` is not a number here and `NO` is not a boolean.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from ecoc.ivi.spec import SimpleType

_INTEGER = re.compile(r"[0-9]+\Z")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\Z")
_EXPONENT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][+-]?[0-9]+\Z")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})\Z")
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})?\Z"
)
_DATETIME_FRACTION = re.compile(r"(\.[0-9]{1,6})[0-9]*")
# Characters XML 1.0 cannot carry, plus C1 controls and DEL, which no CoC text needs.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")

# Plain scalars that YAML 1.1 or 1.2 resolvers turn into numbers or booleans.
_YAML_NUMBER = re.compile(
    r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?\Z"
    r"|0x[0-9a-fA-F_]+\Z|0o[0-7]+\Z|[-+]?\.(?:inf|Inf|INF)\Z|\.(?:nan|NaN|NAN)\Z"
)
_YAML_BOOLEAN = frozenset(
    [
        "y",
        "Y",
        "yes",
        "Yes",
        "YES",
        "n",
        "N",
        "no",
        "No",
        "NO",
        "true",
        "True",
        "TRUE",
        "false",
        "False",
        "FALSE",
        "on",
        "On",
        "ON",
        "off",
        "Off",
        "OFF",
    ]
)


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a value was rejected: a rule id, a message and what to do about it."""

    rule: str
    message: str
    hint: str


def format_decimal(value: Decimal) -> str:
    """Write a decimal in fixed notation without insignificant zeros, as `xs:decimal` allows."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def _digits(value: Decimal) -> tuple[int, int]:
    """Count the total and the fraction digits of a value, without insignificant zeros."""
    _, digits, exponent = value.normalize().as_tuple()
    assert isinstance(exponent, int)
    fraction = max(0, -exponent)
    total = max(len(digits), fraction) if exponent <= 0 else len(digits) + exponent
    if value == 0:
        return 1, 0
    return total, fraction


def _suggest(text: str, choices: tuple[str, ...]) -> str:
    for choice in choices:
        if choice.casefold() == text.casefold():
            return f"write {choice!r}; codes are case-sensitive"
    close = difflib.get_close_matches(text, choices, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    if len(choices) <= 12:
        return "use one of " + ", ".join(choices)
    return f"use one of the {len(choices)} codes the IVI 2.0 schema lists"


def check_text(text: str, simple: SimpleType) -> Problem | None:
    control = _CONTROL.search(text)
    if control is not None:
        return Problem(
            "model.control-character",
            f"control character U+{ord(control.group()):04X} at position {control.start() + 1} of the text",
            "remove it; IVI texts are single lines of printable characters",
        )
    length = len(text)
    if simple.min_length is not None and length < simple.min_length:
        if length == 0:
            return Problem(
                "model.empty-value", "empty value", "write a value, or remove the key if the element does not apply"
            )
        return Problem(
            "model.length",
            f"{text!r} has {length} character{'' if length == 1 else 's'}; {simple.name} needs at least "
            f"{simple.min_length}",
            "complete the value",
        )
    if simple.max_length is not None and length > simple.max_length:
        return Problem(
            "model.length",
            f"{length} characters is more than the {simple.max_length} that {simple.name} allows",
            f"shorten the value to {simple.max_length} characters",
        )
    if simple.pattern is not None and not simple.pattern.match(text):
        return Problem(
            "model.pattern",
            f"{text!r} does not match the pattern of {simple.name}",
            f"write {simple.describe()} matching {simple.pattern.pattern[3:-3]}",
        )
    return None


def _parse_code(text: str, simple: SimpleType) -> tuple[object, Problem | None]:
    if text in simple.enumeration:
        return text, None
    if text == "":
        return None, Problem(
            "model.empty-value", "empty value", "write a code, or remove the key if the element does not apply"
        )
    return None, Problem("model.code", f"{text!r} is not a code of {simple.name}", _suggest(text, simple.enumeration))


def _parse_integer(text: str, simple: SimpleType) -> tuple[object, Problem | None]:
    if not _INTEGER.match(text):
        if text == "":
            return None, Problem(
                "model.empty-value",
                "empty value",
                "write a whole number, or remove the key if the element does not apply",
            )
        number = Decimal(text) if _EXPONENT.match(text) or _DECIMAL.match(text) else None
        if number is not None and number < 0:
            return None, Problem(
                "model.integer", f"{text!r} is negative", f"write {simple.describe()}: the schema allows no sign"
            )
        if number is not None and number == number.to_integral_value():
            form = "exponent notation" if _EXPONENT.match(text) else "a decimal point or a sign"
            return None, Problem("model.integer", f"{text!r} uses {form}", f"write it with digits only: {int(number)}")
        return None, Problem(
            "model.integer", f"{text!r} is not a whole number", f"write {simple.describe()} using digits only"
        )
    value = int(text)
    assert simple.min_inclusive is not None and simple.max_inclusive is not None
    if not simple.min_inclusive <= value <= simple.max_inclusive:
        return None, Problem("model.range", f"{value} is outside {simple.name}", f"write {simple.describe()}")
    return value, None


def _parse_decimal(text: str, simple: SimpleType) -> tuple[object, Problem | None]:
    if not _DECIMAL.match(text):
        if text == "":
            return None, Problem(
                "model.empty-value", "empty value", "write a number, or remove the key if the element does not apply"
            )
        if _EXPONENT.match(text):
            fixed = format_decimal(Decimal(text))
            return None, Problem(
                "model.decimal", f"{text!r} uses exponent notation", f"write it in fixed notation: {fixed}"
            )
        return None, Problem(
            "model.decimal",
            f"{text!r} is not a decimal number",
            f"write {simple.describe()}, with a point as decimal separator",
        )
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid literals
        return None, Problem("model.decimal", f"{text!r} is not a decimal number", "write a number")
    total, fraction = _digits(value)
    if simple.fraction_digits is not None and fraction > simple.fraction_digits:
        return None, Problem(
            "model.decimal",
            f"{text} has {fraction} decimal places; {simple.name} allows {simple.fraction_digits}",
            f"round the value to {simple.fraction_digits} decimal places",
        )
    if simple.total_digits is not None and total > simple.total_digits:
        return None, Problem(
            "model.range",
            f"{text} has {total} digits; {simple.name} allows {simple.total_digits}",
            f"write {simple.describe()}",
        )
    if (simple.min_inclusive is not None and value < simple.min_inclusive) or (
        simple.max_inclusive is not None and value > simple.max_inclusive
    ):
        return None, Problem("model.range", f"{text} is outside {simple.name}", f"write {simple.describe()}")
    return value, None


def _parse_date(text: str, simple: SimpleType) -> tuple[object, Problem | None]:
    match = _DATE.match(text)
    if match is None:
        if text == "":
            return None, Problem(
                "model.empty-value",
                "empty value",
                "write a date as YYYY-MM-DD, or remove the key if the element does not apply",
            )
        return None, Problem(
            "model.date",
            f"{text!r} is not a date written YYYY-MM-DD",
            "write the date as YYYY-MM-DD, for example 2026-03-01",
        )
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3])), None
    except ValueError as exc:
        return None, Problem(
            "model.date", f"{text} is not a date in the calendar ({exc})", "check the day and the month"
        )


def _parse_datetime(text: str, simple: SimpleType) -> tuple[object, Problem | None]:
    if not _DATETIME.match(text):
        return None, Problem(
            "model.date",
            f"{text!r} is not an XML date and time",
            "write it as YYYY-MM-DDThh:mm:ss with a time zone offset",
        )
    # Checked as a date and a time, but kept as written: an issued IviVersionDateTime may carry
    # more fraction digits than Python's datetime holds, and its text must not change.
    try:
        dt.datetime.fromisoformat(_DATETIME_FRACTION.sub(r"\1", text).replace("Z", "+00:00"))
    except ValueError as exc:
        # Python describes an offset out of range with its own types, so the reason is given in plain words.
        reason = "the time zone offset must be less than 24 hours" if "offset" in str(exc) else str(exc)
        return None, Problem(
            "model.date", f"{text} is not a valid date and time ({reason})", "check the date and the time"
        )
    offset = re.search(r"([+-])([0-9]{2}):([0-9]{2})\Z", text)
    if offset is not None and (int(offset[2]) * 60 + int(offset[3]) > 14 * 60 or int(offset[3]) > 59):
        # XML Schema allows time zone offsets from -14:00 to +14:00 only.
        return None, Problem(
            "model.date", f"{text} has the time zone offset {offset[0]}", "use an offset from -14:00 to +14:00"
        )
    return text, None


def has_time_zone(text: str) -> bool:
    """Return whether an XML date and time states its offset from UTC."""
    return text.endswith("Z") or bool(re.search(r"[+-][0-9]{2}:[0-9]{2}\Z", text))


def _parse_text(text: str, simple: SimpleType) -> tuple[object, Problem | None]:
    problem = check_text(text, simple)
    return (None, problem) if problem else (text, None)


_PARSERS = {
    "code": _parse_code,
    "integer": _parse_integer,
    "decimal": _parse_decimal,
    "date": _parse_date,
    "datetime": _parse_datetime,
    "text": _parse_text,
    "pattern": _parse_text,
}


def parse_value(text: str, simple: SimpleType) -> tuple[object, Problem | None]:
    """Type `text` as `simple`. Returns the value, or None and the reason it was rejected."""
    return _PARSERS[simple.kind](text, simple)


def retyped_by_yaml(text: str) -> str | None:
    """Name the type other YAML tools give this unquoted text, or None if they keep it text."""
    if _YAML_NUMBER.match(text):
        return "number"
    if text in _YAML_BOOLEAN:
        return "boolean"
    return None


def loses_text_as_number(text: str) -> bool:
    """Return whether a YAML tool that reads `text` as a number would write it back differently.

    `01` becomes 1 and `1.10` becomes 1.1; `8` survives the round trip.
    """
    if retyped_by_yaml(text) != "number":
        return False
    if _INTEGER.match(text):
        return text != str(int(text))
    return True


def format_value(value: object) -> str:
    """Write a typed value in its canonical XML form."""
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, bool):  # pragma: no cover - the model has no boolean type
        raise TypeError("booleans have no IVI form")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"no IVI form for {type(value).__name__}")
