"""Signing on the approver's machine, through ``ssh-keygen -Y sign`` (docs/design.md §15, ``approve``).

The controller never signs anything; a person running ``approve`` does.  Their
key stays where ssh-keygen finds it — a private key file, a public key whose
private half is in ``ssh-agent``, a FIDO key that asks for a touch — so this
module only hands ssh-keygen the bytes and reads back the armoured signature.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from controller.errors import ConfigError


def ssh_sign(payload: bytes, *, key: str, namespace: str) -> bytes:
    """An armoured SSHSIG over ``payload``; ``key`` is a key file, or git's ``key::ssh-… AAAA…`` literal."""
    with tempfile.TemporaryDirectory(prefix="dreichor-approve-") as folder:
        key_file = Path(key).expanduser()
        if key.startswith("key::"):  # git's literal public key: the private half is in the agent
            key_file = Path(folder) / "signing-key.pub"
            key_file.write_text(key[len("key::") :].strip() + "\n")
        try:
            done = subprocess.run(
                ["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(key_file)],
                input=payload,
                capture_output=True,
                timeout=300,  # a FIDO key waits for a touch
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"ssh-keygen could not sign: {exc}") from None
    if done.returncode != 0 or b"-----BEGIN SSH SIGNATURE-----" not in done.stdout:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ConfigError(f"ssh-keygen could not sign with {key}: {said[-1] if said else 'no signature'}")
    return done.stdout
