"""The IVI 2.0 message as a tree of element specifications, built from `spec_data`.

Every element of the official schema has one `ElementSpec`: a leaf with a `SimpleType`, a
group (`xs:all` of child elements) or a table (a `…Table` holding a sequence of one `…Group`).
In YAML a group is a mapping and a table is a list of rows, each row a mapping of the group's
children, so `MakeTable: [{Make: SKODA}]` stands for `<MakeTable><MakeGroup><Make>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Literal

from ecoc.ivi import spec_data

NAMESPACE: str = spec_data.NAMESPACE
SIGNATURE_NAMESPACE = "http://www.w3.org/2000/09/xmldsig#"

Kind = Literal["leaf", "group", "table"]
ValueKind = Literal["text", "code", "integer", "decimal", "date", "datetime", "pattern"]


@dataclass(frozen=True, slots=True)
class SimpleType:
    """An XSD simple type with the facets ecoc enforces."""

    name: str
    base: str
    kind: ValueKind
    min_length: int | None = None
    max_length: int | None = None
    pattern: re.Pattern[str] | None = None
    enumeration: tuple[str, ...] = ()
    total_digits: int | None = None
    fraction_digits: int | None = None
    min_inclusive: Decimal | None = None
    max_inclusive: Decimal | None = None

    def describe(self) -> str:
        """Describe the type in a few words, for messages."""
        if self.kind == "code":
            return f"a code of {self.name}"
        if self.kind == "integer":
            return f"a whole number from {self.min_inclusive} to {self.max_inclusive}"
        if self.kind == "decimal":
            return (
                f"a decimal from {self.min_inclusive} to {self.max_inclusive} "
                f"with at most {self.fraction_digits} decimal places"
            )
        if self.kind == "date":
            return "a date written YYYY-MM-DD"
        if self.kind == "datetime":
            return "a date and time"
        if self.max_length is None:
            return f"a text matching the pattern of {self.name}"
        return f"a text of {self.min_length or 0} to {self.max_length} characters"


@dataclass(eq=False, slots=True)
class ElementSpec:
    """One element of the IVI message."""

    name: str
    type_name: str
    kind: Kind
    min_occurs: int
    max_occurs: int | None
    # Slash-separated element names from the root, with table rows written as their group name.
    xpath: str
    simple: SimpleType | None = None
    # Children of a group, or of each row of a table, in schema order.
    children: tuple[ElementSpec, ...] = ()
    by_name: dict[str, ElementSpec] = field(default_factory=dict)
    # Tables only: the row element's name and how many rows the schema requires.
    row_name: str | None = None
    row_min: int = 0
    # `xs:all` groups impose no order; ecoc writes them in schema order anyway.
    unordered: bool = False
    # Derived from the above once the tree is built, for the structure check.
    required_children: tuple[ElementSpec, ...] = ()
    min_rows: int = 0
    has_structure: bool = False

    def __post_init__(self) -> None:
        self.required_children = tuple(c for c in self.children if c.min_occurs > 0)
        self.min_rows = max(self.row_min, 1) if self.kind == "table" else 0
        self.has_structure = bool(self.required_children) or any(c.kind != "leaf" for c in self.children)

    @property
    def required(self) -> bool:
        return self.min_occurs > 0

    def child(self, name: str) -> ElementSpec | None:
        return self.by_name.get(name)


def _simple_type(name: str) -> SimpleType:
    base, facets = spec_data.SIMPLE_TYPES[name]
    kind: ValueKind
    if "enumeration" in facets:
        kind = "code"
    elif base in ("short", "int"):
        kind = "integer"
    elif base == "decimal":
        kind = "decimal"
    elif base == "date":
        kind = "date"
    elif base == "dateTime":
        kind = "datetime"
    elif "maxLength" in facets:
        kind = "text"
    else:
        kind = "pattern"
    pattern = facets.get("pattern")
    return SimpleType(
        name=name,
        base=base,
        kind=kind,
        min_length=facets.get("minLength"),
        max_length=facets.get("maxLength"),
        # XSD patterns are anchored at both ends.
        pattern=re.compile(f"(?:{pattern})\\Z") if pattern else None,
        enumeration=tuple(facets.get("enumeration", ())),
        total_digits=facets.get("totalDigits"),
        fraction_digits=facets.get("fractionDigits"),
        min_inclusive=Decimal(facets["minInclusive"]) if "minInclusive" in facets else None,
        max_inclusive=Decimal(facets["maxInclusive"]) if "maxInclusive" in facets else None,
    )


def _build(name: str, type_name: str, min_occurs: int, max_occurs: int | None, parent_xpath: str) -> ElementSpec:
    xpath = f"{parent_xpath}/{name}" if parent_xpath else name
    if type_name in spec_data.SIMPLE_TYPES:
        return ElementSpec(name, type_name, "leaf", min_occurs, max_occurs, xpath, simple=_simple_type(type_name))
    compositor, members = spec_data.COMPLEX_TYPES[type_name]
    if compositor == "sequence":
        # Every sequence in IVI 2.0 is a table: one repeated group element.
        ((row_name, row_type, row_min, _row_max),) = members
        row_compositor, row_members = spec_data.COMPLEX_TYPES[row_type]
        row_xpath = f"{xpath}/{row_name}"
        children = tuple(_build(*member, row_xpath) for member in row_members)
        return ElementSpec(
            name,
            type_name,
            "table",
            min_occurs,
            max_occurs,
            xpath,
            children=children,
            by_name={c.name: c for c in children},
            row_name=row_name,
            row_min=row_min,
            unordered=row_compositor == "all",
        )
    children = tuple(_build(*member, xpath) for member in members if not member[0].startswith("sig:"))
    return ElementSpec(
        name,
        type_name,
        "group",
        min_occurs,
        max_occurs,
        xpath,
        children=children,
        by_name={c.name: c for c in children},
        unordered=compositor == "all",
    )


@cache
def root() -> ElementSpec:
    """The `InitialVehicleInformation` element without its `sig:Signature` child."""
    return _build("InitialVehicleInformation", "InitialVehicleInformation", 1, 1, "")


def header() -> ElementSpec:
    spec = root().child("Header")
    assert spec is not None
    return spec


def coc_data_group() -> ElementSpec:
    spec = root().child("CocDataGroup")
    assert spec is not None
    return spec


@cache
def elements_by_name() -> dict[str, ElementSpec]:
    """Every element by name; IVI 2.0 element names are unique across the whole message."""
    found: dict[str, ElementSpec] = {}

    def visit(spec: ElementSpec) -> None:
        found[spec.name] = spec
        for child in spec.children:
            visit(child)

    visit(root())
    return found
