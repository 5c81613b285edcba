"""Trust: who signed a commit, who signed an image, and the registry client that fetches image signatures.

``commits`` verifies git's two signature formats (SSHSIG and OpenPGP)
against the host's trust policy; ``images`` verifies cosign signatures of an
image digest before the pull; ``registry`` is the small OCI client both need.
Keys come from the host, never from the manifest repository.
"""
