"""Sign IVI 2.0 messages with the XMLDSig profile of EReg, and verify signed messages offline.

The profile: an enveloped signature over the whole document (one Reference with URI=""), exclusive
canonicalisation, RSA-SHA256 (ECDSA-SHA256 for EC keys), a SHA-256 digest, and the signing
certificate followed by its intermediates in KeyInfo/X509Data. The Signature is the last child of
the root element.

Verification trusts only the anchors it is given, never a public web CA store. It first checks
the document's shape: exactly one Signature, a child of the root, referencing the whole
document. Then it checks the certificate chain at the time asked for, with a plain message for
each way it can fail. Only then does it check the signature itself, with the certificate pinned.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import functools
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import pkcs12
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate, InvalidInput, InvalidSignature
from signxml.verifier import SignatureConfiguration, XMLVerifier

from ecoc.errors import InputError
from ecoc.ivi.xmlsafe import XmlRejected, parse_xml_bytes

DSIG = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
XADES = "http://uri.etsi.org/01903/v1.3.2#"
XADES_SIGNED_PROPERTIES = "http://uri.etsi.org/01903#SignedProperties"
SIGNATURE_ID = "ecoc-signature"
SIGNED_PROPERTIES_ID = "ecoc-signed-properties"
# Algorithms that an old archive may have used and that verify accepts only when asked to.
WEAK_ALGORITHMS = frozenset(
    {
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        "http://www.w3.org/2000/09/xmldsig#dsa-sha1",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1",
        "http://www.w3.org/2000/09/xmldsig#sha1",
        "http://www.w3.org/2001/04/xmldsig-more#md5",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-md5",
    }
)


class TokenKey:
    """A private key on a PKCS#11 token (a hardware security module, or SoftHSM2 in tests).

    The key never leaves the token: the token signs, and the session stays open while the
    process signs.
    """

    def __init__(self, uri: str) -> None:
        import pkcs11
        from pkcs11 import ObjectClass

        path, _, query = uri.removeprefix("pkcs11:").partition("?")
        attributes = dict(_uri_pairs(path, ";"))
        options = dict(_uri_pairs(query, "&"))
        module = options.get("module-path") or os.environ.get(PKCS11_MODULE_VARIABLE)
        if not module:
            raise InputError(
                "the PKCS#11 URI names no module",
                f"add ?module-path=/path/to/module.so to the URI, or set {PKCS11_MODULE_VARIABLE}",
            )
        pin = os.environ.get(PKCS11_PIN_VARIABLE)
        try:
            library = pkcs11.lib(module)
        except (pkcs11.PKCS11Error, RuntimeError, OSError):
            raise InputError(
                f"the PKCS#11 module {module} cannot be loaded",
                "check the module path of the URI or ECOC_PKCS11_MODULE",
            ) from None
        try:
            token = library.get_token(token_label=attributes.get("token"))
            self.session = token.open(user_pin=pin) if pin else token.open()
            key_id = bytes.fromhex(attributes["id"].replace("%", "")) if "id" in attributes else None
            self.key: Any = self.session.get_key(
                object_class=ObjectClass.PRIVATE_KEY, label=attributes.get("object"), id=key_id
            )
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            if not pin:
                hint = f"set the token's PIN in {PKCS11_PIN_VARIABLE}; without a login the private key is not visible"
            else:
                hint = f"check the token and object names of the URI, and the PIN in {PKCS11_PIN_VARIABLE}"
            raise InputError(f"the PKCS#11 key cannot be opened: {type(exc).__name__}", hint) from None
        self.elliptic = self.key.key_type == pkcs11.KeyType.EC

    def close(self) -> None:
        """End the session with the token, which also logs out."""
        self.session.close()

    def sign(self, data: bytes) -> bytes:
        from pkcs11 import Mechanism

        mechanism = Mechanism.ECDSA_SHA256 if self.elliptic else Mechanism.SHA256_RSA_PKCS
        return bytes(self.key.sign(data, mechanism=mechanism))


def _uri_pairs(text: str, separator: str) -> list[tuple[str, str]]:
    from urllib.parse import unquote

    pairs = []
    for item in text.split(separator):
        if item:
            name, _, value = item.partition("=")
            pairs.append((name, unquote(value)))
    return pairs


PKCS11_MODULE_VARIABLE = "ECOC_PKCS11_MODULE"
PKCS11_PIN_VARIABLE = "ECOC_PKCS11_PIN"


@dataclass(frozen=True)
class SigningKey:
    """A private key with its certificate and the intermediates between it and a trust anchor."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | TokenKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @functools.cached_property
    def der(self) -> tuple[bytes, ...]:
        """The certificates for KeyInfo, the signing certificate first."""
        return tuple(c.public_bytes(serialization.Encoding.DER) for c in (self.certificate, *self.chain))

    @functools.cached_property
    def base64_der(self) -> tuple[str, ...]:
        """The certificates for KeyInfo as base64 text, the signing certificate first."""
        return tuple(base64.b64encode(der).decode("ascii") for der in self.der)

    @functools.cached_property
    def checked_chain(self) -> bool:
        """True once the certificate may sign and the chain issues it in order; InputError otherwise."""
        subject = self.certificate.subject.rfc4514_string()
        try:
            usage = self.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is not None and not (usage.digital_signature or usage.content_commitment):
            raise InputError(
                f"the signing certificate {subject} may not sign: its key usage lacks digitalSignature",
                "use a seal certificate whose key usage includes digitalSignature; ask its provider for one",
            )
        current = self.certificate
        for issuer in self.chain:
            try:
                current.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, crypto_exceptions.InvalidSignature):
                raise InputError(
                    f"{_name(issuer)} in the chain did not issue {_name(current)}",
                    "pass the intermediates in order, from the one that issued the seal upwards",
                ) from None
            current = issuer
        return True


