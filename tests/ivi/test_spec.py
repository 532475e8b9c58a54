"""The built-in model against the official XSD, read independently with xmlschema."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from ecoc.ivi import codegen, spec_data
from ecoc.ivi.spec import ElementSpec, root

xmlschema = pytest.importorskip("xmlschema")


def model_elements() -> dict[str, ElementSpec | tuple[int, None]]:
    """Every element the model holds by XPath; a table's row element maps to its occurs."""
    found: dict[str, ElementSpec | tuple[int, None]] = {}

    def visit(spec: ElementSpec) -> None:
        found[spec.xpath] = spec
        if spec.kind == "table":
            found[f"{spec.xpath}/{spec.row_name}"] = (spec.row_min, None)
        for child in spec.children:
            visit(child)

    visit(root())
    return found


def schema_elements(xsd: Path) -> dict[str, object]:
    schema = xmlschema.XMLSchema10(str(xsd))
    found: dict[str, object] = {}

    def visit(element, parent: str) -> None:
        name = element.local_name
        xpath = f"{parent}/{name}" if parent else name
        found[xpath] = element
        if element.type.is_complex():
            for child in element.type.content.iter_elements():
                if child.local_name != "Signature":
                    visit(child, xpath)

    visit(schema.elements["InitialVehicleInformation"], "")
    return found


def test_model_holds_every_element_of_the_xsd(official_xsd: Path) -> None:
    model = model_elements()
    missing = sorted(set(schema_elements(official_xsd)) - set(model))
    assert missing == [], "the model cannot represent: " + ", ".join(missing)


def test_model_has_no_element_the_xsd_lacks(official_xsd: Path) -> None:
    extra = sorted(set(model_elements()) - set(schema_elements(official_xsd)))
    # Table rows appear in the model under their group name, as in the XSD.
    assert extra == []


def test_model_types_follow_the_xsd(official_xsd: Path) -> None:
    model = model_elements()
    mismatches = []
    for xpath, element in schema_elements(official_xsd).items():
        spec = model[xpath]
        occurs = (element.min_occurs, element.max_occurs)
        if isinstance(spec, tuple):
            if spec != occurs:
                mismatches.append(f"{xpath}: rows occur {spec} != {occurs}")
            continue
        if (spec.min_occurs, spec.max_occurs) != occurs:
            mismatches.append(f"{xpath}: occurs {spec.min_occurs, spec.max_occurs} != {occurs}")
        if not element.type.is_simple():
            continue
        simple = spec.simple
        assert simple is not None, xpath
        facets = element.type
        expected = {
            "enumeration": tuple(str(v) for v in (facets.enumeration or ())),
            "max_length": facets.max_length,
            "min_length": facets.min_length if facets.min_length else None,
        }
        actual = {
            "enumeration": simple.enumeration,
            "max_length": simple.max_length,
            "min_length": simple.min_length if simple.min_length else None,
        }
        if expected != actual:
            mismatches.append(f"{xpath}: {actual} != {expected}")
        for facet_name, attribute in (("totalDigits", "total_digits"), ("fractionDigits", "fraction_digits")):
            facet = facets.get_facet(f"{{http://www.w3.org/2001/XMLSchema}}{facet_name}")
            value = facet.value if facet is not None else None
            if value != getattr(simple, attribute):
                mismatches.append(f"{xpath}: {facet_name} {getattr(simple, attribute)} != {value}")
        for facet_name, attribute in (("minInclusive", "min_inclusive"), ("maxInclusive", "max_inclusive")):
            facet = facets.get_facet(f"{{http://www.w3.org/2001/XMLSchema}}{facet_name}")
            value = Decimal(str(facet.value)) if facet is not None else None
            if value != getattr(simple, attribute):
                mismatches.append(f"{xpath}: {facet_name} {getattr(simple, attribute)} != {value}")
    assert mismatches == []


def test_generated_module_matches_the_xsd(official_xsd: Path) -> None:
    committed = Path(spec_data.__file__).read_text(encoding="utf-8")
    assert codegen.generate(official_xsd) == committed, (
        "spec_data.py is out of date: run python -m ecoc.ivi.codegen on the XSD"
    )


def test_model_counts_match_the_published_schema() -> None:
    assert len(model_elements()) + 1 == 681  # plus sig:Signature
    assert len(spec_data.SIMPLE_TYPES) == 129
    assert len(spec_data.COMPLEX_TYPES) == 135
