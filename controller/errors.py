"""The controller's own errors, grouped by what the caller should do next.

A reconcile loop needs one question answered about every failure: is it worth
trying again?  ``Refused`` means no — a person must change the input (a manifest,
a signature, the trust policy).  ``Retryable`` means yes, later — something we
depend on (git, the registry, the Docker Engine) was unreachable.  Anything else
is a bug and is logged with its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class ControllerError(Exception):
    """Base of every error the controller raises on purpose."""


class Refused(ControllerError):
    """The input breaks a rule; retrying the same input cannot succeed.

    Carries every reason found, each one sentence naming the rule, so a person
    fixing a manifest sees all of its problems at once.
    """

    def __init__(self, reasons: str | Iterable[str], *, code: str = "Refused") -> None:
        self.reasons: tuple[str, ...] = (reasons,) if isinstance(reasons, str) else tuple(reasons)
        self.code = code
        super().__init__("; ".join(self.reasons))


class Retryable(ControllerError):
    """A dependency was unreachable or failed transiently; back off and try again."""

    def __init__(self, reason: str, *, code: str = "Unavailable") -> None:
        self.reason = reason
        self.code = code
        super().__init__(reason)


class ConfigError(ControllerError):
    """The controller's own configuration is unusable; nothing can run until it is fixed."""
