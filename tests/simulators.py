"""HTTPS simulators of the authorities' delivery services, for the transport and release tests.

Each simulator is a real HTTPS server on 127.0.0.1 (a free port), with a TLS test PKI made on the
fly in `folder`. It checks what it receives as the authority would: the request's shape and
headers, then the certificate itself (the XML signature against `trust`, and the official
schema when `schema` is given). It keeps a record of every delivery.

    from simulators import NapSimulator, VcaSimulator

    with NapSimulator(tmp_path / "nap", trust=[pki.root.certificate], schema=official_xsd) as nap:
        nap.scenario = "rejected"              # how the simulator responds from now on
        nap.reason = "VIN already registered"  # the reason that rejections and faults give
        transport = open_transport(nap.settings(read_timeout=0.5), tmp_path)
        delivery = transport.deliver(reference_id, vin, signed)
        nap.received[-1].outcome               # "rejected"; every delivery that reached the service
        nap.accepted_ids                       # IviReferenceIds taken, in order: each once
        nap.count(reference_id)                # how often it was sent
        nap.endpoint, nap.ca_file, nap.client_files.cert, nap.client_files.key

    with VcaSimulator(tmp_path / "vca", trust=[pki.root.certificate]) as vca:
        monkeypatch.setenv(vca.secret_variable, vca.client_secret)
        transport = open_transport(vca.settings(poll_interval=0.05), tmp_path)
        vca.tokens_issued, vca.polls

Scenarios of both (`SCENARIOS`):
    accepted      the default: checks the certificate and accepts it, or rejects it with what the
                  checks found. An IviReferenceId taken before gets a duplicate response with the
                  first receipt id, in every scenario that reaches the decision.
    rejected      rejects the certificate with `reason`.
    duplicate     responds as if an earlier run had delivered every IviReferenceId.
    slow          responds as "accepted" does, after `delay` seconds (shorter than the client's timeout).
    timeout       records and takes the certificate, then responds only after `hang` seconds or when
                  the simulator stops, long after the client gave up.
    forbidden     HTTP 403.
    server-error  HTTP 503 with an HTML page.
    malformed     a reply that is not the expected XML or JSON (`malformed_reply`).
NAP only (`NAP_SCENARIOS`):
    client-fault  HTTP 500 with a SOAP fault soap:Client and `reason` as faultstring.
    server-fault  HTTP 500 with a SOAP fault soap:Server.
VCA only (`VCA_SCENARIOS`):
    invalid       HTTP 422 with `reason` as the error of the document, before any duplicate check.
    expired-token the first access token issued is rejected with 401 when used.
    unauthorized  every access token is rejected with 401.
    processing    the submission never leaves the status "Processing".

The VCA checks well-formedness and the schema at submission (422), and the signature while
processing: a new submission returns "Processing" to `pending_polls` polls, then its final status.

Other attributes: `connections` (TLS connections accepted), `handshake_failures`, `errors`
(tracebacks of simulator bugs, which should stay empty), `close_after_reply` (close each
connection after its reply without a Connection header, as a server whose idle keep-alive timeout
ran out), and for the VCA `token_lifetime`, `status_replies` and `tokens`.
"""

from __future__ import annotations

import base64
import http.server
import ipaddress
import json
import secrets
import socket
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from lxml import etree

from ecoc.config import NapSettings, ReleaseSettings, VcaSettings
from ecoc.errors import InputError
from ecoc.ivi.xmlsafe import parse_xml_bytes
from ecoc.signing import VerificationFailed, Verifier
from pki import Issued, issue

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
IVI = "http://eu.ereg.initialvehicleinformation.v2"

SCENARIOS = frozenset(
    {"accepted", "rejected", "duplicate", "slow", "timeout", "forbidden", "server-error", "malformed"}
)
NAP_SCENARIOS = SCENARIOS | {"client-fault", "server-fault", "no-receipt"}
VCA_SCENARIOS = SCENARIOS | {"invalid", "expired-token", "unauthorized", "processing"}

JSON = "application/json"
MAINTENANCE_PAGE = b"<html><body><h1>503 Service Unavailable</h1><p>Down for maintenance.</p></body></html>"


