"""The layout contract: manifest + config + ``.env`` → the desired container, or a refusal.

This is the one place that knows what a Dreichor runtime container must look
like (docs/design.md §3, the runtime layout).  It is pure: it reads no files and talks
to no engine, so every rule is a table-driven unit test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.errors import Refused
from controller.model.config import Config, HostPaths
from controller.model.conninfo import ConninfoError, parse_conninfo
from controller.model.manifest import (
    Manifest,
    build_manifest,
    has_control_character,
    load_manifest,
    manifest_path,
    manifest_reasons,
    manifest_sha256,
    printable,
)

CONTRACT_VERSION = 1  # bump when the contract changes what a manifest turns into (the quarantine keys on it)
MANAGED_BY = "dreichor-controller"
LABEL_ENVIRONMENT = "io.dreichor.environment"
LABEL_REVISION = "io.dreichor.revision"
LABEL_MANIFEST = "io.dreichor.manifest-sha256"
LABEL_MANAGED_BY = "io.dreichor.managed-by"
CONTAINER_AUDIT = "/var/lib/dreichor/audit-events"
CONTAINER_SNAPSHOTS = "/var/lib/dreichor/snapshots"
RESTART_POLICY = "unless-stopped"
NETWORK_MODE = "bridge"

# Whole-string patterns, used with ``fullmatch``: ``$`` would also match before a final newline.
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_PIN = "pinned by digest '@sha256:<64 lowercase hex>' (layout: reproducible deployments)"


@dataclass(frozen=True)
class ImageRef:
    """An image reference split into repository, optional tag and digest."""

    repository: str
    tag: str | None
    digest: str

    @property
    def pinned(self) -> str:
        """``repository@sha256:…``: what is pulled and run; the tag is informational."""
        return f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class Mount:
    """A read-write bind mount of a host folder."""

    source: str
    target: str


@dataclass(frozen=True)
class DesiredContainer:
    """Everything the controller sets on an environment's runtime container."""

    name: str
    image: str
    env: dict[str, str]
    mounts: tuple[Mount, ...]
    labels: dict[str, str]
    restart_policy: str = RESTART_POLICY
    init: bool = True
    network_mode: str = NETWORK_MODE
    tag: str | None = None
    secret_env: frozenset[str] = field(default_factory=frozenset)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view with secret values masked."""
        return {
            "name": self.name,
            "image": self.image,
            "tag": self.tag,
            "env": {k: ("<from .env>" if k in self.secret_env else v) for k, v in self.env.items()},
            "mounts": [{"source": m.source, "target": m.target} for m in self.mounts],
            "labels": self.labels,
            "restart_policy": self.restart_policy,
            "init": self.init,
            "network_mode": self.network_mode,
            "ports": [],
            "privileged": False,
        }


def container_name(environment: str) -> str:
    """The layout's name for an environment's runtime container."""
    return f"dreichor-runtime-{environment}"


def keep_reference(pinned: str, environment: str) -> str:
    """The local tag that keeps an applied image on the host, so a rollback or repair
    works when the registry has lost it or someone removed its digest reference."""
    return f"dreichor/keep-{environment}:{pinned.rpartition(':')[2]}"


def runtime_mounts(paths: HostPaths) -> tuple[Mount, ...]:
    """The layout's two bind mounts, and nothing else."""
    return (
        Mount(str(paths.audit_events), CONTAINER_AUDIT),
        Mount(str(paths.runtime_snapshots), CONTAINER_SNAPSHOTS),
    )


def parse_image(image: str, *, repository: str, environment: str) -> ImageRef:
    """Check an image reference against the configured repository and the digest rule."""
    name, at, digest = image.partition("@")
    reasons: list[str] = []
    if not at:
        reasons.append(f"image '{printable(image)}' is not {_PIN}")
    elif not _DIGEST.fullmatch(digest):
        reasons.append(f"image digest '{printable(digest)}' is malformed: must be {_PIN}")
    repo, tag = _split_tag(name)
    if repo != repository:
        reasons.append(
            f"image repository '{printable(repo)}' is not the configured '{repository}' (layout: image source)"
        )
    if tag is not None and not _TAG.fullmatch(tag):
        reasons.append(f"image tag '{printable(tag)}' is not a valid tag")
    if tag == "latest" and environment == "prod":
        reasons.append("image tag 'latest' is refused in prod, even next to a digest (layout: image source)")
    if reasons:
        raise Refused(reasons)
    return ImageRef(repository=repo, tag=tag, digest=digest)


