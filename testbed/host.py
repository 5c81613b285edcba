"""A controller host on the test bed: its layout, config, repository and engine, run through the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.cli import main as cli_main
from controller.records.audit import read_events
from controller.records.host_init import init_layout
from controller.records.status import Status, read_status
from testbed.common import BedError, free_port
from testbed.engine import PrivateDocker
from testbed.keys import SshKey
from testbed.registry import LocalRegistry
from testbed.repositories import ManifestRepo, manifest_text


class ControllerHost:
    """A host with dev and prod controllers configured against one signed manifest repo.

    ``sync`` runs the controller's own command line in-process; the paths are the
    layout's, under a temporary root.
    """

    def __init__(self, tmp: Path, engine: PrivateDocker, registry: LocalRegistry, repo: ManifestRepo, key: SshKey):
        self.root = tmp / "opt"
        self.engine = engine
        self.registry = registry
        self.repo = repo
        self.key = key
        self.configs: dict[str, Path] = {}
        self._runs = 0
        self._outputs: dict[int, tuple[Path, Path]] = {}
        for env in ("dev", "prod"):
            init_layout(self.root, env)
            agent = self.root / env / "deploy-agent"
            (agent / "trust" / "allowed_signers").write_text(key.allowed_signers_line + "\n")
            (agent / ".env").write_text(f"DATABASE_URL=postgresql://dreichor@127.0.0.1/dreichor_{env}\n")
            config = agent / "controller.yaml"
            config.write_text(
                f"environment: {env}\nroot: {self.root}\n"
                f"source: {{url: '{repo.url}', branch: main, interval: 1, timeout: 10}}\n"
                "trust: {allowed_signers: trust/allowed_signers}\n"
                f"image: {{repository: {registry.repository}}}\n"
                f"docker: {{url: '{engine.url}'}}\n"
                f"api: {{listen: '127.0.0.1:{free_port()}'}}\n"
                "health: {timeout: 20, stable: 2}\n"
            )
            self.configs[env] = config

    def sync(self, env: str = "prod", *args: str) -> int:
        """``dreichor-controller sync`` for ``env``, in-process; returns its exit code."""
        return cli_main(["sync", "--config", str(self.configs[env]), *args])

    def status(self, env: str = "prod") -> Status:
        """The status file of ``env``; a missing or unreadable one is an error."""
        status = read_status(self.root / env / "deploy-agent" / "state" / "status.json")
        if status is None:
            raise BedError(f"no readable status file for {env}")
        return status

    def running(self, env: str = "prod") -> dict[str, object]:
        """``docker inspect`` of the runtime container of ``env``; a missing one is an error."""
        inspect = self.engine.inspect(f"dreichor-runtime-{env}")
        if inspect is None:
            raise BedError(f"dreichor-runtime-{env} does not exist")
        return inspect

    def image(self, env: str = "prod") -> str:
        """The image reference the runtime container of ``env`` was created from."""
        return str(self.running(env)["Config"]["Image"])  # type: ignore[index]

    def publish(self, message: str, *, key: SshKey | str | None = "trusted", **manifests: str) -> str:
        """Write the manifests given (env=image), commit signed by the trusted key (or ``key``), push."""
        for env, image in manifests.items():
            self.repo.write(f"envs/{env}.yaml", manifest_text(env, image))
        sha = self.repo.commit(message, key=self.key if key == "trusted" else key)  # type: ignore[arg-type]
        self.repo.push()
        return sha

    def audit(self, env: str = "prod") -> list[dict[str, object]]:
        """The audit events of ``env``, oldest first."""
        return read_events(self.root / env / "deploy-agent" / "state" / "audit.jsonl")

    def start_daemon(self, env: str = "prod", **extra_env: str) -> subprocess.Popen[str]:
        """``dreichor-controller run`` for ``env`` in a child process.

        Its stdout and stderr go to files (a pipe nobody reads would block its logging):
        read them with ``daemon_output``.
        """
        package_root = Path(__file__).resolve().parents[1]
        self._runs += 1
        out = (self.root / f"daemon-{env}-{self._runs}.out").open("w")
        err = (self.root / f"daemon-{env}-{self._runs}.err").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller", "run", "--config", str(self.configs[env])],
            env={**os.environ, "PYTHONPATH": str(package_root), **extra_env},
            stdout=out,
            stderr=err,
            text=True,
        )
        out.close()
        err.close()
        self._outputs[proc.pid] = (Path(out.name), Path(err.name))
        return proc

    def daemon_output(self, proc: subprocess.Popen[str]) -> tuple[str, str]:
        """What a daemon started by ``start_daemon`` wrote to stdout and stderr so far."""
        out, err = self._outputs[proc.pid]
        return out.read_text(), err.read_text()


def page_sample(*, now: datetime, reason: str = "", environment: str = "prod", events: int = 60) -> dict[str, Any]:
    """The keyword arguments of ``page.render_page`` for a host that runs one revision and refused the next.

    ``reason`` replaces the refusal's reason (tests put markup there); ``events``
    audit lines are generated, so the page's cut to the last 50 shows.
    """
    running, refused, older = (
        "3f9c2a7e5b1d4c6f8a0e9b2d7c4f1a3e5b6d8c0f",
        "a71be04c9d2f6e8b1c3a5d7f9e0b2c4d6f8a1b3c",
        "9" * 40,
    )
    image = "registry.example/dreichor-runtime@sha256:" + "4b1d" * 16
    minutes = [now - timedelta(minutes=m) for m in (0, 1, 2, 3, 42, 43, 900)]
    reason = reason or "image tag 'latest' is refused in prod, even next to a digest (layout: image source)"
    status = {
        "environment": environment,
        "phase": "Degraded",
        "updated_at": minutes[0].isoformat(),
        "source": {
            "url": "git@github.com:dreichor/manifests.git",
            "branch": "main",
            "head": refused,
            "fetched_at": minutes[1].isoformat(),
            "stale": False,
        },
        "applied": {
            "revision": running,
            "image": image,
            "signer": "Ada Lovelace <ada@dreichor.example> (ed25519)",
            "image_signer": "SHA256:" + "Zm9vYmFy" * 5 + "Zm9v",
            "applied_at": minutes[4].isoformat(),
        },
        "last_attempt": {"revision": refused, "result": "refused", "reason": reason, "at": minutes[2].isoformat()},
        "container": {
            "name": f"dreichor-runtime-{environment}",
            "id": "c0ffee",
            "image": image,
            "state": "running",
            "health": "healthy",
        },
        "quarantined": "content:" + "5555" * 16,
    }
    lines = [
        {
            "at": (minutes[6] + timedelta(minutes=i)).isoformat(),
            "event": "applied",
            "revision": older,
            "reason": f"deploy {i}",
            "prev": "0" * 64,
        }
        for i in range(events - 2)
    ]
    lines += [
        {"at": minutes[4].isoformat(), "event": "applied", "revision": running, "image": image, "prev": "0" * 64},
        {"at": minutes[2].isoformat(), "event": "refused", "revision": refused, "reason": reason, "prev": "0" * 64},
    ]
    snapshots = [
        {
            "id": f"{minutes[4]:%Y%m%dT%H%M%S%fZ}-{older[:12]}",
            "created_at": minutes[4].isoformat(),
            "revision": older,
            "image": image,
            "reason": f"replace: revision {running[:12]}",
        },
    ]
    plan = {"action": "nothing", "reason": "the running container matches the applied revision", "drift": []}
    return {"status": status, "snapshots": snapshots, "events": lines, "chain": None, "plan": plan, "now": now}


def history_events(*, now: datetime) -> list[dict[str, Any]]:
    """Four weeks of decisions before the last day, oldest first: the timeline's sample.

    Thirteen changes applied (each 40 minutes after its commit), two rolled back (restored by
    the next change 3 h and 5 h later), a refusal, a change that waited for approvals, and a
    suspension by alice: 15 deployments, a failure rate of 2 ÷ 15, a lead time of 40 min
    and a time to restore of 4 h.
    """
    start = now - timedelta(days=28)
    image = "registry.example/dreichor-runtime@sha256:" + "4b1d" * 16
    events: list[dict[str, Any]] = []

    def add(at: datetime, event: str, **fields: Any) -> None:
        revision = f"{len(events):02d}" + "c0de" * 9 + "aa"
        events.append({"at": at.isoformat(), "event": event, "revision": revision, **fields, "prev": "0" * 64})

    for day in range(0, 22, 2):
        at = start + timedelta(days=day, hours=10)
        tag = f"1.{day // 2}.0"
        add(at, "applied", image=image, tag=tag, committed_at=(at - timedelta(minutes=40)).isoformat(), signer="ada")
        if day in (4, 12):
            failed = at + timedelta(days=1)
            add(failed, "rolled_back", image=image, tag=f"{tag}-rc", reason="health gate failed")
            fixed = failed + timedelta(hours=3 if day == 4 else 5)
            add(
                fixed,
                "applied",
                image=image,
                tag=f"{tag}-fix",
                committed_at=(fixed - timedelta(minutes=40)).isoformat(),
            )
    add(start + timedelta(days=17, hours=15), "refused", reason="not signed by a trusted key")
    add(start + timedelta(days=23, hours=9), "waiting_approval", reason="waiting for approvals (1 of 2: alice)")
    add(start + timedelta(days=25, hours=8), "suspended", by="alice", reason="database maintenance")
    add(start + timedelta(days=25, hours=12), "resumed", by="alice")
    events.sort(key=lambda e: e["at"])
    return events
