"""A host for tests through the real command line: a manifest repo signed with real keys, the host
layout, and the in-memory engine handed in where the command line builds its service."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from controller import cli, compose
from controller.errors import Reason, Refused
from controller.glance import Glance
from controller.model.config import Config, parse_config
from controller.model.desired import DesiredContainer
from controller.records.audit import read_events
from controller.records.host_init import init_layout
from controller.service import EnvironmentService
from testbed import ManifestRepo, SshKey, manifest_text
from tests.unit.fake_engine import FakeEngine

REPOSITORY = "registry.test/dreichor/runtime"
GOOD = [f"{REPOSITORY}@sha256:{c * 64}" for c in "abde"]
SICK = f"{REPOSITORY}@sha256:{'c' * 64}"
LATE = f"{REPOSITORY}@sha256:{'f' * 64}"  # its signature is pushed after the change (a retried refusal)


class Crash(BaseException):
    """The process died at a step (a SIGKILL, as the engine tier sends)."""


class FakeTime:
    """Monotonic time that moves only when the rollout sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Host:
    """One environment's host: manifest repo, config, fake engine, and the command line pointed at them."""

    def __init__(self, base: Path, key: SshKey, *, settings: dict[str, Any] | None = None) -> None:
        self.key = key
        self.repo = ManifestRepo(base / "manifests")
        self.repo.write("README.md", "manifests\n")
        init_layout(base / "opt", "prod")
        agent = base / "opt" / "prod" / "deploy-agent"
        (agent / "trust" / "allowed_signers").write_text(key.allowed_signers_line + "\n")
        (agent / ".env").write_text("DATABASE_URL=postgresql://h/dreichor_prod\n")
        self.config_file = agent / "controller.yaml"
        self.agent = agent
        self.config: Config = parse_config(
            {
                "environment": "prod",
                "root": str(base / "opt"),
                "source": {"url": self.repo.url, "interval": 60},
                "trust": {"allowed_signers": "trust/allowed_signers"},
                "image": {"repository": REPOSITORY},
                "health": {"timeout": 5, "stable": 1},
                **(settings or {}),
            },
            base=agent,
        )
        self.engine = FakeEngine("prod", registry={*GOOD, SICK, LATE}, crashing=frozenset({SICK}))
        self.time = FakeTime()
        self.unsigned_images: set[str] = set()
        self.crash_at: str | None = None  # the process dies (SIGKILL) at this step of the next pass
        self.dead = False  # the process was killed: every later step of the same pass dies with it
        self.on_step: dict[str, Callable[[], None]] = {}  # what the world does at a step of a pass

    def at_step(self, step: str) -> None:
        self.on_step.get(step, lambda: None)()
        if step == self.crash_at or self.dead:  # after a SIGKILL nothing more runs: no record in a finally
            self.crash_at, self.dead = None, True
            raise Crash(step)

    def image_check(self, desired: DesiredContainer) -> str:
        if desired.image in self.unsigned_images:
            raise Refused(f"image {desired.image} has no signature yet", code=Reason.IMAGE_UNSIGNED)
        return "cosign:release"

    def service(self) -> EnvironmentService:
        """A fresh service, as a new process makes one."""
        self.dead = False
        return compose.environment_service(
            self.config,
            engine=lambda: self.engine,
            image_check=self.image_check,
            at_step=self.at_step,
            sleep=self.time.sleep,
            monotonic=self.time.monotonic,
        )

    def cli(self, *args: str) -> tuple[int, str]:
        """``dreichor-controller ARGS --config …``: its exit code and what it printed."""
        out, err = io.StringIO(), io.StringIO()
        with (
            mock.patch.object(compose, "service_from_file", lambda path: self.service()),
            mock.patch.object(Glance, "from_file", lambda path, environment=None: Glance(self.config)),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            code = cli.main([*args, "--config", str(self.config_file)])
        return code, out.getvalue() + err.getvalue()

    def publish(self, image: str, *, signed: bool = True) -> str:
        self.repo.write("envs/prod.yaml", manifest_text("prod", image))
        sha = self.repo.commit(f"run {image[-6:]}", key=self.key if signed else None)
        self.repo.push()
        return sha

    def touch_elsewhere(self, n: int) -> str:
        """A signed commit that leaves prod's content as it is (dev's manifest, an approval file)."""
        self.repo.write("envs/dev.yaml", manifest_text("dev", GOOD[n % len(GOOD)]) + f"# {n}\n")
        sha = self.repo.commit("dev bump", key=self.key)
        self.repo.push()
        return sha

    def status(self) -> dict[str, Any]:
        return json.loads(self.config.paths.status.read_text())

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.config.paths.audit)
