"""Registry faults on the keyless and provenance paths: retried like an outage, never a quarantine.

A registry answer that is no signature document — garbage under status 200, a manifest without
layers, an unreadable bundle or annotation, a listed manifest that is missing — is the registry's
fault (``Retryable``, ``RegistryUnavailable``), so the release is deployed once the registry answers
properly again.  Only a cryptographic verdict (or a count or size cap) refuses.  Each case starts
from a registry holding a valid keyless signature and provenance, breaks one document, and runs
the whole check (``ImageVerifier.verify``) against a registry on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controller import cli
from controller.cli import trust as trust_commands
from controller.errors import Reason, Refused, Retryable
from controller.signatures.images.cosign import fingerprint
from controller.signatures.images.keyless import KeylessIdentity
from controller.signatures.images.provenance import Provenance
from controller.signatures.images.verifier import ImageVerifier
from controller.signatures.registry import RegistryClient
from tests.cosign_signing import (
    BUNDLE,
    OCI_INDEX,
    OCI_MANIFEST,
    SIMPLE_SIGNING,
    bundle_artifact,
    make_signing_key,
    simple_signing_payload,
)
from tests.sigstore_instance import (
    GHA,
    SigstoreInstance,
    classic_attestation_layer,
    classic_keyless_layer,
    cosign_statement,
    keyless_bundle,
    provenance_statement,
)

SOURCE = "https://github.com/ceerkle/dreichor-trading"
WORKFLOW = f"{SOURCE}/.github/workflows/release.yml@refs/heads/main"
DIGEST = "sha256:" + "ab" * 32
DSSE = "application/vnd.dsse.envelope.v1+json"
IDENTITY = KeylessIdentity(GHA, subject=WORKFLOW)


class _Registry(BaseHTTPRequestHandler):
    """Serves ``server.documents`` (path → media type, body); 404 for anything else."""

    def do_GET(self) -> None:
        found = self.server.documents.get(self.path)  # type: ignore[attr-defined]
        if found is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", found[0])
        self.send_header("Content-Length", str(len(found[1])))
        self.end_headers()
        self.wfile.write(found[1])

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def registry() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    server.daemon_threads = True
    server.documents = {}  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def instance() -> SigstoreInstance:
    return SigstoreInstance()


@pytest.fixture(scope="module")
def root_file(instance: SigstoreInstance, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return instance.trusted_root(tmp_path_factory.mktemp("sigstore") / "trusted_root.json")


class _Documents:
    """The documents of ``team/app`` a registry serves, written as cosign and GitHub write them."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.host = f"127.0.0.1:{server.server_address[1]}"
        self.pinned = f"{self.host}/team/app@{DIGEST}"
        self.served: dict[str, tuple[str, bytes]] = server.documents  # type: ignore[attr-defined]
        self.listed: list[dict[str, Any]] = []

    def blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.served[f"/v2/team/app/blobs/{digest}"] = ("application/octet-stream", data)
        return digest

    def manifest(self, reference: str, data: bytes, *, media_type: str = OCI_MANIFEST) -> None:
        self.served[f"/v2/team/app/manifests/{reference}"] = (media_type, data)

    def tagged(self, suffix: str, layer: dict[str, Any]) -> None:
        """A classic ``.sig`` or ``.att`` manifest with one layer."""
        document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [layer]}
        self.manifest(DIGEST.replace(":", "-") + f".{suffix}", json.dumps(document).encode())

    def bundle(self, bundle: bytes) -> None:
        """A bundle artifact listed in the index at the fallback tag (this registry has no referrers API)."""
        self.blob(bundle)
        artifact = bundle_artifact(bundle, subject={"mediaType": OCI_MANIFEST, "size": 1, "digest": DIGEST})
        artifact_digest = "sha256:" + hashlib.sha256(artifact).hexdigest()
        self.manifest(artifact_digest, artifact)
        self.listed.append(
            {"mediaType": OCI_MANIFEST, "size": len(artifact), "digest": artifact_digest, "artifactType": BUNDLE}
        )
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.listed}
        self.manifest(DIGEST.replace(":", "-"), json.dumps(index).encode(), media_type=OCI_INDEX)


def _classic_signature(documents: _Documents, instance: SigstoreInstance, **changes: str) -> None:
    payload = simple_signing_payload(documents.pinned)
    annotations = {**classic_keyless_layer(instance, payload, subject=WORKFLOW), **changes}
    layer = {"mediaType": SIMPLE_SIGNING, "size": len(payload), "digest": documents.blob(payload)}
    documents.tagged("sig", {**layer, "annotations": annotations})


