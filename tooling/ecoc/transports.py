"""Deliver signed certificates to an authority: into a folder, to a NAP's SOAP service or to the VCA.

`open_transport` builds the transport that the release settings name, and checks its files, keys
and secrets at once (ConfigError). `deliver` never raises for a problem of the network or of the
other side: each attempt ends in a `Delivery`. "accepted" and "rejected" are the authority's
decisions. "failed" means that no decision arrived, so the certificate stays pending and a later
run sends it again with the same IviReferenceId, which the authority recognises as a duplicate.

Replies are hostile input: their size is capped, XML is parsed without DTDs or entities, and any
text of a reply quoted in a message is shortened and stripped of control characters. Messages
never contain a client secret, an access token, a key or a passphrase.

Several threads may deliver through one transport at the same time. Each thread keeps its own
HTTPS connection per server open between deliveries, because a release sends thousands of files.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http
import http.client
import json
import logging
import os
import re
import secrets
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from lxml import etree

from ecoc import gitinfo
from ecoc.config import NapSettings, ReleaseSettings, VcaSettings
from ecoc.errors import ConfigError, InputError
from ecoc.ivi.xmlsafe import MAX_XML_BYTES, XmlRejected, parse_xml_bytes
from ecoc.signing import KEY_FROM_ENVIRONMENT, certificates_in

log = logging.getLogger(__name__)

SOAP_ENVELOPE = "http://schemas.xmlsoap.org/soap/envelope/"
NAP_KEY_PASSPHRASE_VARIABLE = "ECOC_NAP_KEY_PASSPHRASE"
# Receipts are small; a reply larger than the largest accepted XML file is not a receipt.
MAX_REPLY_BYTES = MAX_XML_BYTES
# How much of a reply's text a message quotes.
QUOTE_LIMIT = 200
REASON_LIMIT = 1000

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
# An IviReferenceId is a UUID; anything else must at least be a plain file name for the outbox.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")
# RFC 6750 b64token: the only characters an access token may have in an Authorization header.
_ACCESS_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*\Z")
_SUBMISSION_ID = re.compile(r"[A-Za-z0-9._~:-]{1,200}\Z")
# Printable ASCII, without spaces at either end, for the values of HTTP headers.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?\Z")
# Printable ASCII without the double quote, because SOAPAction is sent as a quoted string.
_SOAP_ACTION = re.compile(r"[\x20\x21\x23-\x7e]+\Z")


@dataclass(frozen=True)
class Delivery:
    """The outcome of one delivery attempt."""

    # accepted: the authority took the certificate (also when it already had this IviReferenceId).
    # rejected: the authority rejected its content, and `message` carries its reason.
    # failed: no decision (timeout, 5xx, refused connection, bad credentials, malformed reply...),
    # so the certificate stays pending and a later run sends it again with the same IviReferenceId.
    status: Literal["accepted", "rejected", "failed"]
    # Plain words for logs and `ecoc status`, never a secret.
    message: str
    # The authority's final reply body exactly as received, None when no reply was received.
    receipt: bytes | None
    # The media type of the receipt without parameters, such as "text/xml" or "application/json".
    media_type: str | None
    # The authority's id for the delivery or its receipt, when it gives one.
    receipt_id: str | None
    # Whether the authority reported that it already had this IviReferenceId.
    duplicate: bool = False


class Transport(Protocol):
    """A way to deliver signed certificates: "outbox", "nap-soap" or "vca-rest"."""

    name: str

    def deliver(self, reference_id: str, vin: str, signed: bytes) -> Delivery: ...

    def check_ready(self, create: bool = True) -> None:
        """Raise ConfigError when no certificate could be delivered, so the release stops before signing.

        With `create`, make what is missing, such as the outbox folder. Without it, change nothing.
        """

    def close(self) -> None: ...


def open_transport(
    settings: ReleaseSettings, root: Path, outbox: Path | None = None, outbox_source: str = "--outbox"
) -> Transport:
    """Build the transport of `settings`; relative paths in them are relative to `root`.

    `outbox`, a folder given on the command line, takes the place of release.outbox; it selects
    no transport by itself. `outbox_source` is the option or environment variable that gave it,
    for messages. Raises ConfigError when the transport is not configured or a file, key or secret
    it needs is missing or unusable.
    """
    if settings.transport is None:
        raise ConfigError(
            "no delivery transport is configured",
            "set release.transport in ecoc.yaml to outbox, nap-soap or vca-rest",
        )
    if settings.transport == "outbox":
        if outbox is not None:
            return OutboxTransport(_usable_outbox(_outside(root, outbox, outbox_source), outbox_source), outbox_source)
        if not settings.outbox:
            raise ConfigError(
                "the outbox transport has no folder",
                "pass --outbox DIR, set ECOC_OUTBOX, or set release.outbox in ecoc.yaml to the folder that "
                "another system uploads from",
            )
        folder = _outside(root, _resolve(root, settings.outbox), "release.outbox")
        return OutboxTransport(_usable_outbox(folder, "release.outbox"), "release.outbox")
    if settings.transport == "nap-soap":
        if settings.nap is None:
            raise ConfigError(
                "release.transport is nap-soap, but release.nap is missing",
                "add release.nap with endpoint, client_cert and client_key (and ca) to ecoc.yaml",
            )
        return NapTransport(settings.nap, _nap_context(settings.nap, root))
    if settings.vca is None:
        raise ConfigError(
            "release.transport is vca-rest, but release.vca is missing",
            "add release.vca with base_url, token_url, client_id, scope, manufacturer_id and contact_id",
        )
    variable = settings.vca.client_secret_env
    secret = os.environ.get(variable)
    if not secret:
        raise ConfigError(
            f"the environment variable {variable} with the VCA client secret is not set",
            f"set {variable} to the client secret the VCA issued for client {settings.vca.client_id}",
        )
    _check_url(settings.vca.base_url, "release.vca.base_url")
    _check_url(settings.vca.token_url, "release.vca.token_url")
    for setting, value in (("manufacturer_id", settings.vca.manufacturer_id), ("contact_id", settings.vca.contact_id)):
        if not _HEADER_VALUE.match(value):
            raise ConfigError(
                f"release.vca.{setting} must be printable ASCII, because it is sent as an HTTP header",
                f"set it to the {setting.replace('_', ' ')} that the VCA issued",
            )
    if urllib.parse.urlsplit(settings.vca.base_url)[3:] != ("", ""):
        raise ConfigError(
            "release.vca.base_url has a query or fragment",
            "set it to the URL that /submissions is appended to, such as https://host/ecoc/v1",
        )
    return VcaTransport(settings.vca, secret, _server_context(settings.vca.ca, root, "release.vca.ca"))


# Shared helpers: paths, URLs, quoting and HTTP status texts.


def _resolve(root: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else root / path))


def _check_url(url: str, setting: str) -> None:
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(f"{setting} has an invalid port: {_display(url)}") from None
    if not parts.hostname:
        raise ConfigError(f"{setting} names no host", f"set {setting} to a URL such as https://host/path")


def _display(url: str) -> str:
    """Return `url` without user information, query and fragment, which may carry credentials."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _origin(url: str) -> tuple[str, int, str]:
    """Return the host, port and request target (path and query) of an https URL."""
    parts = urllib.parse.urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    return parts.hostname or "", parts.port or 443, target


