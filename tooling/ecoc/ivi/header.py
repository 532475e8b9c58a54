"""Header fields that ecoc derives instead of reading them from YAML."""

from __future__ import annotations

import hashlib
import re
import uuid

IVI_VERSION_NUMBER_XSD = "2.0"

# The distinguishing number of the approval authority opens every EU approval number:
# e4*2018/858*00412*01 was granted by the Netherlands (e4).
_E_CODE = re.compile(r"e([0-9]{1,2})\*")


def reference_id(vin: str, stage: int, version_number: int) -> str:
    """Derive the IviReferenceId of one issued version of one stage of one vehicle.

    The schema wants a UUID version 4, which is normally random. A hash of the three values
    with the version and variant bits set as RFC 9562 prescribes keeps the shape and makes the
    id reproducible: every render of the same certificate version gets the same id, and a
    correction (a higher version number) gets a new one.
    """
    digest = hashlib.sha256(f"ecoc:IviReferenceId:{vin}:{stage}:{version_number}".encode()).digest()
    raw = bytearray(digest[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


def approval_country(approval_number: str) -> str | None:
    """Return the e-code that opens an approval number (`e4` for `e4*2018/858*…`), if any."""
    match = _E_CODE.match(approval_number)
    if match is None:
        return None
    return f"e{int(match.group(1))}"
