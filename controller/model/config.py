"""The controller's configuration (``controller.yaml``) and the host paths derived from it.

One model per concern, each field documented.  Unknown keys are an error so a
typo cannot silently fall back to a default.  Every host path derives from
``root`` and ``environment`` (the runtime layout fixes them); trust files are
resolved against the config file's folder.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator
from pydantic_core import ErrorDetails

from controller.errors import ConfigError, Refused
from controller.model.durations import parse_duration
from controller.model.environments import Environment
from controller.model.safe_yaml import did_you_mean, line_of, load_mapping
from controller.model.windows import WindowsConfig

DEFAULT_REPOSITORY = "ghcr.io/ceerkle/dreichor-trading/runtime"
DEFAULT_ROOT = "/opt/dreichor"
API_PORTS: dict[str, int] = {"dev": 3005, "prod": 3006}
MAX_CONFIG_BYTES = 256 * 1024

Seconds = Annotated[StrictInt, Field(ge=1, le=86_400)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFAULT_INTERVAL = 60  # source.interval when the config does not set it


class SourceConfig(_Section):
    """Where the signed manifest repository lives and how often it is polled."""

    url: StrictStr = Field(min_length=1, description="Clone URL: https://, ssh:// or file://.")
    branch: StrictStr = Field(default="main", min_length=1, description="Branch to follow.")
    interval: Seconds = Field(default=DEFAULT_INTERVAL, description="Seconds between polls.")
    timeout: Seconds = Field(default=60, description="Seconds a fetch may take before it fails.")


class TrustConfig(_Section):
    """The host's trust policy; paths relative to the config file's folder."""

    allowed_signers: StrictStr = Field(description="SSH signers, git's allowed_signers format.")
    openpgp_keys: StrictStr | None = Field(default=None, description="Armored OpenPGP keys.")
    revoked_keys: StrictStr | None = Field(default=None, description="Keys never accepted.")
    mode: Literal["first-parent", "head"] = Field(
        default="first-parent", description="Verify every first-parent commit, or the head alone."
    )


class KeylessIdentityConfig(_Section):
    """One signer a keyless certificate may name: the OIDC issuer exactly, the subject exactly or by pattern."""

    issuer: StrictStr = Field(min_length=1, description="The Fulcio issuer extension, compared exactly.")
    subject: StrictStr | None = Field(default=None, min_length=1, description="The SAN, compared exactly.")
    subject_regexp: StrictStr | None = Field(
        default=None, min_length=1, description="A pattern the whole SAN must match (Python re, full match)."
    )

    @model_validator(mode="after")
    def _one_subject(self) -> KeylessIdentityConfig:
        if (self.subject is None) == (self.subject_regexp is None):
            raise ValueError("give exactly one of subject and subject_regexp")
        if self.subject_regexp is not None:
            try:
                re.compile(self.subject_regexp)
            except re.error as exc:
                raise ValueError(f"subject_regexp is not a valid pattern: {exc}") from None
        return self


class KeylessConfig(_Section):
    """Keyless signatures (Fulcio certificate + Rekor entry) checked offline against a pinned trusted root."""

    trusted_root: StrictStr = Field(min_length=1, description="Sigstore trusted_root.json, relative path.")
    identities: list[KeylessIdentityConfig] = Field(min_length=1, max_length=16)


class ImageSignaturesConfig(_Section):
    """Cosign keys or keyless identities, one of which must have signed a digest before its pull (§14)."""

    keys: list[StrictStr] = Field(default=[], max_length=16, description="PEM public keys, relative paths.")
    keyless: KeylessConfig | None = None

    @model_validator(mode="after")
    def _some_signer(self) -> ImageSignaturesConfig:
        if not self.keys and self.keyless is None:
            raise ValueError("name a key in image.signatures.keys, or image.signatures.keyless")
        return self


class ProvenanceConfig(_Section):
    """A SLSA provenance attestation must name the digest and the source it was built from (docs/design.md §14)."""

    source_repository: StrictStr = Field(min_length=1, description="e.g. https://github.com/OWNER/REPO")
    source_ref: StrictStr | None = Field(default=None, min_length=1, description="e.g. refs/heads/main, exact.")
    identities: list[KeylessIdentityConfig] = Field(min_length=1, max_length=16)


class ImageConfig(_Section):
    """The only image repository a manifest may name, and who must have signed its images."""

    repository: StrictStr = Field(default=DEFAULT_REPOSITORY, min_length=1)
    signatures: ImageSignaturesConfig | None = None
    provenance: ProvenanceConfig | None = None

    @model_validator(mode="after")
    def _provenance_needs_a_root(self) -> ImageConfig:
        if self.provenance is not None and (self.signatures is None or self.signatures.keyless is None):
            raise ValueError("provenance needs image.signatures.keyless.trusted_root to verify against")
        return self

    @model_validator(mode="after")
    def _check_registry_host(self) -> ImageConfig:
        # Docker reads a first part without '.' or ':' (and not localhost) as a Docker Hub path, so
        # registry credentials would go to a host of that name: the registry must be named.
        first, slash, _ = self.repository.partition("/")
        if not slash or not ("." in first or ":" in first or first == "localhost"):
            raise ValueError(
                f"image.repository {self.repository!r} names no registry host: write it as "
                "host/path, e.g. ghcr.io/owner/name (Docker Hub is docker.io/owner/name)"
            )
        return self


class DockerConfig(_Section):
    """How to reach the Docker Engine."""

    url: StrictStr = Field(default="unix:///var/run/docker.sock", min_length=1)
    mode: Literal["container", "swarm"] = Field(
        default="container",
        description="container: one container on this engine; swarm: a one-replica service on a manager (§13).",
    )


class AccessConfig(_Section):
    """Cloudflare Access in front of the API; without it ``POST /sync`` is refused."""

    team_domain: StrictStr = Field(min_length=1)
    audience: StrictStr = Field(min_length=1)
    jwks_url: StrictStr | None = None
    allowed_emails: list[StrictStr] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_https(self) -> AccessConfig:
        for key, value in (("team_domain", self.team_domain), ("jwks_url", self.jwks_url)):
            if value is not None and not is_https_or_loopback(value):
                raise ValueError(f"api.access.{key} {value!r} must be https:// (http:// only on loopback)")
        return self


class ApiConfig(_Section):
    """The loopback HTTP API; the port defaults from the environment (dev 3005, prod 3006)."""

    listen: StrictStr | None = Field(default=None, description="host:port, loopback only.")
    access: AccessConfig | None = None


class HealthConfig(_Section):
    """How long a new container has to prove itself before it is rolled back."""

    timeout: Seconds = Field(default=60, description="Seconds to become healthy.")
    stable: Seconds = Field(default=10, description="Seconds running without restart (no HEALTHCHECK).")


NotifyEvent = Literal[
    "applied",
    "unchanged",
    "progressing",
    "refused",
    "rolled_back",
    "failed",
    "recovered",
    "drift_repaired",
    "stale",
    "suspended",
    "resumed",
    "waiting_approval",
    "waiting_window",
]
DEFAULT_NOTIFY_EVENTS: tuple[NotifyEvent, ...] = (
    "refused",
    "rolled_back",
    "failed",
    "recovered",
    "drift_repaired",
    "stale",
    "suspended",
    "resumed",
    "applied",
    "waiting_approval",
    "waiting_window",
)


class NotifyConfig(_Section):
    """Where decisions are told (Apprise URLs) and which ones; docs/design.md §12."""

    urls: list[StrictStr] = Field(
        default_factory=list, description='Apprise URLs; "${NAME}" is replaced from the .env file.'
    )
    events: list[NotifyEvent] = Field(
        default_factory=lambda: list(DEFAULT_NOTIFY_EVENTS), description="Decision kinds that are told."
    )
    repeat: Annotated[StrictInt, Field(ge=60, le=7 * 86_400)] = Field(
        default=3600, description="Seconds before the same unresolved problem is told again."
    )


DEFAULT_MAX_AGE = "7d"  # approvals.max_age when the host does not set it


_FINGERPRINT = re.compile(r"^[0-9A-F]{40}([0-9A-F]{24})?$")
_PERSON = re.compile(r"^[^\s,\x00-\x1f\x7f]{1,64}$")


def fingerprint_of(text: str) -> str:
    """An OpenPGP fingerprint as the controller compares it: 40 (or 64) uppercase hex, no spaces or ``0x``."""
    return text.replace(" ", "").removeprefix("0x").removeprefix("0X").upper()


class WithdrawnApproval(_Section):
    """One withdrawal: an approval file by its SHA-256, or a person's approvals created before a time."""

    sha256: StrictStr | None = Field(default=None, description="SHA-256 of an approval file's bytes.")
    person: StrictStr | None = Field(default=None, min_length=1, description="An approver, as named on this host.")
    not_before: datetime | None = Field(
        default=None, description="With person: their approvals created before this time do not count."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> WithdrawnApproval:
        if (self.sha256 is None) == (self.person is None):
            raise ValueError("give either sha256 (one approval file) or person with not_before")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"sha256 {self.sha256[:80]!r} is not 64 lowercase hex digits")
        if self.person is not None and (self.not_before is None or self.not_before.tzinfo is None):
            raise ValueError("person needs not_before, a time with its zone (e.g. 2026-12-05T10:00:00Z)")
        return self


