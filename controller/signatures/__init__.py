"""Commit signature verification against the host's trust policy.

``payload`` splits a raw commit the way git does; ``sshsig`` and ``openpgp``
verify the two signature formats git writes; ``allowed_signers`` parses the
host's SSH trust file; ``policy`` ties them together into one verdict.
"""
