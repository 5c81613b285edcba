"""Commit signature verification against the host's trust policy.

``payload`` splits a raw commit the way git does; ``sshsig`` and ``openpgp``
verify the two signature formats git writes; ``allowed_signers`` and
``revocations`` parse the host's trust files; ``policy`` ties them together
into one verdict; ``verification`` walks the revisions a pass must check.
"""