class ApprovalsConfig(_Section):
    """k named people must approve an environment's content before it is applied (docs/design.md §15)."""

    threshold: Annotated[StrictInt, Field(ge=1, le=32)] = Field(description="Distinct people who must approve.")
    approvers: StrictStr = Field(min_length=1, description="allowed_signers format; the principal is the person.")
    openpgp_keys: StrictStr | None = Field(
        default=None, description="Armored OpenPGP keys of approvers; each is named in openpgp_approvers."
    )
    openpgp_approvers: dict[StrictStr, StrictStr] = Field(
        default_factory=dict,
        description="Primary fingerprint of an OpenPGP key in openpgp_keys -> the person it belongs to.",
    )
    repository: StrictStr | None = Field(
        default=None, min_length=1, description="The name statements carry; default derived from source.url."
    )
    max_age: StrictStr = Field(default=DEFAULT_MAX_AGE, description="Longest validity an approval may claim.")
    withdrawn: list[WithdrawnApproval] = Field(
        default_factory=list, max_length=1024, description="Approvals that no longer count on this host."
    )

    @model_validator(mode="after")
    def _check_max_age(self) -> ApprovalsConfig:
        if parse_duration(self.max_age) > timedelta(days=366):
            raise ValueError(f"approvals.max_age {self.max_age!r} is longer than a year")
        return self

    @model_validator(mode="after")
    def _one_person_per_key(self) -> ApprovalsConfig:
        owners: dict[str, str] = {}
        for written, person in self.openpgp_approvers.items():
            fingerprint = fingerprint_of(written)
            if not _FINGERPRINT.match(fingerprint):
                raise ValueError(f"openpgp_approvers: {written[:80]!r} is not a full OpenPGP fingerprint (40 hex)")
            if not _PERSON.match(person):
                raise ValueError(f"openpgp_approvers: {person[:80]!r} is not a name (no spaces, commas or controls)")
            if owners.setdefault(fingerprint, person) != person:
                raise ValueError(
                    f"openpgp_approvers: key {fingerprint} is listed for both {owners[fingerprint]} and {person}"
                )
        return self

    @property
    def max_validity(self) -> timedelta:
        """``max_age`` as a duration."""
        return parse_duration(self.max_age)

    @property
    def openpgp_people(self) -> dict[str, str]:
        """Primary fingerprint (normalised) → person."""
        return {fingerprint_of(written): person for written, person in self.openpgp_approvers.items()}