def _quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """Return text from a reply as one line of at most `limit` characters, without control characters."""
    flat = " ".join(_CONTROL_CHARACTERS.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _quote_body(body: bytes) -> str:
    if not body.strip():
        return "an empty body"
    return repr(_quote(body[: QUOTE_LIMIT * 4].decode("utf-8", "replace")))


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The HTTPS connection that both web service transports use.


@dataclass(frozen=True)
class _Reply:
    status: int
    media_type: str | None
    body: bytes


class _Failure(Exception):
    """A delivery attempt that ended without a decision, described in plain words."""

    def __init__(self, message: str, reply: _Reply | None = None, receipt_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reply = reply
        self.receipt_id = receipt_id


# The exceptions of a request on a kept-alive connection that the server has closed meanwhile.
_CLOSED_CONNECTION = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)

# TLS alerts by which a server rejects the client certificate, in plain words.
_CLIENT_CERTIFICATE_ALERTS = {
    "CERTIFICATE_REQUIRED": "the server requires a client certificate",
    "UNKNOWN_CA": "its issuer is not trusted by the server",
    "BAD_CERTIFICATE": "the server found it unacceptable",
    "UNSUPPORTED_CERTIFICATE": "the server does not support its type",
    "CERTIFICATE_EXPIRED": "it has expired",
    "CERTIFICATE_REVOKED": "it is revoked",
    "CERTIFICATE_UNKNOWN": "the server could not use it",
    "ACCESS_DENIED": "the server denied access",
}


class _Connections:
    """Keep-alive connections, one per thread and server, so that threads can deliver at the same time."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[_Connection] = []

    def get(self, key: tuple[str, int], opener: Callable[[], _Connection]) -> _Connection:
        """Return this thread's connection to the server `key`, made with `opener` on first use."""
        by_server: dict[tuple[str, int], _Connection] | None = getattr(self._local, "connections", None)
        if by_server is None:
            by_server = self._local.connections = {}
        connection = by_server.get(key)
        if connection is None:
            connection = by_server[key] = opener()
            with self._lock:
                self._opened.append(connection)
        return connection

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()


class _Connection:
    """One keep-alive HTTPS connection to a server, opened on first use and again after the server closes it.

    A request that fails because the server closed a connection that was kept open between
    requests is sent once more on a new connection. The services deduplicate by IviReferenceId,
    so a request that did arrive the first time is reported as a duplicate.
    """

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        connect_timeout: float,
        read_timeout: float,
        service: str,
        trust_setting: str,
        client_setting: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.context = context
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        # The server in messages, such as "the NAP at https://nap.example/deliver".
        self.service = service
        self.trust_setting = trust_setting
        self.client_setting = client_setting
        self._http: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def request(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> _Reply:
        """Send one request and return the reply; raise _Failure when no complete reply arrives."""
        for attempt in range(2):
            reused = self._open()
            try:
                return self._exchange(method, target, body, headers)
            except _CLOSED_CONNECTION as exc:
                self.close()
                if not reused or attempt > 0:
                    raise _Failure(self._problem(exc, connecting=False)) from None
                log.info("%s closed the kept-alive connection; sending the request on a new one", self.service)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise _Failure(self._problem(exc, connecting=False)) from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _open(self) -> bool:
        """Connect unless a connection is open already; return whether it is one used before."""
        if self._http is not None and self._http.sock is not None:
            return True
        self.close()
        connection = http.client.HTTPSConnection(
            self.host, self.port, timeout=self.connect_timeout, context=self.context
        )
        try:
            connection.connect()
        except OSError as exc:
            connection.close()
            raise _Failure(self._problem(exc, connecting=True)) from None
        # The connect timeout covers the TCP and TLS handshakes; every later wait has the read timeout.
        connection.sock.settimeout(self.read_timeout)
        # Requests go out whole at once: waiting to fill a segment only delays each delivery.
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._http = connection
        return False

    def _exchange(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> _Reply:
        assert self._http is not None
        self._http.request(method, target, body=body, headers=headers)
        response = self._http.getresponse()
        data = response.read(MAX_REPLY_BYTES + 1)
        if len(data) > MAX_REPLY_BYTES:
            self.close()
            raise _Failure(f"{self.service} sent a reply larger than the maximum of {MAX_REPLY_BYTES} bytes")
        if response.will_close or not response.isclosed():
            self.close()
        content_type = response.getheader("Content-Type")
        media_type = content_type.split(";")[0].strip().lower() if content_type else None
        return _Reply(response.status, media_type or None, data)

    def _problem(self, exc: BaseException, connecting: bool) -> str:
        """Describe a network or TLS error in plain words, with the setting to check."""
        where = self.service
        if isinstance(exc, TimeoutError):
            if connecting:
                return f"{where} did not accept a connection within {self.connect_timeout:g} s"
            return f"{where} did not answer within {self.read_timeout:g} s"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (
                f"the server certificate of {where} is not trusted ({exc.verify_message}); check {self.trust_setting}"
            )
        if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ConnectionResetError | BrokenPipeError):
            return self._closed()

        if isinstance(exc, ssl.SSLError):
            reason = str(exc.reason or "")
            rejection = next((words for alert, words in _CLIENT_CERTIFICATE_ALERTS.items() if alert in reason), None)
            if rejection is not None and self.client_setting is not None:
                return (
                    f"{where} rejected the client certificate ({rejection}); "
                    f"check {self.client_setting} and that the service has registered this certificate"
                )
            return f"the TLS connection with {where} failed ({reason or type(exc).__name__})"

        if isinstance(exc, ConnectionRefusedError):
            return f"{where} refused the connection; check the address and that the service is running"
        if isinstance(exc, socket.gaierror):
            return f"the host name of {where} cannot be resolved"
        if isinstance(exc, http.client.RemoteDisconnected):
            return self._closed()
        if isinstance(exc, http.client.HTTPException):
            return f"{where} sent an invalid HTTP reply ({type(exc).__name__})"
        if isinstance(exc, OSError):
            return f"{where} cannot be reached: {exc.strerror or type(exc).__name__}"
        return f"{where} cannot be reached: {type(exc).__name__}"

    def _closed(self) -> str:
        message = f"{self.service} closed the connection without a complete reply"
        if self.client_setting is not None:
            # Under TLS 1.3 a server checks the client certificate after the client's handshake
            # ends, so a rejection can arrive as a closed connection instead of a TLS alert.
            message += f"; if this repeats, check that it accepts the client certificate of {self.client_setting}"
        return message


# TLS settings and the NAP's client key.


def _server_context(ca: str | None, root: Path, setting: str) -> ssl.SSLContext:
    """Return a client TLS context that checks the server against `ca`, or the system's store without it."""
    if ca is None:
        return ssl.create_default_context()
    path = _resolve(root, ca)
    if not path.is_file():
        raise ConfigError(
            f"the CA file {path} ({setting}) does not exist",
            f"set {setting} to the PEM file of the CA that issued the server certificate",
        )
    try:
        return ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError):
        raise ConfigError(
            f"{path} ({setting}) contains no PEM CA certificate",
            f"set {setting} to the PEM file of the CA that issued the server certificate",
        ) from None


def _nap_context(nap: NapSettings, root: Path) -> ssl.SSLContext:
    """Return the TLS context for the NAP: server verification, and the client certificate with its key."""
    _check_url(nap.endpoint, "release.nap.endpoint")
    if not nap.namespace.strip():
        raise ConfigError("release.nap.namespace is empty", "set it to the namespace that the NAP's WSDL gives")
    if not _SOAP_ACTION.match(nap.action):
        raise ConfigError(
            "release.nap.action must be printable ASCII without double quotes",
            "set it to the SOAPAction that the NAP's WSDL gives",
        )
    context = _server_context(nap.ca, root, "release.nap.ca")
    cert_path = _resolve(root, nap.client_cert)
    if not cert_path.is_file():
        raise ConfigError(
            f"the NAP client certificate {cert_path} (release.nap.client_cert) does not exist",
            "set release.nap.client_cert to the PEM file of the client certificate, followed by its intermediates",
        )
    try:
        certificate = certificates_in(cert_path)[0]
    except InputError as exc:
        raise ConfigError(exc.message, exc.hint) from None
    key = _client_key(nap.client_key, root)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ConfigError(
            f"the NAP client certificate {cert_path} does not belong to the key of release.nap.client_key",
            "set client_cert and client_key to the certificate and key of the same client",
        )
    _load_client_certificate(context, cert_path, key)
    return context


def _client_key(source: str, root: Path) -> PrivateKeyTypes:
    """Read the NAP client key from a PEM file or from `env:NAME`, decrypted with ECOC_NAP_KEY_PASSPHRASE."""
    if source.startswith(KEY_FROM_ENVIRONMENT):
        variable = source.removeprefix(KEY_FROM_ENVIRONMENT)
        value = os.environ.get(variable) if variable else None
        if not value:
            raise ConfigError(
                f"the environment variable {variable or '(no name)'} of release.nap.client_key is not set",
                "set it to the PEM text of the NAP client key",
            )
        if "-----BEGIN" not in value:
            raise ConfigError(
                f"the environment variable {variable} of release.nap.client_key contains no PEM key",
                "set it to the PEM text of the NAP client key",
            )
        data = value.encode("ascii", "replace")
        where = f"the NAP client key in {variable}"
    else:
        path = _resolve(root, source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"the NAP client key {path} (release.nap.client_key) cannot be read: {exc.strerror}",
                "set release.nap.client_key to the PEM file of the client key, or to env:NAME",
            ) from None
        where = f"the NAP client key {path}"
    try:
        return serialization.load_pem_private_key(data, None)
    except TypeError:
        pass  # encrypted: the passphrase is needed
    except ValueError:
        raise ConfigError(f"{where} is not a PEM private key", "pass the client key in PEM form") from None
    passphrase = os.environ.get(NAP_KEY_PASSPHRASE_VARIABLE)
    if not passphrase:
        raise ConfigError(
            f"{where} is encrypted", f"set its passphrase in the environment variable {NAP_KEY_PASSPHRASE_VARIABLE}"
        )
    try:
        return serialization.load_pem_private_key(data, passphrase.encode("utf-8"))
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where} cannot be decrypted", f"check the passphrase in {NAP_KEY_PASSPHRASE_VARIABLE}"
        ) from None