@dataclass(frozen=True)
class TlsFiles:
    """A PEM certificate file (followed by its intermediates) and its unencrypted PEM key file."""

    cert: Path
    key: Path


@dataclass
class Received:
    """One delivery that reached the service, with the simulator's decision."""

    reference_id: str
    vin: str | None
    # The certificate's bytes as decoded from the request.
    document: bytes
    # accepted, rejected or duplicate, or the scenario that responded without a decision
    # (forbidden, server-error, malformed, client-fault, server-fault).
    outcome: str
    receipt_id: str | None
    # What the checks of the certificate found; empty for a valid one.
    problems: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    # The common name of the TLS client certificate, for the NAP.
    client: str | None = None
    # Whether the response was held back until after the client gave up (the timeout scenario).
    late: bool = False
    # The body of the simulator's reply to this delivery.
    answer: bytes = b""


def _write_tls_pair(folder: Path, name: str, leaf: Issued, chain: Sequence[Issued] = ()) -> TlsFiles:
    files = TlsFiles(folder / f"{name}.pem", folder / f"{name}.key")
    files.cert.write_bytes(leaf.pem() + b"".join(issued.pem() for issued in chain))
    files.key.write_bytes(leaf.key_pem())
    return files


def server_certificate(ca: Issued) -> Issued:
    """Issue a TLS server certificate for 127.0.0.1 and localhost."""
    return issue(
        "127.0.0.1",
        ca,
        elliptic=True,
        alt_names=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        extended_usage=[ExtendedKeyUsageOID.SERVER_AUTH],
    )


def client_certificate(ca: Issued, common_name: str = "Halvard Motors B.V. NAP client") -> Issued:
    """Issue a TLS client certificate."""
    return issue(common_name, ca, elliptic=True, extended_usage=[ExtendedKeyUsageOID.CLIENT_AUTH])


