"""The image check a service and a pass use (docs/design.md §14), behind the small ``ImageCheck`` protocol.

``ImageTrust`` is its one implementation: the host's ``image.signatures`` and ``image.provenance``,
the registry's credentials handed in by the composition root.  Keys and the trusted root are read
at each use, so a rotated key file counts from the next pass.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from controller.errors import ConfigError, Reason, Retryable
from controller.model.config import Config
from controller.model.desired import DesiredContainer, desired_for
from controller.signatures.images.verifier import ImageVerdict, ImageVerifier, registry_for
from controller.source.git import GitSource

Credentials = Callable[[], dict[str, str] | None]  # the registry's, read from .env at each use


class ImageCheck(Protocol):
    """What the service and the pass ask of the image check."""

    def verify(self, reference: str) -> ImageVerdict:
        """The signature of ``reference`` (``repo@sha256:…``) by a configured key or keyless identity."""
        ...

    def declared(self, source: GitSource, revision: str) -> ImageVerdict:
        """The signature of the image ``revision``'s manifest declares."""
        ...

    def check(self, desired: DesiredContainer) -> ImageVerdict:
        """The pass's image step: the image's verdict, or ``Refused`` before anything is pulled."""
        ...

    def trusted_signer(self, signer: str) -> bool:
        """Whether a recorded image signer is still a configured key or identity."""
        ...


class ImageTrust:
    """The image signature check from ``image.signatures``, ``image.provenance`` and the registry's credentials."""

    def __init__(
        self, config: Config, *, credentials: Credentials, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.config = config
        self.verifier = ImageVerifier.from_config(config.image)
        self.credentials = credentials
        self.clock = clock

    def verify(self, reference: str) -> ImageVerdict:
        """The cosign signature of ``reference`` (``repo@sha256:…``) by a configured key or keyless identity."""
        if self.config.image.signatures is None:
            raise ConfigError("image.signatures.keys is not set in the config: there is no key to verify against")
        registry = registry_for(reference, credentials=self.credentials())
        return self.verifier.verify(reference, registry=registry, now=self.clock())

    def declared(self, source: GitSource, revision: str) -> ImageVerdict:
        """The signature of the image ``revision``'s manifest declares, judged offline as ``validate`` does."""
        data = source.read_manifest(revision, self.config.environment)
        desired = desired_for(self.config, data, revision=revision, dotenv=None)  # .env is the pass's business
        return self.verify(desired.image)

    def check(self, desired: DesiredContainer) -> ImageVerdict:
        """The pass's image step: the image's verdict, or ``Refused`` before anything is pulled."""
        try:
            return self.verify(desired.image)
        except ConfigError as exc:
            raise Retryable(str(exc), code=Reason.HOST_CONFIG) from None

    def trusted_signer(self, signer: str) -> bool:
        """Whether a recorded image signer is still a configured key or identity (a rotated key is not)."""
        return self.verifier.trusts(signer)
