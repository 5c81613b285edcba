"""Signs test images the way cosign does, through the registry's HTTP API (a test helper).

The classic format is shaped byte for byte like the ``.sig`` manifest and config that
``cosign sign --key`` v1.13.1 writes (as traced in jeffhuang4704/just-notes@172954a4,
``cosign/cosign-traffic.md``): a simple-signing payload blob, a config blob, and an OCI
manifest at the tag ``sha256-<hex>.sig`` whose one layer carries the signature annotation.  The
bundle format is a Sigstore bundle v0.3 (DSSE envelope around an in-toto statement) stored as an
OCI 1.1 artifact whose subject is the image, listed in an index at the fallback tag ``sha256-<hex>``
(the test registry has no referrers API).  Keys are made here, in the test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY = "application/vnd.oci.empty.v1+json"
REGISTRY_MANIFEST_LIMIT = 4 * 1024 * 1024  # docker-registry neither stores nor serves bigger manifests

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class SigningKey:
    """A private key made for a test, with its public PEM written to ``public_path``."""

    private: PrivateKey
    public_path: Path

    def sign(self, data: bytes) -> bytes:
        """A signature as cosign makes it with this kind of key."""
        key = self.private
        if isinstance(key, ec.EllipticCurvePrivateKey):
            digest = hashes.SHA384() if key.curve.key_size == 384 else hashes.SHA256()
            return key.sign(data, ec.ECDSA(digest))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return key.sign(data)


def make_signing_key(folder: Path, *, name: str = "cosign", kind: str = "p256") -> SigningKey:
    """A fresh key of ``kind`` (p256, p384, rsa, ed25519); the public PEM is ``folder/name.pub``."""
    makers = {
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }
    private: PrivateKey = makers[kind]()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pub"
    path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return SigningKey(private, path)


class RegistryWriter:
    """Just enough of the registry push API (no auth: the test registry has none)."""

    def __init__(self, host: str) -> None:
        self.host = host

    def _call(self, method: str, url: str, *, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
        full = url if url.startswith("http") else f"http://{self.host}{url}"
        request = urllib.request.Request(full, data=body or None, method=method, headers=headers or {})  # noqa: S310 - http://127.0.0.1 only
        return urllib.request.urlopen(request, timeout=120)  # noqa: S310 - http://127.0.0.1 only

    def put_blob(self, repository: str, data: bytes) -> str:
        """Upload a blob monolithically; its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self._call("POST", f"/v2/{repository}/blobs/uploads/") as reply:
            location = reply.headers["Location"]
        separator = "&" if "?" in location else "?"
        upload = f"{location}{separator}digest={digest}"
        headers = {"Content-Type": "application/octet-stream"}
        with self._call("PUT", upload, body=data, headers=headers):
            pass
        return digest

    def put_manifest(self, repository: str, reference: str, data: bytes, *, media_type: str = OCI_MANIFEST) -> str:
        """Store a manifest at a tag or digest; its digest."""
        with self._call(
            "PUT", f"/v2/{repository}/manifests/{reference}", body=data, headers={"Content-Type": media_type}
        ):
            pass
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """A manifest's bytes and media type."""
        accept = "application/vnd.docker.distribution.manifest.v2+json, " + OCI_MANIFEST
        with self._call("GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": accept}) as reply:
            return reply.read(), reply.headers["Content-Type"]

    def copy_image(self, pinned: str, repository: str) -> str:
        """Mount an image's blobs into another repository; the same image there, pinned."""
        source, digest = pinned.removeprefix(f"{self.host}/").split("@")
        data, media_type = self.manifest(source, digest)
        manifest = json.loads(data)
        for blob in [manifest["config"], *manifest["layers"]]:
            with self._call("POST", f"/v2/{repository}/blobs/uploads/?mount={blob['digest']}&from={source}"):
                pass
        self.put_manifest(repository, digest, data, media_type=media_type)
        return f"{self.host}/{repository}@{digest}"