class _Server(http.server.ThreadingHTTPServer):
    """A threading HTTP server that runs each connection's TLS handshake in that connection's thread."""

    daemon_threads = True

    def __init__(self, simulator: _Simulator, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.simulator = simulator

    def finish_request(self, request: Any, client_address: Any) -> None:
        # A client that stalls in the handshake must not hold a test run.
        request.settimeout(5.0)
        connection = self.simulator.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        try:
            connection.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            with self.simulator.lock:
                self.simulator.handshake_failures.append(str(exc))
            _drain(connection)
            connection.close()
            return
        simulator = self.simulator
        with simulator.lock:
            simulator.connections += 1
            simulator.open_connections += 1
            simulator.peak_connections = max(simulator.peak_connections, simulator.open_connections)
        try:
            self.RequestHandlerClass(connection, client_address, self)
        finally:
            connection.close()
            with simulator.lock:
                simulator.open_connections -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (the timeout scenario) makes the late reply fail; anything else is a bug.
        if not isinstance(sys.exc_info()[1], OSError):
            with self.simulator.lock:
                self.simulator.errors.append(traceback.format_exc())


def _drain(connection: ssl.SSLSocket) -> None:
    """Read what a client still sends after a failed handshake, until it closes.

    Closing a socket with unread data sends a TCP reset, which can overtake the TLS alert that
    gives the client the reason for the failure.
    """
    try:
        connection.shutdown(socket.SHUT_WR)
        connection.settimeout(2.0)
        while connection.recv(4096):
            pass
    except OSError:
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave at once, as a production server sends them.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.server.simulator.close_after_reply:
            self.close_connection = True

    def reply_json(self, status: int, data: object) -> None:
        self.reply(status, _json(data), JSON)


class _Simulator:
    """What both simulators share: the server, the TLS PKI, scenarios, checks and records."""

    scenarios: ClassVar[frozenset[str]] = SCENARIOS
    handler: ClassVar[type[_Handler]]

    def __init__(self, folder: Path, *, trust: Sequence[x509.Certificate], schema: Path | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.verifier = Verifier(list(trust))
        self.schema = etree.XMLSchema(etree.parse(str(schema))) if schema is not None else None
        self.lock = threading.RLock()
        self._scenario = "accepted"
        # The reason that the rejected, client-fault and invalid scenarios give.
        self.reason = "the certificate was rejected by the simulator"
        # Seconds the slow scenario waits before it responds.
        self.delay = 0.2
        # Seconds the timeout scenario waits before it responds, unless the simulator stops first.
        self.hang = 30.0
        self.close_after_reply = False
        # The body that the malformed scenario sends.
        self.malformed_reply = b"<html><body>Delivery received. Thank you!</body></html>"
        self.received: list[Received] = []
        # TLS connections accepted, and the handshakes that failed (with the error).
        self.connections = 0
        # Connections open now, and the most that were open at one time.
        self.open_connections = 0
        self.peak_connections = 0
        self.handshake_failures: list[str] = []
        # Tracebacks of handler errors: a test can assert that this stays empty.
        self.errors: list[str] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.server_ca = issue("Simulator Server Root CA", ca=True, elliptic=True)
        self.ca_file = folder / "server-ca.pem"
        self.ca_file.write_bytes(self.server_ca.pem())
        self.server_files = _write_tls_pair(folder, "server", server_certificate(self.server_ca))
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(self.server_files.cert, self.server_files.key)

    @property
    def scenario(self) -> str:
        return self._scenario

    @scenario.setter
    def scenario(self, name: str) -> None:
        if name not in self.scenarios:
            raise ValueError(f"unknown scenario {name!r}; the scenarios are {', '.join(sorted(self.scenarios))}")
        self._scenario = name

    def __enter__(self) -> _Simulator:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._stopping.clear()
        self._server = _Server(self, self.handler)
        # A short poll interval keeps stop() quick: shutdown() waits for the loop's next poll.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        """The server's origin, as https://127.0.0.1:PORT."""
        assert self._server is not None, "start the simulator first"
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def accepted_ids(self) -> list[str]:
        """The IviReferenceIds of the certificates the service took, in order; a duplicate is not taken again."""
        with self.lock:
            return [entry.reference_id for entry in self.received if entry.outcome == "accepted"]

    def count(self, reference_id: str) -> int:
        """Return how often a delivery of `reference_id` reached the service."""
        with self.lock:
            return sum(1 for entry in self.received if entry.reference_id == reference_id)

    def wait(self, seconds: float) -> None:
        """Sleep for `seconds`, or until the simulator stops."""
        self._stopping.wait(seconds)

    def check_document(self, document: bytes, reference_id: str | None = None, vin: str | None = None) -> list[str]:
        """Return what is wrong with a delivered certificate, as the authority would report it."""
        # One check at a time, because handler threads share the schema and the verifier.
        with self.lock:
            return self._check_document(document, reference_id, vin)

    def _check_document(self, document: bytes, reference_id: str | None, vin: str | None) -> list[str]:
        try:
            tree = parse_xml_bytes(document, "the document")
        except InputError as exc:
            return [exc.message]
        root = tree.getroot()
        problems = []
        found_id = root.findtext(f"{{{IVI}}}Header/{{{IVI}}}IviReferenceId")
        if reference_id is not None and found_id != reference_id:
            problems.append(f"the message names IviReferenceId {reference_id}, the document {found_id}")
        found_vin = next((element.text for element in root.iter(f"{{{IVI}}}VehicleIdentificationNumber")), None)
        if vin is not None and found_vin != vin:
            problems.append(f"the message names VIN {vin}, the document {found_vin}")
        if self.schema is not None and not self.schema.validate(tree):
            error = self.schema.error_log.last_error
            problems.append(f"not valid against the IVI 2.0 schema: line {error.line}: {error.message}")
        try:
            self.verifier.verify(document)
        except VerificationFailed as exc:
            problems.append(f"the signature does not verify: {exc}")
        return problems

    def record(self, entry: Received) -> None:
        with self.lock:
            self.received.append(entry)


# The NAP: SOAP 1.1 over TLS with client certificates.


class _NapHandler(_Handler):
    server: _Server

    def do_POST(self) -> None:
        nap: NapSimulator = self.server.simulator  # type: ignore[assignment]
        body = self.body()
        if urllib.parse.urlsplit(self.path).path != nap.path:
            self.reply(404, b"<html><body><h1>404 Not Found</h1></body></html>", "text/html")
            return
        content_type = self.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "text/xml" or "utf-8" not in content_type.lower():
            self.reply(400, b"the request must be text/xml; charset=utf-8", "text/plain")
            return
        if self.headers.get("SOAPAction") != f'"{nap.action}"':
            self.reply(400, f"unknown SOAPAction; expected {nap.action}".encode(), "text/plain")
            return
        try:
            reference_id, vin, document = nap.read_envelope(body)
        except ValueError as exc:
            self.reply(400, str(exc).encode("utf-8"), "text/plain")
            return
        peer = self.connection.getpeercert()  # type: ignore[attr-defined]
        client = next((value for entry in peer.get("subject", ()) for key, value in entry if key == "commonName"), None)
        entry = Received(reference_id, vin, document, nap.scenario, None, headers=dict(self.headers), client=client)
        status, entry.answer = nap.answer(entry)
        nap.record(entry)
        if entry.late:
            nap.wait(nap.hang)
        self.reply(status, entry.answer, "text/html" if status == 503 else "text/xml; charset=utf-8")


class NapSimulator(_Simulator):
    """A NAP's delivery service: SOAP 1.1 at `endpoint`, TLS client certificates from its own client CA.

    The client certificate file contains the client certificate followed by its issuing CA, and the
    server trusts only the client root CA, so the chain has to travel in the handshake.
    """

    scenarios = NAP_SCENARIOS
    handler = _NapHandler

    def __init__(
        self,
        folder: Path,
        *,
        trust: Sequence[x509.Certificate],
        schema: Path | None = None,
        namespace: str = NapSettings.model_fields["namespace"].default,
        action: str = NapSettings.model_fields["action"].default,
    ) -> None:
        super().__init__(folder, trust=trust, schema=schema)
        self.namespace = namespace
        self.action = action
        self.path = "/nap/deliver"
        self.client_ca = issue("Simulator NAP Client Root CA", ca=True, elliptic=True)
        issuing = issue("Simulator NAP Client Issuing CA", self.client_ca, ca=True, elliptic=True)
        self.client_files = _write_tls_pair(folder, "client", client_certificate(issuing), [issuing])
        self.client_ca_file = folder / "client-ca.pem"
        self.client_ca_file.write_bytes(self.client_ca.pem())
        self.tls.verify_mode = ssl.CERT_REQUIRED
        self.tls.load_verify_locations(self.client_ca_file)
        # Receipt ids by IviReferenceId, of the certificates taken.
        self.receipts: dict[str, str] = {}

    def __enter__(self) -> NapSimulator:
        self.start()
        return self

    @property
    def endpoint(self) -> str:
        return f"{self.url}{self.path}"

    def settings(self, **changes: Any) -> ReleaseSettings:
        """Return release settings that deliver here, with short timeouts; `changes` override NapSettings fields."""
        values: dict[str, Any] = {
            "endpoint": self.endpoint,
            "client_cert": str(self.client_files.cert),
            "client_key": str(self.client_files.key),
            "ca": str(self.ca_file),
            "namespace": self.namespace,
            "action": self.action,
            "connect_timeout": 1.0,
            "read_timeout": 1.0,
        }
        return ReleaseSettings(transport="nap-soap", nap=NapSettings(**{**values, **changes}))

    def _nap(self, name: str) -> str:
        return f"{{{self.namespace}}}{name}"

    def read_envelope(self, body: bytes) -> tuple[str, str, bytes]:
        """Return the IviReferenceId, VIN and document of a DeliverIvi message, or raise ValueError."""
        try:
            root = parse_xml_bytes(body, "the SOAP request").getroot()
        except InputError as exc:
            raise ValueError(f"the request is not XML: {exc.message}") from None
        request = root.find(f"{{{SOAP}}}Body/{self._nap('DeliverIvi')}")
        if root.tag != f"{{{SOAP}}}Envelope" or request is None:
            raise ValueError("the request is not a SOAP 1.1 Envelope with a DeliverIvi in its Body")
        reference_id = (request.findtext(self._nap("IviReferenceId")) or "").strip()
        vin = (request.findtext(self._nap("Vin")) or "").strip()
        encoded = request.findtext(self._nap("Document")) or ""
        if not reference_id or not vin:
            raise ValueError("DeliverIvi needs IviReferenceId and Vin")
        try:
            document = base64.b64decode("".join(encoded.split()), validate=True)
        except ValueError:
            raise ValueError("the Document is not base64") from None
        return reference_id, vin, document

    def answer(self, entry: Received) -> tuple[int, bytes]:
        """Decide on a delivery by the scenario, and return the HTTP status and body of the reply."""
        scenario = self.scenario
        if scenario == "slow":
            self.wait(self.delay)
        if scenario == "server-error":
            return 503, MAINTENANCE_PAGE
        if scenario == "forbidden":
            return 403, b"<html><body><h1>403 Forbidden</h1></body></html>"
        if scenario == "malformed":
            return 200, self.malformed_reply
        if scenario == "server-fault":
            return 500, self.fault("soap:Server", "the registration database is not available")
        if scenario == "client-fault":
            return 500, self.fault("soap:Client", self.reason)
        with self.lock:
            first = self.receipts.get(entry.reference_id)
            if first is None and scenario == "duplicate":
                first = self.receipts[entry.reference_id] = f"NAP-EARLIER-{len(self.receipts) + 1:06d}"
            if first is not None:
                entry.outcome, entry.receipt_id = "duplicate", first
                return 200, self.response(entry.reference_id, "Duplicate", first)
            entry.problems = self.check_document(entry.document, entry.reference_id, entry.vin)
            if scenario == "rejected" or entry.problems:
                entry.outcome = "rejected"
                return 200, self.response(entry.reference_id, "Rejected", None, self.reason_for(entry))
            entry.receipt_id = f"NAP-{len(self.receipts) + 1:06d}"
            self.receipts[entry.reference_id] = entry.receipt_id
            # The timeout scenario takes the certificate too; only the answer comes too late.
            entry.outcome = "accepted"
            entry.late = scenario == "timeout"
            # The no-receipt scenario takes the certificate but leaves the receipt id out of the answer.
            return 200, self.response(
                entry.reference_id, "Accepted", None if scenario == "no-receipt" else entry.receipt_id
            )

    def reason_for(self, entry: Received) -> str:
        return "; ".join(entry.problems) if entry.problems else self.reason

    def response(self, reference_id: str, status: str, receipt_id: str | None, reason: str | None = None) -> bytes:
        envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP, "nap": self.namespace})
        response = etree.SubElement(etree.SubElement(envelope, f"{{{SOAP}}}Body"), self._nap("DeliverIviResponse"))
        etree.SubElement(response, self._nap("IviReferenceId")).text = reference_id
        etree.SubElement(response, self._nap("Status")).text = status
        if receipt_id is not None:
            etree.SubElement(response, self._nap("ReceiptId")).text = receipt_id
        if reason is not None:
            etree.SubElement(response, self._nap("Reason")).text = reason
        return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))

    @staticmethod
    def fault(code: str, text: str) -> bytes:
        envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP})
        fault = etree.SubElement(etree.SubElement(envelope, f"{{{SOAP}}}Body"), f"{{{SOAP}}}Fault")
        etree.SubElement(fault, "faultcode").text = code
        etree.SubElement(fault, "faultstring").text = text
        return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))


