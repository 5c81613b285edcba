"""A local registry on 127.0.0.1 and the tiny images the tests run."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

from testbed.common import BedError, _wait, free_port
from testbed.engine import BUSYBOX, PrivateDocker

REPOSITORY_PATH = "dreichor/runtime"


class LocalRegistry:
    """Debian's ``docker-registry`` on 127.0.0.1 with storage under a temp folder."""

    def __init__(self, base: Path, *, address: str = "127.0.0.1") -> None:
        self.base = base
        self.port = free_port()
        self.host = f"{address}:{self.port}"
        self.repository = f"{self.host}/{REPOSITORY_PATH}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalRegistry:
        """Start the registry and wait for ``/v2/``."""
        binary = shutil.which("docker-registry")
        if binary is None:
            raise BedError("docker-registry is not installed (Debian package docker-registry)")
        self.base.mkdir(parents=True, exist_ok=True)
        config = self.base / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.base / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n"
        )
        with (self.base / "registry.log").open("ab") as log:
            self._proc = subprocess.Popen(
                [binary, "serve", str(config)], stdout=log, stderr=log, start_new_session=True
            )
        _wait(self.answers, timeout=30, what="docker-registry")
        return self

    def answers(self) -> bool:
        """Whether ``GET /v2/`` answers."""
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the registry (tests also use this to simulate an outage)."""
        if self._proc is None:
            return
        self._proc.terminate()
        self._proc.wait(timeout=30)
        self._proc = None


IMAGE_VARIANTS: dict[str, list[str]] = {
    "healthy-a": [
        'HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD ["/bin/busybox", "true"]',
        'CMD ["/bin/busybox", "sleep", "86400"]',
    ],
    "healthy-b": [
        'HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD ["/bin/busybox", "true"]',
        'CMD ["/bin/busybox", "sleep", "86400"]',
    ],
    "plain": ['CMD ["/bin/busybox", "sleep", "86400"]'],
    "exits": ['CMD ["/bin/busybox", "sh", "-c", "echo starting; echo giving up >&2; exit 3"]'],
    "stubborn": ['CMD ["/bin/busybox", "sh", "-c", "trap \'\' TERM; /bin/busybox sleep 86400"]'],
    "unhealthy": [
        'HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD ["/bin/busybox", "false"]',
        'CMD ["/bin/busybox", "sleep", "86400"]',
    ],
}


def build_images(
    engine: PrivateDocker, registry: LocalRegistry, work: Path, *, variants: tuple[str, ...] = ()
) -> dict[str, str]:
    """Build every variant ``FROM scratch`` with busybox, push it, drop the local copy.

    Returns variant → ``repository@sha256:…``.  The local copies are removed so
    the controller has to pull from the registry like on a real host.
    """
    if not BUSYBOX.exists():
        raise BedError("/usr/bin/busybox is missing (Debian package busybox-static)")
    digests: dict[str, str] = {}
    for variant, lines in IMAGE_VARIANTS.items():
        if variants and variant not in variants:
            continue
        context = work / variant
        context.mkdir(parents=True, exist_ok=True)
        shutil.copy2(BUSYBOX, context / "busybox")
        dockerfile = [
            "FROM scratch",
            "COPY busybox /bin/busybox",
            f"LABEL io.dreichor.test.variant={variant}",
        ]
        (context / "Dockerfile").write_text("\n".join([*dockerfile, *lines]) + "\n")
        tag = f"{registry.repository}:{variant}"
        engine.cli("build", "--quiet", "--tag", tag, str(context))
        engine.cli("push", tag)
        digest = engine.cli("inspect", "--format", "{{index .RepoDigests 0}}", tag).strip()
        engine.cli("rmi", tag)
        digests[variant] = digest
    return digests
