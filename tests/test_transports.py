"""Delivery transports against local HTTPS simulators of the NAP and the VCA, and the outbox folder."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from lxml import etree

from ecoc.cli import main
from ecoc.config import ReleaseSettings
from ecoc.errors import ConfigError
from ecoc.signing import load_signing_key, sign
from ecoc.transports import Delivery, open_transport
from pki import Pki, issue, make_pki
from simulators import MAINTENANCE_PAGE, NapSimulator, VcaSimulator, client_certificate, free_port

PROJECT = Path(__file__).resolve().parents[1]
IVI = "{http://eu.ereg.initialvehicleinformation.v2}"
PASSPHRASE = "nap key passphrase 5e1f"


@dataclass(frozen=True)
class Document:
    reference_id: str
    vin: str
    unsigned: bytes
    signed: bytes


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> list[Document]:
    """Four certificates of the bundled example repository, rendered and signed with the test PKI."""
    folder = tmp_path_factory.mktemp("documents")
    repo = folder / "repo"
    repo.mkdir()
    shutil.copy(PROJECT / "ecoc.yaml", repo / "ecoc.yaml")
    for name in ("approvals", "records", "rules"):
        shutil.copytree(PROJECT / name, repo / name)
    out = folder / "render"
    assert main(["--repo", str(repo), "render", "--out", str(out), "--datetime", "2026-12-01T09:00:00Z"]) == 0
    files = pki.write(folder / "pki")
    key = load_signing_key(str(files["key"]), files["cert"], files["chain"], None)
    result = []
    for path in sorted(out.glob("*.xml"))[:4]:
        unsigned = path.read_bytes()
        root = etree.fromstring(unsigned)
        reference_id = root.findtext(f"{IVI}Header/{IVI}IviReferenceId")
        vin = root.findtext(f".//{IVI}VehicleIdentificationNumber")
        assert reference_id and vin
        result.append(Document(reference_id, vin, unsigned, sign(unsigned, key)))
    return result


@pytest.fixture
def document(documents: list[Document]) -> Document:
    return documents[0]


@pytest.fixture
def nap(tmp_path: Path, pki: Pki) -> Iterator[NapSimulator]:
    with NapSimulator(tmp_path / "nap", trust=[pki.root.certificate]) as simulator:
        yield simulator
    assert simulator.errors == []


@pytest.fixture
def vca(tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Iterator[VcaSimulator]:
    with VcaSimulator(tmp_path / "vca", trust=[pki.root.certificate]) as simulator:
        monkeypatch.setenv(simulator.secret_variable, simulator.client_secret)
        yield simulator
    assert simulator.errors == []


def deliver(settings: ReleaseSettings, root: Path, *documents: Document) -> list[Delivery]:
    transport = open_transport(settings, root)
    try:
        return [transport.deliver(document.reference_id, document.vin, document.signed) for document in documents]
    finally:
        transport.close()


def tampered(document: Document) -> bytes:
    changed = document.signed.replace(b"<IviVersionNumber>1<", b"<IviVersionNumber>2<")
    assert changed != document.signed
    return changed


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Return whether `condition` becomes true within `seconds`, for what a server thread records late."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def config_error(settings: ReleaseSettings, root: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        open_transport(settings, root)
    return caught.value


# The outbox.


def test_outbox_writes_the_certificate_with_a_receipt(tmp_path: Path, document: Document) -> None:
    outbox = tmp_path / "outbox"
    settings = ReleaseSettings(transport="outbox", outbox=str(outbox))

    [delivery] = deliver(settings, tmp_path, document)

    target = outbox / f"{document.reference_id}.xml"
    assert delivery.status == "accepted"
    assert delivery.duplicate is False
    # The evidence keeps the message: it names the file without the folder of the machine that ran.
    assert delivery.message == f"wrote {target.name} into the outbox"
    assert str(tmp_path) not in delivery.message
    assert target.read_bytes() == document.signed
    assert [path.name for path in outbox.iterdir()] == [target.name]
    assert delivery.media_type == "application/json"
    assert delivery.receipt_id == target.name
    assert delivery.receipt is not None
    receipt = json.loads(delivery.receipt)
    assert receipt["transport"] == "outbox"
    assert receipt["file"] == target.name
    assert receipt["sha256"] == hashlib.sha256(document.signed).hexdigest()
    assert dt.datetime.fromisoformat(receipt["written"]).tzinfo is not None


def test_outbox_same_certificate_again_is_a_duplicate(tmp_path: Path, document: Document) -> None:
    settings = ReleaseSettings(transport="outbox", outbox=str(tmp_path / "outbox"))

    first, second = deliver(settings, tmp_path, document, document)

    assert first.status == "accepted"
    assert second.status == "accepted"
    assert second.duplicate is True
    assert second.message == f"the outbox already contains {document.reference_id}.xml"
    assert second.receipt_id == first.receipt_id


def test_outbox_other_bytes_fail_and_keep_the_file(tmp_path: Path, document: Document) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    target = outbox / f"{document.reference_id}.xml"
    target.write_bytes(b"<other/>")

    [delivery] = deliver(ReleaseSettings(transport="outbox", outbox=str(outbox)), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message.startswith(f"{target} already exists with other content")
    assert delivery.receipt is None
    assert target.read_bytes() == b"<other/>"
    assert [path.name for path in outbox.iterdir()] == [target.name]


def test_outbox_folder_is_created(tmp_path: Path, document: Document) -> None:
    outbox = tmp_path / "missing" / "outbox"

    [delivery] = deliver(ReleaseSettings(transport="outbox", outbox=str(outbox)), tmp_path, document)

    assert delivery.status == "accepted"
    assert (outbox / f"{document.reference_id}.xml").read_bytes() == document.signed


def test_outbox_file_is_a_config_error(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.write_text("not a folder")

    error = config_error(ReleaseSettings(transport="outbox", outbox=str(outbox)), tmp_path)

    assert error.message == f"the outbox {outbox} is a file, not a folder"


def test_outbox_below_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    outbox = tmp_path / "file" / "outbox"

    error = config_error(ReleaseSettings(transport="outbox", outbox=str(outbox)), tmp_path)

    assert error.message == f"the outbox {outbox} lies below the file {tmp_path / 'file'}, not a folder"


def test_outbox_without_write_permission_fails(tmp_path: Path, document: Document) -> None:
    # A folder of the kernel's process file system takes no new files, not even from root.
    outbox = Path("/proc/self/fdinfo")
    [delivery] = deliver(ReleaseSettings(transport="outbox", outbox=str(outbox)), tmp_path, document)

    assert delivery.status == "failed"
    assert f"{outbox}/{document.reference_id}.xml cannot be written" in delivery.message


def test_outbox_unsafe_reference_id_fails(tmp_path: Path, document: Document) -> None:
    transport = open_transport(ReleaseSettings(transport="outbox", outbox="outbox"), tmp_path)

    delivery = transport.deliver("../escape", document.vin, document.signed)

    assert delivery.status == "failed"
    assert "cannot be used as a file name" in delivery.message
    assert not (tmp_path / "escape.xml").exists()


def test_outbox_setting_is_relative_to_the_repository(tmp_path: Path, document: Document) -> None:
    [delivery] = deliver(ReleaseSettings(transport="outbox", outbox="outbox"), tmp_path, document)

    assert delivery.status == "accepted"
    assert (tmp_path / "outbox" / f"{document.reference_id}.xml").is_file()


def test_outbox_argument_overrides_the_setting(tmp_path: Path, document: Document) -> None:
    settings = ReleaseSettings(transport="outbox", outbox="configured")
    transport = open_transport(settings, tmp_path, outbox=tmp_path / "chosen")

    delivery = transport.deliver(document.reference_id, document.vin, document.signed)

    assert delivery.status == "accepted"
    assert transport.name == "outbox"
    assert (tmp_path / "chosen" / f"{document.reference_id}.xml").is_file()
    assert not (tmp_path / "configured").exists()


def test_outbox_argument_selects_no_transport(nap: NapSimulator, tmp_path: Path) -> None:
    transport = open_transport(nap.settings(), tmp_path, outbox=tmp_path / "chosen")
    transport.close()

    assert transport.name == "nap-soap"
    with pytest.raises(ConfigError, match="no delivery transport is configured"):
        open_transport(ReleaseSettings(), tmp_path, outbox=tmp_path / "chosen")


# Configuration errors.


def test_missing_transport_is_a_config_error(tmp_path: Path) -> None:
    error = config_error(ReleaseSettings(), tmp_path)

    assert error.message == "no delivery transport is configured"
    assert error.hint is not None
    assert "release.transport" in error.hint


def test_outbox_transport_without_folder_is_a_config_error(tmp_path: Path) -> None:
    error = config_error(ReleaseSettings(transport="outbox"), tmp_path)

    assert error.message == "the outbox transport has no folder"
    assert error.hint is not None
    assert "--outbox DIR" in error.hint


def test_nap_without_settings_is_config_error(tmp_path: Path) -> None:
    error = config_error(ReleaseSettings(transport="nap-soap"), tmp_path)

    assert error.message == "release.transport is nap-soap, but release.nap is missing"


def test_vca_missing_secret_variable_is_a_config_error(
    vca: VcaSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(vca.secret_variable)

    error = config_error(vca.settings(), tmp_path)

    assert error.message == f"the environment variable {vca.secret_variable} with the VCA client secret is not set"
    assert error.hint is not None
    assert vca.client_id in error.hint


def test_nap_missing_client_certificate_is_a_config_error(nap: NapSimulator, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"

    error = config_error(nap.settings(client_cert=str(missing)), tmp_path)

    assert error.message == f"the NAP client certificate {missing} (release.nap.client_cert) does not exist"
    assert error.hint is not None


def test_nap_paths_are_relative_to_root(nap: NapSimulator, tmp_path: Path) -> None:
    error = config_error(nap.settings(client_cert="certs/client.pem"), tmp_path)

    assert str(tmp_path / "certs" / "client.pem") in error.message


def test_nap_missing_ca_file_is_a_config_error(nap: NapSimulator, tmp_path: Path) -> None:
    error = config_error(nap.settings(ca="missing-ca.pem"), tmp_path)

    assert error.message == f"the CA file {tmp_path / 'missing-ca.pem'} (release.nap.ca) does not exist"


def test_nap_encrypted_key_needs_the_passphrase_variable(
    nap: NapSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ECOC_NAP_KEY_PASSPHRASE", raising=False)
    key = encrypt_key(nap, tmp_path / "client-encrypted.key")

    error = config_error(nap.settings(client_key=str(key)), tmp_path)

    assert error.message == f"the NAP client key {key} is encrypted"
    assert error.hint == "set its passphrase in the environment variable ECOC_NAP_KEY_PASSPHRASE"


def test_nap_wrong_passphrase_is_a_config_error(
    nap: NapSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECOC_NAP_KEY_PASSPHRASE", "not the passphrase")
    key = encrypt_key(nap, tmp_path / "client-encrypted.key")

    error = config_error(nap.settings(client_key=str(key)), tmp_path)

    assert error.message == f"the NAP client key {key} cannot be decrypted"


def test_nap_mismatched_key_is_config_error(nap: NapSimulator, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    other.write_bytes(issue("Another client", elliptic=True).key_pem())

    error = config_error(nap.settings(client_key=str(other)), tmp_path)

    assert "does not belong to the key" in error.message


def test_nap_unset_key_variable_is_a_config_error(
    nap: NapSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ECOC_NAP_TEST_KEY", raising=False)

    error = config_error(nap.settings(client_key="env:ECOC_NAP_TEST_KEY"), tmp_path)

    assert error.message == "the environment variable ECOC_NAP_TEST_KEY of release.nap.client_key is not set"


def test_vca_header_line_break_is_config_error(vca: VcaSimulator, tmp_path: Path) -> None:
    error = config_error(vca.settings(contact_id="C-1042\r\nX-Injected: 1"), tmp_path)

    assert error.message == "release.vca.contact_id must be printable ASCII, because it is sent as an HTTP header"


def encrypt_key(nap: NapSimulator, path: Path) -> Path:
    key = serialization.load_pem_private_key(nap.client_files.key.read_bytes(), None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
    )
    return path


# nap-soap.


def test_nap_accepts_a_signed_certificate(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    [delivery] = deliver(nap.settings(), tmp_path, document)

    [received] = nap.received
    assert delivery.status == "accepted"
    assert delivery.duplicate is False
    assert delivery.message == f"the NAP at {nap.endpoint} accepted the certificate (receipt NAP-000001)"
    assert delivery.receipt_id == "NAP-000001"
    assert delivery.receipt == received.answer
    assert delivery.media_type == "text/xml"
    assert received.problems == []
    assert received.client == "Halvard Motors B.V. NAP client"


def test_nap_request_carries_the_signed_bytes_unchanged(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    deliver(nap.settings(), tmp_path, document)

    [received] = nap.received
    assert received.document == document.signed
    assert received.reference_id == document.reference_id
    assert received.vin == document.vin
    assert received.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert received.headers["SOAPAction"] == f'"{nap.action}"'


def test_nap_checks_the_document_against_the_schema(
    tmp_path: Path, pki: Pki, document: Document, official_xsd: Path
) -> None:
    with NapSimulator(tmp_path / "nap", trust=[pki.root.certificate], schema=official_xsd) as nap:
        transport = open_transport(nap.settings(), tmp_path)
        unsigned = transport.deliver(document.reference_id, document.vin, document.unsigned)
        valid = transport.deliver(document.reference_id, document.vin, document.signed)
        transport.close()

    assert valid.status == "accepted"
    assert unsigned.status == "rejected"
    assert "not valid against the IVI 2.0 schema" in unsigned.message


def test_nap_tampered_certificate_is_rejected(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    transport = open_transport(nap.settings(), tmp_path)

    delivery = transport.deliver(document.reference_id, document.vin, tampered(document))
    transport.close()

    assert delivery.status == "rejected"
    assert delivery.message.startswith(f"the NAP at {nap.endpoint} rejected the certificate: the signature")
    assert "changed after it was signed" in delivery.message
    assert nap.accepted_ids == []


def test_nap_rejection_carries_the_authority_reason(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    nap.scenario = "rejected"
    nap.reason = "VIN XNH already registered with another IVI"

    [delivery] = deliver(nap.settings(), tmp_path, document)

    assert delivery.status == "rejected"
    assert delivery.message == (
        f"the NAP at {nap.endpoint} rejected the certificate: VIN XNH already registered with another IVI"
    )
    assert delivery.receipt == nap.received[-1].answer
    assert delivery.duplicate is False
    assert nap.accepted_ids == []


def test_nap_client_fault_is_a_rejection(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    nap.scenario = "client-fault"
    nap.reason = "IviVersionNumber must grow"

    [delivery] = deliver(nap.settings(), tmp_path, document)

    assert delivery.status == "rejected"
    assert delivery.message == f"the NAP at {nap.endpoint} rejected the certificate: IviVersionNumber must grow"
    assert delivery.receipt == nap.received[-1].answer


def test_nap_server_fault_fails(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    nap.scenario = "server-fault"

    [delivery] = deliver(nap.settings(), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message == (
        f"the NAP at {nap.endpoint} reported a server fault: the registration database is not available"
    )
    assert delivery.receipt == nap.received[-1].answer


def test_nap_server_error_fails(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    nap.scenario = "server-error"

    [delivery] = deliver(nap.settings(), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message == f"the NAP at {nap.endpoint} returned HTTP 503 Service Unavailable"
    assert delivery.receipt == MAINTENANCE_PAGE
    assert delivery.media_type == "text/html"


def test_nap_forbidden_names_the_client_certificate(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    nap.scenario = "forbidden"

    [delivery] = deliver(nap.settings(), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message.startswith(f"the NAP at {nap.endpoint} returned HTTP 403 Forbidden")
    assert "check release.nap.client_cert" in delivery.message


def test_nap_wrong_endpoint_fails_with_not_found(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    [delivery] = deliver(nap.settings(endpoint=f"{nap.url}/wrong"), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message == f"the NAP at {nap.url}/wrong returned HTTP 404 Not Found; check release.nap.endpoint"
    assert nap.received == []


def test_nap_wrong_action_fails_with_bad_request(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    [delivery] = deliver(nap.settings(action="urn:other:Deliver"), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message.startswith(f"the NAP at {nap.endpoint} returned HTTP 400 Bad Request")
    assert "check release.nap.namespace and release.nap.action" in delivery.message
    assert nap.received == []


def test_nap_slow_answer_within_the_timeout_is_accepted(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    nap.scenario = "slow"
    nap.delay = 0.2

    [delivery] = deliver(nap.settings(read_timeout=1.0), tmp_path, document)

    assert delivery.status == "accepted"
    assert nap.accepted_ids == [document.reference_id]


def test_timed_out_delivery_fails_and_resend_is_a_duplicate(
    nap: NapSimulator, tmp_path: Path, document: Document
) -> None:
    nap.scenario = "timeout"
    settings = nap.settings(read_timeout=0.5)

    [timed_out] = deliver(settings, tmp_path, document)
    nap.scenario = "accepted"
    [resent] = deliver(settings, tmp_path, document)

    assert timed_out.status == "failed"
    assert timed_out.message == f"the NAP at {nap.endpoint} did not answer within 0.5 s"
    assert timed_out.receipt is None
    assert resent.status == "accepted"
    assert resent.duplicate is True
    assert resent.receipt_id == nap.received[0].receipt_id
    assert resent.receipt == nap.received[1].answer
    assert nap.accepted_ids == [document.reference_id]
    assert nap.count(document.reference_id) == 2


def test_nap_duplicate_returns_the_first_receipt_id(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    first, second = deliver(nap.settings(), tmp_path, document, document)

    assert first.duplicate is False
    assert second.status == "accepted"
    assert second.duplicate is True
    assert second.receipt_id == first.receipt_id
    assert second.message == (
        f"the NAP at {nap.endpoint} already had IviReferenceId {document.reference_id} (receipt {first.receipt_id})"
    )
    assert nap.accepted_ids == [document.reference_id]


def test_nap_earlier_run_is_a_duplicate(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    nap.scenario = "duplicate"

    [delivery] = deliver(nap.settings(), tmp_path, document)

    assert delivery.status == "accepted"
    assert delivery.duplicate is True
    assert delivery.receipt_id is not None
    assert delivery.receipt_id.startswith("NAP-EARLIER-")


def test_nap_malformed_reply_fails_quoting_it(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    nap.scenario = "malformed"

    [delivery] = deliver(nap.settings(), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message.startswith(f"the NAP at {nap.endpoint} sent a malformed reply (")
    assert "'<html><body>Delivery received. Thank you!</body></html>'" in delivery.message
    assert delivery.receipt == nap.malformed_reply


def test_nap_long_malformed_reply_is_quoted_shortly(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    nap.scenario = "malformed"
    nap.malformed_reply = b"\x1b[31mnot soap\r\n" + b"x" * 5000

    [delivery] = deliver(nap.settings(), tmp_path, document)

    assert delivery.status == "failed"
    assert len(delivery.message) < 400
    assert "\x1b" not in delivery.message
    assert "\r" not in delivery.message
    assert delivery.receipt == nap.malformed_reply


def test_nap_reply_without_status_is_malformed(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    nap.scenario = "malformed"
    nap.malformed_reply = nap.fault("soap:Client", "x").replace(b"soap:Fault", b"nap:Other")

    [delivery] = deliver(nap.settings(), tmp_path, document)

    assert delivery.status == "failed"
    assert "sent a malformed reply" in delivery.message


def test_nap_url_credentials_stay_hidden(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    nap.scenario = "server-error"
    endpoint = nap.endpoint.replace("https://", "https://ecoc:url-password@")

    [delivery] = deliver(nap.settings(endpoint=endpoint), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message == f"the NAP at {nap.endpoint} returned HTTP 503 Service Unavailable"


def test_nap_reuses_one_connection(nap: NapSimulator, tmp_path: Path, documents: list[Document]) -> None:
    deliveries = deliver(nap.settings(), tmp_path, *documents)

    assert [delivery.status for delivery in deliveries] == ["accepted"] * len(documents)
    assert nap.connections == 1


def test_nap_reopens_a_connection_the_server_closed(
    nap: NapSimulator, tmp_path: Path, documents: list[Document]
) -> None:
    nap.close_after_reply = True

    deliveries = deliver(nap.settings(), tmp_path, *documents)

    assert [delivery.status for delivery in deliveries] == ["accepted"] * len(documents)
    assert nap.connections == len(documents)
    assert nap.accepted_ids == [document.reference_id for document in documents]


def test_nap_untrusted_server_certificate_fails(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(issue("Another Server CA", ca=True, elliptic=True).pem())

    [delivery] = deliver(nap.settings(ca=str(other_ca)), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message.startswith(f"the server certificate of the NAP at {nap.endpoint} is not trusted")
    assert delivery.message.endswith("; check release.nap.ca")
    assert nap.received == []


def test_nap_without_ca_uses_the_system_store(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    [delivery] = deliver(nap.settings(ca=None), tmp_path, document)

    assert delivery.status == "failed"
    assert "is not trusted" in delivery.message
    assert nap.received == []


def test_nap_client_certificate_of_another_ca_is_rejected(
    nap: NapSimulator, tmp_path: Path, document: Document
) -> None:
    other = client_certificate(issue("Another Client CA", ca=True, elliptic=True))
    (tmp_path / "other.pem").write_bytes(other.pem())
    (tmp_path / "other.key").write_bytes(other.key_pem())

    [delivery] = deliver(nap.settings(client_cert="other.pem", client_key="other.key"), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message.startswith(f"the NAP at {nap.endpoint} rejected the client certificate")
    assert "check release.nap.client_cert" in delivery.message
    assert wait_until(lambda: len(nap.handshake_failures) == 1)
    assert nap.received == []


def test_nap_refused_connection_fails(nap: NapSimulator, tmp_path: Path, document: Document) -> None:
    endpoint = f"https://127.0.0.1:{free_port()}/nap"

    [delivery] = deliver(nap.settings(endpoint=endpoint), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message == (
        f"the NAP at {endpoint} refused the connection; check the address and that the service is running"
    )
    assert delivery.receipt is None


def test_nap_client_key_from_the_environment_with_passphrase(
    nap: NapSimulator, tmp_path: Path, document: Document, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = encrypt_key(nap, tmp_path / "client-encrypted.key")
    monkeypatch.setenv("ECOC_NAP_TEST_KEY", key.read_text())
    monkeypatch.setenv("ECOC_NAP_KEY_PASSPHRASE", PASSPHRASE)

    [delivery] = deliver(nap.settings(client_key="env:ECOC_NAP_TEST_KEY"), tmp_path, document)

    assert delivery.status == "accepted"
    assert list(tmp_path.glob("**/ecoc-nap-*")) == []


# vca-rest.


def test_vca_accepts_after_polling(vca: VcaSimulator, tmp_path: Path, document: Document) -> None:
    [delivery] = deliver(vca.settings(), tmp_path, document)

    [received] = vca.received
    assert delivery.status == "accepted"
    assert delivery.duplicate is False
    assert delivery.receipt_id == received.receipt_id
    assert delivery.message == (
        f"the VCA at {vca.url}/ecoc/v1 received {document.reference_id} as submission {received.receipt_id}, "
        "and accepted it"
    )
    assert delivery.receipt == vca.status_replies[-1]
    assert json.loads(delivery.receipt)["status"] == "Accepted"
    assert delivery.media_type == "application/json"
    assert vca.polls == 2
    assert vca.tokens_issued == 1
    assert received.problems == []


def test_vca_request_carries_the_signed_bytes_and_headers(
    vca: VcaSimulator, tmp_path: Path, document: Document
) -> None:
    deliver(vca.settings(), tmp_path, document)

    [received] = vca.received
    assert received.document == document.signed
    assert received.reference_id == document.reference_id
    assert received.headers["Content-Type"] == "application/xml"
    assert received.headers["manufacturer-id"] == vca.manufacturer_id
    assert received.headers["contact-id"] == vca.contact_id
    assert received.headers["Authorization"].startswith("Bearer ")


def test_vca_rejection_carries_the_errors(vca: VcaSimulator, tmp_path: Path, document: Document) -> None:
    vca.scenario = "rejected"
    vca.reason = "the type approval number is not known"

    [delivery] = deliver(vca.settings(), tmp_path, document)

    submission = vca.received[-1].receipt_id
    assert delivery.status == "rejected"
    assert delivery.message == (
        f"the VCA at {vca.url}/ecoc/v1 received {document.reference_id} as submission {submission}, "
        "and rejected it: REJECTED: the type approval number is not known"
    )
    assert delivery.receipt == vca.status_replies[-1]
    assert delivery.receipt_id == submission
    assert vca.accepted_ids == []


def test_vca_tampered_signature_is_rejected_while_processing(
    vca: VcaSimulator, tmp_path: Path, document: Document
) -> None:
    transport = open_transport(vca.settings(), tmp_path)

    delivery = transport.deliver(document.reference_id, document.vin, tampered(document))
    transport.close()

    assert delivery.status == "rejected"
    assert "REJECTED: the signature does not verify" in delivery.message
    assert vca.polls == 2


def test_vca_invalid_document_is_rejected_at_once(vca: VcaSimulator, tmp_path: Path, document: Document) -> None:
    vca.scenario = "invalid"
    vca.reason = "IntendedCountryRegistration must be GB"

    [delivery] = deliver(vca.settings(), tmp_path, document)

    assert delivery.status == "rejected"
    assert delivery.message == (
        f"the VCA at {vca.url}/ecoc/v1 rejected the certificate: "
        "INVALID_DOCUMENT: IntendedCountryRegistration must be GB"
    )
    assert delivery.receipt == vca.received[-1].answer
    assert delivery.receipt_id is None
    assert vca.polls == 0


def test_vca_checks_the_document_against_the_schema(
    tmp_path: Path, pki: Pki, document: Document, official_xsd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with VcaSimulator(tmp_path / "vca", trust=[pki.root.certificate], schema=official_xsd) as vca:
        monkeypatch.setenv(vca.secret_variable, vca.client_secret)
        transport = open_transport(vca.settings(), tmp_path)
        unsigned = transport.deliver(document.reference_id, document.vin, document.unsigned)
        valid = transport.deliver(document.reference_id, document.vin, document.signed)
        transport.close()

    assert unsigned.status == "rejected"
    assert "not valid against the IVI 2.0 schema" in unsigned.message
    assert valid.status == "accepted"


def test_vca_expired_token_is_renewed_once(vca: VcaSimulator, tmp_path: Path, document: Document) -> None:
    vca.scenario = "expired-token"

    [delivery] = deliver(vca.settings(), tmp_path, document)

    assert delivery.status == "accepted"
    assert vca.tokens_issued == 2
    assert vca.accepted_ids == [document.reference_id]


def test_vca_rejected_token_fails_after_renewal(vca: VcaSimulator, tmp_path: Path, document: Document) -> None:
    vca.scenario = "unauthorized"

    [delivery] = deliver(vca.settings(), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message == (
        f"the VCA at {vca.url}/ecoc/v1 rejected the new access token as well (HTTP 401 Unauthorized); check "
        f"release.vca.client_id, release.vca.scope and the secret in {vca.secret_variable}"
    )
    assert delivery.receipt is None
    assert vca.tokens_issued == 2
    assert vca.received == []


def test_vca_wrong_client_secret_fails(
    vca: VcaSimulator, tmp_path: Path, document: Document, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(vca.secret_variable, "wrong-secret-value")

    [delivery] = deliver(vca.settings(), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message == (
        f"the VCA token service at {vca.url}/oauth2/token rejected the client credentials (invalid_client); "
        f"check release.vca.client_id, release.vca.scope and the secret in {vca.secret_variable}"
    )
    assert delivery.receipt is None
    assert vca.tokens_issued == 0


def test_vca_token_is_reused_across_deliveries(vca: VcaSimulator, tmp_path: Path, documents: list[Document]) -> None:
    deliveries = deliver(vca.settings(), tmp_path, *documents)

    assert [delivery.status for delivery in deliveries] == ["accepted"] * len(documents)
    assert vca.tokens_issued == 1
    assert vca.connections == 1


def test_vca_token_is_renewed_before_it_expires(vca: VcaSimulator, tmp_path: Path, documents: list[Document]) -> None:
    # A token of 1 s is renewed after half its life, so the second delivery fetches a new one.
    vca.token_lifetime = 1
    transport = open_transport(vca.settings(), tmp_path)

    first = transport.deliver(documents[0].reference_id, documents[0].vin, documents[0].signed)
    time.sleep(0.6)
    second = transport.deliver(documents[1].reference_id, documents[1].vin, documents[1].signed)
    transport.close()

    assert first.status == "accepted"
    assert second.status == "accepted"
    assert vca.tokens_issued == 2


def test_vca_duplicate_polls_the_first_submission(vca: VcaSimulator, tmp_path: Path, document: Document) -> None:
    first, second = deliver(vca.settings(), tmp_path, document, document)

    assert first.duplicate is False
    assert second.status == "accepted"
    assert second.duplicate is True
    assert second.receipt_id == first.receipt_id
    assert second.receipt == vca.status_replies[-1]
    assert second.message == (
        f"the VCA at {vca.url}/ecoc/v1 already had {document.reference_id} as submission {first.receipt_id}, "
        "and accepted it"
    )
    assert vca.accepted_ids == [document.reference_id]
    assert vca.count(document.reference_id) == 2


def test_vca_timeout_then_resend_is_duplicate(vca: VcaSimulator, tmp_path: Path, document: Document) -> None:
    vca.scenario = "timeout"
    settings = vca.settings(timeout=0.5)

    [timed_out] = deliver(settings, tmp_path, document)
    vca.scenario = "accepted"
    [resent] = deliver(settings, tmp_path, document)

    assert timed_out.status == "failed"
    assert timed_out.message == f"the VCA at {vca.url}/ecoc/v1 did not answer within 0.5 s"
    assert timed_out.receipt is None
    assert resent.status == "accepted"
    assert resent.duplicate is True
    assert resent.receipt_id == vca.received[0].receipt_id
    assert vca.accepted_ids == [document.reference_id]


def test_vca_still_processing_fails_after_the_poll_timeout(
    vca: VcaSimulator, tmp_path: Path, document: Document
) -> None:
    vca.scenario = "processing"

    [delivery] = deliver(vca.settings(poll_timeout=0.3), tmp_path, document)

    submission = vca.received[-1].receipt_id
    assert delivery.status == "failed"
    assert delivery.message == (
        f"the VCA at {vca.url}/ecoc/v1 is still processing submission {submission} of {document.reference_id} "
        "(status 'Processing') after 0.3 s; the next run asks again"
    )
    assert delivery.receipt_id == submission
    assert delivery.receipt == vca.status_replies[-1]


def test_vca_server_error_fails(vca: VcaSimulator, tmp_path: Path, document: Document) -> None:
    vca.scenario = "server-error"

    [delivery] = deliver(vca.settings(), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message == f"the VCA at {vca.url}/ecoc/v1 returned HTTP 503 Service Unavailable"
    assert delivery.receipt == MAINTENANCE_PAGE
    assert delivery.media_type == "text/html"


def test_vca_malformed_reply_fails(vca: VcaSimulator, tmp_path: Path, document: Document) -> None:
    vca.scenario = "malformed"

    [delivery] = deliver(vca.settings(), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message == (
        f"the VCA at {vca.url}/ecoc/v1 sent a malformed reply (HTTP 202 Accepted without a JSON object): "
        f"{vca.malformed_reply.decode()!r}"
    )
    assert delivery.receipt == vca.malformed_reply


def test_vca_forbidden_fails(vca: VcaSimulator, tmp_path: Path, document: Document) -> None:
    vca.scenario = "forbidden"

    [delivery] = deliver(vca.settings(), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message.startswith(f"the VCA at {vca.url}/ecoc/v1 returned HTTP 403 Forbidden")
    assert f"manufacturer-id {vca.manufacturer_id}" in delivery.message


def test_vca_wrong_manufacturer_id_is_forbidden(vca: VcaSimulator, tmp_path: Path, document: Document) -> None:
    [delivery] = deliver(vca.settings(manufacturer_id="SOMEONE-ELSE"), tmp_path, document)

    assert delivery.status == "failed"
    assert "HTTP 403 Forbidden" in delivery.message
    assert "manufacturer-id SOMEONE-ELSE" in delivery.message
    assert vca.received == []


def test_vca_untrusted_server_certificate_fails(vca: VcaSimulator, tmp_path: Path, document: Document) -> None:
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(issue("Another Server CA", ca=True, elliptic=True).pem())

    [delivery] = deliver(vca.settings(ca=str(other_ca)), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message.startswith(
        f"the server certificate of the VCA token service at {vca.url}/oauth2/token is not trusted"
    )
    assert delivery.message.endswith("; check release.vca.ca")


def test_vca_refused_connection_fails(vca: VcaSimulator, tmp_path: Path, document: Document) -> None:
    token_url = f"https://127.0.0.1:{free_port()}/oauth2/token"

    [delivery] = deliver(vca.settings(token_url=token_url), tmp_path, document)

    assert delivery.status == "failed"
    assert delivery.message.startswith(f"the VCA token service at {token_url} refused the connection")


# Secrets.


def test_no_secret_appears_in_any_message(
    nap: NapSimulator,
    vca: VcaSimulator,
    tmp_path: Path,
    document: Document,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = encrypt_key(nap, tmp_path / "client-encrypted.key")
    key_text = key.read_text()
    monkeypatch.setenv("ECOC_NAP_TEST_KEY", key_text)
    texts: list[str] = []
    deliveries: list[Delivery] = []

    monkeypatch.setenv("ECOC_NAP_KEY_PASSPHRASE", PASSPHRASE + "-wrong")
    error = config_error(nap.settings(client_key="env:ECOC_NAP_TEST_KEY"), tmp_path)
    texts += [error.message, error.hint or "", str(error)]
    monkeypatch.setenv("ECOC_NAP_KEY_PASSPHRASE", PASSPHRASE)
    for scenario in ("accepted", "rejected", "server-fault", "malformed"):
        nap.scenario = scenario
        deliveries += deliver(nap.settings(client_key="env:ECOC_NAP_TEST_KEY"), tmp_path, document)
    for scenario in ("expired-token", "unauthorized", "accepted", "rejected", "invalid", "malformed"):
        vca.scenario = scenario
        deliveries += deliver(vca.settings(), tmp_path, document)
    monkeypatch.setenv(vca.secret_variable, vca.client_secret + "-wrong")
    deliveries += deliver(vca.settings(), tmp_path, document)
    monkeypatch.delenv(vca.secret_variable)
    error = config_error(vca.settings(), tmp_path)
    texts += [error.message, error.hint or "", str(error)]

    texts += [delivery.message for delivery in deliveries]
    texts += [delivery.receipt.decode("utf-8", "replace") for delivery in deliveries if delivery.receipt]
    texts.append(caplog.text)
    key_lines = [line for line in key_text.splitlines() if line and not line.startswith("-----")]
    secrets = [vca.client_secret, PASSPHRASE, *vca.tokens, *key_lines]
    assert vca.tokens_issued >= 4
    for secret in secrets:
        for text in texts:
            assert secret not in text


def test_outbox_drops_temporaries_of_killed_runs(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    stale = outbox / ".4b1f0f45-1c2d-4e5f-8a9b-0c1d2e3f4a5b.xml.fcbb04750d3e1c45.tmp"
    fresh = outbox / ".5c2f0f45-1c2d-4e5f-8a9b-0c1d2e3f4a5b.xml.0123456789abcdef.tmp"
    other = outbox / ".notes.tmp"
    for path in (stale, fresh, other):
        path.write_bytes(b"<partial")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))

    open_transport(ReleaseSettings(transport="outbox", outbox=str(outbox)), tmp_path).close()

    assert not stale.exists()
    assert fresh.exists()
    assert other.exists()