# The VCA: OAuth2 client credentials, submissions and status polling.


@dataclass
class Submission:
    """A submission the VCA took, and how its status develops."""

    submission_id: str
    reference_id: str
    # The status the submission reaches once `pending_polls` polls have returned "Processing".
    final_status: str
    errors: list[dict[str, str]]
    pending_polls: int


class _VcaHandler(_Handler):
    server: _Server

    @property
    def vca(self) -> VcaSimulator:
        return self.server.simulator  # type: ignore[return-value]

    def do_POST(self) -> None:
        body = self.body()
        path = urllib.parse.urlsplit(self.path).path
        if path == self.vca.token_path:
            self.token(body)
        elif path == f"{self.vca.base_path}/submissions":
            if self.authorized():
                self.submit(body)
        else:
            self.reply_json(404, {"errors": [{"code": "NOT_FOUND", "message": f"no resource {path}"}]})

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        prefix = f"{self.vca.base_path}/submissions/"
        if not path.startswith(prefix):
            self.reply_json(404, {"errors": [{"code": "NOT_FOUND", "message": f"no resource {path}"}]})
        elif self.authorized():
            self.status(urllib.parse.unquote(path.removeprefix(prefix)))

    def token(self, body: bytes) -> None:
        vca = self.vca
        form = {name: values[0] for name, values in urllib.parse.parse_qs(body.decode("ascii", "replace")).items()}
        if self.headers.get("Content-Type") != "application/x-www-form-urlencoded":
            self.reply_json(400, {"error": "invalid_request"})
        elif form.get("grant_type") != "client_credentials":
            self.reply_json(400, {"error": "unsupported_grant_type"})
        elif form.get("client_id") != vca.client_id or form.get("client_secret") != vca.client_secret:
            self.reply_json(401, {"error": "invalid_client", "error_description": "unknown client or wrong secret"})
        elif form.get("scope") != vca.scope:
            self.reply_json(400, {"error": "invalid_scope"})
        else:
            token = secrets.token_urlsafe(24)
            with vca.lock:
                vca.tokens_issued += 1
                rejected = vca.scenario == "unauthorized" or (
                    vca.scenario == "expired-token" and vca.tokens_issued == 1
                )
                vca.tokens[token] = time.monotonic() + (0 if rejected else vca.token_lifetime)
            self.reply_json(200, {"access_token": token, "token_type": "Bearer", "expires_in": vca.token_lifetime})

    def authorized(self) -> bool:
        """Check the bearer token; answer 401 and return False when it is missing, unknown or expired."""
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        with self.vca.lock:
            expires = self.vca.tokens.get(token) if scheme == "Bearer" else None
        if expires is not None and time.monotonic() < expires:
            return True
        # Like some real services, the description repeats the token, which clients must not log.
        self.reply_json(401, {"error": "invalid_token", "error_description": f"the access token {token} has expired"})
        return False

    def submit(self, body: bytes) -> None:
        vca = self.vca
        scenario = vca.scenario
        if (
            self.headers.get("manufacturer-id") != vca.manufacturer_id
            or self.headers.get("contact-id") != vca.contact_id
        ):
            self.reply_json(
                403, {"errors": [{"code": "FORBIDDEN", "message": "unknown manufacturer-id or contact-id"}]}
            )
            return
        if self.headers.get("Content-Type") != "application/xml":
            self.reply_json(415, {"errors": [{"code": "MEDIA_TYPE", "message": "send application/xml"}]})
            return
        if scenario == "slow":
            vca.wait(vca.delay)
        status, answer, content_type, entry = vca.submit(body, dict(self.headers))
        entry.answer = answer
        vca.record(entry)
        if entry.late:
            vca.wait(vca.hang)
        self.reply(status, entry.answer, content_type)

    def status(self, submission_id: str) -> None:
        vca = self.vca
        with vca.lock:
            vca.polls += 1
            submission = vca.submissions.get(submission_id)
            if submission is None:
                answer: dict[str, Any] = {"errors": [{"code": "NOT_FOUND", "message": "unknown submission"}]}
                self.reply_json(404, answer)
                return
            if submission.pending_polls > 0 or vca.scenario == "processing":
                submission.pending_polls -= 1
                answer = {"submissionId": submission_id, "status": "Processing", "errors": []}
            else:
                answer = {
                    "submissionId": submission_id,
                    "status": submission.final_status,
                    "errors": submission.errors,
                }
            body = _json(answer)
            vca.status_replies.append(body)
        self.reply(200, body, JSON)