def simple_signing_payload(pinned: str, *, digest: str | None = None) -> bytes:
    """The payload ``cosign sign`` signs: compact JSON naming the repository and the digest."""
    repository, named = pinned.split("@")
    document = {
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest or named},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def classic_manifest(payload_digest: str, payload_size: int, config: tuple[str, int], signatures: list[str]) -> bytes:
    """A ``.sig`` manifest shaped like cosign's: one simple-signing layer per signature."""
    layers = [
        {
            "mediaType": SIMPLE_SIGNING,
            "size": payload_size,
            "digest": payload_digest,
            "annotations": {"dev.cosignproject.cosign/signature": signature},
        }
        for signature in signatures
    ]
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config[1], "digest": config[0]},
        "layers": layers,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def classic_config(payload_digest: str) -> bytes:
    """The config blob cosign writes beside a ``.sig`` manifest."""
    document = {
        "architecture": "",
        "created": "2026-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [payload_digest]},
        "config": {},
    }
    return json.dumps(document, separators=(",", ":")).encode()


def sign_classic(
    writer: RegistryWriter,
    pinned: str,
    key: SigningKey,
    *,
    payload: bytes | None = None,
    uploaded: bytes | None = None,
    layers: int = 1,
    padding_bytes: int = 0,
) -> str:
    """Sign ``pinned`` in the classic format; returns the ``.sig`` tag.

    ``payload`` overrides what is signed (a borrowed signature), ``uploaded`` what is stored
    (a tampered payload); ``layers`` and ``padding_bytes`` make hostile oversized manifests.
    """
    repository, digest = pinned.removeprefix(f"{writer.host}/").split("@")
    signed = payload if payload is not None else simple_signing_payload(pinned)
    stored = uploaded if uploaded is not None else signed
    payload_digest = writer.put_blob(repository, stored)
    config = classic_config(payload_digest)
    config_digest = writer.put_blob(repository, config)
    signature = base64.b64encode(key.sign(signed)).decode()
    manifest = classic_manifest(payload_digest, len(stored), (config_digest, len(config)), [signature] * layers)
    if padding_bytes:
        document = json.loads(manifest)
        document["annotations"] = {"padding": "x" * padding_bytes}
        manifest = json.dumps(document, separators=(",", ":")).encode()
    tag = digest.replace(":", "-") + ".sig"
    writer.put_manifest(repository, tag, manifest)
    return tag


def make_bundle(name: str, digest: str, key: SigningKey) -> bytes:
    """A bundle v0.3: a DSSE envelope around cosign's in-toto statement about ``digest``."""
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    }
    payload = json.dumps(statement, separators=(",", ":")).encode()
    payload_type = b"application/vnd.in-toto+json"
    pae = b"DSSEv1 %d %b %d %b" % (len(payload_type), payload_type, len(payload), payload)
    bundle = {
        "mediaType": BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": ""}},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": payload_type.decode(),
            "signatures": [{"sig": base64.b64encode(key.sign(pae)).decode(), "keyid": ""}],
        },
    }
    return json.dumps(bundle).encode()


def bundle_artifact(bundle: bytes, *, subject: dict[str, Any]) -> bytes:
    """The OCI 1.1 artifact manifest that holds a bundle and points at the image as its subject."""
    artifact = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE,
        "config": {"mediaType": EMPTY, "size": 2, "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest()},
        "layers": [
            {"mediaType": BUNDLE, "size": len(bundle), "digest": "sha256:" + hashlib.sha256(bundle).hexdigest()}
        ],
        "subject": subject,
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope"},
    }
    return json.dumps(artifact, separators=(",", ":")).encode()


def referrers_index(artifact: bytes) -> bytes:
    """An OCI index listing one bundle artifact (the referrers answer, or the fallback tag)."""
    entry = {
        "mediaType": OCI_MANIFEST,
        "size": len(artifact),
        "digest": "sha256:" + hashlib.sha256(artifact).hexdigest(),
        "artifactType": BUNDLE,
    }
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()


def sign_bundle(writer: RegistryWriter, pinned: str, key: SigningKey) -> str:
    """Sign ``pinned`` as a bundle v0.3 artifact listed at the fallback tag; returns that tag."""
    repository, digest = pinned.removeprefix(f"{writer.host}/").split("@")
    bundle = make_bundle(f"{writer.host}/{repository}", digest, key)
    writer.put_blob(repository, bundle)
    writer.put_blob(repository, b"{}")
    image, image_type = writer.manifest(repository, digest)
    artifact = bundle_artifact(bundle, subject={"mediaType": image_type, "size": len(image), "digest": digest})
    writer.put_manifest(repository, "sha256:" + hashlib.sha256(artifact).hexdigest(), artifact)
    tag = digest.replace(":", "-")
    writer.put_manifest(repository, tag, referrers_index(artifact), media_type=OCI_INDEX)
    return tag