def _classic_provenance(documents: _Documents, instance: SigstoreInstance, **changes: Any) -> None:
    statement = provenance_statement(documents.pinned.split("@")[0], DIGEST, repository=SOURCE, ref="refs/heads/main")
    envelope, annotations = classic_attestation_layer(instance, statement, subject=WORKFLOW)
    layer = {"mediaType": DSSE, "size": len(envelope), "digest": documents.blob(envelope), "annotations": annotations}
    documents.tagged("att", {**layer, **changes})


def _bundle_provenance(documents: _Documents, instance: SigstoreInstance) -> None:
    statement = provenance_statement(documents.pinned.split("@")[0], DIGEST, repository=SOURCE, ref="refs/heads/main")
    documents.bundle(keyless_bundle(instance, statement, subject=WORKFLOW))


def _check(documents: _Documents, root_file: Path, *, provenance: bool = True) -> object:
    verifier = ImageVerifier(
        trusted_root=str(root_file),
        identities=(IDENTITY,),
        provenance=Provenance(SOURCE, "refs/heads/main", (IDENTITY,)) if provenance else None,
    )
    return verifier.verify(documents.pinned, registry=RegistryClient(documents.host), now=datetime.now(UTC))


def _assert_retried(documents: _Documents, root_file: Path, *, provenance: bool = True) -> None:
    with pytest.raises(Retryable) as caught:
        _check(documents, root_file, provenance=provenance)
    assert caught.value.code == Reason.REGISTRY_UNAVAILABLE


NOT_BASE64 = "%%% not base64 %%%"

# --- the classic keyless signature (``.sig``) -------------------------------------------------


@pytest.mark.parametrize(
    "annotation",
    [
        {"dev.sigstore.cosign/certificate": "not a PEM certificate"},
        {"dev.sigstore.cosign/bundle": "not JSON"},
        {"dev.sigstore.cosign/bundle": '{"SignedEntryTimestamp": 1}'},
        {"dev.cosignproject.cosign/signature": NOT_BASE64},
    ],
    ids=["certificate", "rekor bundle", "rekor bundle shape", "signature"],
)
def test_an_unreadable_classic_keyless_annotation_is_retried(
    registry: ThreadingHTTPServer, instance: SigstoreInstance, root_file: Path, annotation: dict[str, str]
) -> None:
    documents = _Documents(registry)
    _classic_signature(documents, instance, **annotation)
    _assert_retried(documents, root_file, provenance=False)


@pytest.mark.parametrize(
    "change",
    [
        {"Payload": {"integratedTime": 10**20}},  # no clock holds it: once a traceback, not a reason
        {"Payload": {"integratedTime": -(10**20)}},
        {"SignedEntryTimestamp": NOT_BASE64},
    ],
    ids=["time too late", "time too early", "SET not base64"],
)
def test_an_unreadable_rekor_entry_is_retried_not_a_crash(
    registry: ThreadingHTTPServer, instance: SigstoreInstance, root_file: Path, change: dict[str, Any]
) -> None:
    documents = _Documents(registry)
    payload = simple_signing_payload(documents.pinned)
    annotations = classic_keyless_layer(instance, payload, subject=WORKFLOW)
    entry = json.loads(annotations["dev.sigstore.cosign/bundle"])
    entry["Payload"].update(change.get("Payload", {}))
    entry.update({k: v for k, v in change.items() if k != "Payload"})
    _classic_signature(documents, instance, **{"dev.sigstore.cosign/bundle": json.dumps(entry)})
    _assert_retried(documents, root_file, provenance=False)


def test_a_classic_keyless_signature_by_another_identity_is_still_a_verdict(
    registry: ThreadingHTTPServer, root_file: Path
) -> None:
    documents = _Documents(registry)
    _classic_signature(documents, SigstoreInstance())  # another instance: its certificate chains to no CA of ours
    with pytest.raises(Refused) as caught:
        _check(documents, root_file, provenance=False)
    assert caught.value.code == Reason.UNTRUSTED_IMAGE_SIGNATURE


# --- the keyless bundle -------------------------------------------------------------------------


def _listed_but_missing(documents: _Documents) -> None:
    documents.bundle(b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}')
    artifact = documents.listed[-1]["digest"]
    del documents.served[f"/v2/team/app/manifests/{artifact}"]


