"""Image signature verification: cosign signatures of the declared digest, checked before the pull.

``cosign`` verifies one signature (classic simple-signing or a Sigstore
bundle) under the host's keys; ``verifier`` finds the signatures in the
registry and gives the pass its verdict.
"""