def _ds(name: str) -> str:
    return f"{{{DSIG}}}{name}"


def _signature_value(signing: SigningKey, data: bytes) -> bytes:
    """Sign `data` as XMLDSig expects: PKCS#1 v1.5 for RSA, and r and s side by side for ECDSA."""
    key = signing.key
    if isinstance(key, TokenKey):
        # A token gives ECDSA signatures as r and s side by side already, as XMLDSig wants them.
        return key.sign(data)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _xades(name: str) -> str:
    return f"{{{XADES}}}{name}"


def _signed_properties(signature: etree._Element, signing: SigningKey, at: dt.datetime) -> etree._Element:
    """Add the XAdES baseline B-B properties: the signing time and the digest of the certificate."""
    signature.set("Id", SIGNATURE_ID)
    holder = etree.SubElement(signature, _ds("Object"))
    qualifying = etree.SubElement(
        holder, _xades("QualifyingProperties"), nsmap={"xades": XADES}, Target=f"#{SIGNATURE_ID}"
    )
    properties = etree.SubElement(qualifying, _xades("SignedProperties"), Id=SIGNED_PROPERTIES_ID)
    signature_properties = etree.SubElement(properties, _xades("SignedSignatureProperties"))
    etree.SubElement(signature_properties, _xades("SigningTime")).text = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    certificate = etree.SubElement(
        etree.SubElement(signature_properties, _xades("SigningCertificateV2")), _xades("Cert")
    )
    digest = etree.SubElement(certificate, _xades("CertDigest"))
    etree.SubElement(digest, _ds("DigestMethod"), Algorithm=SHA256)
    etree.SubElement(digest, _ds("DigestValue")).text = base64.b64encode(
        hashlib.sha256(signing.der[0]).digest()
    ).decode("ascii")
    return properties


IVI_ROOT = "{http://eu.ereg.initialvehicleinformation.v2}InitialVehicleInformation"


def _check_seal(signing: SigningKey, at: dt.datetime) -> None:
    """Refuse a seal whose signatures could never verify: out of date, not for signing, or an unrelated chain."""
    certificate = signing.certificate
    if at < certificate.not_valid_before_utc or at > certificate.not_valid_after_utc:
        raise InputError(
            f"the signing certificate {certificate.subject.rfc4514_string()} is valid from "
            f"{certificate.not_valid_before_utc:%Y-%m-%d} to {certificate.not_valid_after_utc:%Y-%m-%d}, not now",
            "sign with a current seal certificate",
        )
    signing.checked_chain  # noqa: B018 - checked once per key, raises InputError


def check_seal(signing: SigningKey, anchors: Sequence[x509.Certificate] = (), at: dt.datetime | None = None) -> None:
    """Reject a seal whose signatures would not verify, before anything is signed with it.

    Beyond `_check_seal`, the seal's certificate and its intermediates must lead to the root: to a
    self-signed certificate, or with `anchors` (signing.trust) to one of them. Raises InputError
    that names the missing issuer.
    """
    _check_seal(signing, at or dt.datetime.now(dt.UTC))
    # checked_chain made sure that each intermediate issued the certificate before it.
    top = signing.chain[-1] if signing.chain else signing.certificate
    issuer = top.issuer.rfc4514_string()
    hint = (
        f"pass the PEM certificates of {issuer} and of the CAs above it with --chain (or signing.chain in "
        "ecoc.yaml, or inside a PKCS#12 key), because ecoc verify and ecoc audit reject every certificate "
        "signed without them"
    )
    if anchors:
        if any(top == anchor or _issued_by(top, anchor) for anchor in anchors):
            return
        if _issued_by(top, top):
            raise InputError(
                f"the seal's chain ends at {_name(top)}, which is not a trust anchor of signing.trust",
                "sign with a seal of a CA that signing.trust names, or add that root to signing.trust",
            )
        roots = ", ".join(_name(anchor) for anchor in anchors)
        raise InputError(
            f"the seal's chain lacks {issuer}, the issuer of {_name(top)}",
            f"if {issuer} is a CA below a root of signing.trust ({roots}), pass its PEM certificate and those "
            "of the CAs above it with --chain (or signing.chain in ecoc.yaml). Otherwise the seal cannot sign "
            "here: get one from a CA under a root that signing.trust names",
        )
    if _issued_by(top, top):
        return
    if top is signing.certificate or not _is_ca(top):
        raise InputError(f"the seal's chain lacks {issuer}, the issuer of {_name(top)}", hint)
    # NOTE: without trust anchors, a chain that ends at an intermediate CA is taken as complete, because
    # the root above it is normally left out. A missing CA higher up is found only with signing.trust.


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, crypto_exceptions.InvalidSignature):
        return False
    return True


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _plain_signed_info(method: str, digest: str, canonical: bool) -> str:
    """Return the SignedInfo of a plain XMLDSig signature as text: its exclusive canonical form, or as serialised.

    The structure is fixed and holds no text that needs escaping (algorithm URIs and base64), so
    both forms are written out directly; a test compares them with lxml's serialisation.
    """

    def empty(name: str, algorithm: str) -> str:
        end = f"></ds:{name}>" if canonical else "/>"
        return f'<ds:{name} Algorithm="{algorithm}"{end}'

    opening = f'<ds:SignedInfo xmlns:ds="{DSIG}">' if canonical else "<ds:SignedInfo>"
    return (
        f"{opening}{empty('CanonicalizationMethod', EXC_C14N)}{empty('SignatureMethod', method)}"
        f'<ds:Reference URI=""><ds:Transforms>{empty("Transform", ENVELOPED)}{empty("Transform", EXC_C14N)}'
        f"</ds:Transforms>{empty('DigestMethod', SHA256)}<ds:DigestValue>{digest}</ds:DigestValue>"
        "</ds:Reference></ds:SignedInfo>"
    )


