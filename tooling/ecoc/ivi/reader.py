"""Read an IVI 2.0 XML message into typed CoC trees, treating the file as hostile input."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from ecoc.findings import Finding, Severity
from ecoc.ivi import spec as ivi_spec
from ecoc.ivi.spec import ElementSpec
from ecoc.ivi.values import parse_value
from ecoc.ivi.xmlsafe import parse_xml_bytes
from ecoc.yamlload import Mapping, Scalar, Sequence, Source

# XSD whitespace handling: every non-string type collapses surrounding white space.
_COLLAPSED_KINDS = frozenset({"integer", "decimal", "date", "datetime"})


@dataclass(eq=False)
class Message:
    """One IVI message as typed trees, with the problems found while reading it."""

    source: Source
    header: Mapping
    coc: Mapping
    signed: bool = False
    findings: list[Finding] = field(default_factory=list)

    def text(self, name: str) -> str | None:
        node = self.coc.get(name)
        return node.text if isinstance(node, Scalar) else None


def _local(element: etree._Element) -> tuple[str | None, str]:
    qname = etree.QName(element)
    return qname.namespace, qname.localname


class _Converter:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.findings: list[Finding] = []
        # Elements whose value was reported invalid, which are not reported as missing too.
        self.invalid: set[str] = set()

    def problem(self, rule: str, message: str, element: etree._Element, xpath: str, hint: str) -> None:
        self.findings.append(
            Finding(rule, Severity.ERROR, message, self.source.path, element.sourceline, 1, xpath, hint)
        )

    def group(self, element: etree._Element, spec: ElementSpec, xpath: str) -> Mapping:
        mapping = Mapping(element.sourceline or 1, 1, self.source)
        for child in element:
            if not isinstance(child.tag, str):
                continue  # comments and processing instructions carry no data
            namespace, name = _local(child)
            child_xpath = f"{xpath}/{name}"
            child_spec = spec.by_name.get(name)
            if namespace != ivi_spec.NAMESPACE or child_spec is None:
                self.problem(
                    "import.unknown-element",
                    f"{name} is not an element of {spec.row_name or spec.name} in IVI 2.0",
                    child,
                    child_xpath,
                    "remove the element or check the file's IVI version",
                )
                continue
            if name in mapping:
                self.problem(
                    "import.repeated-element",
                    f"{name} appears more than once in {spec.name}",
                    child,
                    child_xpath,
                    "keep one occurrence",
                )
                continue
            mapping.key_positions[name] = (child.sourceline or 1, 1)
            value = self.element(child, child_spec, child_xpath)
            if value is not None:
                mapping[name] = value
            else:
                self.invalid.add(name)
        return mapping

    def element(self, element: etree._Element, spec: ElementSpec, xpath: str) -> Mapping | Sequence | Scalar | None:
        if spec.kind == "group":
            return self.group(element, spec, xpath)
        if spec.kind == "table":
            rows = Sequence(element.sourceline or 1, 1, self.source)
            for index, row in enumerate((c for c in element if isinstance(c.tag, str)), start=1):
                namespace, name = _local(row)
                row_xpath = f"{xpath}/{name}[{index}]"
                if namespace != ivi_spec.NAMESPACE or name != spec.row_name:
                    self.problem(
                        "import.unknown-element",
                        f"{name} is not a row of {spec.name}",
                        row,
                        row_xpath,
                        f"rows of {spec.name} are {spec.row_name} elements",
                    )
                    continue
                rows.append(self.group(row, spec, row_xpath))
            return rows
        if any(isinstance(child.tag, str) for child in element):
            self.problem(
                "import.shape",
                f"{spec.name} must hold a value, not elements",
                element,
                xpath,
                "write the value as the element's text",
            )
            return None
        simple = spec.simple
        assert simple is not None
        # Comments and processing instructions inside a value are not part of it.
        text = (element.text or "") + "".join(child.tail or "" for child in element)
        if simple.kind in _COLLAPSED_KINDS:
            text = text.strip()
        value, problem = parse_value(text, simple)
        if problem is not None:
            self.problem("import.invalid-value", f"{spec.name}: {problem.message}", element, xpath, problem.hint)
            return None
        scalar = Scalar(text, element.sourceline or 1, 1, False, self.source)
        scalar.value = value
        return scalar


def read_message(data: bytes, source: Source) -> Message:
    """Parse one IVI 2.0 message. Raises `InputError` when the file is not usable XML."""
    tree = parse_xml_bytes(data, source.path)
    root = tree.getroot()
    namespace, name = _local(root)
    converter = _Converter(source)
    header = Mapping(1, 1, source)
    coc = Mapping(1, 1, source)
    message = Message(source, header, coc, findings=converter.findings)
    if name != "InitialVehicleInformation":
        converter.problem(
            "import.not-ivi",
            f"the root element is {name}, not InitialVehicleInformation",
            root,
            f"/{name}",
            "import IVI 2.0 messages only",
        )
        return message
    if namespace != ivi_spec.NAMESPACE:
        converter.problem(
            "import.not-ivi",
            f"the message uses the namespace {namespace!r}, not IVI 2.0's",
            root,
            f"/{name}",
            "IVI 1.x messages must first be converted to IVI 2.0, for example with the "
            "conversion tool on the EUCARIS eCoC documentation site",
        )
        return message
    root_spec = ivi_spec.root()
    for child in root:
        if not isinstance(child.tag, str):
            continue
        child_namespace, child_name = _local(child)
        xpath = f"/{name}/{child_name}"
        if child_namespace == ivi_spec.SIGNATURE_NAMESPACE and child_name == "Signature":
            message.signed = True
        elif child_namespace == ivi_spec.NAMESPACE and child_name == "Header":
            message.header = converter.group(child, root_spec.by_name["Header"], xpath)
        elif child_namespace == ivi_spec.NAMESPACE and child_name == "CocDataGroup":
            message.coc = converter.group(child, root_spec.by_name["CocDataGroup"], xpath)
        else:
            converter.problem(
                "import.unknown-element",
                f"{child_name} is not an element of InitialVehicleInformation",
                child,
                xpath,
                "remove the element",
            )
    for required in ("VehicleIdentificationNumber", "TypeApprovalNumber", "Variant", "Version"):
        if required not in message.coc and required not in converter.invalid:
            converter.problem(
                "import.missing-element",
                f"the message has no {required}",
                root,
                f"/{name}/CocDataGroup/{required}",
                f"add {required}; ecoc needs it to file the vehicle",
            )
    return message
