"""A throwaway test bed for benchmarks: private dockerd, registry and images under a temp folder.

The folder is removed whatever happened, after the engine is stopped and what
it left mounted there is unmounted (``testbed.unmount_under``): a benchmark
never leaves a mount or a folder behind, and ``leftover_mounts`` says so.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testbed import LocalRegistry, PrivateDocker, build_images, mounts_under, unmount_under

PREFIX = "dreichor-bench-"


@dataclass
class Sandbox:
    """What a benchmark gets."""

    base: Path
    engine: PrivateDocker
    registry: LocalRegistry
    images: dict[str, str]


@contextmanager
def sandbox() -> Iterator[Sandbox]:
    """Start the bed, yield it, tear it down: engine, registry, mounts, folder."""
    base = Path(tempfile.mkdtemp(prefix=PREFIX))
    engine = PrivateDocker(base / "docker")
    registry = LocalRegistry(base / "registry")
    try:
        engine.start()
        registry.start()
        yield Sandbox(base, engine, registry, build_images(engine, registry, base / "images"))
    finally:
        registry.stop()
        engine.stop()
        unmount_under(base)
        shutil.rmtree(base)


def leftover_mounts() -> list[str]:
    """Mounts still under any benchmark sandbox's folder (none after a clean run)."""
    return [m for m in mounts_under(Path(tempfile.gettempdir())) if f"/{PREFIX}" in m]
