"""A Sigstore instance of the test's own: a Fulcio CA, a CT log and a Rekor log, made with ``cryptography``.

It issues keyless certificates the way Fulcio does (empty subject, one critical SAN, the OIDC
issuer in the v1 and v2 extensions, code signing, an embedded SCT over the precertificate) and logs
entries the way Rekor v1 does (a signed entry timestamp over the canonical entry; for bundles a
one-leaf Merkle tree with a signed checkpoint).  ``trusted_root`` writes the instance's
``trusted_root.json``.  With it the test bed signs images keylessly in both cosign formats
(``sign_classic_keyless``, ``sign_bundle_keyless``) and attaches SLSA provenance
(``attach_provenance``), and every part can be tampered with on purpose (``Tamper``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from tests.cosign_signing import (
    BUNDLE,
    OCI_INDEX,
    SIMPLE_SIGNING,
    RegistryWriter,
    bundle_artifact,
    classic_config,
    simple_signing_payload,
)

GHA = "https://token.actions.githubusercontent.com"
SCT_OID = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
# Fulcio's source extensions, written from the workflow run's OIDC token (DER UTF8Strings, like ISSUER_V2)
SOURCE_EXTENSIONS = {
    "build_signer": ObjectIdentifier("1.3.6.1.4.1.57264.1.9"),
    "repository": ObjectIdentifier("1.3.6.1.4.1.57264.1.12"),
    "commit": ObjectIdentifier("1.3.6.1.4.1.57264.1.13"),
    "ref": ObjectIdentifier("1.3.6.1.4.1.57264.1.14"),
}
IN_TOTO = "application/vnd.in-toto+json"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
SLSA_V1 = "https://slsa.dev/provenance/v1"


def _der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _utf8string(text: str) -> bytes:
    raw = text.encode()
    if len(raw) < 128:
        return bytes([0x0C, len(raw)]) + raw
    size = len(raw).to_bytes((len(raw).bit_length() + 7) // 8, "big")
    return bytes([0x0C, 0x80 | len(size)]) + size + raw


Source = dict[str, str]  # what Fulcio would write: repository, ref, commit, build_signer (any of them)


def source_of_statement(statement: dict[str, Any], *, subject: str) -> Source | None:
    """The source an honest run's certificate carries: what its provenance statement names (v1 or v0.2)."""
    predicate = statement.get("predicate") or {}
    workflow = predicate.get("buildDefinition", {}).get("externalParameters", {}).get("workflow")
    if workflow:
        dependencies = predicate["buildDefinition"].get("resolvedDependencies") or [{}]
        commit = dependencies[0].get("digest", {}).get("gitCommit")
        return {"repository": workflow["repository"], "ref": workflow["ref"], "commit": commit, "build_signer": subject}
    config = predicate.get("invocation", {}).get("configSource")
    if config:
        repository, _, ref = config["uri"].removeprefix("git+").rpartition("@")
        commit = config.get("digest", {}).get("sha1")
        return {"repository": repository, "ref": ref, "commit": commit, "build_signer": subject}
    return None


@dataclass(frozen=True)
class Tamper:
    """What to break in a signature, one flag per attack the verifier must refuse."""

    set: bool = False  # flip a bit of the signed entry timestamp
    proof: bool = False  # a wrong root hash in the inclusion proof (bundles)
    signature: bool = False  # flip a bit of the image signature
    payload: bool = False  # store another payload than the one signed (classic) / change the DSSE payload
    digest: str | None = None  # sign a payload naming another digest
    expired: bool = False  # the certificate ended before the log's integrated time
    chain_outside_root: bool = False  # issued by a CA that only the chain annotation offers
    sct: bool = False  # the embedded SCT signs another certificate than the one issued