def _plain_signature(signing: SigningKey, method: str, digest: str) -> bytes:
    """Return a plain enveloped signature (no XAdES) as the bytes that go into the document."""
    canonical = _plain_signed_info(method, digest, canonical=True).encode("ascii")
    value = base64.b64encode(_signature_value(signing, canonical)).decode("ascii")
    certificates = "".join(f"<ds:X509Certificate>{text}</ds:X509Certificate>" for text in signing.base64_der)
    return (
        f'<ds:Signature xmlns:ds="{DSIG}">{_plain_signed_info(method, digest, canonical=False)}'
        f"<ds:SignatureValue>{value}</ds:SignatureValue><ds:KeyInfo><ds:X509Data>{certificates}"
        "</ds:X509Data></ds:KeyInfo></ds:Signature>"
    ).encode("ascii")


def _der_length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _as_response(token: bytes) -> Any:
    """Wrap a time-stamp token in a granted TimeStampResp, the form rfc3161-client verifies."""
    from rfc3161_client import decode_timestamp_response

    body = bytes.fromhex("3003020100") + token  # PKIStatusInfo { status granted }
    return decode_timestamp_response(b"\x30" + _der_length(len(body)) + body)


def request_timestamp(url: str, message: bytes, timeout: float = 30.0) -> bytes:
    """Ask the time-stamping authority at `url` for an RFC 3161 token over `message` (SHA-256)."""
    import urllib.error
    import urllib.request

    from rfc3161_client import HashAlgorithm, TimestampRequestBuilder, decode_timestamp_response

    if not url.lower().startswith(("http://", "https://")):
        raise InputError(
            f"the time-stamping authority {url!r} is not an http or https URL",
            "pass the TSA's URL, as in https://tsa.example/",
        )
    request = TimestampRequestBuilder().data(message).hash_algorithm(HashAlgorithm.SHA256).nonce(nonce=True)
    built = request.cert_request(cert_request=True).build()
    post = urllib.request.Request(
        url, data=built.as_bytes(), headers={"Content-Type": "application/timestamp-query"}, method="POST"
    )
    try:
        with urllib.request.urlopen(post, timeout=timeout) as reply:
            data = reply.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(
            f"the time-stamping authority at {url} did not answer: {reason}",
            "check the URL (--timestamp or signing.timestamp_url) and that this machine can reach it",
        ) from None
    try:
        response = decode_timestamp_response(data)
    except ValueError:
        raise InputError(
            f"the time-stamping authority at {url} sent no RFC 3161 reply", "check the URL of the time-stamping service"
        ) from None
    if response.status not in (0, 1):
        raise InputError(f"the time-stamping authority at {url} refused the request: {response.status_string}")
    if response.tst_info.nonce != built.nonce:
        raise InputError(f"the time-stamping authority at {url} answered another request (nonce mismatch)")
    return bytes(response.time_stamp_token())


