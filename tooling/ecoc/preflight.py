"""Checks of the signing setup that `ecoc check` runs, so that a release does not fail at the seal.

When `signing.cert` is set in ecoc.yaml, the certificate must be valid today (a warning 30 days
before it expires), and when `signing.signers` is set, it must be one that may sign for the
manufacturer or EU representative each approval names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from cryptography import x509

from ecoc.check import ApprovalIndex
from ecoc.config import Repository
from ecoc.errors import InputError
from ecoc.files import CONFIG_NAME
from ecoc.findings import Finding, Severity
from ecoc.signing import certificates_in, signer_problem
from ecoc.yamlload import Mapping, Node, Scalar, Sequence

# A signing certificate that expires within this many days gets a warning.
EXPIRY_WARNING_DAYS = 30


def _setting_line(repository: Repository, key: str) -> int:
    """Return the line of ecoc.yaml that sets `key` below `signing:`, or 1."""
    try:
        lines = (repository.root / CONFIG_NAME).read_text(encoding="utf-8").splitlines()
    except OSError:
        return 1
    inside = False
    for number, line in enumerate(lines, 1):
        if line.startswith("signing:"):
            inside = True
        elif inside and line.strip().startswith(f"{key}:"):
            return number
        elif inside and line and not line[0].isspace() and not line.startswith("#"):
            inside = False
    return 1


def _names(node: Node | None) -> Iterator[Scalar]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in ("ManufacturerName", "EURepresentativeName") and isinstance(value, Scalar):
                yield value
            else:
                yield from _names(value)
    elif isinstance(node, Sequence):
        for item in node:
            yield from _names(item)


def signing_findings(repository: Repository, index: ApprovalIndex, now: dt.datetime) -> list[Finding]:
    settings = repository.settings.signing
    if settings.cert is None:
        return []
    line = _setting_line(repository, "cert")
    try:
        certificate: x509.Certificate = certificates_in(repository.root / settings.cert)[0]
    except (InputError, IndexError) as exc:
        message = exc.message if isinstance(exc, InputError) else "the file contains no certificate"
        return [
            Finding(
                "signing.certificate",
                Severity.ERROR,
                f"the signing certificate cannot be read: {message}",
                CONFIG_NAME,
                line,
                3,
                "signing.cert",
                "point signing.cert at the PEM file of the signing certificate",
            )
        ]
    findings = []
    subject = certificate.subject.rfc4514_string()
    expires = certificate.not_valid_after_utc
    if now > expires:
        findings.append(
            Finding(
                "signing.certificate-expired",
                Severity.ERROR,
                f"the signing certificate {subject} expired on {expires:%Y-%m-%d}",
                CONFIG_NAME,
                line,
                3,
                "signing.cert",
                "renew the seal certificate with its provider and point signing.cert at the new one",
            )
        )
    elif now > expires - dt.timedelta(days=EXPIRY_WARNING_DAYS):
        findings.append(
            Finding(
                "signing.certificate-expiring",
                Severity.WARNING,
                f"the signing certificate {subject} expires on {expires:%Y-%m-%d}, in {(expires - now).days} days",
                CONFIG_NAME,
                line,
                3,
                "signing.cert",
                "renew the seal certificate before it expires, or releases stop",
            )
        )
    if settings.signers:
        for approval in index.approvals:
            names = list(_names(approval.coc))
            problem = signer_problem(certificate, list(dict.fromkeys(n.text for n in names)), settings.signers)
            if problem is not None:
                where = names[0] if names else None
                findings.append(
                    Finding(
                        "signing.signer-mismatch",
                        Severity.ERROR,
                        problem,
                        approval.source.path,
                        where.line if where else 1,
                        where.column if where else 1,
                        "CocDataGroup.ManufacturerTable",
                        f"if this seal may sign for the manufacturer, add '{certificate.subject.rfc4514_string()}' "
                        "under its name in signing.signers (RFC 4514 form, which lists the attributes in the "
                        "reverse of openssl's order); otherwise sign with the seal of the manufacturer the "
                        "approval names",
                    )
                )
    return findings
