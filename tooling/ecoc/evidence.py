"""The evidence archive `signed/` as the rest of ecoc reads it.

Each issued certificate has a folder below `signed/` with a `manifest.json`. The fields read here:

- `vin` and `record`: the vehicle and the record file it was issued from;
- `version`: its IviVersionNumber;
- `content_digest`: the digest of the certificate's content (`ecoc.ivi.render.content_digest`:
  its CocDataGroup and content header fields, without IviReferenceId and IviVersionDateTime),
  so that the same data always gives the same digest;
- `delivery`: `{"status": "pending" | "accepted" | "rejected", "reason": ...}`, the authority's
  receipt; without it the certificate is signed but not yet delivered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ecoc.files import list_manifests
from ecoc.findings import Finding, Severity

DELIVERY_STATES = ("pending", "accepted", "rejected")


@dataclass(frozen=True, slots=True)
class Evidence:
    """One issued certificate, as its manifest describes it."""

    manifest: str
    vin: str
    record: str
    version: int
    content_digest: str | None
    delivery: str
    reason: str | None = None


def read_evidence(root: Path) -> tuple[dict[str, list[Evidence]], list[Finding]]:
    """Read every manifest below signed/, by VIN and in IviVersionNumber order, and report unreadable ones."""
    by_vin: dict[str, list[Evidence]] = {}
    findings = []
    for path, relative in list_manifests(root):
        try:
            with open(path, "rb") as handle:
                data = json.loads(handle.read())
            delivery = data.get("delivery") or {}
            status = str(delivery.get("status", "pending"))
            if status not in DELIVERY_STATES:
                raise ValueError(f"delivery status {status!r} is not one of {', '.join(DELIVERY_STATES)}")
            evidence = Evidence(
                relative,
                str(data["vin"]),
                str(data["record"]),
                int(data.get("version", 1)),
                str(data["content_digest"]) if data.get("content_digest") else None,
                status,
                str(delivery["reason"]) if delivery.get("reason") else None,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            findings.append(
                Finding(
                    "io.read",
                    Severity.ERROR,
                    f"cannot read the evidence manifest: {exc}",
                    relative,
                    1,
                    1,
                    hint="evidence in signed/ is written by the release job only; restore the file from git",
                )
            )
            continue
        by_vin.setdefault(evidence.vin, []).append(evidence)
    for entries in by_vin.values():
        entries.sort(key=lambda evidence: (evidence.version, evidence.manifest))
    return by_vin, findings