def sign(
    document: bytes,
    signing: SigningKey,
    xades: bool = False,
    at: dt.datetime | None = None,
    timestamp_url: str | None = None,
) -> bytes:
    """Return the document with an enveloped XMLDSig signature as the last child of its root.

    The Reference covers the whole document (URI="") through the enveloped-signature transform
    and exclusive canonicalisation, and the SignedInfo is canonicalised the same way before the
    key signs it. With `xades`, the signature also carries XAdES baseline B-B properties (signing
    time `at`, default now, and the signing certificate's digest) under a second Reference. With
    `timestamp_url` as well, a time-stamping authority's token over the SignatureValue is added
    as the XAdES SignatureTimeStamp (baseline B-T).
    """
    if timestamp_url is not None and not xades:
        raise InputError("a signature timestamp is a XAdES property", "sign with --xades as well")
    try:
        root = parse_xml_bytes(document, "the document to sign").getroot()
    except XmlRejected as exc:
        raise InputError(f"the document cannot be signed: {exc}") from None
    signed = DSIG.encode() in document and (
        root.tag == _ds("Signature") or next(root.iter(_ds("Signature")), None) is not None
    )
    if signed:
        raise InputError(
            "the document is signed already", "sign the unsigned render; a certificate carries exactly one signature"
        )
    if root.tag != IVI_ROOT:
        raise InputError(
            f"the document is not an IVI 2.0 message: its root is {root.tag}", "sign the XML that ecoc render writes"
        )
    _check_seal(signing, at or dt.datetime.now(dt.UTC))
    digest = hashlib.sha256(etree.tostring(root, method="c14n", exclusive=True, with_comments=False)).digest()
    elliptic = isinstance(signing.key, ec.EllipticCurvePrivateKey) or (
        isinstance(signing.key, TokenKey) and signing.key.elliptic
    )
    method = ECDSA_SHA256 if elliptic else RSA_SHA256
    # The document's own bytes stay as they are; the signature goes in before the root's end tag.
    local = etree.QName(root).localname
    name = (f"{root.prefix}:{local}" if root.prefix else local).encode("utf-8")
    end = document.rfind(b"</")
    utf8 = (root.getroottree().docinfo.encoding or "UTF-8").upper() in ("UTF-8", "UTF8")
    in_place = utf8 and end >= 0 and document[end + 2 :].rstrip() == name + b">"
    if not xades and in_place:
        encoded = base64.b64encode(digest).decode("ascii")
        return document[:end] + _plain_signature(signing, method, encoded) + document[end:]
    # Built apart from the document: exclusive canonicalisation gives the same SignedInfo either way.
    signature = etree.Element(_ds("Signature"), nsmap={"ds": DSIG})
    info = etree.SubElement(signature, _ds("SignedInfo"))
    etree.SubElement(info, _ds("CanonicalizationMethod"), Algorithm=EXC_C14N)
    etree.SubElement(info, _ds("SignatureMethod"), Algorithm=method)
    reference = etree.SubElement(info, _ds("Reference"), URI="")
    transforms = etree.SubElement(reference, _ds("Transforms"))
    etree.SubElement(transforms, _ds("Transform"), Algorithm=ENVELOPED)
    etree.SubElement(transforms, _ds("Transform"), Algorithm=EXC_C14N)
    etree.SubElement(reference, _ds("DigestMethod"), Algorithm=SHA256)
    etree.SubElement(reference, _ds("DigestValue")).text = base64.b64encode(digest).decode("ascii")
    value_element = etree.SubElement(signature, _ds("SignatureValue"))
    certificates = etree.SubElement(etree.SubElement(signature, _ds("KeyInfo")), _ds("X509Data"))
    for der in signing.der:
        etree.SubElement(certificates, _ds("X509Certificate")).text = base64.b64encode(der).decode("ascii")
    if xades:
        properties = _signed_properties(signature, signing, at or dt.datetime.now(dt.UTC))
        canonical = etree.tostring(properties, method="c14n", exclusive=True, with_comments=False)
        reference = etree.SubElement(
            info, _ds("Reference"), URI=f"#{SIGNED_PROPERTIES_ID}", Type=XADES_SIGNED_PROPERTIES
        )
        etree.SubElement(etree.SubElement(reference, _ds("Transforms")), _ds("Transform"), Algorithm=EXC_C14N)
        etree.SubElement(reference, _ds("DigestMethod"), Algorithm=SHA256)
        etree.SubElement(reference, _ds("DigestValue")).text = base64.b64encode(
            hashlib.sha256(canonical).digest()
        ).decode("ascii")
    signed_info = etree.tostring(info, method="c14n", exclusive=True, with_comments=False)
    value_element.text = base64.b64encode(_signature_value(signing, signed_info)).decode("ascii")
    if timestamp_url is not None:
        canonical_value = etree.tostring(value_element, method="c14n", exclusive=True, with_comments=False)
        token = request_timestamp(timestamp_url, canonical_value)
        qualifying = signature.find(f"{_ds('Object')}/{_xades('QualifyingProperties')}")
        assert qualifying is not None
        unsigned = etree.SubElement(
            etree.SubElement(qualifying, _xades("UnsignedProperties")), _xades("UnsignedSignatureProperties")
        )
        stamp = etree.SubElement(unsigned, _xades("SignatureTimeStamp"))
        etree.SubElement(stamp, _ds("CanonicalizationMethod"), Algorithm=EXC_C14N)
        etree.SubElement(stamp, _xades("EncapsulatedTimeStamp")).text = base64.b64encode(token).decode("ascii")
    if in_place:
        return document[:end] + bytes(etree.tostring(signature)) + document[end:]
    root.append(signature)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


class VerificationFailed(Exception):
    """A signed document that does not verify, with the reason in plain words."""


@dataclass(frozen=True)
class Verified:
    """The content of a verified document, read only from the bytes the signature covers."""

    signed_xml: etree._Element
    signer: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    # The time a time-stamping authority vouches for, when the signature carries a timestamp.
    timestamp: dt.datetime | None = None