@dataclass
class SigstoreInstance:
    """One test instance's keys: CA, CT log, Rekor; ``trusted_root`` names them for the verifier."""

    origin: str = "rekor.test.local"
    ca_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    ct_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    rekor_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    ca: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.ca = self._ca(self.ca_key, "test fulcio")

    @staticmethod
    def _ca(key: ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore.test"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        start = datetime(2020, 1, 1, tzinfo=UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=365 * 30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )

    @property
    def rekor_log_id(self) -> bytes:
        """Rekor's log id: the SHA-256 of its DER public key."""
        return hashlib.sha256(_der(self.rekor_key.public_key())).digest()

    def trusted_root(self, path: Path) -> Path:
        """Write this instance's ``trusted_root.json`` (Sigstore's format) to ``path``."""
        valid = {"start": "2020-01-01T00:00:00Z"}

        def log(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
            der = _der(key.public_key())
            return {
                "baseUrl": f"https://{self.origin}",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": _b64(der), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": valid},
                "logId": {"keyId": _b64(hashlib.sha256(der).digest())},
            }

        document = {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.rekor_key)],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "sigstore.test", "commonName": "test fulcio"},
                    "uri": "https://fulcio.test.local",
                    "certChain": {
                        "certificates": [{"rawBytes": _b64(self.ca.public_bytes(serialization.Encoding.DER))}]
                    },
                    "validFor": valid,
                }
            ],
            "ctlogs": [log(self.ct_key)],
            "timestampAuthorities": [],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document))
        return path

    def issue(
        self,
        subject: str,
        *,
        issuer: str = GHA,
        at: datetime,
        expired: bool = False,
        outside_root: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None,
        bad_sct: bool = False,
        source: Source | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A Fulcio-shaped certificate for ``subject``, valid ten minutes from ``at`` (or ended before it).

        ``source`` puts Fulcio's Source Repository URI, Ref, Digest and Build Signer URI extensions in.
        """
        ca_key, ca = outside_root or (self.ca_key, self.ca)
        key = ec.generate_private_key(ec.SECP256R1())
        start = at - timedelta(minutes=30 if expired else 1)
        name = x509.UniformResourceIdentifier(subject) if "://" in subject else x509.RFC822Name(subject)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)  # type: ignore[arg-type]
            .add_extension(x509.SubjectAlternativeName([name]), critical=True)
            .add_extension(x509.UnrecognizedExtension(ISSUER_V1, issuer.encode()), critical=False)
            .add_extension(x509.UnrecognizedExtension(ISSUER_V2, _utf8string(issuer)), critical=False)
        )
        for name, oid in SOURCE_EXTENSIONS.items():
            if source and source.get(name):
                builder = builder.add_extension(
                    x509.UnrecognizedExtension(oid, _utf8string(source[name])), critical=False
                )
        until = start + timedelta(minutes=10)
        logged = until + timedelta(minutes=1) if bad_sct else until  # the log saw another certificate
        precertificate = builder.not_valid_after(logged).sign(ca_key, hashes.SHA256())
        sct = self._sct(precertificate, issuer_key=ca.public_key(), at=start)  # type: ignore[arg-type]
        certificate = (
            builder.not_valid_after(until)
            .add_extension(x509.UnrecognizedExtension(SCT_OID, sct), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return key, certificate

    def _sct(self, precertificate: x509.Certificate, *, issuer_key: ec.EllipticCurvePublicKey, at: datetime) -> bytes:
        """The SCT extension's value: an OCTET STRING holding a one-SCT list, signed by the CT log."""
        timestamp = int(at.timestamp() * 1000).to_bytes(8, "big")
        tbs = precertificate.tbs_certificate_bytes
        signed = (
            b"\x00\x00"
            + timestamp
            + b"\x00\x01"
            + hashlib.sha256(_der(issuer_key)).digest()
            + len(tbs).to_bytes(3, "big")
            + tbs
            + b"\x00\x00"
        )
        signature = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        log_id = hashlib.sha256(_der(self.ct_key.public_key())).digest()
        sct = b"\x00" + log_id + timestamp + b"\x00\x00" + b"\x04\x03" + len(signature).to_bytes(2, "big") + signature
        listed = len(sct).to_bytes(2, "big") + sct
        tls = (len(listed)).to_bytes(2, "big") + listed
        return bytes([0x04, len(tls)]) + tls if len(tls) < 128 else bytes([0x04, 0x81, len(tls)]) + tls

    def log(self, body: dict[str, Any], *, at: datetime, tamper: Tamper) -> dict[str, Any]:
        """A Rekor v1 entry for ``body``: canonical body, integrated time, SET, one-leaf inclusion proof."""
        canonical = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        integrated = int(at.timestamp())
        entry = {"body": _b64(canonical), "integratedTime": integrated, "logID": self.rekor_log_id.hex(), "logIndex": 0}
        signed_entry = self.rekor_key.sign(
            json.dumps(entry, separators=(",", ":"), sort_keys=True).encode(), ec.ECDSA(hashes.SHA256())
        )
        if tamper.set:
            signed_entry = signed_entry[:-1] + bytes([signed_entry[-1] ^ 1])
        root = hashlib.sha256(b"\x00" + canonical).digest()
        note = f"{self.origin}\n1\n{_b64(root)}\n"
        note_signature = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = f"{note}\n\u2014 {self.origin} {_b64(self.rekor_log_id[:4] + note_signature)}\n"
        proof_root = hashlib.sha256(b"tampered").digest() if tamper.proof else root
        return {
            "entry": entry,
            "set": signed_entry,
            "proof": {
                "logIndex": "0",
                "rootHash": _b64(proof_root),
                "treeSize": "1",
                "hashes": [],
                "checkpoint": {"envelope": checkpoint},
            },
        }


def _signed_at() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)


