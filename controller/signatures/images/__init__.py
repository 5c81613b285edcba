"""Image signature verification: cosign signatures of the declared digest, checked before the pull.

``cosign`` verifies one signature (classic simple-signing or a Sigstore bundle) under the host's
keys; ``keyless`` verifies a classic keyless signature (Fulcio certificate, Rekor SET) against the
pinned root ``trusted_root`` reads; ``bundles`` verifies keyless Sigstore bundles through
sigstore-python; ``provenance`` reads the source a verified SLSA provenance names; ``verifier``
finds the signatures in the registry and gives the pass its verdict.
"""
