"""Write the effective CoC of a record as canonical IVI 2.0 XML bytes.

The bytes depend on the data only: elements in the order of the schema (also where `xs:all`
allows any order), one element per line indented by two spaces, values in their canonical
lexical form (decimals in fixed notation without insignificant zeros), UTF-8, LF line ends.
The same record at the same commit always gives the same bytes, which is what gets signed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from ecoc.ivi import spec as ivi_spec
from ecoc.ivi.spec import ElementSpec
from ecoc.ivi.values import format_value
from ecoc.yamlload import Mapping, Node, Scalar, Sequence

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
INDENT = "  "


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one output line comes from: its XPath and the YAML node that holds its value."""

    xpath: str
    node: Node | None


@dataclass(frozen=True, slots=True)
class Rendered:
    data: bytes
    # One entry per output line, when the render was asked to keep them.
    origins: tuple[Origin, ...] = ()


def _escape(text: str) -> str:
    if "&" in text or "<" in text or ">" in text:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text


@cache
def _order(spec: ElementSpec) -> dict[str, int]:
    return {child.name: index for index, child in enumerate(spec.children)}


class _Writer:
    def __init__(self, keep_origins: bool) -> None:
        self.out: list[str] = []
        self.origins: list[Origin] | None = [] if keep_origins else None

    def line(self, text: str, xpath: str, node: Node | None) -> None:
        self.out.append(text)
        if self.origins is not None:
            self.origins.append(Origin(xpath, node))

    def children(self, node: Mapping, spec: ElementSpec, depth: int, xpath: str) -> None:
        order = _order(spec)
        for name in sorted(node, key=order.__getitem__):
            self.element(node[name], spec.by_name[name], depth, f"{xpath}/{name}")

    def element(self, node: Node, spec: ElementSpec, depth: int, xpath: str) -> None:
        indent = INDENT * depth
        name = spec.name
        if spec.kind == "leaf":
            assert isinstance(node, Scalar)
            text = _escape(format_value(node.value))
            self.line(f"{indent}<{name}>{text}</{name}>", xpath, node)
            return
        self.line(f"{indent}<{name}>", xpath, node)
        if spec.kind == "group":
            assert isinstance(node, Mapping)
            self.children(node, spec, depth + 1, xpath)
        else:
            assert isinstance(node, Sequence) and spec.row_name is not None
            row_indent = INDENT * (depth + 1)
            row_name = spec.row_name
            for index, row in enumerate(node, start=1):
                assert isinstance(row, Mapping)
                row_xpath = f"{xpath}/{row_name}[{index}]"
                self.line(f"{row_indent}<{row_name}>", row_xpath, row)
                self.children(row, spec, depth + 2, row_xpath)
                self.line(f"{row_indent}</{row_name}>", row_xpath, row)
        self.line(f"{indent}</{name}>", xpath, node)


def render(header: Mapping, coc: Mapping, *, keep_origins: bool = False) -> Rendered:
    """Render the unsigned message. Every scalar in the trees must already be typed."""
    root = ivi_spec.root()
    writer = _Writer(keep_origins)
    writer.line(XML_DECLARATION, "", None)
    writer.line(f'<{root.name} xmlns="{ivi_spec.NAMESPACE}">', f"/{root.name}", None)
    writer.element(header, ivi_spec.header(), 1, f"/{root.name}/Header")
    writer.element(coc, ivi_spec.coc_data_group(), 1, f"/{root.name}/CocDataGroup")
    writer.line(f"</{root.name}>", f"/{root.name}", None)
    data = ("\n".join(writer.out) + "\n").encode("utf-8")
    return Rendered(data, tuple(writer.origins) if writer.origins is not None else ())
