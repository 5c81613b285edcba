"""Cosign verification against bytes nobody here made (``tests/data/cosign``), and hostile registries."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from controller.errors import ConfigError, Reason, Refused, Retryable
from controller.model.config import parse_config
from controller.signatures.images.cosign import (
    check_image_bundle,
    check_message_bundle,
    check_simple_signing,
    fingerprint,
    load_cosign_key,
    open_dsse_bundle,
)
from controller.signatures.images.verifier import verify_image
from controller.signatures.registry import RegistryClient
from tests.cosign_signing import BUNDLE, OCI_INDEX, bundle_artifact, make_bundle, make_signing_key, referrers_index

DATA = Path(__file__).resolve().parents[1] / "data" / "cosign"  # origins and verdicts: tests/data/SOURCES.md
IMAGES = DATA / "containers-image"
DIGEST = "sha256:" + "ab" * 32


def _stored_signature(path: Path) -> tuple[bytes, str]:
    """containers/image keeps a signature as ``\\0sigstore-json\\n`` + {mimeType, payload, annotations}."""
    raw = path.read_bytes()
    assert raw.startswith(b"\0sigstore-json\n")
    document = json.loads(raw[len(b"\0sigstore-json\n") :])
    return base64.b64decode(document["payload"]), document["annotations"]["dev.cosignproject.cosign/signature"]


def _digest_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("signature", "manifest", "key"),
    [
        ("dir-img-cosign-valid/signature-1", "dir-img-cosign-valid", "cosign.pub"),
        ("dir-img-cosign-valid-2/signature-2", "dir-img-cosign-valid", "cosign.pub"),
        ("dir-img-cosign-key-rekor-valid/signature-1", "dir-img-cosign-key-rekor-valid", "cosign2.pub"),
        ("dir-img-cosign-valid-with-tag/signature-1", "dir-img-cosign-valid-with-tag", "cosign.pub"),
    ],
)
def test_classic_signatures_from_containers_image_verify(signature: str, manifest: str, key: str) -> None:
    payload, signature_b64 = _stored_signature(IMAGES / signature)
    trusted = load_cosign_key(IMAGES / key)
    signer = check_simple_signing(
        payload, signature_b64, digest=_digest_of(IMAGES / manifest / "manifest.json"), keys=[trusted]
    )
    assert signer.fingerprint == trusted.fingerprint


@pytest.mark.parametrize(
    ("signature", "manifest", "expected"),
    [
        ("unknown-cosign-key.signature", "dir-img-cosign-valid", "does not verify under any configured key"),
        ("dir-img-cosign-valid/signature-1", "dir-img-cosign-modified-manifest", "not the declared"),
        ("dir-img-cosign-other-attachment/signature-1", "dir-img-cosign-valid", "does not verify"),
    ],
)
def test_negative_classic_fixtures_are_refused_for_their_reason(signature: str, manifest: str, expected: str) -> None:
    payload, signature_b64 = _stored_signature(IMAGES / signature)
    with pytest.raises(Refused, match=expected):
        check_simple_signing(
            payload,
            signature_b64,
            digest=_digest_of(IMAGES / manifest / "manifest.json"),
            keys=[load_cosign_key(IMAGES / "cosign.pub")],
        )


def test_a_valid_signature_under_one_key_is_refused_under_another() -> None:
    payload, signature_b64 = _stored_signature(IMAGES / "dir-img-cosign-valid/signature-1")
    with pytest.raises(Refused, match="does not verify"):
        check_simple_signing(
            payload,
            signature_b64,
            digest=_digest_of(IMAGES / "dir-img-cosign-valid/manifest.json"),
            keys=[load_cosign_key(IMAGES / "cosign2.pub")],
        )


@pytest.mark.parametrize(("folder", "key"), [("ecdsa-p256", "cosign.pub"), ("rsa-2048-obs", "key.pub")])
def test_sigstore_rs_payloads_verify_with_ecdsa_and_rsa(folder: str, key: str) -> None:
    base = DATA / "sigstore-rs" / folder
    payload = (base / "payload.json").read_bytes()
    named = json.loads(payload)["critical"]["image"]["docker-manifest-digest"]
    trusted = load_cosign_key(base / key)
    signature = (base / "signature.b64").read_text().strip()
    assert check_simple_signing(payload, signature, digest=named, keys=[trusted]) == trusted
    with pytest.raises(Refused, match="not the declared"):
        check_simple_signing(payload, signature, digest=DIGEST, keys=[trusted])


def test_the_sigstore_rs_signature_manifest_has_the_classic_shape() -> None:
    manifest = json.loads((DATA / "sigstore-rs/signature-manifest-example.json").read_bytes())
    payload = (DATA / "sigstore-rs/signature-manifest-example.layer-payload.json").read_bytes()
    for layer in manifest["layers"]:
        assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
        assert layer["digest"] == "sha256:" + hashlib.sha256(payload).hexdigest()
        with pytest.raises(Refused):  # no key of these signatures is published
            check_simple_signing(
                payload,
                layer["annotations"]["dev.cosignproject.cosign/signature"],
                digest=json.loads(payload)["critical"]["image"]["docker-manifest-digest"],
                keys=[load_cosign_key(IMAGES / "cosign.pub")],
            )


@pytest.mark.parametrize(
    ("bundle", "key", "artifact"),
    [
        ("sigstore-conformance/managed-key-happy-path", "key.pub", "sigstore-conformance/a.txt"),
        ("sigstore-conformance/managed-key-and-trusted-root", "key.pub", "sigstore-conformance/a.txt"),
        ("sigstore-go/docs-signing-example", "key.pub", "sigstore-go/docs-signing-example/hello_world.txt"),
        ("sigstore-go/public-key-validity", "key.pub", "sigstore-go/public-key-validity/artifact.txt"),
    ],
)
def test_message_signature_bundles_verify_and_the_fingerprint_is_sigstores_key_hint(
    bundle: str, key: str, artifact: str
) -> None:
    raw = (DATA / bundle / "bundle.sigstore.json").read_bytes()
    trusted = load_cosign_key(DATA / bundle / key)
    assert check_message_bundle(raw, artifact=(DATA / artifact).read_bytes(), keys=[trusted]) == trusted
    hint = json.loads(raw)["verificationMaterial"]["publicKey"]["hint"]
    assert trusted.fingerprint == "SHA256:" + hint.rstrip("=")
    with pytest.raises(Refused, match="digest does not match"):
        check_message_bundle(raw, artifact=b"other bytes", keys=[trusted])


def test_a_message_signature_bundle_offered_for_an_image_is_a_verdict_not_a_registry_fault() -> None:
    from controller.signatures.images.cosign import Unreadable  # noqa: PLC0415 the retry marker itself

    raw = (DATA / "sigstore-conformance/managed-key-happy-path/bundle.sigstore.json").read_bytes()
    trusted = load_cosign_key(DATA / "sigstore-conformance/managed-key-happy-path/key.pub")
    for keys in ([trusted], []):  # with the key, and on a host that trusts keyless identities only
        with pytest.raises(Refused, match="message signature") as refused:
            check_image_bundle(raw, digest=DIGEST, keys=keys)
        assert not isinstance(refused.value, Unreadable)  # quarantined with its reason, not retried for ever


def test_the_conformance_wrong_key_case_ships_a_key_that_cannot_be_loaded() -> None:
    with pytest.raises(ConfigError, match="not a readable PEM public key"):
        load_cosign_key(DATA / "sigstore-conformance/managed-key-wrong-key_fail/key.pub")


@pytest.mark.parametrize("version", ["v0.3.1", "v1.0.0", "v1.0.1", "v1.1.0"])
def test_model_transparency_dsse_bundles_verify_with_p384(version: str) -> None:
    raw = (DATA / f"model-transparency/{version}-elliptic-key/model.sig").read_bytes()
    trusted = load_cosign_key(DATA / "model-transparency/signing-key-pub.pem")
    payload_type, payload, signer = open_dsse_bundle(raw, keys=[trusted])
    assert (payload_type, signer) == ("application/vnd.in-toto+json", trusted)
    assert json.loads(payload)["_type"].startswith("https://in-toto.io/Statement/")
    with pytest.raises(Refused, match="predicate type"):  # a model signature is no image signature
        check_image_bundle(raw, digest=DIGEST, keys=[trusted])
    with pytest.raises(Refused, match="does not verify"):
        open_dsse_bundle(raw, keys=[load_cosign_key(IMAGES / "cosign.pub")])


def test_a_tampered_dsse_payload_is_refused() -> None:
    document = json.loads((DATA / "model-transparency/v1.1.0-elliptic-key/model.sig").read_bytes())
    payload = base64.b64decode(document["dsseEnvelope"]["payload"]).replace(b"sha256", b"sha384", 1)
    document["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    with pytest.raises(Refused, match="does not verify"):
        open_dsse_bundle(
            json.dumps(document).encode(), keys=[load_cosign_key(DATA / "model-transparency/signing-key-pub.pem")]
        )


@pytest.mark.parametrize(
    "payload",
    [b"", b"[]", b"{", b'{"critical": 1}', b'{"critical": {"type": "x"}}', b"\xff" * 10, b"[" * 100_000],
)
def test_malformed_classic_payloads_never_crash(payload: bytes) -> None:
    with pytest.raises(Refused):
        check_simple_signing(payload, "", digest=DIGEST, keys=[load_cosign_key(IMAGES / "cosign.pub")])


def test_signature_keys_resolve_against_the_config_files_folder(tmp_path: Path) -> None:
    raw: dict[str, object] = {
        "environment": "prod",
        "source": {"url": "file:///x"},
        "trust": {"allowed_signers": "trust/allowed_signers"},
        "image": {"signatures": {"keys": ["trust/cosign.pub"]}},
    }
    config = parse_config(raw, base=tmp_path)
    assert config.image.signatures is not None
    assert config.image.signatures.keys == [str(tmp_path / "trust/cosign.pub")]
    with pytest.raises(ConfigError, match=r"image\.signatures\.keys"):
        parse_config({**raw, "image": {"signatures": {"keys": []}}}, base=tmp_path)


# --- hostile registries on 127.0.0.1 ---------------------------------------------------------


class _Scripted(BaseHTTPRequestHandler):
    """Answers every GET with what the test put in ``server.reply``."""

    def do_GET(self) -> None:
        self.server.reply(self)  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def hostile() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _client(server: ThreadingHTTPServer, **kwargs: object) -> tuple[RegistryClient, str]:
    host = f"127.0.0.1:{server.server_address[1]}"
    return RegistryClient(host, **kwargs), f"{host}/team/app@{DIGEST}"  # type: ignore[arg-type]


def _raw(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    handler.wfile.write(data)
    handler.wfile.flush()


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (lambda h: _raw(h, b"garbage\r\n\r\n"), "did not answer usably"),
        (lambda h: _raw(h, b""), "did not answer usably"),
        (lambda h: h.send_error(503), "answered 503"),
        (lambda h: h.send_error(401), "refused our credentials"),
    ],
)
def test_a_registry_answering_garbage_is_retryable_with_a_reason(
    hostile: ThreadingHTTPServer, reply: object, expected: str
) -> None:
    hostile.reply = reply  # type: ignore[attr-defined]
    client, reference = _client(hostile)
    with pytest.raises(Retryable, match=expected):
        verify_image(reference, keys=[load_cosign_key(IMAGES / "cosign.pub")], registry=client)


def test_a_silent_registry_is_retryable_after_the_timeout(hostile: ThreadingHTTPServer) -> None:
    stop = threading.Event()
    hostile.reply = lambda handler: stop.wait(5)  # type: ignore[attr-defined]
    client, reference = _client(hostile, timeout=0.3)
    try:
        with pytest.raises(Retryable, match="timed out"):
            verify_image(reference, keys=[load_cosign_key(IMAGES / "cosign.pub")], registry=client)
    finally:
        stop.set()


@pytest.mark.parametrize("declared", [True, False])
def test_a_50_mb_signature_manifest_is_refused_without_reading_it_all(
    hostile: ThreadingHTTPServer, declared: bool
) -> None:
    sent: list[int] = []
    size = 50 * 1024 * 1024

    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        if declared:
            handler.send_header("Content-Length", str(size))
        handler.end_headers()
        try:
            for _ in range(size // 65536):
                handler.wfile.write(b" " * 65536)
                sent.append(65536)
        except OSError:
            pass

    hostile.reply = huge  # type: ignore[attr-defined]
    client, reference = _client(hostile)
    with pytest.raises(Retryable, match="larger than 262144 bytes") as caught:  # the registry's fault, retried
        verify_image(reference, keys=[load_cosign_key(IMAGES / "cosign.pub")], registry=client)
    assert caught.value.code == Reason.REGISTRY_ANSWER_TOO_LARGE
    hostile.shutdown()  # waits for the handler: it stops once we hung up
    assert sum(sent) < size // 4


def test_bearer_tokens_are_fetched_from_the_realm_with_basic_credentials(hostile: ThreadingHTTPServer) -> None:
    seen: list[tuple[str, str]] = []

    def registry(handler: BaseHTTPRequestHandler) -> None:
        auth = handler.headers.get("Authorization", "")
        seen.append((handler.path, auth))
        if handler.path.startswith("/token"):
            body = json.dumps({"token": "t0k"}).encode()
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        elif auth != "Bearer t0k":
            realm = f"http://127.0.0.1:{hostile.server_address[1]}/token"
            handler.send_response(401)
            handler.send_header(
                "WWW-Authenticate", f'Bearer realm="{realm}",service="reg",scope="repository:team/app:pull"'
            )
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        else:
            handler.send_error(404)

    hostile.reply = registry  # type: ignore[attr-defined]
    client, reference = _client(hostile, username="ci", password="s3cret")
    with pytest.raises(Refused, match="carries no cosign signature"):
        verify_image(reference, keys=[load_cosign_key(IMAGES / "cosign.pub")], registry=client)
    token_requests = [(path, auth) for path, auth in seen if path.startswith("/token")]
    assert len(token_requests) == 1
    assert "scope=repository%3Ateam%2Fapp%3Apull" in token_requests[0][0]
    assert base64.b64decode(token_requests[0][1].removeprefix("Basic ")) == b"ci:s3cret"


def _serve(handler: BaseHTTPRequestHandler, documents: dict[str, tuple[str, bytes]]) -> None:
    found = documents.get(handler.path)
    if found is None:
        handler.send_error(404)
        return
    handler.send_response(200)
    handler.send_header("Content-Type", found[0])
    handler.send_header("Content-Length", str(len(found[1])))
    handler.end_headers()
    handler.wfile.write(found[1])


def test_a_bundle_is_found_through_the_referrers_api(hostile: ThreadingHTTPServer, tmp_path: Path) -> None:
    key = make_signing_key(tmp_path, kind="p384")
    client, reference = _client(hostile)
    bundle = make_bundle(reference.split("@")[0], DIGEST, key)
    artifact = bundle_artifact(bundle, subject={"mediaType": "x", "size": 1, "digest": DIGEST})
    artifact_digest = "sha256:" + hashlib.sha256(artifact).hexdigest()
    documents = {
        f"/v2/team/app/referrers/{DIGEST}?artifactType=application%2Fvnd.dev.sigstore.bundle.v0.3%2Bjson": (
            OCI_INDEX,
            referrers_index(artifact),
        ),
        f"/v2/team/app/manifests/{artifact_digest}": ("application/vnd.oci.image.manifest.v1+json", artifact),
        f"/v2/team/app/blobs/sha256:{hashlib.sha256(bundle).hexdigest()}": (BUNDLE, bundle),
    }
    hostile.reply = lambda handler: _serve(handler, documents)  # type: ignore[attr-defined]
    verdict = verify_image(reference, keys=[load_cosign_key(key.public_path)], registry=client)
    assert (verdict.format, verdict.image_signer) == ("bundle", fingerprint(key.private.public_key()))


def test_basic_auth_is_answered_with_the_env_credentials(hostile: ThreadingHTTPServer) -> None:
    expected = "Basic " + base64.b64encode(b"ci:s3cret").decode()

    def registry(handler: BaseHTTPRequestHandler) -> None:
        if handler.headers.get("Authorization") != expected:
            handler.send_response(401)
            handler.send_header("WWW-Authenticate", 'Basic realm="registry"')
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        else:
            handler.send_error(404)

    hostile.reply = registry  # type: ignore[attr-defined]
    client, reference = _client(hostile, username="ci", password="s3cret")
    with pytest.raises(Refused, match="carries no cosign signature"):
        verify_image(reference, keys=[load_cosign_key(IMAGES / "cosign.pub")], registry=client)
    anonymous, _ = _client(hostile)
    with pytest.raises(Retryable, match="refused our credentials"):
        verify_image(reference, keys=[load_cosign_key(IMAGES / "cosign.pub")], registry=anonymous)


@pytest.mark.parametrize(
    "manifest",
    [
        b"not json",
        b"[]",
        b'{"schemaVersion": 2}',
        b'{"schemaVersion": 2, "layers": {}}',
        b'{"schemaVersion": 2, "layers": [1, null, "x"]}',
        b'{"schemaVersion": 2, "layers": [{"digest": "sha256:' + b"0" * 64 + b'", "size": true}]}',
        b'{"schemaVersion": 2, "layers": [{"digest": "sha256:' + b"0" * 64 + b'", "size": 9, '
        b'"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "annotations": []}]}',
    ],
)
def test_a_malformed_signature_manifest_is_a_registry_fault_retried_never_a_verdict(
    hostile: ThreadingHTTPServer, manifest: bytes
) -> None:
    client, reference = _client(hostile)
    tag = DIGEST.replace(":", "-") + ".sig"
    documents = {f"/v2/team/app/manifests/{tag}": ("application/vnd.oci.image.manifest.v1+json", manifest)}
    hostile.reply = lambda handler: _serve(handler, documents)  # type: ignore[attr-defined]
    with pytest.raises(Retryable, match="not a valid signature document") as caught:
        verify_image(reference, keys=[load_cosign_key(IMAGES / "cosign.pub")], registry=client)
    assert caught.value.code == "RegistryUnavailable"


def test_a_garbage_payload_blob_is_retried_but_a_signature_by_another_key_is_a_verdict(
    hostile: ThreadingHTTPServer, tmp_path: Path
) -> None:
    client, reference = _client(hostile)
    tag = DIGEST.replace(":", "-") + ".sig"
    payload = b"\x00 not a payload"
    layer = {
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "size": len(payload),
        "digest": "sha256:" + hashlib.sha256(payload).hexdigest(),
        "annotations": {"dev.cosignproject.cosign/signature": "bm90IGEgc2lnbmF0dXJl"},
    }
    manifest = json.dumps({"schemaVersion": 2, "layers": [layer]}).encode()
    documents = {
        f"/v2/team/app/manifests/{tag}": ("application/vnd.oci.image.manifest.v1+json", manifest),
        f"/v2/team/app/blobs/{layer['digest']}": ("application/octet-stream", payload),
    }
    hostile.reply = lambda handler: _serve(handler, documents)  # type: ignore[attr-defined]
    with pytest.raises(Refused) as caught:  # a signature no configured key made: that is a verdict
        verify_image(reference, keys=[load_cosign_key(IMAGES / "cosign.pub")], registry=client)
    assert caught.value.code == "UntrustedImageSignature"


class _Recorder(BaseHTTPRequestHandler):
    """Records each request's path and Authorization header, answers 404."""

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))  # type: ignore[attr-defined]
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def elsewhere() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_registry_credentials_never_follow_a_redirect_to_another_host(
    hostile: ThreadingHTTPServer, elsewhere: ThreadingHTTPServer
) -> None:
    expected = "Basic " + base64.b64encode(b"ci:s3cret").decode()
    other = f"http://localhost:{elsewhere.server_address[1]}"  # another host name, still on loopback

    def registry(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(401 if handler.headers.get("Authorization") != expected else 307)
        if handler.headers.get("Authorization") != expected:
            handler.send_header("WWW-Authenticate", 'Basic realm="registry"')
        else:
            handler.send_header("Location", other + handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    hostile.reply = registry  # type: ignore[attr-defined]
    client, reference = _client(hostile, username="ci", password="s3cret")
    with pytest.raises(Refused, match="carries no cosign signature"):
        verify_image(reference, keys=[load_cosign_key(IMAGES / "cosign.pub")], registry=client)
    seen = elsewhere.seen  # type: ignore[attr-defined]
    assert seen, "the redirect was followed"
    assert [auth for _, auth in seen] == [None] * len(seen)


@pytest.mark.parametrize("location", ["http://registry.example/v2/x", "ftp://127.0.0.1/x", "file:///etc/passwd"])
def test_a_redirect_to_plain_http_off_loopback_is_not_followed(hostile: ThreadingHTTPServer, location: str) -> None:
    def registry(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    hostile.reply = registry  # type: ignore[attr-defined]
    client, reference = _client(hostile, username="ci", password="s3cret")
    with pytest.raises(Retryable, match="neither https nor loopback: not followed"):
        verify_image(reference, keys=[load_cosign_key(IMAGES / "cosign.pub")], registry=client)


def test_a_token_realm_on_another_host_is_asked_without_our_credentials(
    hostile: ThreadingHTTPServer, elsewhere: ThreadingHTTPServer
) -> None:
    realm = f"http://localhost:{elsewhere.server_address[1]}/token"

    def registry(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(401)
        handler.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="reg"')
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    hostile.reply = registry  # type: ignore[attr-defined]
    client, reference = _client(hostile, username="ci", password="s3cret")
    with pytest.raises(Retryable):
        verify_image(reference, keys=[load_cosign_key(IMAGES / "cosign.pub")], registry=client)
    seen = elsewhere.seen  # type: ignore[attr-defined]
    assert seen and [auth for _, auth in seen] == [None] * len(seen)


def test_a_registry_trickling_its_headers_is_cut_off_at_the_deadline(hostile: ThreadingHTTPServer) -> None:
    stop = threading.Event()

    def trickle(handler: BaseHTTPRequestHandler) -> None:
        _raw(handler, b"HTTP/1.1 200 OK\r\n")
        for n in range(100):  # a header line every 0.1 s: each read is far under the 1 s timeout
            if stop.wait(0.1):
                return
            try:
                _raw(handler, b"X-Pad-%d: y\r\n" % n)
            except OSError:
                return

    hostile.reply = trickle  # type: ignore[attr-defined]
    client, reference = _client(hostile, timeout=1.0)
    client.deadline = 1.5
    started = time.monotonic()
    try:
        with pytest.raises(Retryable, match=r"took longer than 1\.5s"):
            verify_image(reference, keys=[load_cosign_key(IMAGES / "cosign.pub")], registry=client)
    finally:
        stop.set()
    assert time.monotonic() - started < 4  # one deadline per request: classic, then referrers and the tag


def test_all_requests_of_one_check_share_a_budget_so_a_slow_registry_cannot_hold_the_pass(
    hostile: ThreadingHTTPServer,
) -> None:
    seen: list[str] = []
    layer = {
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "size": 9,
        "digest": "sha256:" + "0" * 64,
        "annotations": {"dev.cosignproject.cosign/signature": "c2ln"},
    }
    manifest = json.dumps({"schemaVersion": 2, "layers": [layer] * 32}).encode()
    tag = DIGEST.replace(":", "-") + ".sig"
    documents = {f"/v2/team/app/manifests/{tag}": ("application/vnd.oci.image.manifest.v1+json", manifest)}

    def registry(handler: BaseHTTPRequestHandler) -> None:
        seen.append(handler.path)
        _serve(handler, documents)  # every blob is missing: 32 more requests, each a retryable fault

    ticks = iter(range(0, 10_000, 10))  # every request takes 10 s by this clock
    hostile.reply = registry  # type: ignore[attr-defined]
    client, reference = _client(hostile, budget=45.0, clock=lambda: float(next(ticks)))
    with pytest.raises(Retryable):
        verify_image(reference, keys=[load_cosign_key(IMAGES / "cosign.pub")], registry=client)
    with pytest.raises(Retryable, match=r"took longer than 45s in all"):
        client.manifest("team/app", tag, max_bytes=1024)
    assert len(seen) == 5  # the manifest and four blobs; nothing after the budget, not 32 times the deadline
