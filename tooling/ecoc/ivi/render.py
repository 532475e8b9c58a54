"""Write the effective CoC of a record as canonical IVI 2.0 XML bytes.

The bytes depend on the data only: elements in the order of the schema (also where `xs:all`
allows any order), one element per line indented by two spaces, values in their canonical
lexical form (decimals in fixed notation without insignificant zeros), UTF-8, LF line ends.
The same record at the same commit always gives the same bytes, which is what gets signed.
"""

from __future__ import annotations

import hashlib
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
    """The source of one output line: its XPath and the YAML node that contains its value."""

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


@dataclass(frozen=True, slots=True)
class _Tags:
    """The lines an element writes, with their indentation, computed once per element."""

    open: str
    close: str
    row_open: str = ""
    row_close: str = ""


@cache
def _tags(spec: ElementSpec, depth: int) -> _Tags:
    indent = INDENT * depth
    if spec.kind == "leaf":
        return _Tags(f"{indent}<{spec.name}>", f"</{spec.name}>")
    row_indent = INDENT * (depth + 1)
    return _Tags(
        f"{indent}<{spec.name}>",
        f"{indent}</{spec.name}>",
        f"{row_indent}<{spec.row_name}>",
        f"{row_indent}</{spec.row_name}>",
    )


def _xml_text(node: Scalar) -> str:
    text = node.xml
    if text is None:
        text = node.xml = _escape(format_value(node.value))
    return text


def _write(node: Node, spec: ElementSpec, depth: int, out: list[str]) -> None:
    """Append the lines of one element to `out`; the fast path, without origins."""
    tags = _tags(spec, depth)
    if spec.kind == "leaf":
        out.append(tags.open + _xml_text(node) + tags.close)  # type: ignore[arg-type]
        return
    cached = node.rendered  # type: ignore[union-attr]
    if cached is not None:
        out.append(cached)
        return
    start = len(out)
    out.append(tags.open)
    if spec.kind == "group":
        _write_children(node, spec, depth + 1, out)  # type: ignore[arg-type]
    else:
        for row in node:  # type: ignore[union-attr]
            out.append(tags.row_open)
            _write_children(row, spec, depth + 2, out)  # type: ignore[arg-type]
            out.append(tags.row_close)
    out.append(tags.close)
    # Each element sits at one depth of the message, so its lines never change.
    node.rendered = "\n".join(out[start:])  # type: ignore[union-attr]


def _write_children(node: Mapping, spec: ElementSpec, depth: int, out: list[str]) -> None:
    order = _order(spec)
    by_name = spec.by_name
    for name in sorted(node, key=order.__getitem__):
        _write(node[name], by_name[name], depth, out)


class _Writer:
    """The slow path: also records, for every output line, its XPath and source node."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.origins: list[Origin] = []

    def line(self, text: str, xpath: str, node: Node | None) -> None:
        self.out.append(text)
        self.origins.append(Origin(xpath, node))

    def children(self, node: Mapping, spec: ElementSpec, depth: int, xpath: str) -> None:
        order = _order(spec)
        for name in sorted(node, key=order.__getitem__):
            self.element(node[name], spec.by_name[name], depth, f"{xpath}/{name}")

    def element(self, node: Node, spec: ElementSpec, depth: int, xpath: str) -> None:
        tags = _tags(spec, depth)
        if spec.kind == "leaf":
            assert isinstance(node, Scalar)
            self.line(tags.open + _xml_text(node) + tags.close, xpath, node)
            return
        self.line(tags.open, xpath, node)
        if spec.kind == "group":
            assert isinstance(node, Mapping)
            self.children(node, spec, depth + 1, xpath)
        else:
            assert isinstance(node, Sequence)
            for index, row in enumerate(node, start=1):
                assert isinstance(row, Mapping)
                row_xpath = f"{xpath}/{spec.row_name}[{index}]"
                self.line(tags.row_open, row_xpath, row)
                self.children(row, spec, depth + 2, row_xpath)
                self.line(tags.row_close, row_xpath, row)
        self.line(tags.close, xpath, node)


def render(header: Mapping, coc: Mapping, *, keep_origins: bool = False) -> Rendered:
    """Render the unsigned message. Every scalar in the trees must already be typed.

    With `keep_origins`, the result also records the source of every line, so that XSD errors,
    which lxml reports by line, map back to YAML.
    """
    root = ivi_spec.root()
    opening = f'<{root.name} xmlns="{ivi_spec.NAMESPACE}">'
    closing = f"</{root.name}>"
    if not keep_origins:
        out = [XML_DECLARATION, opening]
        _write(header, ivi_spec.header(), 1, out)
        _write(coc, ivi_spec.coc_data_group(), 1, out)
        out.append(closing)
        return Rendered(("\n".join(out) + "\n").encode("utf-8"))
    writer = _Writer()
    writer.line(XML_DECLARATION, "", None)
    writer.line(opening, f"/{root.name}", None)
    writer.element(header, ivi_spec.header(), 1, f"/{root.name}/Header")
    writer.element(coc, ivi_spec.coc_data_group(), 1, f"/{root.name}/CocDataGroup")
    writer.line(closing, f"/{root.name}", None)
    return Rendered(("\n".join(writer.out) + "\n").encode("utf-8"), tuple(writer.origins))


# Header fields that are part of the certificate's content; the others identify one issue of it.
CONTENT_HEADER = ("IviVersionNumber", "IntendedCountryRegistration", "DesignatedTypeApprovalCountry")


def content_digest(header: Mapping, coc: Mapping, *, with_version: bool = True) -> str:
    """Return the sha256 of a certificate's content: its CocDataGroup and content header fields.

    Two renders of the same certificate version have the same digest, whatever their
    IviReferenceId and IviVersionDateTime, so it tells whether an issued certificate changed.
    Without `with_version` the IviVersionNumber is left out too: the digest of the data alone,
    which tells whether a correction changed anything.
    """
    out: list[str] = []
    header_spec = ivi_spec.header()
    for name in CONTENT_HEADER:
        if name == "IviVersionNumber" and not with_version:
            continue
        node = header.get(name)
        if isinstance(node, Scalar):
            _write(node, header_spec.by_name[name], 2, out)
    _write(coc, ivi_spec.coc_data_group(), 1, out)
    return hashlib.sha256("\n".join(out).encode("utf-8")).hexdigest()
