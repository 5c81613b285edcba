"""Quarantine by content: what would have run (``content_key``) and what on the host a refusal may
depend on (``host_digest``), with the digests earlier releases computed so their quarantines hold
(``earlier_host_digests``, pinned by ``tests/unit/reconcile/test_quarantine.py``); whether a stored
``records.status.QuarantineKey`` holds a head or a content (``held_head``, ``held_content``)."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.model.config import Config, KeylessIdentityConfig
from controller.model.desired import CONTRACT_VERSION, DesiredContainer
from controller.records.files import file_key
from controller.records.status import QuarantineKey


class HostDigests:
    """``host_digest``, kept while its files stay as they were (stat'ed before they are read) and the
    settings are the same: a no-change pass reads none of them."""

    def __init__(self) -> None:
        self._kept: tuple[object, str] | None = None

    def get(self, config: Config) -> str:
        """The host digest of ``config``'s files and settings as they are now."""
        settings, files = _host_settings(config), _HostFiles.of(config).all()
        key = (settings, tuple(file_key(Path(name)) if name else None for name in files))
        if self._kept is None or self._kept[0] != key:
            self._kept = (key, _digest(settings, files))
        return self._kept[1]


def held_head(stored: str | None, head: str | None, digests: Iterable[str]) -> bool:
    """Whether ``stored`` (the status file's ``quarantined``) holds ``head``, refused before its content was known,
    under this release's host digest or an earlier release's (``digests``)."""
    return head is not None and any(QuarantineKey.of_head(head, d).holds(stored) for d in digests)


def held_content(stored: str | None, desired: DesiredContainer, digests: Iterable[str]) -> bool:
    """Whether ``stored`` holds ``desired``'s content, keyed with this release's host digest or an earlier one's."""
    return stored is not None and any(
        QuarantineKey.of_content(content_key(desired, host=d)).holds(stored) for d in digests
    )


def content_key(desired: DesiredContainer, *, host: str) -> str:
    """What would run, as the quarantine remembers it: image digest, settings, contract version, host files.

    Secret values (from ``.env``) stay out: the host digest already covers that file.
    """
    content = {
        "contract": CONTRACT_VERSION,
        "image": desired.image.rpartition("@")[2],
        "env": {k: v for k, v in desired.env.items() if k not in desired.secret_env},
        "host": host,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class _HostFiles:
    """The files a refusal may depend on, in the groups earlier releases hashed in different orders."""

    keys: tuple[str | None, ...]  # allowed_signers, OpenPGP keys, revoked keys, cosign keys
    approvers: tuple[str | None, ...]
    root: tuple[str, ...]  # the keyless trusted root
    dotenv: str

    @classmethod
    def of(cls, config: Config) -> _HostFiles:
        trust, signatures, approvals = config.trust, config.image.signatures, config.approvals
        return cls(
            keys=(
                trust.allowed_signers,
                trust.openpgp_keys,
                trust.revoked_keys,
                *(signatures.keys if signatures else ()),
            ),
            approvers=(approvals.approvers, approvals.openpgp_keys) if approvals else (),
            root=(signatures.keyless.trusted_root,) if signatures and signatures.keyless else (),
            dotenv=str(config.paths.dotenv),
        )

    def all(self) -> tuple[str | None, ...]:
        """Every file, in the order this release hashes them."""
        return (*self.keys, *self.approvers, self.dotenv, *self.root)


def _host_settings(config: Config) -> bytes:
    """The settings a verdict depends on: the image repository, the trust mode, keyless identities, provenance.

    Named field by field, so a setting added to the config later changes no digest (and lifts no quarantine).
    """
    signatures, provenance = config.image.signatures, config.image.provenance
    settings: dict[str, object] = {"repository": config.image.repository, "trust_mode": config.trust.mode}
    if signatures and signatures.keyless:
        settings["keyless"] = _identities(signatures.keyless.identities)
    if provenance:
        source = [provenance.source_repository, provenance.source_ref]
        settings["provenance"] = [*source, _identities(provenance.identities)]
    return json.dumps(settings, sort_keys=True).encode()


def _identities(identities: list[KeylessIdentityConfig]) -> list[list[str | None]]:
    return [[i.issuer, i.subject, i.subject_regexp] for i in identities]


def host_digest(config: Config) -> str:
    """SHA-256 of what on the host a refusal may depend on: its files (``_HostFiles``) and settings
    (``_host_settings``).  A change to either lifts a quarantine: the release is judged again."""
    return _digest(_host_settings(config), _HostFiles.of(config).all())


def _file_bytes(name: str | None) -> bytes:
    try:
        return Path(name).read_bytes() if name else b""
    except OSError:
        return b"\0missing"


def _digest(settings: bytes, files: Iterable[str | None], read: Callable[[str | None], bytes] = _file_bytes) -> str:
    digest = hashlib.sha256(settings)
    for name in files:
        digest.update(read(name))
    return digest.hexdigest()[:16]


_IDENTITY = {"issuer": True, "subject": True, "subject_regexp": True}
_IMAGE_73B9BD7: dict[str, Any] = {  # the image settings as that release had them, and no field added since
    "repository": True,
    "signatures": {"keys": True, "keyless": {"trusted_root": True, "identities": {"__all__": _IDENTITY}}},
    "provenance": {"source_repository": True, "source_ref": True, "identities": {"__all__": _IDENTITY}},
}
_APPROVALS_73B9BD7 = {"threshold", "approvers", "openpgp_keys", "repository", "max_age"}


def earlier_host_digests(config: Config) -> tuple[str, ...]:
    """The host digest as earlier releases computed it, so a quarantine one of them wrote still holds:
    cd76640 and before hashed the files only (no trusted root); 73b9bd7 hashed the whole ``image`` and
    ``approvals`` settings first, and the trusted root before the approvers.  Each file is read once."""
    files = _HostFiles.of(config)
    read = functools.cache(_file_bytes)
    files_only = _digest(b"", (*files.keys, *files.approvers, files.dotenv), read)
    settings = config.image.model_dump_json(include=_IMAGE_73B9BD7).encode()
    if config.approvals:
        approvals = config.approvals
        if "max_age" not in approvals.model_fields_set:  # that release's default, before it became 7d
            approvals = approvals.model_copy(update={"max_age": "14d"})
        settings += approvals.model_dump_json(include=_APPROVALS_73B9BD7).encode()
    settings_first = _digest(settings, (*files.keys, *files.root, *files.approvers, files.dotenv), read)
    return (files_only, settings_first)