def _certificates(signature: etree._Element) -> list[x509.Certificate]:
    found = []
    for element in signature.iterfind(f"{{{DSIG}}}KeyInfo/{{{DSIG}}}X509Data/{{{DSIG}}}X509Certificate"):
        try:
            found.append(x509.load_der_x509_certificate(_base64(element.text or "")))
        except ValueError as exc:
            raise VerificationFailed(f"KeyInfo contains an invalid certificate: {exc}") from None
    if not found:
        raise VerificationFailed("the signature carries no X509Certificate in KeyInfo/X509Data")
    return found


def _base64(text: str) -> bytes:
    return base64.b64decode("".join(text.split()), validate=True)


def _shape(root: etree._Element, allow_weak: bool) -> etree._Element:
    """Check that the document has one signature, on the root, over the whole document."""
    signatures = root.findall(f".//{{{DSIG}}}Signature")
    if len(signatures) != 1:
        raise VerificationFailed(
            f"the document has {len(signatures)} Signature elements; a certificate has exactly one"
        )
    signature = signatures[0]
    if signature.getparent() is not root:
        raise VerificationFailed("the Signature is not a child of the root element, so it may not cover the document")
    references = signature.findall(f"{{{DSIG}}}SignedInfo/{{{DSIG}}}Reference")
    document = [reference for reference in references if reference.get("Type") != XADES_SIGNED_PROPERTIES]
    if len(document) != 1 or document[0].get("URI") != "" or len(references) - len(document) > 1:
        uris = ", ".join(repr(reference.get("URI")) for reference in references) or "none"
        raise VerificationFailed(
            f'the signature must have one Reference with URI="" (the whole document), '
            f"and at most one to its XAdES properties; it has {uris}"
        )
    algorithms = [element.get("Algorithm") for element in signature.iter() if element.get("Algorithm")]
    weak = sorted({algorithm for algorithm in algorithms if algorithm in WEAK_ALGORITHMS})
    if weak and not allow_weak:
        raise VerificationFailed(
            f"the signature uses {', '.join(weak)}, which no longer protects a document; "
            "pass --allow-weak only to read an old archive"
        )
    return signature


