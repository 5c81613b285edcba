"""Shared fixtures: the real-component test bed (private dockerd, registry, images, keys, repos).

The Docker fixtures are session-scoped: one engine, one registry and one set
of images serve the whole run.  Without ``dockerd`` the tests that need it
skip with the reason — unless ``DREICHOR_REQUIRE_DOCKER=1`` (CI), where a
missing engine is a failure.  Every test that reaches ``docker_engine``, by
itself or through a fixture built on it, is marked ``docker`` here at
collection: ``-m "not docker"`` (``./scripts/test --fast``) is then every test
that needs no engine, and starts none.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import (
    BedError,
    ControllerHost,
    GpgKey,
    LocalRegistry,
    ManifestRepo,
    NotificationReceiver,
    PrivateDocker,
    SshKey,
    build_images,
    gnupg_homes,
    make_gpg_key,
    make_ssh_key,
    stop_gpg_agents,
)

REQUIRE_DOCKER = os.environ.get("DREICHOR_REQUIRE_DOCKER") == "1"
ENGINE_FIXTURE = "docker_engine"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``docker`` every test whose fixture closure holds the engine: none is marked by hand."""
    for item in items:
        if ENGINE_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)


def _unavailable(reason: str) -> None:
    """Skip without the engine, unless REQUIRE_DOCKER: then a missing engine fails the run."""
    if REQUIRE_DOCKER:
        pytest.fail(f"DREICHOR_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(reason)  # not REQUIRE_DOCKER: a developer machine without dockerd


@pytest.fixture(autouse=True, scope="session")
def _gpg_agents_stopped_after_the_run() -> Iterator[None]:
    """Stop the agents of every GNUPGHOME of the run, also those of session and module keys."""
    yield
    stop_gpg_agents()


@pytest.fixture(autouse=True)
def _gpg_agents_stopped_after_each_test() -> Iterator[None]:
    """Stop the agents of the GNUPGHOMEs made during this test (gpg leaves one running per home)."""
    mark = gnupg_homes()
    yield
    stop_gpg_agents(since=mark)


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateDocker]:
    """A private Docker Engine for the whole session."""
    if shutil.which("dockerd") is None:
        _unavailable("dockerd is not installed")
    if os.geteuid() != 0:
        _unavailable("the private dockerd needs root")
    # A short path: unix socket paths are limited to 108 bytes.
    base = Path(os.environ.get("DREICHOR_BED_DIR") or tmp_path_factory.mktemp("dockerd"))
    engine = PrivateDocker(base)
    try:
        engine.start()
    except BedError as exc:
        engine.stop()
        _unavailable(str(exc))
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A docker-registry on 127.0.0.1 for the whole session."""
    if shutil.which("docker-registry") is None:
        _unavailable("docker-registry is not installed")
    reg = LocalRegistry(tmp_path_factory.mktemp("registry")).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def images(
    docker_engine: PrivateDocker, registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Variant name → pinned reference of the tiny test images in the registry."""
    return build_images(docker_engine, registry, tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> SshKey:
    """A trusted-by-default ed25519 signing key."""
    return make_ssh_key(tmp_path_factory.mktemp("ssh"), name="maintainer")


@pytest.fixture(scope="session")
def gpg_key(tmp_path_factory: pytest.TempPathFactory) -> GpgKey:
    """An OpenPGP ed25519 signing key in its own GNUPGHOME."""
    return make_gpg_key(tmp_path_factory.mktemp("gnupg"), name="release")


@pytest.fixture
def receiver() -> Iterator[NotificationReceiver]:
    """A notification receiver on 127.0.0.1 (Apprise json:// and form://, GitHub statuses), stopped after the test."""
    bed = NotificationReceiver()
    yield bed
    bed.stop()


@pytest.fixture
def manifest_repo(tmp_path: Path) -> ManifestRepo:
    """A fresh bare manifest repository with a work clone."""
    return ManifestRepo(tmp_path / "manifests")


@pytest.fixture
def controller_host(
    tmp_path: Path,
    docker_engine: PrivateDocker,
    registry: LocalRegistry,
    manifest_repo: ManifestRepo,
    ssh_key: SshKey,
    images: dict[str, str],
) -> ControllerHost:
    """dev and prod host layouts on a clean engine, the manifest repo at a signed first commit (image A)."""
    docker_engine.remove_all_containers()
    host = ControllerHost(tmp_path, docker_engine, registry, manifest_repo, ssh_key)
    host.publish("initial", dev=images["healthy-a"], prod=images["healthy-a"])
    return host