def _load_client_certificate(context: ssl.SSLContext, cert_path: Path, key: PrivateKeyTypes) -> None:
    """Give `context` the client certificate and key.

    The ssl module reads keys only from files, so the key goes through a private temporary file,
    encrypted with a random one-time passphrase and removed at once.
    """
    one_time = secrets.token_bytes(32)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(one_time),
    )
    with tempfile.TemporaryDirectory(prefix="ecoc-nap-") as folder:
        key_path = Path(folder) / "client.key"
        handle = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(handle, "wb") as stream:
            stream.write(encrypted)
        try:
            context.load_cert_chain(str(cert_path), str(key_path), password=one_time)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"the NAP client certificate {cert_path} cannot be used for TLS ({exc.reason or exc})",
                "set release.nap.client_cert to the PEM client certificate followed by its intermediates",
            ) from None


# The outbox: a folder that another system uploads from.


def _outbox_problem(
    folder: Path, source: str, problem: str, needed: str = "that can be created and written"
) -> ConfigError:
    """Return the error for an outbox that cannot be used, naming the setting that chose it and the folder it needs."""
    hints = {
        "--outbox": f"pass --outbox with a folder {needed}",
        "ECOC_OUTBOX": f"set ECOC_OUTBOX to a folder {needed}, or unset it to use release.outbox",
    }
    hint = hints.get(source, f"set {source} in ecoc.yaml to a folder {needed}, or pass --outbox")
    # The message of release.outbox names no source: it is the outbox that ecoc.yaml sets.
    prefix = f"{source}: " if source in hints else ""
    return ConfigError(f"{prefix}the outbox {folder} {problem}", hint)