def _flip(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def classic_keyless_layer(
    instance: SigstoreInstance, payload: bytes, *, subject: str, issuer: str = GHA, tamper: Tamper = Tamper()
) -> dict[str, str]:
    """The annotations of one classic keyless ``.sig`` layer over ``payload``."""
    at = _signed_at()
    outside = None
    if tamper.chain_outside_root:
        rogue_key = ec.generate_private_key(ec.SECP256R1())
        outside = (rogue_key, SigstoreInstance._ca(rogue_key, "test fulcio"))
    key, certificate = instance.issue(
        subject, issuer=issuer, at=at, expired=tamper.expired, outside_root=outside, bad_sct=tamper.sct
    )
    signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    body = {
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
            "signature": {"content": _b64(signature), "publicKey": {"content": _b64(_pem(certificate))}},
        },
    }
    logged = instance.log(body, at=at, tamper=tamper)
    if tamper.signature:
        signature = _flip(signature)
    chain = _pem(outside[1] if outside else instance.ca)
    return {
        "dev.cosignproject.cosign/signature": _b64(signature),
        "dev.sigstore.cosign/certificate": _pem(certificate).decode(),
        "dev.sigstore.cosign/chain": chain.decode(),
        "dev.sigstore.cosign/bundle": json.dumps(
            {"SignedEntryTimestamp": _b64(logged["set"]), "Payload": logged["entry"]}
        ),
    }


def keyless_bundle(
    instance: SigstoreInstance,
    statement: dict[str, Any],
    *,
    subject: str,
    issuer: str = GHA,
    tamper: Tamper = Tamper(),
    source: Source | None = None,
) -> bytes:
    """A bundle v0.3: a DSSE envelope around ``statement``, a keyless certificate and a Rekor dsse entry.

    The certificate names ``source``, by default the one the statement names (an honest run).
    """
    at = _signed_at()
    source = source if source is not None else source_of_statement(statement, subject=subject)
    key, certificate = instance.issue(
        subject, issuer=issuer, at=at, expired=tamper.expired, bad_sct=tamper.sct, source=source
    )
    payload = json.dumps(statement, separators=(",", ":")).encode()
    pae = b"DSSEv1 %d %b %d %b" % (len(IN_TOTO), IN_TOTO.encode(), len(payload), payload)
    signature = key.sign(pae, ec.ECDSA(hashes.SHA256()))
    envelope = {"payload": _b64(payload), "payloadType": IN_TOTO, "signatures": [{"sig": _b64(signature)}]}
    body = {
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(json.dumps(envelope).encode()).hexdigest()},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "signatures": [{"signature": _b64(signature), "verifier": _b64(_pem(certificate))}],
        },
    }
    logged = instance.log(body, at=at, tamper=tamper)
    if tamper.signature:
        envelope["signatures"] = [{"sig": _b64(_flip(signature))}]
    if tamper.payload:
        envelope["payload"] = _b64(payload.replace(b'"predicate":{', b'"predicate":{"x":1,', 1))
    entry = logged["entry"]
    bundle = {
        "mediaType": BUNDLE,
        "verificationMaterial": {
            "certificate": {"rawBytes": _b64(certificate.public_bytes(serialization.Encoding.DER))},
            "tlogEntries": [
                {
                    "logIndex": "0",
                    "logId": {"keyId": _b64(instance.rekor_log_id)},
                    "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                    "integratedTime": str(entry["integratedTime"]),
                    "inclusionPromise": {"signedEntryTimestamp": _b64(logged["set"])},
                    "inclusionProof": logged["proof"],
                    "canonicalizedBody": entry["body"],
                }
            ],
        },
        "dsseEnvelope": envelope,
    }
    return json.dumps(bundle).encode()