def repository_name(url: str) -> str:
    """``github.com/owner/name`` from a clone URL (https, ssh or scp-like ``git@host:owner/name.git``).

    The approver's ``approve`` and the host derive the name the same way, so the two agree on it
    without configuration; a ``file://`` URL gives its path.
    """
    text = url.strip()
    scp = re.match(r"^[^/@:]+@([^/:]+):(?!//)(.+)$", text)
    if scp:
        host, path = scp.group(1), scp.group(2)
    else:
        parts = urlsplit(text)
        host, path = (parts.hostname or "").lower(), parts.path
    path = path.strip("/")
    path = path[: -len(".git")] if path.endswith(".git") else path
    return f"{host}/{path}" if host else f"/{path}"


class GithubConfig(_Section):
    """Commit statuses on the manifest repository; the token is GITHUB_TOKEN in the .env file."""

    repository: StrictStr = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", description="owner/name.")
    api_url: StrictStr = Field(default="https://api.github.com", description="GitHub's REST API base URL.")

    @model_validator(mode="after")
    def _check_api_url(self) -> GithubConfig:
        if not is_https_or_loopback(self.api_url):
            raise ValueError(f"github.api_url {self.api_url!r} must be https:// (http:// only on loopback)")
        return self


class Config(_Section):
    """A whole ``controller.yaml``."""

    environment: Environment
    root: StrictStr = DEFAULT_ROOT
    source: SourceConfig
    trust: TrustConfig
    image: ImageConfig = ImageConfig()
    docker: DockerConfig = DockerConfig()
    api: ApiConfig = ApiConfig()
    health: HealthConfig = HealthConfig()
    notify: NotifyConfig | None = None
    approvals: ApprovalsConfig | None = None
    windows: WindowsConfig | None = None  # deploy windows and freezes (docs/design.md §18)
    github: GithubConfig | None = None

    @model_validator(mode="after")
    def _check_listen(self) -> Config:
        host, _ = split_listen(self.listen)
        if not is_loopback(host):
            raise ValueError(f"api.listen {self.listen!r} is not a loopback address (layout: 127.0.0.1 only)")
        return self

    @property
    def listen(self) -> str:
        """The API address, with the environment's port by default."""
        return self.api.listen or f"127.0.0.1:{API_PORTS[self.environment]}"

    @property
    def approval_repository(self) -> str:
        """The repository every approval statement must name: ``approvals.repository``, else from ``source.url``."""
        configured = self.approvals.repository if self.approvals else None
        return configured or repository_name(self.source.url)

    @property
    def paths(self) -> HostPaths:
        """Host paths of this environment."""
        return _host_paths(self.root, self.environment)


