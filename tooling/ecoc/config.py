"""`ecoc.yaml`: the settings of one compliance repository, found by walking up from a folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import pydantic

from ecoc.errors import ConfigError
from ecoc.files import CONFIG_NAME, find_root
from ecoc.model.approval import Owners
from ecoc.model.nodes import require_mapping, validate_node
from ecoc.yamlload import Source, load_yaml

_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


class SchemaSettings(pydantic.BaseModel):
    """Location of the official IVI XSD and the sha256 digests it may have."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    sha256: tuple[str, ...] = ()

    @pydantic.field_validator("sha256", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        values = (value,) if isinstance(value, str) else value
        return (
            tuple(v.lower() if isinstance(v, str) else v for v in values)
            if isinstance(values, tuple | list)
            else values
        )

    @pydantic.field_validator("sha256")
    @classmethod
    def _lowercase_hex(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for digest in value:
            if not _SHA256.match(digest):
                raise ValueError(f"{digest!r} is not a sha256 digest (64 lower-case hex digits)")
        return value


class SigningSettings(pydantic.BaseModel):
    """The seal that signs certificates, the anchors that verify them, and who may sign for whom.

    Paths are relative to ecoc.yaml. `key` may be `env:NAME` for key material in an environment
    variable; a passphrase always comes from ECOC_KEY_PASSPHRASE, never from this file.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    key: str | None = None
    cert: str | None = None
    chain: str | None = None
    trust: tuple[str, ...] = ()
    # Add XAdES baseline B-B properties to every signature.
    xades: bool = False
    # The time-stamping authority whose RFC 3161 token makes every signature XAdES B-T.
    timestamp_url: str | None = None
    # Certificate subjects (RFC 4514, shell patterns allowed) by the manufacturer or EU
    # representative name as the approvals give it; a signer must match a name of the certificate.
    signers: dict[str, tuple[str, ...]] = {}


_ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
_HTTPS_URL = r"^https://[^\s]+$"
# Credentials and certificates travel to these services, so plain http is not accepted.
HttpsUrl = Annotated[
    str,
    pydantic.StringConstraints(pattern=_HTTPS_URL),
    pydantic.Field(description="write an https:// URL: the service gets credentials, so plain http is rejected"),
]


class NapSettings(pydantic.BaseModel):
    """A EUCARIS National Access Point's SOAP service, reached over TLS with a client certificate.

    Paths are relative to ecoc.yaml. The client key may be `env:NAME`; its passphrase comes from
    ECOC_NAP_KEY_PASSPHRASE. Without `ca` the server certificate is checked against the system's
    certificate store.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    endpoint: HttpsUrl
    client_cert: str
    client_key: str
    ca: str | None = None
    # The namespace of the delivery message and the SOAPAction header, as the NAP's WSDL names them.
    namespace: str = "urn:ecoc:nap:delivery:1"
    action: str = "urn:ecoc:nap:delivery:1/DeliverIvi"
    connect_timeout: float = pydantic.Field(10.0, gt=0)
    read_timeout: float = pydantic.Field(60.0, gt=0)


class VcaSettings(pydantic.BaseModel):
    """The UK VCA eCoC REST service: OAuth2 client credentials, then POST and status polling."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    base_url: HttpsUrl
    token_url: HttpsUrl
    client_id: str
    # The environment variable holding the client secret; the secret itself is never in this file.
    client_secret_env: Annotated[str, pydantic.StringConstraints(pattern=_ENV_NAME)] = "ECOC_VCA_CLIENT_SECRET"
    scope: str
    manufacturer_id: str
    contact_id: str
    ca: str | None = None
    timeout: float = pydantic.Field(30.0, gt=0)
    poll_interval: float = pydantic.Field(5.0, gt=0)
    poll_timeout: float = pydantic.Field(600.0, gt=0)


class ReleaseSettings(pydantic.BaseModel):
    """How `ecoc release` delivers certificates and publishes the evidence it commits."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    transport: Literal["outbox", "nap-soap", "vca-rest"] | None = None
    # The folder another system uploads from, for the outbox transport (relative to ecoc.yaml).
    outbox: str | None = None
    nap: NapSettings | None = None
    vca: VcaSettings | None = None
    # The git remote that evidence commits are pushed to, when the repository has it.
    remote: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9._][A-Za-z0-9._-]*$")] = "origin"
    # How often a push that lost a race to another push is tried again on the new head.
    push_attempts: int = pydantic.Field(5, ge=1, le=50)
    # HTTPS connections that deliver at the same time; each sends one certificate at a time.
    connections: int = pydantic.Field(4, ge=1, le=32)


# Rules whose findings only inform (warnings and info); a repository may switch these off.
OPTIONAL_RULES = frozenset(
    {
        "vin.check-digit",
        "record.file-name",
        "approval.framework",
        "model.number-in-text",
        "model.boolean-in-text",
        "model.number-like-code",
        "model.leading-zero",
        "model.table-replaced",
    }
)


class Settings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    version: int = pydantic.Field(1, ge=1, le=1)
    xsd: SchemaSettings = SchemaSettings()
    owners: Owners = Owners()
    signing: SigningSettings = SigningSettings()
    release: ReleaseSettings = ReleaseSettings()
    disable: tuple[str, ...] = ()
    # The branch that holds approved data: a record merged there is approved.
    main_branch: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9._][A-Za-z0-9._/-]*$")] = "main"

    @pydantic.field_validator("disable")
    @classmethod
    def _optional_rules_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        wrong = [rule for rule in value if rule not in OPTIONAL_RULES]
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)} cannot be disabled; only these built-in checks can: "
                + ", ".join(sorted(OPTIONAL_RULES))
                + " (a rule of rules/ is changed or removed in its file)"
            )
        return value


