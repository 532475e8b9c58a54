"""A test PKI made on the fly: a root CA, an intermediate CA and signing certificates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class Issued:
    key: PrivateKey
    certificate: x509.Certificate

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, passphrase: bytes | None = None) -> bytes:
        encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Halvard Motors B.V."),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def issue(
    common_name: str,
    issuer: Issued | None = None,
    *,
    ca: bool = False,
    not_before: dt.datetime = NOW - DAY,
    not_after: dt.datetime = NOW + 365 * DAY,
    digital_signature: bool = True,
    elliptic: bool = False,
    alt_names: Sequence[x509.GeneralName] = (),
    extended_usage: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.CODE_SIGNING,),
) -> Issued:
    """Issue a certificate signed by `issuer`, or a self-signed one when there is none.

    `alt_names` become the subject alternative names (a TLS server certificate needs its host
    there), and `extended_usage` the extended key usage of a certificate that is not a CA.
    """
    key: PrivateKey = ec.generate_private_key(ec.SECP256R1()) if elliptic else rsa.generate_private_key(65537, 2048)
    subject = _name(common_name)
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(alt_names)), critical=False)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    usage = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    if ca:
        usage.update(key_cert_sign=True, crl_sign=True)
    else:
        usage.update(digital_signature=digital_signature, key_encipherment=not digital_signature)
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_usage)), critical=False)
    builder = builder.add_extension(x509.KeyUsage(**usage), critical=True)
    certificate = builder.sign(signer_key, hashes.SHA256())
    return Issued(key, certificate)


@dataclass
class Pki:
    root: Issued
    intermediate: Issued
    signer: Issued

    def write(self, folder: Path) -> dict[str, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        files = {
            "root": folder / "root.pem",
            "chain": folder / "chain.pem",
            "cert": folder / "signer.pem",
            "key": folder / "signer.key",
        }
        files["root"].write_bytes(self.root.pem())
        files["chain"].write_bytes(self.intermediate.pem())
        files["cert"].write_bytes(self.signer.pem())
        files["key"].write_bytes(self.signer.key_pem())
        return files


def make_pki(elliptic: bool = False, **signer: object) -> Pki:
    root = issue("Halvard Test Root CA", ca=True, not_after=NOW + 3650 * DAY)
    intermediate = issue("Halvard Test Issuing CA", root, ca=True, not_after=NOW + 1825 * DAY)
    leaf = issue("Halvard Motors B.V. eCoC seal", intermediate, elliptic=elliptic, **signer)  # type: ignore[arg-type]
    return Pki(root, intermediate, leaf)