def _without_layers(documents: _Documents) -> None:
    documents.bundle(b"{}")
    path = f"/v2/team/app/manifests/{documents.listed[-1]['digest']}"
    media_type, artifact = documents.served[path]
    document = json.loads(artifact)
    document["layers"] = []
    changed = json.dumps(document).encode()
    del documents.served[path]
    documents.listed[-1]["digest"] = "sha256:" + hashlib.sha256(changed).hexdigest()
    documents.listed[-1]["size"] = len(changed)
    documents.manifest(documents.listed[-1]["digest"], changed, media_type=media_type)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": documents.listed}
    documents.manifest(DIGEST.replace(":", "-"), json.dumps(index).encode(), media_type=OCI_INDEX)


BUNDLE_FAULTS: list[tuple[str, Callable[[_Documents], None]]] = [
    ("not JSON", lambda d: d.bundle(b"\x00 garbage")),
    ("not a sigstore bundle", lambda d: d.bundle(json.dumps({"mediaType": BUNDLE, "x": 1}).encode())),
    ("listed manifest missing", _listed_but_missing),
    ("manifest without layers", _without_layers),
    ("garbage index", lambda d: d.manifest(DIGEST.replace(":", "-"), b"garbage", media_type=OCI_INDEX)),
]


@pytest.mark.parametrize("fault", [fault for _, fault in BUNDLE_FAULTS], ids=[name for name, _ in BUNDLE_FAULTS])
def test_a_broken_keyless_bundle_is_retried(
    registry: ThreadingHTTPServer, root_file: Path, fault: Callable[[_Documents], None]
) -> None:
    documents = _Documents(registry)
    fault(documents)
    _assert_retried(documents, root_file, provenance=False)


@pytest.mark.parametrize("fault", [fault for _, fault in BUNDLE_FAULTS], ids=[name for name, _ in BUNDLE_FAULTS])
def test_a_broken_provenance_bundle_is_retried(
    registry: ThreadingHTTPServer, instance: SigstoreInstance, root_file: Path, fault: Callable[[_Documents], None]
) -> None:
    documents = _Documents(registry)
    _classic_signature(documents, instance)
    fault(documents)
    _assert_retried(documents, root_file)


# --- provenance -------------------------------------------------------------------------------


def test_a_keyless_signature_with_classic_and_bundle_provenance_passes(
    registry: ThreadingHTTPServer, instance: SigstoreInstance, root_file: Path
) -> None:
    documents = _Documents(registry)
    _classic_signature(documents, instance)
    _classic_provenance(documents, instance)
    verdict = _check(documents, root_file)
    assert verdict.source.as_record()["repository"] == SOURCE  # type: ignore[attr-defined]
    documents.served.clear()
    documents.listed.clear()
    _classic_signature(documents, instance)
    _bundle_provenance(documents, instance)
    assert _check(documents, root_file).source.as_record()["repository"] == SOURCE  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "change",
    [
        {"mediaType": "text/html"},
        {"annotations": None},
        {"annotations": {"dev.sigstore.cosign/certificate": "not a PEM certificate"}},
        {"annotations": {"dev.sigstore.cosign/bundle": "not JSON"}},
    ],
    ids=["media type", "no annotations", "certificate", "rekor bundle"],
)
def test_an_unreadable_classic_attestation_layer_is_retried(
    registry: ThreadingHTTPServer, instance: SigstoreInstance, root_file: Path, change: dict[str, Any]
) -> None:
    documents = _Documents(registry)
    _classic_signature(documents, instance)
    statement = provenance_statement(documents.pinned.split("@")[0], DIGEST, repository=SOURCE, ref="refs/heads/main")
    _envelope, annotations = classic_attestation_layer(instance, statement, subject=WORKFLOW)
    if isinstance(change.get("annotations"), dict):
        change = {"annotations": {**annotations, **change["annotations"]}}
    _classic_provenance(documents, instance, **change)
    _assert_retried(documents, root_file)


@pytest.mark.parametrize(
    "manifest",
    [b"<html>garbage</html>", b'{"schemaVersion": 2}', b'{"schemaVersion": 2, "layers": {}}', b"[]"],
    ids=["garbage", "no layers", "layers not a list", "not an object"],
)
def test_an_attestation_manifest_that_is_no_manifest_is_retried(
    registry: ThreadingHTTPServer, instance: SigstoreInstance, root_file: Path, manifest: bytes
) -> None:
    documents = _Documents(registry)
    _classic_signature(documents, instance)
    documents.manifest(DIGEST.replace(":", "-") + ".att", manifest)
    _assert_retried(documents, root_file)


