"""The pinned Sigstore trusted root: the Fulcio CAs, Rekor keys and CT log keys, each with its validity.

Sigstore publishes ``trusted_root.json`` through its TUF repository; the host keeps a copy that a
person refreshes outside any pass (README, "Keyless signatures and build provenance").  This
module reads that copy for the classic keyless verifier (``controller.signatures.images.keyless``)
and refuses a root that is missing, unreadable or expired with a sentence naming the file, so a
pass never guesses and never fetches.  Windows are half-open: ``start <= t < end``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from controller.errors import ConfigError

MAX_ROOT_BYTES = 1024 * 1024
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True)
class Window:
    """When a key or CA of the trusted root may vouch for something: ``start <= t < end`` (no end: open)."""

    start: datetime
    end: datetime | None

    def holds(self, moment: datetime) -> bool:
        """Whether ``moment`` falls in the window."""
        return self.start <= moment and (self.end is None or moment < self.end)


@dataclass(frozen=True)
class CertificateAuthority:
    """A Fulcio CA: its chain (issuing certificate first, root last) and when it issued."""

    chain: tuple[x509.Certificate, ...]
    valid: Window


@dataclass(frozen=True)
class LogKey:
    """A Rekor or CT log's public key, named by its log id (SHA-256 of the DER key)."""

    log_id: bytes
    key: PublicKey
    valid: Window


@dataclass(frozen=True)
class TrustedRoot:
    """The parts of a Sigstore trusted root this module uses, and the file it came from."""

    path: str
    authorities: tuple[CertificateAuthority, ...]
    rekor_keys: tuple[LogKey, ...]
    ct_keys: tuple[LogKey, ...]


def load_trusted_root(path: Path, *, now: datetime) -> TrustedRoot:
    """Read a pinned trusted root; missing, unreadable or expired: ``ConfigError`` naming the file."""
    try:
        data = path.read_bytes()[: MAX_ROOT_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"cannot read the Sigstore trusted root {path}: {exc.strerror}") from None
    try:
        document = json.loads(data)
        root = TrustedRoot(
            str(path),
            tuple(_authority(entry) for entry in document.get("certificateAuthorities") or []),
            tuple(_log_key(entry) for entry in document.get("tlogs") or []),
            tuple(_log_key(entry) for entry in document.get("ctlogs") or []),
        )
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error, RecursionError):
        raise ConfigError(f"the Sigstore trusted root {path} is not a readable trusted_root.json") from None
    if not root.authorities or not root.rekor_keys or not root.ct_keys:
        raise ConfigError(f"the Sigstore trusted root {path} lacks Fulcio CAs, Rekor keys or CT log keys")
    if not any(ca.valid.end is None or ca.valid.end > now for ca in root.authorities) or not any(
        key.valid.end is None or key.valid.end > now for key in root.rekor_keys
    ):
        raise ConfigError(
            f"the Sigstore trusted root {path} has expired: no Fulcio CA or Rekor key in it is valid now; refresh it"
        )
    return root


def _authority(entry: dict[str, Any]) -> CertificateAuthority:
    chain = tuple(
        x509.load_der_x509_certificate(base64.b64decode(c["rawBytes"])) for c in entry["certChain"]["certificates"]
    )
    if not chain:
        raise ValueError("empty chain")
    return CertificateAuthority(chain, _window(entry["validFor"]))


def _log_key(entry: dict[str, Any]) -> LogKey:
    key = serialization.load_der_public_key(base64.b64decode(entry["publicKey"]["rawBytes"]))
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise ValueError("unsupported key")
    return LogKey(base64.b64decode(entry["logId"]["keyId"]), key, _window(entry["publicKey"].get("validFor") or {}))


def _window(valid_for: dict[str, Any]) -> Window:
    start = _time(valid_for["start"]) if valid_for.get("start") else datetime.min.replace(tzinfo=UTC)
    return Window(start, _time(valid_for["end"]) if valid_for.get("end") else None)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
