"""The controller's own errors, grouped by what the caller should do next.

A reconcile loop needs one question answered about every failure: is it worth
trying again?  ``Refused`` means no — a person must change the input (a manifest,
a signature, the trust policy).  ``Retryable`` means yes, later — something we
depend on (git, the registry, the Docker Engine) was unreachable.  Anything else
is a bug and is logged with its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from controller.untrusted import bounded


class Reason(StrEnum):
    """Why a pass ended as it did: one word shared by the status file, the audit log, the logs and the metrics.

    A ``StrEnum``, so a reason compares equal to (and serialises as) its plain
    name; code that still passes the name as a string is converted at
    ``Refused``/``Retryable``, and a name that is not here fails loudly there.
    """

    # refused: a person must change the input
    REFUSED = "Refused"
    UNSIGNED = "Unsigned"
    BAD_SIGNATURE = "BadSignature"
    MALFORMED_SIGNATURE = "MalformedSignature"
    UNTRUSTED_SIGNER = "UntrustedSigner"
    EXPIRED_KEY = "ExpiredKey"
    REVOKED_KEY = "RevokedKey"
    BAD_TRUST_POLICY = "BadTrustPolicy"
    UNKNOWN_REVISION = "UnknownRevision"
    HISTORY_REWRITTEN = "HistoryRewritten"
    QUARANTINED = "Quarantined"
    STATUS_UNREADABLE = "StatusUnreadable"
    MANIFEST_MISSING = "ManifestMissing"
    MANIFEST_TOO_LARGE = "ManifestTooLarge"
    NOT_MANAGED = "NotManaged"
    NOT_FOUND = "NotFound"
    IMAGE_NOT_FOUND = "ImageNotFound"
    DIGEST_MISMATCH = "DigestMismatch"
    ISOLATION = "Isolation"
    BAD_SNAPSHOT = "BadSnapshot"
    BAD_REFERENCE = "BadReference"
    IMAGE_UNSIGNED = "ImageUnsigned"
    UNTRUSTED_IMAGE_SIGNATURE = "UntrustedImageSignature"
    BAD_IMAGE_SIGNATURE = "BadImageSignature"
    REGISTRY_ANSWER_TOO_LARGE = "RegistryAnswerTooLarge"
    SWARM_PLACEMENT = "SwarmPlacement"  # the swarm cannot place the runtime: the host's fault, not the revision's
    MODE_CONFLICT = "ModeConflict"  # the other docker.mode's runtime or journal is there: the host's to settle
    BAD_APPROVALS = "BadApprovals"  # the approvals folder breaks its limits (count, size, symlinks, encoding)
    # rolled back: the new container failed its health gate
    HEALTH_GATE_FAILED = "HealthGateFailed"
    # retryable: something we depend on was unreachable
    UNAVAILABLE = "Unavailable"
    FETCH_FAILED = "FetchFailed"
    ENGINE_UNAVAILABLE = "EngineUnavailable"
    HOST_CONFIG = "HostConfig"
    STATE_IO = "StateIO"
    REGISTRY_UNAVAILABLE = "RegistryUnavailable"
    REGISTRY_AUTH = "RegistryAuth"
    # held: the change waits for approvals (docs/design.md §15), no refusal
    AWAITING_APPROVALS = "AwaitingApprovals"
    AWAITING_WINDOW = "AwaitingWindow"  # held: outside the deploy windows (docs/design.md §18)
    # no decision
    IN_SYNC = "InSync"
    APPLIED = "Applied"
    SUSPENDED = "Suspended"
    INTERNAL_ERROR = "InternalError"


class ControllerError(Exception):
    """Base of every error the controller raises on purpose."""


class Refused(ControllerError):
    """The input breaks a rule; retrying the same input cannot succeed.

    Carries every reason found, each one sentence naming the rule, so a person
    fixing a manifest sees all of its problems at once.  Each reason may quote
    untrusted text, so each is bounded (``untrusted.bounded``) here, once.
    """

    def __init__(self, reasons: str | Iterable[str], *, code: Reason | str = Reason.REFUSED) -> None:
        raw = (reasons,) if isinstance(reasons, str) else tuple(reasons)
        self.reasons: tuple[str, ...] = tuple(bounded(reason) for reason in raw)
        self.code = Reason(code)
        super().__init__("; ".join(self.reasons))


class Retryable(ControllerError):
    """A dependency was unreachable or failed transiently; back off and try again."""

    def __init__(self, reason: str, *, code: Reason | str = Reason.UNAVAILABLE) -> None:
        self.reason = bounded(reason)
        self.code = Reason(code)
        super().__init__(self.reason)


class ConfigError(ControllerError):
    """The controller's own configuration is unusable; nothing can run until it is fixed."""