def test_a_fault_in_one_attestation_hides_no_valid_one(
    registry: ThreadingHTTPServer, instance: SigstoreInstance, root_file: Path
) -> None:
    documents = _Documents(registry)
    _classic_signature(documents, instance)
    documents.manifest(DIGEST.replace(":", "-") + ".att", b"<html>garbage</html>")
    _bundle_provenance(documents, instance)
    assert _check(documents, root_file).source.as_record()["repository"] == SOURCE  # type: ignore[attr-defined]


def test_provenance_for_another_repository_is_still_a_verdict(
    registry: ThreadingHTTPServer, instance: SigstoreInstance, root_file: Path
) -> None:
    documents = _Documents(registry)
    _classic_signature(documents, instance)
    statement = provenance_statement(
        documents.pinned.split("@")[0], DIGEST, repository="https://github.com/x/y", ref="refs/heads/main"
    )
    documents.bundle(keyless_bundle(instance, statement, subject=WORKFLOW))
    with pytest.raises(Refused, match="provenance names source repository"):
        _check(documents, root_file)


def test_a_cosign_bundle_beside_a_classic_signature_is_no_provenance(
    registry: ThreadingHTTPServer, instance: SigstoreInstance, root_file: Path
) -> None:
    documents = _Documents(registry)
    _classic_signature(documents, instance)
    documents.bundle(keyless_bundle(instance, cosign_statement("team/app", DIGEST), subject=WORKFLOW))
    with pytest.raises(Refused, match="predicate type"):
        _check(documents, root_file)


@pytest.mark.parametrize("signed_by", ["configured key", "keyless identity", "another key"])
def test_with_keys_and_keyless_identities_configured_either_signer_lets_the_image_through(
    registry: ThreadingHTTPServer, instance: SigstoreInstance, root_file: Path, tmp_path: Path, signed_by: str
) -> None:
    documents = _Documents(registry)
    key, other = make_signing_key(tmp_path, name="release"), make_signing_key(tmp_path, name="other")
    if signed_by == "keyless identity":
        _classic_signature(documents, instance)
    else:
        payload = simple_signing_payload(documents.pinned)
        signature = base64.b64encode((key if signed_by == "configured key" else other).sign(payload)).decode()
        layer = {"mediaType": SIMPLE_SIGNING, "size": len(payload), "digest": documents.blob(payload)}
        documents.tagged("sig", {**layer, "annotations": {"dev.cosignproject.cosign/signature": signature}})
    verifier = ImageVerifier(keys=(str(key.public_path),), trusted_root=str(root_file), identities=(IDENTITY,))
    registry_client = RegistryClient(documents.host)
    if signed_by == "another key":
        with pytest.raises(Refused) as caught:
            verifier.verify(documents.pinned, registry=registry_client, now=datetime.now(UTC))
        assert caught.value.code == Reason.UNTRUSTED_IMAGE_SIGNATURE
        return
    expected = fingerprint(key.private.public_key()) if signed_by == "configured key" else WORKFLOW
    verdict = verifier.verify(documents.pinned, registry=registry_client, now=datetime.now(UTC))
    assert verdict.image_signer.startswith(expected)


# --- N10: certificate and attestation text reaches no terminal raw ----------------------------------

CLIPBOARD = "refs/heads/x\x1b]52;c;cm0gLXJmIH4K\x07"  # OSC 52: writes the terminal's clipboard