def _name(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string()


def check_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: dt.datetime,
) -> tuple[x509.Certificate, ...]:
    """Build the chain from the signing certificate to a trust anchor, valid at `at`.

    Each way it can fail has its own message; the library's own error is the last resort.
    """
    if at < leaf.not_valid_before_utc:
        raise VerificationFailed(
            f"the signing certificate {_name(leaf)} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if at > leaf.not_valid_after_utc:
        raise VerificationFailed(
            f"the signing certificate {_name(leaf)} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        if not (usage.digital_signature or usage.content_commitment):
            raise VerificationFailed(
                f"the signing certificate {_name(leaf)} may not sign: its key usage lacks digitalSignature"
            )
    except x509.ExtensionNotFound:
        pass
    chain = [leaf]
    pool = {_name(certificate): certificate for certificate in intermediates}
    trusted = {_name(anchor): anchor for anchor in anchors}
    current = leaf
    for _ in range(10):
        issuer = current.issuer.rfc4514_string()
        if issuer in trusted:
            anchor = trusted[issuer]
            _check_issued(current, anchor, at)
            return (*chain[1:], anchor)
        if current.issuer == current.subject:
            # A self-signed certificate ends the chain, even when KeyInfo carries it too.
            raise VerificationFailed(
                f"the certificate chain ends at {_name(current)}, which is not a trust anchor: the seal comes "
                "from a CA that is not trusted"
            )
        following = pool.get(issuer)
        if following is None:
            if current is leaf:
                raise VerificationFailed(
                    f"the issuer {issuer} of the signing certificate is neither a trust anchor nor in the "
                    "signature's KeyInfo: the intermediate certificate is missing, or the issuer is not trusted"
                )
            raise VerificationFailed(
                f"the chain leads to {issuer}, which is not a trust anchor: "
                "the seal comes from a CA that is not trusted"
            )
        _check_issued(current, following, at)
        chain.append(following)
        current = following
    raise VerificationFailed("the certificate chain is longer than 10 certificates")


def _check_issued(certificate: x509.Certificate, issuer: x509.Certificate, at: dt.datetime) -> None:
    if at < issuer.not_valid_before_utc or at > issuer.not_valid_after_utc:
        raise VerificationFailed(f"the CA certificate {_name(issuer)} is not valid on {at:%Y-%m-%d %H:%M} UTC")
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not constraints.ca:
            raise VerificationFailed(
                f"{_name(issuer)} is not a CA certificate, so it cannot issue {_name(certificate)}"
            )
    except x509.ExtensionNotFound:
        raise VerificationFailed(f"{_name(issuer)} has no BasicConstraints, so it cannot act as a CA") from None
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, crypto_exceptions.InvalidSignature):
        raise VerificationFailed(f"the signature of {_name(issuer)} on {_name(certificate)} does not verify") from None


class Verifier:
    """Verifies many documents against the same anchors, checking each distinct chain once."""

    def __init__(
        self, anchors: Sequence[x509.Certificate], at: dt.datetime | None = None, allow_weak: bool = False
    ) -> None:
        self.anchors = anchors
        self.at = at or dt.datetime.now(dt.UTC)
        self.allow_weak = allow_weak
        # The chain, or the reason it fails, by the DER bytes of the certificates in KeyInfo and the time.
        self.chains: dict[tuple[bytes, ...], tuple[x509.Certificate, ...] | VerificationFailed] = {}
        # Chains that verified, by the DER bytes of the certificates, with the period all their certificates are valid.
        self.valid_chains: dict[tuple[bytes, ...], tuple[tuple[x509.Certificate, ...], dt.datetime, dt.datetime]] = {}
        # Whether the caller fixed the time; otherwise a signature timestamp decides it.
        self.fixed_time = at is not None

    def chain(
        self, certificates: Sequence[x509.Certificate], at: dt.datetime | None = None
    ) -> tuple[x509.Certificate, ...]:
        moment = at or self.at
        certificates_key = tuple(certificate.public_bytes(serialization.Encoding.DER) for certificate in certificates)
        # A chain that holds at one moment holds at every moment all its certificates are valid.
        valid = self.valid_chains.get(certificates_key)
        if valid is not None and valid[1] <= moment <= valid[2]:
            return valid[0]
        key = (*certificates_key, str(moment).encode())
        known = self.chains.get(key)
        if known is None:
            try:
                known = check_chain(certificates[0], certificates[1:], self.anchors, moment)
            except VerificationFailed as exc:
                known = exc
            else:
                used = (certificates[0], *known)
                start = max(certificate.not_valid_before_utc for certificate in used)
                end = min(certificate.not_valid_after_utc for certificate in used)
                self.valid_chains[certificates_key] = (known, start, end)
            self.chains[key] = known
        if isinstance(known, VerificationFailed):
            raise VerificationFailed(str(known))
        return known

    def verify(self, document: bytes) -> Verified:
        return verify(document, self.anchors, self.at if self.fixed_time else None, self.allow_weak, self)


def verify(
    document: bytes,
    anchors: Sequence[x509.Certificate],
    at: dt.datetime | None = None,
    allow_weak: bool = False,
    verifier: Verifier | None = None,
) -> Verified:
    """Verify a signed document offline against `anchors`, at `at` (default: now)."""
    if not anchors:
        raise VerificationFailed("no trust anchor is configured; pass --trust or set signing.trust in ecoc.yaml")
    try:
        root = parse_xml_bytes(document, "the signed document").getroot()
    except XmlRejected as exc:
        raise VerificationFailed(f"the document cannot be read safely: {exc}") from None
    signature = _shape(root, allow_weak)
    certificates = _certificates(signature)
    leaf, intermediates = certificates[0], certificates[1:]
    stamp = signature.find(f".//{_xades('SignatureTimeStamp')}/{_xades('EncapsulatedTimeStamp')}")
    timestamp = _check_timestamp(signature, stamp, anchors) if stamp is not None else None
    # The chain is judged when the document was signed: at --at, else the timestamp's time, else now.
    moment = at or timestamp or (verifier.at if verifier is not None else dt.datetime.now(dt.UTC))
    chain = (
        verifier.chain(certificates, moment)
        if verifier is not None
        else check_chain(leaf, intermediates, anchors, moment)
    )
    properties = _xades_properties(signature, leaf)
    expected = 1 if properties is None else 2
    # signxml checks the leaf's validity period on its own, so it gets the moment the chain is judged
    # at. Otherwise every certificate whose seal has since expired would fail years later.
    if allow_weak:
        config = SignatureConfiguration(
            location="./",
            expect_references=expected,
            signature_methods=frozenset(SignatureMethod),
            digest_algorithms=frozenset(DigestAlgorithm),
            verification_time=moment,
        )
    else:
        config = SignatureConfiguration(location="./", expect_references=expected, verification_time=moment)
    try:
        result = XMLVerifier().verify(
            document, x509_cert=leaf.public_bytes(serialization.Encoding.PEM).decode("ascii"), expect_config=config
        )
    except InvalidCertificate as exc:
        raise VerificationFailed(f"the seal certificate is not valid at {moment.isoformat()}: {exc}") from None
    except InvalidSignature as exc:
        detail = str(exc)
        if detail.startswith("Digest mismatch"):
            reason = "the document was changed after it was signed (its digest no longer matches)"
        else:
            reason = "the signed information was changed after signing, or another key made the signature"
        raise VerificationFailed(f"the signature does not match the document: {reason}") from None
    except InvalidInput as exc:
        raise VerificationFailed(f"the signature cannot be checked: {exc}") from None
    results = result if isinstance(result, list) else [result]
    uris = [reference.get("URI") for reference in signature.findall(f"{{{DSIG}}}SignedInfo/{{{DSIG}}}Reference")]
    signed = results[uris.index("")].signed_xml
    return Verified(signed, leaf, chain, timestamp)


def _check_timestamp(
    signature: etree._Element, stamp: etree._Element, anchors: Sequence[x509.Certificate]
) -> dt.datetime:
    """Verify the XAdES signature timestamp over the SignatureValue and return its time."""
    from rfc3161_client import VerifierBuilder

    value = signature.find(_ds("SignatureValue"))
    if value is None:
        raise VerificationFailed("the signature has no SignatureValue for its timestamp to cover")
    canonical = etree.tostring(value, method="c14n", exclusive=True, with_comments=False)
    try:
        response = _as_response(_base64(stamp.text or ""))
    except ValueError:
        raise VerificationFailed(
            "the signature timestamp cannot be read: EncapsulatedTimeStamp is no RFC 3161 token"
        ) from None
    builder = VerifierBuilder()
    for anchor in anchors:
        builder = builder.add_root_certificate(anchor)
    try:
        builder.build().verify_message(response, canonical)
    except Exception as exc:  # rfc3161-client raises VerificationError with library detail
        text = str(exc)
        if "certificate" in text.lower():
            reason = "its time-stamping authority does not chain to a trust anchor; add the TSA's root to --trust"
        elif "mismatch" in text.lower():
            reason = "it covers another SignatureValue than this signature's"
        else:
            reason = "its signature or content is not valid"
        raise VerificationFailed(f"the signature timestamp does not verify: {reason}") from None
    moment: dt.datetime = response.tst_info.gen_time
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _xades_properties(signature: etree._Element, leaf: x509.Certificate) -> etree._Element | None:
    """Check the XAdES SignedProperties a signature refers to, or return None when it has none.

    They must sit in this signature, be the only element with their Id in the document, and name
    the digest of the signing certificate.
    """
    reference = next(
        (
            reference
            for reference in signature.iterfind(f"{{{DSIG}}}SignedInfo/{{{DSIG}}}Reference")
            if reference.get("Type") == XADES_SIGNED_PROPERTIES
        ),
        None,
    )
    if reference is None:
        return None
    target = (reference.get("URI") or "").removeprefix("#")
    holders = [element for element in signature.getroottree().iter() if element.get("Id") == target]
    if len(holders) != 1 or holders[0].tag != f"{{{XADES}}}SignedProperties":
        raise VerificationFailed(f"the XAdES properties #{target} are missing or not unique in the document")
    properties = holders[0]
    if not any(ancestor is signature for ancestor in properties.iterancestors()):
        raise VerificationFailed("the XAdES properties lie outside the signature that refers to them")
    digests = [
        (element.text or "").strip()
        for element in properties.iterfind(
            f".//{{{XADES}}}SigningCertificateV2/{{{XADES}}}Cert/{{{XADES}}}CertDigest/{{{DSIG}}}DigestValue"
        )
    ]
    expected = base64.b64encode(hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).digest()).decode()
    if expected not in digests:
        raise VerificationFailed("the XAdES properties name another signing certificate than the one in KeyInfo")
    return properties


