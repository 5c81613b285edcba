"""A throwaway test bed for benchmarks: private dockerd, registry and images under a temp folder."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testbed import LocalRegistry, PrivateDocker, build_images


@dataclass
class Sandbox:
    """What a benchmark gets."""

    base: Path
    engine: PrivateDocker
    registry: LocalRegistry
    images: dict[str, str]


@contextmanager
def sandbox() -> Iterator[Sandbox]:
    """Start the bed, yield it, tear it down."""
    with tempfile.TemporaryDirectory(prefix="dreichor-bench-") as tmp:
        base = Path(tmp)
        engine = PrivateDocker(base / "docker").start()
        registry = LocalRegistry(base / "registry").start()
        try:
            yield Sandbox(base, engine, registry, build_images(engine, registry, base / "images"))
        finally:
            registry.stop()
            engine.stop()