def cosign_statement(name: str, digest: str) -> dict[str, Any]:
    """What ``cosign sign`` puts in a bundle: an in-toto statement of the signing predicate."""
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": SIGN_PREDICATE,
        "predicate": {},
    }


def provenance_statement(
    name: str, digest: str, *, repository: str, ref: str, commit: str = "a" * 40
) -> dict[str, Any]:
    """SLSA provenance v1 as ``actions/attest-build-provenance`` writes it (the parts we read)."""
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": SLSA_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": "https://actions.github.io/buildtypes/workflow/v1",
                "externalParameters": {
                    "workflow": {"ref": ref, "repository": repository, "path": ".github/workflows/release.yml"}
                },
                "resolvedDependencies": [{"uri": f"git+{repository}@{ref}", "digest": {"gitCommit": commit}}],
            },
            "runDetails": {"builder": {"id": "https://github.com/actions/runner/github-hosted"}},
        },
    }


def sign_classic_keyless(
    writer: RegistryWriter,
    pinned: str,
    instance: SigstoreInstance,
    *,
    subject: str,
    issuer: str = GHA,
    tamper: Tamper = Tamper(),
) -> str:
    """Sign ``pinned`` keylessly in the classic format, as ``cosign sign`` in GitHub Actions; the ``.sig`` tag."""
    repository, digest = pinned.removeprefix(f"{writer.host}/").split("@")
    signed = simple_signing_payload(pinned, digest=tamper.digest)
    annotations = classic_keyless_layer(instance, signed, subject=subject, issuer=issuer, tamper=tamper)
    stored = signed.replace(b'"optional":null', b'"optional":{}') if tamper.payload else signed
    payload_digest = writer.put_blob(repository, stored)
    config = classic_config(payload_digest)
    config_digest = writer.put_blob(repository, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": len(config),
            "digest": config_digest,
        },
        "layers": [
            {"mediaType": SIMPLE_SIGNING, "size": len(stored), "digest": payload_digest, "annotations": annotations}
        ],
    }
    tag = digest.replace(":", "-") + ".sig"
    writer.put_manifest(repository, tag, json.dumps(manifest, separators=(",", ":")).encode())
    return tag


def push_bundle(writer: RegistryWriter, pinned: str, bundle: bytes) -> None:
    """Store ``bundle`` as an OCI 1.1 artifact about ``pinned``, added to the list at the fallback tag."""
    repository, digest = pinned.removeprefix(f"{writer.host}/").split("@")
    writer.put_blob(repository, bundle)
    writer.put_blob(repository, b"{}")
    image, image_type = writer.manifest(repository, digest)
    artifact = bundle_artifact(bundle, subject={"mediaType": image_type, "size": len(image), "digest": digest})
    artifact_digest = writer.put_manifest(repository, "sha256:" + hashlib.sha256(artifact).hexdigest(), artifact)
    tag = digest.replace(":", "-")
    try:
        with writer._call("GET", f"/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_INDEX}) as reply:
            listed = json.loads(reply.read()).get("manifests", [])
    except OSError:  # urllib's HTTPError: no index yet
        listed = []
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": len(artifact),
        "digest": artifact_digest,
        "artifactType": BUNDLE,
    }
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*listed, entry]}
    writer.put_manifest(repository, tag, json.dumps(index).encode(), media_type=OCI_INDEX)


def sign_bundle_keyless(
    writer: RegistryWriter,
    pinned: str,
    instance: SigstoreInstance,
    *,
    subject: str,
    issuer: str = GHA,
    tamper: Tamper = Tamper(),
) -> None:
    """Sign ``pinned`` keylessly as a bundle v0.3 (``cosign sign --new-bundle-format``) listed at the fallback tag."""
    repository, digest = pinned.removeprefix(f"{writer.host}/").split("@")
    statement = cosign_statement(f"{writer.host}/{repository}", tamper.digest or digest)
    push_bundle(writer, pinned, keyless_bundle(instance, statement, subject=subject, issuer=issuer, tamper=tamper))