class VcaSimulator(_Simulator):
    """The VCA eCoC REST service: a token endpoint, POST {base}/submissions and GET {base}/submissions/{id}."""

    scenarios = VCA_SCENARIOS
    handler = _VcaHandler

    def __init__(
        self,
        folder: Path,
        *,
        trust: Sequence[x509.Certificate],
        schema: Path | None = None,
        secret_variable: str = "ECOC_VCA_CLIENT_SECRET",
    ) -> None:
        super().__init__(folder, trust=trust, schema=schema)
        self.token_path = "/oauth2/token"
        self.base_path = "/ecoc/v1"
        self.client_id = "halvard-ecoc"
        self.client_secret = secrets.token_urlsafe(24)
        self.secret_variable = secret_variable
        self.scope = "ecoc.submit"
        self.manufacturer_id = "HALVARD-MOTORS"
        self.contact_id = "C-1042"
        # Seconds an access token stays valid.
        self.token_lifetime = 3600
        # How many polls of a new submission answer "Processing" before its final status.
        self.pending_polls = 1
        self.tokens_issued = 0
        self.polls = 0
        # The bodies of the status replies, in order: the last is what a client keeps as receipt.
        self.status_replies: list[bytes] = []
        # Access tokens with the monotonic time they expire at.
        self.tokens: dict[str, float] = {}
        self.submissions: dict[str, Submission] = {}
        # Submission ids by IviReferenceId, of the certificates taken.
        self.known: dict[str, str] = {}

    def __enter__(self) -> VcaSimulator:
        self.start()
        return self

    @property
    def environment(self) -> dict[str, str]:
        """The environment variable with the client secret, which open_transport reads."""
        return {self.secret_variable: self.client_secret}

    def settings(self, **changes: Any) -> ReleaseSettings:
        """Return release settings that deliver here, with short timeouts; `changes` override VcaSettings fields."""
        values: dict[str, Any] = {
            "base_url": f"{self.url}{self.base_path}",
            "token_url": f"{self.url}{self.token_path}",
            "client_id": self.client_id,
            "client_secret_env": self.secret_variable,
            "scope": self.scope,
            "manufacturer_id": self.manufacturer_id,
            "contact_id": self.contact_id,
            "ca": str(self.ca_file),
            "timeout": 1.0,
            "poll_interval": 0.05,
            "poll_timeout": 2.0,
        }
        return ReleaseSettings(transport="vca-rest", vca=VcaSettings(**{**values, **changes}))

    def submit(self, document: bytes, headers: dict[str, str]) -> tuple[int, bytes, str, Received]:
        """Decide on a submission by the scenario; return the HTTP status, body and media type, and the record."""
        scenario = self.scenario
        reference_id = ""
        vin = None
        try:
            root = parse_xml_bytes(document, "the document").getroot()
            reference_id = root.findtext(f"{{{IVI}}}Header/{{{IVI}}}IviReferenceId") or ""
            vin = next((element.text for element in root.iter(f"{{{IVI}}}VehicleIdentificationNumber")), None)
        except InputError:
            pass
        entry = Received(reference_id, vin, document, scenario, None, headers=headers)
        if scenario == "server-error":
            return 503, MAINTENANCE_PAGE, "text/html", entry
        if scenario == "forbidden":
            return 403, _json({"errors": [{"code": "FORBIDDEN", "message": "this client may not submit"}]}), JSON, entry
        if scenario == "malformed":
            return 202, self.malformed_reply, "text/plain", entry
        problems = self.check_document(document)
        # Well-formedness and the schema are checked at once; the signature only while processing.
        invalid = [problem for problem in problems if not problem.startswith("the signature")]
        if scenario == "invalid" or invalid or not reference_id:
            entry.outcome = "rejected"
            entry.problems = invalid or [self.reason]
            errors = [{"code": "INVALID_DOCUMENT", "message": problem} for problem in entry.problems]
            return 422, _json({"errors": errors}), JSON, entry
        with self.lock:
            first = self.known.get(reference_id)
            if first is None and scenario == "duplicate":
                first = f"vca-earlier-{uuid.uuid4()}"
                self.known[reference_id] = first
                self.submissions[first] = Submission(first, reference_id, "Accepted", [], 0)
            if first is not None:
                entry.outcome, entry.receipt_id = "duplicate", first
                conflict = {"submissionId": first, "errors": [{"code": "DUPLICATE", "message": "already submitted"}]}
                return 409, _json(conflict), JSON, entry
            submission_id = str(uuid.uuid4())
            entry.receipt_id = submission_id
            entry.problems = problems
            if scenario == "rejected" or problems:
                entry.outcome = "rejected"
                errors = [{"code": "REJECTED", "message": reason} for reason in problems or [self.reason]]
                final = Submission(submission_id, reference_id, "Rejected", errors, self.pending_polls)
            else:
                entry.outcome = "accepted"
                entry.late = scenario == "timeout"
                self.known[reference_id] = submission_id
                final = Submission(submission_id, reference_id, "Accepted", [], self.pending_polls)
            self.submissions[submission_id] = final
        return 202, _json({"submissionId": submission_id, "status": "Received"}), JSON, entry


def _json(data: object) -> bytes:
    return json.dumps(data).encode("utf-8")


def free_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on (for refused-connection tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