@dataclass(frozen=True)
class Repository:
    """A compliance repository: the folder that contains ecoc.yaml, and its settings."""

    root: Path
    settings: Settings

    @property
    def approvals_dir(self) -> Path:
        return self.root / "approvals"

    @property
    def records_dir(self) -> Path:
        return self.root / "records"

    def relative(self, path: Path) -> str:
        """`path` relative to the repository root with forward slashes, or as given if outside."""
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def schema_path(self) -> Path | None:
        if self.settings.xsd.path is None:
            return None
        path = Path(self.settings.xsd.path).expanduser()
        return path if path.is_absolute() else self.root / path


def open_repository(start: Path, explicit: bool = False) -> Repository:
    """Find and read the repository that contains `start` (or is `start`, when `explicit`)."""
    if explicit and not (start / CONFIG_NAME).is_file():
        raise ConfigError(
            f"{start}: no {CONFIG_NAME} in this folder", f"pass the folder that holds {CONFIG_NAME} to --repo"
        )
    root = find_root(start)
    path = root / CONFIG_NAME
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror}") from None
    return Repository(root, read_settings(data, root))


def read_settings(data: bytes, root: Path) -> Settings:
    """Parse the content of ecoc.yaml; raise ConfigError naming root/ecoc.yaml when it is invalid."""
    path = root / CONFIG_NAME
    node, findings = load_yaml(data, Source(CONFIG_NAME))
    mapping, shape = require_mapping(node, CONFIG_NAME, CONFIG_NAME)
    findings += shape
    settings = None
    if mapping is not None:
        settings, invalid = validate_node(
            Settings, mapping, "", "the keys of ecoc.yaml are described under Settings in the README"
        )
        findings += invalid
    if findings or settings is None:
        if not findings:
            raise ConfigError(
                f"{path}: invalid settings: the file is empty", "see the README for the keys of ecoc.yaml"
            )
        # Each problem on its own line, at its own position, with the hint of each after the first.
        lines = [
            f"{path}:{f.line}:{f.column}: "
            + ("invalid settings: " if n == 0 else "")
            + f.message
            # The YAML path, unless the message names it already, as for a top-level key.
            + (f" ({f.path})" if f.path and not f.message.endswith(f" {f.path}") else "")
            + (f"; {f.hint}" if n > 0 and f.hint else "")
            for n, f in enumerate(findings)
        ]
        raise ConfigError("\n".join(lines), findings[0].hint)
    return settings