def attach_provenance(
    writer: RegistryWriter,
    pinned: str,
    instance: SigstoreInstance,
    *,
    subject: str,
    repository: str,
    ref: str,
    commit: str = "a" * 40,
    source: Source | None = None,
) -> None:
    """Attach a SLSA provenance attestation for ``pinned`` as GitHub's ``attest-build-provenance`` pushes it.

    Its certificate names ``source`` (by default what the statement names: an honest run).
    """
    name, digest = pinned.split("@")
    statement = provenance_statement(name, digest, repository=repository, ref=ref, commit=commit)
    push_bundle(writer, pinned, keyless_bundle(instance, statement, subject=subject, source=source))


def push_unpullable_image(writer: RegistryWriter, repository: str, *, seed: str) -> str:
    """A one-layer image of its own digest, for checks that must refuse before any pull; its pinned reference."""
    docker_manifest = "application/vnd.docker.distribution.manifest.v2+json"
    layer = f"attack {seed}".encode()
    layer_digest = writer.put_blob(repository, layer)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    config_digest = writer.put_blob(repository, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": docker_manifest,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": config_digest,
        },
        "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "size": len(layer), "digest": layer_digest}
        ],
    }
    digest = writer.put_manifest(
        repository, f"attack-{seed}", json.dumps(manifest).encode(), media_type=docker_manifest
    )
    return f"{writer.host}/{repository}@{digest}"


def classic_attestation_layer(
    instance: SigstoreInstance,
    statement: dict[str, Any],
    *,
    subject: str,
    issuer: str = GHA,
    source: Source | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A classic ``.att`` layer as ``cosign attest`` writes it: the envelope blob and its annotations.

    The Rekor entry is ``intoto`` 0.0.2, logging the envelope's hash and the certificate, which
    names ``source`` (by default the statement's own).
    """
    at = _signed_at()
    source = source if source is not None else source_of_statement(statement, subject=subject)
    key, certificate = instance.issue(subject, issuer=issuer, at=at, source=source)
    payload = json.dumps(statement, separators=(",", ":")).encode()
    pae = b"DSSEv1 %d %b %d %b" % (len(IN_TOTO), IN_TOTO.encode(), len(payload), payload)
    signature = key.sign(pae, ec.ECDSA(hashes.SHA256()))
    envelope = json.dumps(
        {"payloadType": IN_TOTO, "payload": _b64(payload), "signatures": [{"keyid": "", "sig": _b64(signature)}]}
    ).encode()
    body = {
        "apiVersion": "0.0.2",
        "kind": "intoto",
        "spec": {
            "content": {
                "envelope": {
                    "payloadType": IN_TOTO,
                    "signatures": [{"sig": _b64(_b64(signature).encode()), "publicKey": _b64(_pem(certificate))}],
                },
                "hash": {"algorithm": "sha256", "value": hashlib.sha256(envelope).hexdigest()},
                "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            }
        },
    }
    logged = instance.log(body, at=at, tamper=Tamper())
    annotations = {
        "dev.cosignproject.cosign/signature": "",
        "dev.sigstore.cosign/certificate": _pem(certificate).decode(),
        "dev.sigstore.cosign/chain": _pem(instance.ca).decode(),
        "dev.sigstore.cosign/bundle": json.dumps(
            {"SignedEntryTimestamp": _b64(logged["set"]), "Payload": logged["entry"]}
        ),
    }
    return envelope, annotations


def attest_classic(
    writer: RegistryWriter,
    pinned: str,
    instance: SigstoreInstance,
    *,
    subject: str,
    repository: str,
    ref: str,
    commit: str = "a" * 40,
    source: Source | None = None,
) -> str:
    """Attach SLSA provenance as classic ``cosign attest`` does, at the tag ``sha256-<hex>.att``; that tag."""
    name, digest = pinned.split("@")
    statement = provenance_statement(name, digest, repository=repository, ref=ref, commit=commit)
    envelope, annotations = classic_attestation_layer(instance, statement, subject=subject, source=source)
    image_repository = name.removeprefix(f"{writer.host}/")
    envelope_digest = writer.put_blob(image_repository, envelope)
    config = classic_config(envelope_digest)
    config_digest = writer.put_blob(image_repository, config)
    layer = {
        "mediaType": "application/vnd.dsse.envelope.v1+json",
        "size": len(envelope),
        "digest": envelope_digest,
        "annotations": annotations,
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": len(config),
            "digest": config_digest,
        },
        "layers": [layer],
    }
    tag = digest.replace(":", "-") + ".att"
    writer.put_manifest(image_repository, tag, json.dumps(manifest, separators=(",", ":")).encode())
    return tag
