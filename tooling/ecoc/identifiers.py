"""Checks on the identifiers of a certificate: the VIN and the type-approval number."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ecoc.ivi import spec as ivi_spec

# ISO 3779 leaves out I, O and Q because they read like 1 and 0.
VIN_FORBIDDEN = frozenset("IOQ")

# 49 CFR 565.15: letter values and position weights of the North-American check digit.
_TRANSLITERATION = {
    **{str(d): d for d in range(10)},
    "A": 1,
    "B": 2,
    "C": 3,
    "D": 4,
    "E": 5,
    "F": 6,
    "G": 7,
    "H": 8,
    "J": 1,
    "K": 2,
    "L": 3,
    "M": 4,
    "N": 5,
    "P": 7,
    "R": 9,
    "S": 2,
    "T": 3,
    "U": 4,
    "V": 5,
    "W": 6,
    "X": 7,
    "Y": 8,
    "Z": 9,
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def vin_forbidden_letters(vin: str) -> list[tuple[int, str]]:
    """Positions (1-based) and letters of I, O and Q in a VIN."""
    return [(index, letter) for index, letter in enumerate(vin, start=1) if letter in VIN_FORBIDDEN]


def vin_check_digit(vin: str) -> str | None:
    """Return the North-American check digit for position 9, or None if the VIN cannot have one."""
    if len(vin) != 17 or any(c not in _TRANSLITERATION for c in vin):
        return None
    total = sum(_TRANSLITERATION[c] * w for c, w in zip(vin, _WEIGHTS, strict=True))
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


# e<authority>*<act>*<base approval>*<extension>, with KS or NKS before the act for small
# series (2007/46/EC Annex VII, Implementing Regulation (EU) 2020/683 Annex IV).
APPROVAL_NUMBER = re.compile(
    r"(?P<prefix>[egn])(?P<authority>[0-9]{1,2})\*(?P<series>KS|NKS)?"
    r"(?P<act>[0-9]{2,4}/[0-9]{1,4})\*(?P<base>[0-9]{4,5})\*(?P<extension>[0-9]{2})\Z"
)

FRAMEWORKS = {
    "2018/858": "Regulation (EU) 2018/858 (M, N, O)",
    "2007/46": "Directive 2007/46/EC (M, N, O)",
    "168/2013": "Regulation (EU) No 168/2013 (L)",
    "167/2013": "Regulation (EU) No 167/2013 (T, C, R, S)",
}
_SHORT_ACTS = {"18/858": "2018/858", "07/46": "2007/46"}


@dataclass(frozen=True, slots=True)
class ApprovalNumber:
    text: str
    authority: str  # e4
    act: str  # 2018/858
    base: str
    extension: str
    small_series: str | None


def parse_approval_number(text: str) -> ApprovalNumber | None:
    match = APPROVAL_NUMBER.match(text)
    if match is None:
        return None
    act = _SHORT_ACTS.get(match["act"], match["act"])
    return ApprovalNumber(
        text, f"{match['prefix']}{int(match['authority'])}", act, match["base"], match["extension"], match["series"]
    )


def eu_authority_codes() -> tuple[str, ...]:
    simple = ivi_spec.elements_by_name()["DesignatedTypeApprovalCountry"].simple
    assert simple is not None
    return simple.enumeration


def approval_file_name(number: str) -> str:
    """File name for an approval number: e4*2018/858*00412*01 -> e4-2018-858-00412-01.yaml."""
    return re.sub(r"[^A-Za-z0-9]+", "-", number).strip("-") + ".yaml"
