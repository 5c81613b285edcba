"""Image signatures in the pass (docs/design.md §14), end to end: the real engine, registry, git and cosign-format
signatures written through the registry's API; the controller's own command line."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from controller.cli import main
from controller.signatures.images.cosign import fingerprint
from testbed import ControllerHost as Host
from tests.cosign_signing import OCI_MANIFEST, RegistryWriter, make_signing_key, sign_bundle, sign_classic

_serial = itertools.count()


class SignedHost:
    """The prod controller with ``image.signatures`` on, over a repository of its own in the test registry."""

    def __init__(self, host: Host, images: dict[str, str], tmp: Path, *, via: str | None = None) -> None:
        """``via``: a relay's ``host:port`` in front of the registry, named in the config and the images."""
        self.host = host
        self.writer = RegistryWriter(host.registry.host)
        repository = f"signed-pass/run{next(_serial)}"
        self.a = self.writer.copy_image(images["healthy-a"], repository)
        self.b = self.writer.copy_image(images["healthy-b"], repository)
        registry = via or host.registry.host
        if via:
            self.writer = RegistryWriter(via)
            self.a, self.b = (ref.replace(host.registry.host, via, 1) for ref in (self.a, self.b))
        self.key = make_signing_key(tmp / "trusted")
        agent = host.configs["prod"].parent
        (agent / "trust" / "cosign.pub").write_bytes(self.key.public_path.read_bytes())
        config = (
            host.configs["prod"]
            .read_text()
            .replace(
                f"image: {{repository: {host.registry.repository}}}",
                f"image: {{repository: {registry}/{repository}, signatures: {{keys: [trust/cosign.pub]}}}}",
            )
        )
        host.configs["prod"].write_text(config)

    def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main([args[0], "--config", str(self.host.configs["prod"]), *args[1:]])
        captured = capsys.readouterr()
        return code, captured.out + captured.err


@pytest.fixture
def signed(controller_host: Host, images: dict[str, str], tmp_path: Path) -> SignedHost:
    bed = SignedHost(controller_host, images, tmp_path)
    sign_classic(bed.writer, bed.a, bed.key)
    bed.host.publish("signed image a", prod=bed.a)
    return bed


def test_a_signed_image_is_deployed_with_its_signer_recorded(
    signed: SignedHost, capsys: pytest.CaptureFixture[str]
) -> None:
    host = signed.host
    signer = fingerprint(signed.key.private.public_key())
    code, out = signed.cli(capsys, "plan", "--json")
    assert code == 0 and json.loads(out)["image_signer"] == signer
    assert host.sync() == 0 and host.image() == signed.a
    status = host.status()
    assert status.applied is not None and status.applied.image_signer == signer
    assert host.audit()[-1]["event"] == "applied" and host.audit()[-1]["image_signer"] == signer
    code, out = signed.cli(capsys, "verify-image", signed.a, "--json")
    assert code == 0 and json.loads(out)["image_signer"] == signer
    sign_bundle(signed.writer, signed.b, signed.key)  # the bundle format verifies too
    host.publish("signed image b", prod=signed.b)
    assert host.sync() == 0 and host.image() == signed.b


@pytest.mark.parametrize("signature", ["none", "another key"])
def test_an_image_without_a_trusted_signature_is_refused_and_the_container_untouched(
    signed: SignedHost, capsys: pytest.CaptureFixture[str], tmp_path: Path, signature: str
) -> None:
    host = signed.host
    assert host.sync() == 0
    before = host.running()
    if signature == "another key":
        sign_classic(signed.writer, signed.b, make_signing_key(tmp_path / "other"))
    host.publish("unsigned image b", prod=signed.b)
    assert signed.cli(capsys, "plan")[0] == 3
    code, _out = signed.cli(capsys, "sync")
    assert code == 3
    status = host.status()
    expected = "ImageUnsigned" if signature == "none" else "UntrustedImageSignature"
    assert status.last_attempt is not None and status.last_attempt.code == expected
    assert host.running()["Id"] == before["Id"] and host.image() == signed.a
    assert host.running()["State"]["StartedAt"] == before["State"]["StartedAt"]  # type: ignore[index]
    assert signed.cli(capsys, "verify-image", signed.b)[0] == 3
    if signature == "another key":
        assert host.sync() == 3 and host.running()["Id"] == before["Id"]  # held: the quarantine answers
        assert host.status().quarantined is not None
        return
    assert host.sync() == 3 and host.running()["Id"] == before["Id"]  # no signature yet: asked again
    sign_classic(signed.writer, signed.b, signed.key)  # signed after the merge
    assert host.sync() == 0 and host.image() == signed.b


def test_a_removed_container_of_a_verified_image_is_repaired_while_the_registry_is_down(
    signed: SignedHost,
) -> None:
    host = signed.host
    assert host.sync() == 0 and host.image() == signed.a
    host.engine.cli("rm", "--force", "dreichor-runtime-prod")
    host.registry.stop()
    try:
        assert host.sync() == 0
    finally:
        host.registry.start()
    assert host.image() == signed.a and host.running()["State"]["Running"]  # type: ignore[index]
    status = host.status()
    assert status.applied is not None and status.applied.image_signer == fingerprint(signed.key.private.public_key())
    assert host.audit()[-1]["event"] == "drift_repaired"


def test_verify_image_without_configured_keys_is_an_error(
    controller_host: Host, images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["verify-image", images["healthy-a"], "--config", str(controller_host.configs["prod"])])
    assert code == 1 and "image.signatures.keys" in capsys.readouterr().err


def test_a_registry_serving_no_signature_document_is_retried_and_the_release_deploys_once_it_recovers(
    signed: SignedHost,
) -> None:
    host = signed.host
    assert host.sync() == 0
    repository, digest = signed.b.split("/", 1)[1].split("@")
    config = signed.writer.put_blob(repository, b"{}")
    blob = signed.writer.put_blob(repository, b"{}")
    broken = {  # a manifest the registry stores, but no cosign signature: its layer has no signature
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": config},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "size": 2, "digest": blob}],
    }
    signed.writer.put_manifest(repository, digest.replace(":", "-") + ".sig", json.dumps(broken).encode())
    host.publish("image b, its signature tag broken", prod=signed.b)
    assert host.sync() == 1  # retryable: the registry's fault, not a verdict on the release
    status = host.status()
    assert status.last_attempt is not None and status.last_attempt.code == "RegistryUnavailable"
    assert host.image() == signed.a
    sign_classic(signed.writer, signed.b, signed.key)  # the registry answers properly again
    assert host.sync() == 0 and host.image() == signed.b  # not quarantined


def test_too_many_signature_candidates_is_a_registry_fault_named_in_the_status_never_a_quarantine(
    signed: SignedHost, tmp_path: Path
) -> None:
    """F5: whoever can push to the image repository piles 40 foreign signatures on the release."""
    host = signed.host
    assert host.sync() == 0
    sign_classic(signed.writer, signed.b, make_signing_key(tmp_path / "foreign"), layers=40)
    host.publish("image b, buried under foreign signatures", prod=signed.b)
    assert host.sync() == 1  # retried: a cap broken is no verdict on the release
    status = host.status()
    assert status.last_attempt is not None and status.last_attempt.code == "RegistryAnswerTooLarge"
    assert "has 40 layers, more than the 32 checked" in status.last_attempt.reason
    assert "a valid signature may be among the rest" in status.last_attempt.reason
    assert status.quarantined is None and host.image() == signed.a
    sign_classic(signed.writer, signed.b, signed.key)  # the release's own signature, within the cap
    assert host.sync() == 0 and host.image() == signed.b