# Folders of the repository that hold its data, the evidence archive or git's own files.
_DATA_FOLDERS = ("signed", "records", "approvals", "rules", ".git", ".github")


def _outside(root: Path, folder: Path, source: str) -> Path:
    """Return `folder` unless it is the repository's root or lies in one of its data folders.

    Certificates there would mix with files that the release and the checks read. A folder such
    as build/outbox, which git ignores, is fine.
    """
    target, top = folder.resolve(), root.resolve()
    # Where the uploader can pick the files up, apart from what git and ecoc read.
    needed = "outside the repository, or in a folder of it that git ignores, such as build/outbox"
    if target == top:
        raise _outbox_problem(folder, source, "is the repository's own folder, not an outbox", needed)
    for name in _DATA_FOLDERS:
        if target.is_relative_to(top / name):
            raise _outbox_problem(folder, source, f"lies in the repository's {name}/ folder", needed)
    if target.is_relative_to(top) and gitinfo.ignored(top, target.relative_to(top).as_posix()) is False:
        # git add -A would commit the delivered certificates outside signed/, where no audit covers them.
        problem = "lies in the repository, and git does not ignore it"
        raise _outbox_problem(folder, source, problem, needed + " (add it to .gitignore)")
    return folder


def _usable_outbox(folder: Path, source: str) -> Path:
    """Return `folder` when it is, or can become, a writable folder; raise ConfigError before anything is signed."""
    for existing in (folder, *folder.parents):
        if not existing.exists():
            continue
        if not existing.is_dir():
            where = "is a file" if existing == folder else f"lies below the file {existing}"
            raise _outbox_problem(folder, source, f"{where}, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise _outbox_problem(folder, source, f"cannot be written: {existing} is not writable")
        break
    _remove_stale_temporaries(folder)
    return folder


# The temporary name OutboxTransport._write gives a certificate before it links it into place.
_OUTBOX_TEMPORARY = re.compile(r"\.[A-Za-z0-9][A-Za-z0-9._-]*\.xml\.[0-9a-f]{16}\.tmp\Z")
# A temporary file this old belongs to a run that was killed, not to one that is writing it now.
STALE_TEMPORARY_SECONDS = 600


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete the partial certificates that killed runs left in the outbox under temporary names."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    limit = time.time() - STALE_TEMPORARY_SECONDS
    for name in names:
        if not _OUTBOX_TEMPORARY.match(name):
            continue
        path = folder / name
        try:
            if path.is_file() and path.stat().st_mtime < limit:
                path.unlink()
                log.info("outbox: removed %s, which a killed run left unfinished", path)
        except OSError as exc:
            log.warning("outbox: cannot remove %s: %s", path, exc.strerror)


class OutboxTransport:
    """Writes each certificate to `<folder>/<IviReferenceId>.xml` and never overwrites one."""

    name = "outbox"

    def __init__(self, folder: Path, source: str = "--outbox") -> None:
        self.folder = folder
        # The option, environment variable or setting that chose the folder, for messages.
        self.source = source

    def close(self) -> None:
        return

    def check_ready(self, create: bool = True) -> None:
        """Create the folder and write a test file in it. Without `create`, test where the folder would go.

        A write test is needed because os.access is true for root even where the file system takes
        no new file, as in /proc.
        """
        folder = self.folder
        if create:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _outbox_problem(folder, self.source, f"cannot be created: {exc.strerror}") from None
        try:
            if folder.is_dir():
                # The test file has the temporary name of a certificate, so one left by a killed run is removed.
                probe = folder / f".ecoc-write-test.xml.{secrets.token_hex(8)}.tmp"
                os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                probe.unlink()
            else:
                parent = next(path for path in folder.parents if path.exists())
                os.rmdir(tempfile.mkdtemp(prefix=".ecoc-write-test-", dir=parent))
        except OSError as exc:
            verb = "written" if folder.is_dir() else "created"
            raise _outbox_problem(folder, self.source, f"cannot be {verb}: {exc.strerror}") from None

    def deliver(self, reference_id: str, vin: str, signed: bytes) -> Delivery:
        if not _FILE_NAME.match(reference_id):
            return self._failed(f"the IviReferenceId {_quote(reference_id)!r} of {vin} cannot be used as a file name")
        target = self.folder / f"{reference_id}.xml"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            return self._failed(f"the outbox {self.folder} is not a folder")
        except OSError as exc:
            return self._failed(f"the outbox {self.folder} cannot be created: {exc.strerror}")
        if not self.folder.is_dir():
            return self._failed(f"the outbox {self.folder} is not a folder")
        try:
            outcome = self._write(target, signed)
            written = dt.datetime.fromtimestamp(target.stat().st_mtime, dt.UTC)
        except OSError as exc:
            return self._failed(f"{target} cannot be written: {exc.strerror or type(exc).__name__}")
        if outcome == "different":
            return self._failed(
                f"{target} already exists with other content, so the certificate was not written; "
                "compare the two and remove the wrong file"
            )
        receipt = {
            "transport": self.name,
            "file": target.name,
            "sha256": hashlib.sha256(signed).hexdigest(),
            "written": _utc_text(written),
        }
        created = outcome == "written"
        # The evidence keeps the message, so it names the file, not a folder of the machine that ran.
        message = f"wrote {target.name} into the outbox" if created else f"the outbox already contains {target.name}"
        log.info("outbox: %s %s", "wrote" if created else "found", target)
        return Delivery(
            "accepted",
            message,
            (json.dumps(receipt, indent=2) + "\n").encode("utf-8"),
            "application/json",
            target.name,
            duplicate=not created,
        )

    def _failed(self, message: str) -> Delivery:
        log.warning("outbox: %s", message)
        return Delivery("failed", message, None, None, None)

    def _write(self, target: Path, data: bytes) -> Literal["written", "same", "different"]:
        """Write `data` to `target` unless the file exists; otherwise compare it with `data`."""
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            try:
                # A hard link is a rename that never replaces an existing file.
                os.link(temporary, target)
            except FileExistsError:
                return "same" if target.read_bytes() == data else "different"
            except OSError:
                # NOTE: without hard links (some network and FAT file systems), a file that another
                # process creates between this check and the rename is replaced.
                if target.exists():
                    return "same" if target.read_bytes() == data else "different"
                os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        _sync_folder(target.parent)
        return "written"


def _sync_folder(folder: Path) -> None:
    """Make the new name in `folder` durable, where the system allows opening a folder."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


# nap-soap: a EUCARIS National Access Point's SOAP 1.1 service with a TLS client certificate.


class _Malformed(Exception):
    """A reply that is not the SOAP message expected, with the reason."""


class NapTransport:
    """Posts each certificate, in base64, in a SOAP 1.1 DeliverIvi message to the NAP.

    The envelope is ecoc's own shape because the NAP's WSDL is not public: its element
    namespace and SOAPAction come from release.nap.
    """

    name = "nap-soap"

    def __init__(self, settings: NapSettings, context: ssl.SSLContext) -> None:
        self.settings = settings
        self.context = context
        self.host, self.port, self.target = _origin(settings.endpoint)
        self.service = f"the NAP at {_display(settings.endpoint)}"
        self._connections = _Connections()

    def close(self) -> None:
        self._connections.close()

    def check_ready(self, create: bool = True) -> None:
        """In a dry run, open one TLS connection to the NAP, so that a wrong address or trust shows first.

        No request goes out. A real run does not connect before signing: a NAP that is down for
        a while should not keep the evidence of the certificates from being written.
        """
        if create:
            return
        connection = self._open()
        try:
            connection._open()
        except _Failure as failure:
            raise ConfigError(
                failure.message,
                "every delivery would fail the same way; fix release.nap (endpoint, ca, client_cert) first",
            ) from None
        finally:
            connection.close()

    def _open(self) -> _Connection:
        return _Connection(
            self.host,
            self.port,
            self.context,
            self.settings.connect_timeout,
            self.settings.read_timeout,
            self.service,
            "release.nap.ca",
            "release.nap.client_cert",
        )

    def _nap(self, name: str) -> str:
        return f"{{{self.settings.namespace}}}{name}"

    def envelope(self, reference_id: str, vin: str, signed: bytes) -> bytes:
        """Return the SOAP 1.1 DeliverIvi message; the document is in base64 so its bytes travel unchanged."""
        envelope = etree.Element(
            f"{{{SOAP_ENVELOPE}}}Envelope", nsmap={"soap": SOAP_ENVELOPE, "nap": self.settings.namespace}
        )
        body = etree.SubElement(envelope, f"{{{SOAP_ENVELOPE}}}Body")
        request = etree.SubElement(body, self._nap("DeliverIvi"))
        etree.SubElement(request, self._nap("IviReferenceId")).text = reference_id
        etree.SubElement(request, self._nap("Vin")).text = vin
        etree.SubElement(request, self._nap("Document")).text = base64.b64encode(signed).decode("ascii")
        return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))

    def deliver(self, reference_id: str, vin: str, signed: bytes) -> Delivery:
        try:
            body = self.envelope(reference_id, vin, signed)
        except ValueError:
            return self._failed(
                reference_id,
                _Failure(f"the IviReferenceId or VIN of {reference_id} contains characters that XML cannot carry"),
            )
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": f'"{self.settings.action}"',
            "Accept": "text/xml",
        }
        try:
            connection = self._connections.get((self.host, self.port), self._open)
            reply = connection.request("POST", self.target, body, headers)
            return self._judge(reference_id, reply)
        except _Failure as failure:
            return self._failed(reference_id, failure)

    def _failed(self, reference_id: str, failure: _Failure) -> Delivery:
        log.warning("nap-soap: delivery of %s failed: %s", reference_id, failure.message)
        reply = failure.reply
        return Delivery(
            "failed",
            failure.message,
            reply.body if reply else None,
            reply.media_type if reply else None,
            failure.receipt_id,
        )

    def _judge(self, reference_id: str, reply: _Reply) -> Delivery:
        """Turn the NAP's reply into a Delivery, or raise _Failure when it contains no decision."""
        status = reply.status
        if status in (200, 500):
            try:
                answer = self._soap_body(reply.body)
            except _Malformed as exc:
                if status == 500:
                    raise _Failure(
                        f"{self.service} returned {_status_text(status)} without a SOAP fault", reply
                    ) from None
                raise _Failure(
                    f"{self.service} sent a malformed reply ({exc}): {_quote_body(reply.body)}", reply
                ) from None
            if answer.tag == f"{{{SOAP_ENVELOPE}}}Fault":
                return self._fault(answer, reply)
            if status == 500:
                raise _Failure(f"{self.service} returned {_status_text(status)} without a SOAP fault", reply)
            return self._response(reference_id, answer, reply)
        if status in (401, 403):
            raise _Failure(
                f"{self.service} returned {_status_text(status)}: it does not accept the client certificate "
                "for deliveries; check release.nap.client_cert and that the NAP has registered this certificate",
                reply,
            )
        if status == 404:
            raise _Failure(f"{self.service} returned {_status_text(status)}; check release.nap.endpoint", reply)
        if 400 <= status < 500:
            raise _Failure(
                f"{self.service} returned {_status_text(status)} ({_quote_body(reply.body)}); "
                "check release.nap.namespace and release.nap.action against the NAP's WSDL",
                reply,
            )
        if status >= 500:
            raise _Failure(f"{self.service} returned {_status_text(status)}", reply)
        raise _Failure(
            f"{self.service} returned {_status_text(status)}, which is not a response to a delivery; "
            "check release.nap.endpoint",
            reply,
        )

    def _soap_body(self, data: bytes) -> etree._Element:
        """Return the first element in the SOAP Body of a reply, or raise _Malformed."""
        try:
            root = parse_xml_bytes(data, "the NAP reply").getroot()
        except XmlRejected as exc:
            raise _Malformed(exc.reason) from None
        if root.tag != f"{{{SOAP_ENVELOPE}}}Envelope":
            raise _Malformed(f"its root element {_quote(str(root.tag))} is not a SOAP 1.1 Envelope")
        body = root.find(f"{{{SOAP_ENVELOPE}}}Body")
        if body is None:
            raise _Malformed("the SOAP Envelope has no Body")
        answer = next((child for child in body if isinstance(child.tag, str)), None)
        if answer is None:
            raise _Malformed("the SOAP Body is empty")
        return answer

    def _fault(self, fault: etree._Element, reply: _Reply) -> Delivery:
        """Judge a SOAP fault: a Client fault rejects the certificate, any other leaves it pending."""
        code = (fault.findtext("faultcode") or "").strip()
        text = _quote(fault.findtext("faultstring") or "", REASON_LIMIT) or "no fault string given"
        # A faultcode is a QName whose local part may be refined with dots, as in soap:Client.Schema.
        kind = code.rpartition(":")[2].split(".")[0]
        if kind == "Client":
            return Delivery(
                "rejected", f"{self.service} rejected the certificate: {text}", reply.body, _xml(reply), None
            )
        if kind == "Server":
            raise _Failure(f"{self.service} reported a server fault: {text}", reply)
        raise _Failure(f"{self.service} reported the SOAP fault {_quote(code)!r}: {text}", reply)

    def _response(self, reference_id: str, answer: etree._Element, reply: _Reply) -> Delivery:
        if answer.tag != self._nap("DeliverIviResponse"):
            raise _Failure(
                f"{self.service} sent a malformed reply (its SOAP Body contains {_quote(str(answer.tag))!r} "
                f"instead of DeliverIviResponse in {self.settings.namespace}): {_quote_body(reply.body)}",
                reply,
            )
        status = (answer.findtext(self._nap("Status")) or "").strip()
        receipt_id = _quote(answer.findtext(self._nap("ReceiptId")) or "") or None
        reason = _quote(answer.findtext(self._nap("Reason")) or "", REASON_LIMIT)
        echoed = answer.findtext(self._nap("IviReferenceId"))
        if echoed is not None and echoed.strip() != reference_id:
            raise _Failure(
                f"{self.service} sent a response for IviReferenceId {_quote(echoed)!r} instead of {reference_id}", reply
            )
        receipt = f" (receipt {receipt_id})" if receipt_id else ""
        if status == "Accepted" and receipt_id is None:
            # Without a receipt id nothing proves the delivery later. Sent again, the certificate
            # is a duplicate, and the NAP replies with the id it gave it.
            raise _Failure(
                f"{self.service} accepted the certificate but gave no ReceiptId, so the delivery is unproven", reply
            )
        if status == "Accepted":
            message = f"{self.service} accepted the certificate{receipt}"
            return Delivery("accepted", message, reply.body, _xml(reply), receipt_id)
        if status == "Duplicate":
            message = f"{self.service} already had IviReferenceId {reference_id}{receipt}"
            return Delivery("accepted", message, reply.body, _xml(reply), receipt_id, duplicate=True)
        if status == "Rejected":
            message = f"{self.service} rejected the certificate: {reason or 'no reason given'}"
            return Delivery("rejected", message, reply.body, _xml(reply), receipt_id)
        what = f"the unknown Status {_quote(status)!r}" if status else "no Status"
        raise _Failure(f"{self.service} sent a malformed reply ({what}): {_quote_body(reply.body)}", reply)


def _xml(reply: _Reply) -> str:
    return reply.media_type or "text/xml"


# vca-rest: the VCA eCoC REST API, with OAuth2 client credentials and status polling.


class VcaTransport:
    """Submits each certificate to the VCA and polls its submission until the VCA decides.

    The access token is fetched with the client credentials grant and kept until shortly before
    it expires. A request that the VCA rejects with 401 gets one retry with a new token.
    """

    name = "vca-rest"

    def __init__(self, settings: VcaSettings, client_secret: str, context: ssl.SSLContext) -> None:
        self.settings = settings
        self._client_secret = client_secret
        # Every value that messages must never show: the client secret and each token received.
        self._secrets = {client_secret}
        self._token: str | None = None
        self._renew_at: float | None = None
        # Threads share the token: one of them fetches it while the others wait.
        self._token_lock = threading.RLock()
        self.context = context
        self.service = f"the VCA at {_display(settings.base_url)}"
        self.token_service = f"the VCA token service at {_display(settings.token_url)}"
        self._connections = _Connections()
        self._submissions = settings.base_url.rstrip("/") + "/submissions"

    def close(self) -> None:
        self._connections.close()

    def check_ready(self, create: bool = True) -> None:
        """Do nothing: open_transport checked the settings, and no request goes out before signing."""

    def deliver(self, reference_id: str, vin: str, signed: bytes) -> Delivery:
        try:
            delivery = self._deliver(reference_id, signed)
        except _Failure as failure:
            message = self._redact(failure.message)
            log.warning("vca-rest: delivery of %s failed: %s", reference_id, message)
            reply = failure.reply
            return Delivery("failed", message, reply.body if reply else None, _json(reply), failure.receipt_id)
        return Delivery(
            delivery.status,
            self._redact(delivery.message),
            delivery.receipt,
            delivery.media_type,
            delivery.receipt_id,
            delivery.duplicate,
        )

    def _redact(self, text: str) -> str:
        with self._token_lock:
            values = list(self._secrets)
        for value in values:
            text = text.replace(value, "[redacted]")
        return text

    def _request(self, url: str, service: str, method: str, body: bytes | None, headers: dict[str, str]) -> _Reply:
        """Send a request on the kept-alive connection to the server of `url`."""
        host, port, target = _origin(url)
        connection = self._connections.get(
            (host, port),
            lambda: _Connection(
                host, port, self.context, self.settings.timeout, self.settings.timeout, service, "release.vca.ca"
            ),
        )
        # The token service and the API may share one server, and messages name the one asked.
        connection.service = service
        return connection.request(method, target, body, headers)

    def _deliver(self, reference_id: str, signed: bytes) -> Delivery:
        headers = {
            "Content-Type": "application/xml",
            "Accept": "application/json",
            "manufacturer-id": self.settings.manufacturer_id,
            "contact-id": self.settings.contact_id,
        }
        reply = self._authorized("POST", self._submissions, signed, headers)
        if reply.status in (200, 201, 202):
            return self._poll(reference_id, self._submission_id(reply), duplicate=False)
        if reply.status == 409:
            submission = self._submission_id(reply)
            log.info(
                "vca-rest: the VCA already has %s as submission %s; asking for its status", reference_id, submission
            )
            return self._poll(reference_id, submission, duplicate=True)
        if reply.status in (400, 422):
            errors = self._errors(_json_object(reply, self.service))
            if errors:
                message = f"{self.service} rejected the certificate: {errors}"
                return Delivery("rejected", message, reply.body, _json(reply), None)
            raise _Failure(f"{self.service} returned {_status_text(reply.status)} without naming an error", reply)
        raise self._unexpected(reply, "release.vca.base_url")

    def _unexpected(self, reply: _Reply, url_setting: str) -> _Failure:
        status = reply.status
        if status == 403:
            return _Failure(
                f"{self.service} returned {_status_text(status)}: client {self.settings.client_id} may not submit "
                f"for manufacturer-id {self.settings.manufacturer_id} and contact-id {self.settings.contact_id}; "
                "check these settings with the VCA",
                reply,
            )
        if status == 404:
            return _Failure(f"{self.service} returned {_status_text(status)}; check {url_setting}", reply)
        if status >= 500:
            return _Failure(f"{self.service} returned {_status_text(status)}", reply)
        return _Failure(
            f"{self.service} returned {_status_text(status)} ({_quote_body(reply.body)}), "
            "which is not an answer to a submission",
            reply,
        )

    def _authorized(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> _Reply:
        """Send a request with the access token; after a 401, fetch a new token and send it once more.

        A 401 reply is never kept as a receipt, because some services repeat the token in it.
        """
        for renewed in (False, True):
            token = self._access_token()
            reply = self._request(url, self.service, method, body, {**headers, "Authorization": f"Bearer {token}"})
            if reply.status != 401:
                return reply
            if renewed:
                raise _Failure(
                    f"{self.service} rejected the new access token as well ({_status_text(401)}); check "
                    f"release.vca.client_id, release.vca.scope and the secret in {self.settings.client_secret_env}"
                )
            log.info("vca-rest: %s rejected the access token (HTTP 401); fetching a new one", self.service)
            with self._token_lock:
                # Another thread may have replaced the token already.
                if self._token == token:
                    self._token = None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _access_token(self) -> str:
        with self._token_lock:
            return self._fetch_token()

    def _fetch_token(self) -> str:
        """Return the kept token, or fetch a new one when there is none or it is about to expire."""
        if self._token is not None and (self._renew_at is None or time.monotonic() < self._renew_at):
            return self._token
        form = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": self.settings.client_id,
                "client_secret": self._client_secret,
                "scope": self.settings.scope,
            }
        ).encode("ascii")
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}

        started = time.monotonic()
        # Token replies are never kept as receipts, because a malformed one may still hold a token.
        reply = self._request(self.settings.token_url, self.token_service, "POST", form, headers)
        check = f"check release.vca.client_id, release.vca.scope and the secret in {self.settings.client_secret_env}"
        if reply.status in (400, 401):
            try:
                error = _quote(str(_json_object(reply, self.token_service, keep=False).get("error") or "no error code"))
            except _Failure:
                error = "no error code"
            raise _Failure(f"{self.token_service} rejected the client credentials ({error}); {check}")
        if reply.status != 200:
            raise _Failure(f"{self.token_service} returned {_status_text(reply.status)}")

        data = _json_object(reply, self.token_service, keep=False)
        token = data.get("access_token")
        if not isinstance(token, str) or not _ACCESS_TOKEN.match(token):
            raise _Failure(f"{self.token_service} sent a malformed reply (no valid access_token)")
        self._secrets.add(token)
        token_type = data.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise _Failure(f"{self.token_service} sent a token that is not a Bearer token")

        lifetime = data.get("expires_in")
        if isinstance(lifetime, int | float) and not isinstance(lifetime, bool) and lifetime > 0:
            # Renew 30 s before the end, or halfway for tokens that live less than a minute.
            self._renew_at = started + lifetime - min(30.0, lifetime / 2)
        else:
            self._renew_at = None
        self._token = token
        return token

    def _submission_id(self, reply: _Reply) -> str:
        value = _json_object(reply, self.service).get("submissionId")
        if not isinstance(value, str) or not _SUBMISSION_ID.match(value):
            raise _Failure(
                f"{self.service} sent a malformed reply (no valid submissionId): {_quote_body(reply.body)}", reply
            )
        return value

    def _poll(self, reference_id: str, submission: str, duplicate: bool) -> Delivery:
        """Ask for the submission's status every poll_interval until the VCA decides or poll_timeout passes."""
        try:
            return self._poll_until_decided(reference_id, submission, duplicate)
        except _Failure as failure:
            # The submission id lets the logs and the next run's 409 be matched to this attempt.
            failure.receipt_id = failure.receipt_id or submission
            raise

    def _poll_until_decided(self, reference_id: str, submission: str, duplicate: bool) -> Delivery:
        url = f"{self._submissions}/{urllib.parse.quote(submission, safe='')}"
        deadline = time.monotonic() + self.settings.poll_timeout
        while True:
            time.sleep(min(self.settings.poll_interval, max(0.0, deadline - time.monotonic())))
            reply = self._authorized("GET", url, None, {"Accept": "application/json"})
            if reply.status != 200:
                raise self._unexpected(reply, "release.vca.base_url")
            data = _json_object(reply, self.service)
            reported = data.get("submissionId", submission)
            if reported != submission:
                raise _Failure(
                    f"{self.service} sent the status of submission {_quote(str(reported))!r} instead of {submission}",
                    reply,
                )
            status = data.get("status")
            if not isinstance(status, str):
                raise _Failure(f"{self.service} sent a malformed reply (no status): {_quote_body(reply.body)}", reply)
            if duplicate:
                subject = f"{self.service} already had {reference_id} as submission {submission}, and"
            else:
                subject = f"{self.service} received {reference_id} as submission {submission}, and"
            if status.lower() == "accepted":
                message = f"{subject} accepted it"
                return Delivery("accepted", message, reply.body, _json(reply), submission, duplicate)
            if status.lower() == "rejected":
                message = f"{subject} rejected it: {self._errors(data) or 'no reason given'}"
                return Delivery("rejected", message, reply.body, _json(reply), submission, duplicate)
            if time.monotonic() >= deadline:
                raise _Failure(
                    f"{self.service} is still processing submission {submission} of {reference_id} "
                    f"(status {_quote(status)!r}) after {self.settings.poll_timeout:g} s; the next run asks again",
                    reply,
                )

    def _errors(self, data: dict[str, Any]) -> str:
        """Return the "errors" of a VCA reply as "code: message; ..." in at most REASON_LIMIT characters."""
        errors = data.get("errors")
        if not isinstance(errors, list):
            return ""
        texts = []
        for error in errors:
            if not isinstance(error, dict):
                continue
            code, text = error.get("code"), error.get("message")
            parts = [str(part) for part in (code, text) if isinstance(part, str | int) and str(part).strip()]
            if parts:
                texts.append(": ".join(parts))
        return _quote("; ".join(texts), REASON_LIMIT)


def _json(reply: _Reply | None) -> str | None:
    if reply is None:
        return None
    return reply.media_type or "application/json"


def _json_object(reply: _Reply, service: str, keep: bool = True) -> dict[str, Any]:
    """Parse a reply of `service` as a JSON object, or raise _Failure, which carries the reply when `keep`."""
    try:
        data = json.loads(reply.body)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        shown = f": {_quote_body(reply.body)}" if keep else ""
        raise _Failure(
            f"{service} sent a malformed reply ({_status_text(reply.status)} without a JSON object){shown}",
            reply if keep else None,
        )
    return data