# A key given as `env:NAME` is read from the environment variable NAME (PEM, or PKCS#12 in base64).
KEY_FROM_ENVIRONMENT = "env:"


def load_signing_key(
    key_source: str,
    cert_path: Path | None,
    chain_path: Path | None,
    passphrase: bytes | None,
    configured: tuple[Path | None, Path | None] = (None, None),
) -> SigningKey:
    """Read a PEM key with its certificate (and intermediates), or a PKCS#12 file that contains all three.

    `key_source` is a file path, or `env:NAME` for key material in an environment variable.
    `configured` holds the certificate and chain files of ecoc.yaml, which a PEM or PKCS#11 key
    takes when `cert_path` is None, and a PKCS#12 bundle ignores. Messages never contain the
    passphrase or key material, only names and what is wrong.
    """
    key_path = Path(key_source)
    if cert_path is None and configured[0] is not None:
        default_cert, default_chain = configured
    else:
        default_cert, default_chain = None, None
    if key_source.startswith("pkcs11:"):
        cert_path, chain_path = cert_path or default_cert, chain_path or default_chain
        if cert_path is None:
            raise InputError("a key on a PKCS#11 token needs its certificate", "pass --cert, or set signing.cert")
        token_key = TokenKey(key_source)
        token_certificate = _seal_certificate(cert_path)
        chain = _seal_chain(chain_path)
        try:
            _check_token_key(token_key, token_certificate)
        except InputError:
            token_key.close()
            raise
        return SigningKey(token_key, token_certificate, chain)
    if key_source.startswith(KEY_FROM_ENVIRONMENT):
        data, bundle = _from_environment(key_source.removeprefix(KEY_FROM_ENVIRONMENT))
    else:
        key_hint = "pass the seal's private key file with --key, or correct signing.key in ecoc.yaml"
        data, bundle = _read(key_path, "key", key_hint), key_path.suffix.lower() in (".p12", ".pfx")
    if bundle:
        if cert_path is not None:
            raise InputError(
                "a PKCS#12 bundle brings its own certificate", "leave out --cert (and signing.cert) with a .p12 key"
            )
        try:
            key, certificate, extra = pkcs12.load_key_and_certificates(data, passphrase)
        except ValueError:
            raise InputError(
                f"{key_source}: cannot open the PKCS#12 bundle", "check the passphrase in ECOC_KEY_PASSPHRASE"
            ) from None
        if certificate is None or key is None:
            raise InputError(f"{key_source}: the PKCS#12 bundle contains no key with its certificate")
        chain = tuple(extra or ())
    else:
        try:
            key = serialization.load_pem_private_key(data, passphrase)
        except TypeError:
            # cryptography raises TypeError both for a missing and for an unneeded passphrase.
            if passphrase is not None:
                raise InputError(
                    f"{key_source}: the key is not encrypted, but ECOC_KEY_PASSPHRASE is set",
                    "unset ECOC_KEY_PASSPHRASE, or pass the encrypted key it belongs to",
                ) from None
            raise InputError(
                f"{key_source}: the key is encrypted",
                "set the passphrase in the environment variable ECOC_KEY_PASSPHRASE",
            ) from None
        except ValueError:
            raise InputError(
                f"{key_source}: not a PEM private key, or the passphrase is wrong",
                "pass the PEM key file, and check ECOC_KEY_PASSPHRASE if the key is encrypted",
            ) from None
        cert_path, chain_path = cert_path or default_cert, chain_path or default_chain
        if cert_path is None:
            raise InputError(
                "a PEM key needs its certificate",
                "pass --cert with the signing certificate, or set signing.cert in ecoc.yaml",
            )
        certificate = _seal_certificate(cert_path)
        chain = _seal_chain(chain_path)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise InputError(
            f"{key_source}: the key is neither RSA nor EC", "use an RSA (2048 bits or more) or EC P-256 key"
        )
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        if cert_path is None:
            raise InputError(
                f"{key_source}: the certificate in the PKCS#12 bundle does not belong to the key in it",
                "export the bundle again with the seal's private key and its certificate",
            )
        raise InputError(
            f"{cert_path}: the certificate does not belong to the key {key_source}",
            "pass the seal's certificate with --cert and its private key with --key, or correct signing.cert "
            "and signing.key in ecoc.yaml",
        )
    return SigningKey(key, certificate, chain)


