"""A stand-in for the two ``cosign`` commands README's ten minutes use, for a host without cosign.

``cosign generate-key-pair`` writes ``cosign.key`` and ``cosign.pub`` in the current folder
(the key unencrypted PEM here: ``COSIGN_PASSWORD`` is empty in the README); ``cosign sign
--key cosign.key IMAGE`` pushes a classic ``.sig`` signature to the image's registry, in
the format cosign writes (``tests.cosign_signing``, checked against cosign's own
signatures in the image tests). The controller's verification it feeds is the real one.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.cosign_signing import RegistryWriter, SigningKey, make_signing_key, sign_classic


def main(argv: list[str]) -> int:
    """``generate-key-pair`` or ``sign [--yes] --key FILE [--tlog-upload=false] IMAGE``."""
    if argv[:1] == ["generate-key-pair"]:
        key = make_signing_key(Path.cwd(), name="cosign")
        pem = key.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        Path("cosign.key").write_bytes(pem)
        return 0
    if argv[:1] == ["sign"] and "--key" in argv:
        private = serialization.load_pem_private_key(Path(argv[argv.index("--key") + 1]).read_bytes(), password=None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        image = argv[-1]
        sign_classic(RegistryWriter(image.split("/", maxsplit=1)[0]), image, SigningKey(private, Path("cosign.pub")))
        return 0
    print(f"readme_cosign: not a command the README uses: {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
