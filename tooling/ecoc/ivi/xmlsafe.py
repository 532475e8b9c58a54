"""Parse XML that ecoc did not produce itself as hostile input.

No DTD is loaded, no entity is expanded and nothing is fetched from the network. A document
that declares a DOCTYPE or contains entity references is rejected outright, because IVI
messages have no use for either and both are the usual carriers of XXE and entity-expansion
attacks.
"""

from __future__ import annotations

import functools
from pathlib import Path

from lxml import etree

from ecoc.errors import InputError

# IVI messages are a few tens of kilobytes; anything this large is not one.
MAX_XML_BYTES = 16 * 1024 * 1024


class XmlRejected(InputError):
    """An XML file that is not well-formed or not acceptable, with the place of the problem."""

    def __init__(self, source: str, line: int, column: int, reason: str, hint: str) -> None:
        super().__init__(f"{source}:{line}:{column}: {reason}", hint)
        self.source = source
        self.line = line
        self.column = column
        self.reason = reason


@functools.cache
def _parser() -> etree.XMLParser:
    """The one parser of the process; lxml parsers can be reused one document after another."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
    )


def parse_xml_bytes(data: bytes, source: str) -> etree._ElementTree:
    """Parse `data` (read from `source`, used in messages) or raise `InputError`."""
    if len(data) > MAX_XML_BYTES:
        raise XmlRejected(
            source,
            1,
            1,
            f"{len(data)} bytes is larger than the {MAX_XML_BYTES} bytes accepted for one XML file",
            "check that this is an IVI message and not an archive or a concatenation of files",
        )
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        line, column = exc.position
        reason = exc.msg
        if "XML_PARSE_HUGE" in reason:
            # libxml2 stops at 256 levels of nesting, and its message names a parser option instead.
            reason = "the document is nested deeper than the 256 levels accepted"
        raise XmlRejected(
            source,
            line,
            column,
            f"not well-formed XML: {reason}",
            "fix the XML syntax; ecoc reads only well-formed IVI 2.0 files",
        ) from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise XmlRejected(
            source,
            1,
            1,
            "the document declares a DOCTYPE, which is rejected",
            "IVI messages never use a DTD; remove the DOCTYPE declaration "
            "(it can carry entity-expansion and external-entity attacks)",
        )
    # Without a DTD an undeclared entity is a well-formedness error, so no entity reference is left.
    return tree


def parse_xml_file(path: Path) -> etree._ElementTree:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_XML_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file: {exc.strerror}") from None
    tree = parse_xml_bytes(data, str(path))
    # Relative imports in a schema resolve against the document's URL.
    tree.docinfo.URL = str(path.resolve())
    return tree
