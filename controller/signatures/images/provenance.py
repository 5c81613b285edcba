"""Where an image came from: the source a verified SLSA provenance attestation names.

A keyless signature says *who* built an image (a workflow identity); the build provenance says
*from what*: the source repository, the ref and the commit.  GitHub's artifact attestations
(``actions/attest-build-provenance``) write SLSA provenance v1 with the GitHub Actions build type;
``cosign attest --type slsaprovenance`` from the SLSA generator writes v0.2.  This module reads a
statement whose signature, signer and subject digest were already verified
(``controller.signatures.images.bundles``) and says whether it names the configured
``source_repository`` (and ``source_ref`` when set).  The result, ``ImageSource``, is what the
status records as ``applied.image_source``: the chain from the manifest commit to the image to the
application commit it was built from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from controller.errors import Reason, Refused

SLSA_V1 = "https://slsa.dev/provenance/v1"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
PREDICATE_TYPES = (SLSA_V1, SLSA_V02)
_GIT_URI = re.compile(r"^git\+(?P<repository>https://[^@]+?)(?:\.git)?@(?P<ref>refs/[^\s]+)$")
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass(frozen=True)
class ImageSource:
    """The repository, ref and commit a provenance attestation says the image was built from."""

    repository: str
    ref: str | None
    commit: str | None

    def as_record(self) -> dict[str, str | None]:
        """The ``applied.image_source`` object of the status file."""
        return {"repository": self.repository, "ref": self.ref, "commit": self.commit}


def source_of(statement: dict[str, Any]) -> ImageSource:
    """The source a verified SLSA provenance statement names; ``Refused`` when it names none."""
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        raise _refused("provenance statement has no predicate")
    if statement.get("predicateType") == SLSA_V1:
        return _source_v1(predicate)
    return _source_v02(predicate)


def check_source(statement: dict[str, Any], *, repository: str, ref: str | None) -> ImageSource:
    """The statement's source when it is ``repository`` (and ``ref`` when set); else ``Refused`` naming both."""
    source = source_of(statement)
    if _normal(source.repository) != _normal(repository):
        raise _refused(f"provenance names source repository {source.repository!r}, not {repository!r}")
    if ref is not None and source.ref != ref:
        raise _refused(f"provenance names source ref {source.ref!r}, not {ref!r}")
    return source


def _source_v1(predicate: dict[str, Any]) -> ImageSource:
    """SLSA v1: GitHub's workflow parameters first, else the first git resolved dependency."""
    definition = _dict(predicate.get("buildDefinition"))
    workflow = _dict(_dict(definition.get("externalParameters")).get("workflow"))
    dependencies = [d for d in definition.get("resolvedDependencies") or [] if isinstance(d, dict)][:16]
    git = next((d for d in dependencies if _GIT_URI.match(str(d.get("uri", "")))), None)
    commit = _commit(_dict(git.get("digest")).get("gitCommit")) if git else None
    if isinstance(workflow.get("repository"), str):
        ref = workflow.get("ref")
        return ImageSource(workflow["repository"], ref if isinstance(ref, str) else None, commit)
    if git is None:
        raise _refused("provenance names no source repository")
    match = _GIT_URI.match(str(git["uri"]))
    assert match is not None  # noqa: S101 - chosen by this pattern above
    return ImageSource(match["repository"], match["ref"], commit)


def _source_v02(predicate: dict[str, Any]) -> ImageSource:
    """SLSA v0.2: the invocation's config source (``git+https://…@refs/…``) and its sha1."""
    config = _dict(_dict(predicate.get("invocation")).get("configSource"))
    match = _GIT_URI.match(str(config.get("uri", "")))
    if match is None:
        raise _refused("provenance names no git config source")
    return ImageSource(match["repository"], match["ref"], _commit(_dict(config.get("digest")).get("sha1")))


def _commit(value: object) -> str | None:
    return value if isinstance(value, str) and _COMMIT.match(value) else None


def _normal(repository: str) -> str:
    return repository.strip().removesuffix("/").removesuffix(".git").lower()


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _refused(reason: str) -> Refused:
    return Refused(reason, code=Reason.UNTRUSTED_IMAGE_SIGNATURE)
