"""Image signature verification: cosign signatures of the declared digest, checked before the pull.

``cosign`` verifies one signature (classic simple-signing or a Sigstore bundle) under the host's
keys; ``keyless`` verifies a classic keyless signature (Fulcio certificate, Rekor SET) against the
pinned root ``trusted_root`` reads; ``bundles`` verifies keyless Sigstore bundles through
sigstore-python; ``layout`` reads where signatures and attestations sit in a registry;
``provenance`` finds and verifies a SLSA provenance and the source it names; ``verifier`` gives
the pass its verdict.
"""
