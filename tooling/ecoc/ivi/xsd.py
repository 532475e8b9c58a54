"""The official IVI 2.0 XSD: find it, pin it by sha256, compile it and validate with it.

ecoc does not ship the schema. The user points at a copy (`--xsd`, `ECOC_XSD` or
`xsd.path` in ecoc.yaml) and ecoc refuses any file whose digest is not the pinned one,
so a changed or corrupted schema is reported instead of silently used.

The published schema makes `sig:Signature` mandatory. Unsigned output (render, check,
previews) is therefore validated against a copy compiled in memory with only that one element
made optional. Signed files are validated against the schema exactly as published.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecoc.errors import ConfigError, InputError
from ecoc.ivi import spec_data

if TYPE_CHECKING:
    from lxml import etree

XS = "http://www.w3.org/2001/XMLSchema"

# sha256 digests of the official schema releases, with a description of each.
KNOWN_SCHEMAS = {
    "ec7335836a4334db33e34d309f009c544abb4030118984a41b1cba818a18160c": "IVI 2.0 XSD, generated 2026-02-26 12:00",
}
# The W3C XML Signature schema that the IVI schema imports from the same folder.
SIGNATURE_SCHEMA_NAME = "xmldsig-core-schema.xsd"
KNOWN_SIGNATURE_SCHEMAS = {
    "32147d410f9649b7f0f0a812e117a329cbeda815aba0c421addc46a5048a3e19": "W3C XML Signature schema, DOCTYPE removed",
}

ENVIRONMENT_VARIABLE = "ECOC_XSD"


@dataclass(frozen=True, slots=True)
class SchemaLocation:
    path: Path
    # The source of the path, for messages: "--xsd", "ECOC_XSD" or "xsd.path in ecoc.yaml".
    origin: str


@dataclass(frozen=True, slots=True)
class XsdError:
    line: int
    column: int
    message: str


def locate(cli_path: Path | None, config_path: Path | None) -> SchemaLocation | None:
    """Pick the schema path: the command line first, then the environment, then ecoc.yaml."""
    if cli_path is not None:
        return SchemaLocation(cli_path, "--xsd")
    environment = os.environ.get(ENVIRONMENT_VARIABLE)
    if environment:
        return SchemaLocation(Path(environment), ENVIRONMENT_VARIABLE)
    if config_path is not None:
        return SchemaLocation(config_path, "xsd.path in ecoc.yaml")
    return None


def _sha256(path: Path, what: str, hint: str) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} does not exist", hint) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}", hint) from None


def _check_pins(location: SchemaLocation, pinned: tuple[str, ...]) -> str:
    path = location.path
    digest = _sha256(
        path,
        f"the IVI XSD named by {location.origin}",
        f"point {location.origin} at IVI-2.0.xsd from the EUCARIS eCoC documentation",
    )
    if pinned:
        if digest not in pinned:
            raise ConfigError(
                f"{path}: sha256 {digest} does not match the pinned schema digest ({', '.join(pinned)})",
                "this is not the schema the repository was checked against; if the schema was "
                "updated on purpose, review the change and set xsd.sha256 in ecoc.yaml to the new digest",
            )
    elif digest not in KNOWN_SCHEMAS:
        raise ConfigError(
            f"{path}: sha256 {digest} is not a known IVI 2.0 schema",
            "use the official IVI-2.0.xsd, or pin this file with xsd.sha256 in ecoc.yaml "
            "after checking where it comes from",
        )
    signature_path = path.parent / SIGNATURE_SCHEMA_NAME
    signature_digest = _sha256(
        signature_path,
        f"the XML Signature schema that {path.name} imports",
        f"put {SIGNATURE_SCHEMA_NAME}, published with the IVI schema, next to {path.name}",
    )
    if signature_digest not in KNOWN_SIGNATURE_SCHEMAS:
        raise ConfigError(
            f"{signature_path}: sha256 {signature_digest} is not the W3C XML Signature schema the IVI schema imports",
            f"put the {SIGNATURE_SCHEMA_NAME} published with the IVI schema next to it",
        )
    return digest


class IviSchema:
    """The IVI schema at a checked location, strict (as published) or with the signature made
    optional. It compiles on first use: a run that finds every result in the cache never
    needs it."""

    def __init__(self, location: SchemaLocation, digest: str, relaxed: bool) -> None:
        self.location = location
        self.digest = digest
        self.relaxed = relaxed
        self.matches_model = digest == spec_data.SCHEMA_SHA256
        self._compiled: Any = None
        self._parser: Any = None

    def compile(self) -> None:
        """Compile the schema now; raises ConfigError if it does not compile."""
        if self._compiled is not None:
            return
        from lxml import etree

        from ecoc.ivi.xmlsafe import parse_xml_file

        try:
            document = parse_xml_file(self.location.path)
        except InputError as exc:
            raise ConfigError(f"the IVI XSD cannot be read: {exc.message}") from None
        if self.relaxed:
            _relax_signature(document)
        try:
            self._compiled = etree.XMLSchema(document)
        except etree.XMLSchemaParseError as exc:
            raise ConfigError(f"{self.location.path}: the IVI XSD does not compile: {exc}") from None
        self._parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)

    @property
    def lxml_schema(self) -> Any:
        """The compiled `lxml.etree.XMLSchema`, for callers that validate trees themselves."""
        self.compile()
        return self._compiled

    def validate_bytes(self, data: bytes) -> list[XsdError]:
        """Validate bytes that ecoc rendered itself (trusted, so parsed without extra checks)."""
        from lxml import etree

        self.compile()
        try:
            tree = etree.fromstring(data, self._parser)
        except etree.XMLSyntaxError as exc:  # pragma: no cover - the renderer writes well-formed XML
            return [XsdError(exc.position[0], exc.position[1], f"not well-formed: {exc.msg}")]
        return self.validate_tree(tree)

    def validate_tree(self, tree: etree._Element) -> list[XsdError]:
        self.compile()
        if self._compiled.validate(tree):
            return []
        return [XsdError(entry.line, entry.column, _readable(entry.message)) for entry in self._compiled.error_log]

    def validate_untrusted(self, data: bytes, source: str) -> list[XsdError]:
        from ecoc.ivi.xmlsafe import parse_xml_bytes

        try:
            tree = parse_xml_bytes(data, source)
        except InputError as exc:
            return [XsdError(1, 1, exc.message)]
        return self.validate_tree(tree.getroot())


def _readable(message: str) -> str:
    return message.replace("{" + spec_data.NAMESPACE + "}", "").replace("{http://www.w3.org/2000/09/xmldsig#}", "sig:")


def _relax_signature(document: etree._ElementTree) -> None:
    found = document.getroot().xpath(
        "xs:complexType[@name='InitialVehicleInformation']/xs:all/xs:element[@ref='sig:Signature']",
        namespaces={"xs": XS},
    )
    if len(found) != 1:
        raise ConfigError(
            "the IVI schema does not declare sig:Signature as a child of InitialVehicleInformation",
            "use the official IVI 2.0 XSD; ecoc cannot validate unsigned output against this one",
        )
    found[0].set("minOccurs", "0")


def load(location: SchemaLocation, pinned: tuple[str, ...] = (), *, relaxed: bool) -> IviSchema:
    """Check the pins of the schema at `location`; it compiles when first used."""
    return IviSchema(location, _check_pins(location, pinned), relaxed)