def _split_tag(name: str) -> tuple[str, str | None]:
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, None


def database_reasons(database_url: str | None, *, environment: str) -> list[str]:
    """Why ``DATABASE_URL`` is unacceptable for ``environment``, if it is.

    Judged as libpq reads it (``controller.model.conninfo``): the database it would
    connect to — ``?dbname=`` over the path, percent-decoded — must be exactly
    ``dreichor_<env>``, named explicitly (without one libpq falls back to the
    user name or ``$PGDATABASE``).  Reasons never quote the string: it holds a password.
    """
    if not database_url:
        return ["the environment's .env has no DATABASE_URL (layout: access is via DATABASE_URL)"]
    if has_control_character(database_url):
        return [".env DATABASE_URL holds a control character: write it on one line of printable text"]
    try:
        database = parse_conninfo(database_url).get("dbname")
    except ConninfoError as exc:
        return [
            f".env DATABASE_URL is not a connection string libpq accepts: {exc} (layout: access is via DATABASE_URL)"
        ]
    expected = f"dreichor_{environment}"
    if database is None:
        return [
            f".env DATABASE_URL names no database, so libpq would pick one from the user name or the "
            f"environment: name '{expected}' (postgresql://…/{expected}) (layout: separate databases per environment)"
        ]
    if database != expected:
        return [
            f".env DATABASE_URL names database '{printable(database)}', not '{expected}' "
            "(layout: separate databases per environment)"
        ]
    return []


def derive_container(
    manifest: Manifest,
    *,
    repository: str,
    paths: HostPaths,
    dotenv: Mapping[str, str] | None,
    manifest_sha256: str,
    revision: str = "",
) -> DesiredContainer:
    """Apply the layout contract; ``dotenv=None`` means offline (DATABASE_URL unchecked)."""
    environment = manifest.environment
    reasons: list[str] = []
    try:
        ref: ImageRef | None = parse_image(manifest.image, repository=repository, environment=environment)
    except Refused as exc:
        reasons += exc.reasons
        ref = None
    env = dict(sorted(manifest.env.items()))
    if dotenv is not None:
        reasons += database_reasons(dotenv.get("DATABASE_URL"), environment=environment)
        env["DATABASE_URL"] = dotenv.get("DATABASE_URL", "")
    if reasons or ref is None:
        raise Refused(reasons)
    return DesiredContainer(
        name=container_name(environment),
        image=ref.pinned,
        tag=ref.tag,
        env=env,
        mounts=runtime_mounts(paths),
        labels={
            LABEL_ENVIRONMENT: environment,
            LABEL_REVISION: revision,
            LABEL_MANIFEST: manifest_sha256,
            LABEL_MANAGED_BY: MANAGED_BY,
        },
        secret_env=frozenset({"DATABASE_URL"}) if dotenv is not None else frozenset(),
    )


def desired_for(config: Config, data: bytes, *, revision: str, dotenv: Mapping[str, str] | None) -> DesiredContainer:
    """``revision``'s manifest (its bytes) under the host's config: how the pass and ``verify`` read it.

    ``dotenv``: the environment's ``.env`` (None: not judged here, as ``verify`` does not).
    """
    return desired_from_bytes(
        data,
        environment=config.environment,
        repository=config.image.repository,
        paths=config.paths,
        dotenv=dotenv,
        revision=revision,
        what=f"{manifest_path(config.environment)} at {revision[:12]}",
    )


def desired_from_bytes(
    data: bytes,
    *,
    environment: str,
    repository: str,
    paths: HostPaths,
    dotenv: Mapping[str, str] | None,
    revision: str = "",
    what: str = "manifest",
) -> DesiredContainer:
    """The whole check for one manifest file's bytes, collecting every reason it has."""
    raw = load_manifest(data, what=what)
    reasons = manifest_reasons(raw, environment=environment)
    image = raw.get("image")
    if isinstance(image, str):
        try:
            parse_image(image, repository=repository, environment=environment)
        except Refused as exc:
            reasons += exc.reasons
    if reasons:
        raise Refused(reasons)
    manifest = build_manifest(raw)
    return derive_container(
        manifest,
        repository=repository,
        paths=paths,
        dotenv=dotenv,
        manifest_sha256=manifest_sha256(data),
        revision=revision,
    )
