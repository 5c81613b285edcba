"""Keyless Sigstore bundles (v0.3, and the v0.1/v0.2 GitHub and cosign write), verified by sigstore-python offline.

sigstore-python does the cryptography a bundle needs: the certificate chained to a Fulcio CA of
the pinned root at the log's time, the SCT, the Rekor inclusion proof with its signed checkpoint
and the inclusion promise, and the binding of the log entry to this signature.  It is given a
``TrustedRoot`` read from the host's file, never the network (``Verifier(trusted_root=...)``).
Its identity policies are not ours: ``Identity`` takes any SAN and has no full-match pattern, so
the policy here is the controller's own (``controller.signatures.images.keyless.match_identity``).

What the bundle signed must name exactly the declared digest: a DSSE envelope's in-toto statement
(checked by ``controller.signatures.images.cosign.check_statement``), or a message signature whose
message digest *is* the image manifest's digest.

sigstore-python is imported at first use: a host without keyless signatures never loads it (it
costs a process about 10 MB and 0.15 s at start).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controller.errors import ConfigError, Reason, Refused
from controller.signatures.images.cosign import MAX_BUNDLE_BYTES, Unreadable, check_statement
from controller.signatures.images.keyless import KeylessIdentity, KeylessSigner, match_identity
from controller.signatures.images.trusted_root import TrustedRoot

if TYPE_CHECKING:
    from sigstore.models import Bundle
    from sigstore.verify import Verifier


@dataclass(frozen=True)
class BundleTrust:
    """sigstore-python's verifier over the host's pinned trusted root (read once per pass)."""

    path: str
    verifier: Verifier = field(repr=False)

    @classmethod
    def load(cls, path: str) -> BundleTrust:
        """The verifier for ``path``; a root sigstore-python cannot read is a ``ConfigError`` naming it."""
        from sigstore.errors import Error as SigstoreError  # noqa: PLC0415 loaded only where keyless is on
        from sigstore.models import TrustedRoot as SigstoreTrustedRoot  # noqa: PLC0415
        from sigstore.verify import Verifier  # noqa: PLC0415

        try:
            return cls(path, Verifier(trusted_root=SigstoreTrustedRoot.from_file(path)))
        except (OSError, ValueError, SigstoreError) as exc:
            raise ConfigError(f"the Sigstore trusted root {path} is not usable: {str(exc)[:200]}") from None


@dataclass(frozen=True)
class Keyless:
    """Keyless signers the host trusts: the pinned root (read for both formats) and the identities."""

    root: TrustedRoot
    bundles: BundleTrust
    identities: tuple[KeylessIdentity, ...]


@dataclass(frozen=True)
class _IdentityPolicy:
    """sigstore-python's ``VerificationPolicy`` protocol, answered by the controller's identity match."""

    identities: Sequence[KeylessIdentity]
    matched: list[KeylessSigner] = field(default_factory=list)

    def verify(self, cert: Any) -> None:
        """Raise sigstore's ``VerificationError`` unless the certificate is a configured identity."""
        from sigstore.errors import VerificationError  # noqa: PLC0415 loaded only where keyless is on

        try:
            self.matched.append(match_identity(cert, self.identities))
        except Refused as exc:
            raise VerificationError(str(exc)) from None


def check_keyless_bundle(
    bundle: bytes,
    *,
    digest: str,
    trust: BundleTrust,
    identities: Sequence[KeylessIdentity],
    predicate_types: Sequence[str],
) -> tuple[KeylessSigner, dict[str, Any] | None]:
    """Who signed a bundle about ``digest`` and, for a DSSE bundle, its verified in-toto statement.

    A message-signature bundle counts only when ``predicate_types`` allow a plain signature (the
    cosign signing type): it says nothing of provenance.
    """
    from sigstore.errors import Error as SigstoreError  # noqa: PLC0415 loaded only where keyless is on
    from sigstore.hashes import Hashed  # noqa: PLC0415
    from sigstore_models.common.v1 import HashAlgorithm  # noqa: PLC0415

    parsed = _parse(bundle)
    policy = _IdentityPolicy(identities)
    try:
        if parsed._dsse_envelope is not None:
            payload_type, payload = trust.verifier.verify_dsse(parsed, policy)
        else:
            hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(_hex(digest)))
            trust.verifier.verify_artifact(hashed, parsed, policy)
            payload_type, payload = "", b""
    except (SigstoreError, ValueError) as exc:
        raise _refused(f"keyless bundle does not verify: {str(exc)[:300]}") from None
    if not policy.matched:
        raise _refused("keyless bundle's certificate was not matched to an identity")
    if not payload_type:
        if "https://sigstore.dev/cosign/sign/v1" not in predicate_types:
            raise _refused("a message-signature bundle is no provenance attestation")
        return policy.matched[0], None
    return policy.matched[0], check_statement(payload_type, payload, digest=digest, predicate_types=predicate_types)


def _parse(bundle: bytes) -> Bundle:
    from sigstore.errors import Error as SigstoreError  # noqa: PLC0415 loaded only where keyless is on
    from sigstore.models import Bundle  # noqa: PLC0415

    if len(bundle) > MAX_BUNDLE_BYTES:
        raise Unreadable(f"bundle is larger than {MAX_BUNDLE_BYTES} bytes", code=Reason.BAD_IMAGE_SIGNATURE)
    try:
        return Bundle.from_json(bundle)
    except (SigstoreError, ValueError, TypeError, KeyError) as exc:
        reason = f"keyless bundle is not a readable Sigstore bundle: {str(exc)[:200]}"
        raise Unreadable(reason, code=Reason.BAD_IMAGE_SIGNATURE) from None  # the registry's fault: retried


def _hex(digest: str) -> str:
    if not digest.startswith("sha256:"):
        raise _refused(f"declared digest {digest[:80]} is not sha256")
    return digest.removeprefix("sha256:")


def _refused(reason: str) -> Refused:
    return Refused(reason, code=Reason.BAD_IMAGE_SIGNATURE)