def test_verify_image_prints_the_certificates_source_through_the_sanitiser(
    registry: ThreadingHTTPServer,
    instance: SigstoreInstance,
    root_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    documents = _Documents(registry)
    _classic_signature(documents, instance)
    statement = provenance_statement(documents.pinned.split("@")[0], DIGEST, repository=SOURCE, ref=CLIPBOARD)
    documents.bundle(keyless_bundle(instance, statement, subject=WORKFLOW))
    verifier = ImageVerifier(
        trusted_root=str(root_file), identities=(IDENTITY,), provenance=Provenance(SOURCE, None, (IDENTITY,))
    )
    verdict = verifier.verify(documents.pinned, registry=RegistryClient(documents.host), now=datetime.now(UTC))
    assert verdict.source is not None and verdict.source.ref == "refs/heads/x\\x1b]52;c;cm0gLXJmIH4K\\x07"

    class _Service:
        def verify_image(self, image: str) -> object:
            return replace(verdict)

    monkeypatch.setattr(trust_commands, "service_for", lambda args: _Service())
    for json_output in ([], ["--json"]):
        assert cli.main(["verify-image", documents.pinned, *json_output]) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out and "x1b]52" in out


def test_a_refusal_naming_the_statements_source_is_sanitised(
    registry: ThreadingHTTPServer, instance: SigstoreInstance, root_file: Path
) -> None:
    documents = _Documents(registry)
    _classic_signature(documents, instance)
    statement = provenance_statement(documents.pinned.split("@")[0], DIGEST, repository=SOURCE, ref=CLIPBOARD)
    source = {"repository": SOURCE, "ref": "refs/heads/main", "commit": "a" * 40, "build_signer": WORKFLOW}
    documents.bundle(keyless_bundle(instance, statement, subject=WORKFLOW, source=source))
    with pytest.raises(Refused) as refused:
        _check(documents, root_file)
    assert "\x1b" not in str(refused.value) and "but its signing certificate says 'refs/heads/main'" in str(
        refused.value
    )


# --- F5: a broken count cap is the registry's fault, and a valid signature within it still counts ----


def _signature_layer(documents: _Documents, instance: SigstoreInstance, *, subject: str) -> dict[str, Any]:
    payload = simple_signing_payload(documents.pinned)
    annotations = classic_keyless_layer(instance, payload, subject=subject)
    return {
        "mediaType": SIMPLE_SIGNING,
        "size": len(payload),
        "digest": documents.blob(payload),
        "annotations": annotations,
    }


def _many_layers(documents: _Documents, layers: list[dict[str, Any]]) -> None:
    document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": layers}
    documents.manifest(DIGEST.replace(":", "-") + ".sig", json.dumps(document).encode())


@pytest.mark.parametrize("valid_at", [0, 31, 32, None], ids=["first", "last-checked", "past-the-cap", "none"])
def test_more_signature_layers_than_the_cap_is_a_registry_fault_unless_one_within_it_verifies(
    registry: ThreadingHTTPServer, instance: SigstoreInstance, root_file: Path, valid_at: int | None
) -> None:
    """Whoever can push to the image repository can add 40 foreign signatures: that holds, never quarantines."""
    documents = _Documents(registry)
    foreign = _signature_layer(documents, instance, subject=WORKFLOW.replace("release", "other"))
    layers = [foreign] * 40
    if valid_at is not None:
        layers[valid_at] = _signature_layer(documents, instance, subject=WORKFLOW)
    _many_layers(documents, layers)
    if valid_at is not None and valid_at < 32:
        assert _check(documents, root_file, provenance=False).image_signer.startswith(WORKFLOW)  # type: ignore[attr-defined]
        return
    with pytest.raises(Retryable) as caught:
        _check(documents, root_file, provenance=False)
    assert caught.value.code == Reason.REGISTRY_ANSWER_TOO_LARGE
    assert "has 40 layers, more than the 32 checked" in caught.value.reason
    assert "a valid signature may be among the rest" in caught.value.reason


def test_more_bundles_than_the_cap_is_a_registry_fault_unless_one_within_it_verifies(
    registry: ThreadingHTTPServer, instance: SigstoreInstance, root_file: Path
) -> None:
    documents = _Documents(registry)
    statement = cosign_statement("team/app", DIGEST)
    foreign = [keyless_bundle(instance, statement, subject=WORKFLOW.replace("release", "x")) for _ in range(17)]
    for bundle in foreign:
        documents.bundle(bundle)
    with pytest.raises(Retryable) as caught:
        _check(documents, root_file, provenance=False)
    assert caught.value.code == Reason.REGISTRY_ANSWER_TOO_LARGE and "lists 17 bundles, more than the 16" in str(
        caught.value
    )
    documents.served.clear()  # the same 17, with a valid bundle listed first: it counts
    documents.listed.clear()
    documents.bundle(keyless_bundle(instance, cosign_statement("team/app", DIGEST), subject=WORKFLOW))
    for bundle in foreign:
        documents.bundle(bundle)
    assert _check(documents, root_file, provenance=False).format == "bundle"  # type: ignore[attr-defined]