class HostPaths:
    """The files of one environment on the host (docs/design.md §4)."""

    def __init__(self, root: Path, environment: str) -> None:
        self.root = root
        self.environment = environment
        self.env_dir = root / environment
        self.agent_dir = self.env_dir / "deploy-agent"
        self.dotenv = self.agent_dir / ".env"
        self.config = self.agent_dir / "controller.yaml"
        self.trust_dir = self.agent_dir / "trust"
        self.known_hosts = self.trust_dir / "known_hosts"  # ssh sources: the git server's host key
        self.state = self.agent_dir / "state"
        self.status = self.state / "status.json"
        self.snapshots = self.state / "snapshots"
        self.audit = self.state / "audit.jsonl"
        self.watermark = self.state / "watermark"
        self.journal = self.state / "inflight.json"
        self.repo = self.state / "repo"
        self.lock = self.state / "controller.lock"
        self.pass_lock = self.state / "pass.lock"
        self.suspended_marker = self.state / "suspended"
        self.notifications = self.state / "notifications.json"
        self.deliveries = self.state / "webhook-deliveries.json"
        self.audit_events = self.env_dir / "volumes" / "audit-events"
        self.runtime_snapshots = self.env_dir / "volumes" / "snapshots"


@lru_cache(maxsize=16)
def _host_paths(root: str, environment: str) -> HostPaths:
    """One ``HostPaths`` per root and environment: a pass asks for them several times."""
    return HostPaths(Path(root), environment)


def split_listen(listen: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:port`` for IPv6)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"api.listen {listen!r} must be host:port")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: the only hosts plain HTTP and the API may use."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_https_or_loopback(address: str) -> bool:
    """Whether ``address`` is an https:// URL, or plain http:// to a loopback host (tests, a local proxy)."""
    url = urlsplit(address)
    return bool(url.hostname) and (url.scheme == "https" or (url.scheme == "http" and is_loopback(url.hostname or "")))


def load_config(path: Path) -> Config:
    """Read, check and resolve ``controller.yaml``; raise ``ConfigError`` with the reason."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        raw = load_mapping(data, max_bytes=MAX_CONFIG_BYTES, what=f"config {path}")
    except Refused as exc:
        raise ConfigError(str(exc)) from None
    return parse_config(raw, base=path.resolve().parent, name=str(path))


def parse_config(raw: dict[str, object], *, base: Path, name: str = "config") -> Config:
    """Validate a config mapping; trust and cosign key paths become absolute against ``base``."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{name}: {describe_errors(exc, raw)}") from None
    trust = config.trust.model_copy(
        update={
            key: str(base / value)
            for key in ("allowed_signers", "openpgp_keys", "revoked_keys")
            if (value := getattr(config.trust, key)) is not None
        }
    )
    image = config.image
    if image.signatures is not None:
        update: dict[str, object] = {"keys": [str(base / key) for key in image.signatures.keys]}
        if image.signatures.keyless is not None:
            root = str(base / image.signatures.keyless.trusted_root)
            update["keyless"] = image.signatures.keyless.model_copy(update={"trusted_root": root})
        image = image.model_copy(update={"signatures": image.signatures.model_copy(update=update)})
    approvals = config.approvals
    if approvals is not None:
        files = {k: str(base / v) for k in ("approvers", "openpgp_keys") if (v := getattr(approvals, k)) is not None}
        approvals = approvals.model_copy(update=files)
    update = {"trust": trust, "image": image, "approvals": approvals, "root": str(Path(config.root))}
    return config.model_copy(update=update)


