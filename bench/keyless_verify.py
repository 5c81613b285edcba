"""Keyless image verification against key-based, and against the pull it guards, measured in one run.

Run: ``.venv/bin/python -m bench.keyless_verify`` (from the repository root).  Every figure is one
whole check as a pass makes it (``ImageVerifier.verify``): reading the key or the pinned trusted
root, every registry round trip on 127.0.0.1 and the cryptography.  Keyless signatures come from
the test's own Sigstore instance (``tests/sigstore_instance.py``), so the certificate chain, the
SCT, the SET (classic) and the inclusion proof and checkpoint (bundle) are all really checked.

Rows: keyless vs key-based in the classic ``.sig`` format and in the bundle format (goal <= 3x),
and the full keyless check with its SLSA provenance vs ``docker pull`` of the image it guards from
the same registry, the image removed before each pull (goal <= 1.0x).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bench.common import Result, median_seconds, report
from bench.sandbox import Sandbox, sandbox
from controller.signatures.images.keyless import KeylessIdentity
from controller.signatures.images.verifier import ImageVerifier, Provenance
from controller.signatures.registry import RegistryClient
from tests.cosign_signing import RegistryWriter, make_signing_key, sign_bundle, sign_classic
from tests.sigstore_instance import GHA, SigstoreInstance, attach_provenance, sign_bundle_keyless, sign_classic_keyless

SOURCE = "https://github.com/ceerkle/dreichor-trading"
WORKFLOW = f"{SOURCE}/.github/workflows/release.yml@refs/heads/main"
RUNS = 30
PULLS = 9


def _check(verifier: ImageVerifier, pinned: str, host: str) -> Callable[[], object]:
    return lambda: verifier.verify(pinned, registry=RegistryClient(host), now=datetime.now(UTC))


def _beds(box: Sandbox) -> dict[str, Callable[[], object]]:
    """One image copy per way of signing it, so each check finds only its own signature."""
    writer = RegistryWriter(box.registry.host)
    key = make_signing_key(box.base / "cosign")
    instance = SigstoreInstance()
    root = instance.trusted_root(box.base / "sigstore" / "trusted_root.json")
    identity = (KeylessIdentity(GHA, subject=WORKFLOW),)
    by_key = ImageVerifier(keys=(str(key.public_path),))
    keyless = ImageVerifier(trusted_root=str(root), identities=identity)
    with_provenance = ImageVerifier(
        trusted_root=str(root), identities=identity, provenance=Provenance(SOURCE, "refs/heads/main", identity)
    )
    copies = {
        name: writer.copy_image(box.images["healthy-a"], f"bench/{name}")
        for name in ("key-classic", "key-bundle", "keyless-classic", "keyless-bundle")
    }
    sign_classic(writer, copies["key-classic"], key)
    sign_bundle(writer, copies["key-bundle"], key)
    sign_classic_keyless(writer, copies["keyless-classic"], instance, subject=WORKFLOW)
    sign_bundle_keyless(writer, copies["keyless-bundle"], instance, subject=WORKFLOW)
    attach_provenance(
        writer, copies["keyless-classic"], instance, subject=WORKFLOW, repository=SOURCE, ref="refs/heads/main"
    )
    host = box.registry.host
    return {
        "key-classic": _check(by_key, copies["key-classic"], host),
        "key-bundle": _check(by_key, copies["key-bundle"], host),
        "keyless-classic": _check(keyless, copies["keyless-classic"], host),
        "keyless-bundle": _check(keyless, copies["keyless-bundle"], host),
        "keyless+provenance": _check(with_provenance, copies["keyless-classic"], host),
        "pinned": lambda: copies["keyless-classic"],
    }


def _pull_seconds(box: Sandbox, pinned: str) -> float:
    """Median ``docker pull`` of ``pinned`` into the sandbox's engine; the image is removed before each, untimed."""
    samples = []
    for _ in range(PULLS):
        box.engine.cli("image", "rm", "--force", pinned)
        start = time.perf_counter()
        box.engine.cli("pull", pinned)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure() -> list[Result]:
    """The three rows, each figure and baseline from this run."""
    with sandbox() as box:
        checks = _beds(box)
        seconds = {name: median_seconds(check, runs=RUNS) for name, check in checks.items() if name != "pinned"}
        pull = _pull_seconds(box, str(checks["pinned"]()))
    return [
        Result(
            "keyless image verify, classic .sig (vs key-based)",
            seconds["keyless-classic"] * 1e3,
            seconds["key-classic"] * 1e3,
            "ms",
            3.0,
        ),
        Result(
            "keyless image verify, bundle v0.3 (vs key-based)",
            seconds["keyless-bundle"] * 1e3,
            seconds["key-bundle"] * 1e3,
            "ms",
            3.0,
        ),
        Result(
            "keyless verify + provenance (vs the docker pull it guards)",
            seconds["keyless+provenance"] * 1e3,
            pull * 1e3,
            "ms",
            1.0,
        ),
    ]


def main() -> int:
    """Measure and print."""
    for result in measure():
        report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