def _seal_certificate(cert_path: Path) -> x509.Certificate:
    """Read the seal's certificate, the first one in the --cert file."""
    hint = "pass --cert (or set signing.cert in ecoc.yaml) with the seal's PEM certificate"
    return certificates_in(cert_path, "--cert", hint)[0]


def _seal_chain(chain_path: Path | None) -> tuple[x509.Certificate, ...]:
    """Read the intermediate certificates of --chain, or none without a chain file."""
    if chain_path is None:
        return ()
    hint = (
        "pass --chain (or set signing.chain in ecoc.yaml) with the PEM file of the intermediate CA "
        "certificates, from the seal's issuer upwards"
    )
    return tuple(certificates_in(chain_path, "--chain", hint))


def _check_token_key(key: TokenKey, certificate: x509.Certificate) -> None:
    """Make sure the token's key belongs to the certificate, by a test signature."""
    probe = b"ecoc checks that the token key belongs to the certificate"
    public = certificate.public_key()
    value = key.sign(probe)
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            size = len(value) // 2
            r, s = int.from_bytes(value[:size], "big"), int.from_bytes(value[size:], "big")
            public.verify(encode_dss_signature(r, s), probe, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(value, probe, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise InputError("the certificate's key is neither RSA nor EC")
    except crypto_exceptions.InvalidSignature:
        raise InputError("the key on the PKCS#11 token does not belong to the certificate") from None


def _from_environment(name: str) -> tuple[bytes, bool]:
    """Return the key material in environment variable `name`, and whether it is a PKCS#12 bundle."""
    value = os.environ.get(name)
    if not name or not value:
        raise InputError(f"the environment variable {name or '(no name)'} is missing or empty", "set it to a PEM key")
    if "-----BEGIN" in value:
        return value.encode("ascii", "replace"), False
    try:
        return base64.b64decode("".join(value.split()), validate=True), True
    except ValueError:
        raise InputError(
            f"the environment variable {name} contains neither a PEM key nor a base64 PKCS#12 bundle"
        ) from None


def _read(path: Path, what: str, hint: str | None = None) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} file: {exc.strerror}", hint) from None


def certificates_in(path: Path, option: str | None = None, hint: str | None = None) -> list[x509.Certificate]:
    """Read the PEM certificates of `path`. Messages name `option`, such as --chain, when it gave the path."""
    what = f"{option} certificate" if option else "certificate"
    data = _read(path, what, hint)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise InputError(f"{path}: not a PEM {what} file", hint or "pass certificates in PEM form") from None
    return certificates


def signer_problem(signer: x509.Certificate, names: Sequence[str], signers: dict[str, tuple[str, ...]]) -> str | None:
    """Say why `signer` may not sign for the manufacturer or EU representative `names`, or return None."""
    subject = signer.subject.rfc4514_string()
    allowed = [pattern for name in names for pattern in signers.get(name, ())]
    if not allowed:
        listed = ", ".join(names) or "no manufacturer"
        return f"signing.signers in ecoc.yaml names no certificate subject for {listed}"
    if any(fnmatch.fnmatchcase(subject, pattern) for pattern in allowed):
        return None
    return f"the certificate {subject} may not sign for {', '.join(names)}; signing.signers allows {', '.join(allowed)}"


def signer_names(document: etree._Element) -> list[str]:
    """Return the manufacturer and EU representative names a certificate gives, for the signer check."""
    names = [
        (element.text or "").strip()
        for element in document.iter()
        if isinstance(element.tag, str)
        and etree.QName(element).localname in ("ManufacturerName", "EURepresentativeName")
    ]
    return list(dict.fromkeys(name for name in names if name))


def load_anchors(paths: Sequence[Path]) -> list[x509.Certificate]:
    return [certificate for path in paths for certificate in certificates_in(path)]