REQUIRED = {
    "source.url": "source.url is not set: the controller polls no repository until it names the signed "
    "manifest repository's clone URL (https://, ssh:// or file://)",
}


def describe_errors(exc: ValidationError, raw: object = None) -> str:
    """The validator's errors as one line in the project's words: ``where: what (line N); …``.

    An unknown key is offered the closest allowed key of its section ("did you mean"); with the
    mapping as read from YAML (``raw``), each complaint names its line.
    """
    parts = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        where = ".".join(str(part) for part in loc) or "config"
        if error["type"] == "missing":
            parts.append(REQUIRED.get(where, f"{where} is not set, and it has no default"))
            continue
        line = line_of(raw, loc)
        parts.append(_in_our_words(error, where) + (f" (line {line})" if line is not None else ""))
    return "; ".join(parts)


# What a value of the wrong type should have been, by the validator's error type.
_EXPECTED = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "string_type": "text (quote it)",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping of keys",
    "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys",
}
_BOUNDS = {"greater_than": "more than", "greater_than_equal": "at least", "less_than": "less than"}
_BOUNDS |= {"less_than_equal": "at most"}


def _in_our_words(error: ErrorDetails, where: str) -> str:
    """One validator error as a sentence of this project, never the validator's own wording."""
    kind, ctx, got = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "extra_forbidden":
        section = _section_at(error["loc"][:-1])
        return f"{where}: unknown key" + (did_you_mean(str(error["loc"][-1]), section.model_fields) if section else "")
    if kind in _EXPECTED:
        return f"{where} must be {_EXPECTED[kind]}, not {_shown(got)}"
    if kind == "literal_error":
        return f"{where} is {_shown(got)}: it must be {ctx.get('expected', 'another value')}"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()), "?")
        return f"{where} must be {_BOUNDS[kind]} {bound}, not {_shown(got)}"
    if kind in ("too_short", "string_too_short"):
        return f"{where} must not be empty" if ctx.get("min_length") == 1 else f"{where} is too short"
    if kind in ("too_long", "string_too_long"):
        unit = "characters" if kind == "string_too_long" else "entries"
        return f"{where} has more than {ctx.get('max_length', '?')} {unit}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return f"{where}: {ctx['error']}" if where != "config" else str(ctx["error"])
    return f"{where}: {error['msg']}"


def _section_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model of the config section at ``loc`` (list indexes skipped), for its allowed keys."""
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        inner = _model_in(field.annotation) if field is not None else None
        if inner is None:
            return None
        model = inner
    return model


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((found for arg in get_args(annotation) if (found := _model_in(arg)) is not None), None)


def _shown(value: object) -> str:
    """A value as the sentence quotes it: text in quotes and cut short, a mapping or list by its kind."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    text = text if len(text) <= 40 else text[:40] + "…"
    return f"'{text}'" if isinstance(value, str) else text


def default_root() -> Path:
    """The layout's base: ``$DREICHOR_ROOT``, else ``/opt/dreichor``."""
    return Path(os.environ.get("DREICHOR_ROOT") or DEFAULT_ROOT)


def config_path(explicit: str | None, *, environment: str | None = None) -> Path:
    """The config file: ``--config``, else ``<root>/<env>/deploy-agent/controller.yaml`` for ``-e ENV``
    (root: ``$DREICHOR_ROOT`` or ``/opt/dreichor``), else ``$DREICHOR_CONFIG``."""
    if explicit:
        return Path(explicit)
    if environment:
        return HostPaths(default_root(), environment).config
    value = os.environ.get("DREICHOR_CONFIG")
    if not value:
        raise ConfigError("no config given: pass -e ENV, --config PATH, or set DREICHOR_CONFIG")
    return Path(value)
