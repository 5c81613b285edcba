"""A guided end-to-end run of the controller on a local sandbox (called by ./scripts/demo).

Builds everything under a temporary folder — a private dockerd, a registry on
127.0.0.1, two tiny images, an SSH signing key, a signed manifest repository,
dev and prod host layouts — runs the prod controller as a daemon, walks
through the three user flows, and removes it all again.

``--swarm``: the same flows in Swarm mode (docs/design.md §13) — the private dockerd
is the manager of a single-node swarm labelled ``dreichor.env=prod``, and the
runtime is the one-replica service ``dreichor-runtime-prod``.

It touches nothing that already runs: its dockerd has its own data root, socket
and bridge, and the registry and the controller's API listen on free ports of
127.0.0.1 (never 3005 or 3006, which a real controller on the machine may hold).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from controller.records.host_init import init_layout
from testbed import (
    LocalRegistry,
    ManifestRepo,
    PrivateDocker,
    SshKey,
    build_images,
    free_port,
    make_ssh_key,
    manifest_text,
)
from testbed.swarm import PrivateSwarm

CTL = [sys.executable, "-m", "controller"]


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show_status(config: Path) -> dict[str, object]:
    subprocess.run([*CTL, "status", "--config", str(config)], check=True)
    out = subprocess.run([*CTL, "status", "--json", "--config", str(config)], check=True, capture_output=True)
    return json.loads(out.stdout)


def wait_for(config: Path, predicate, what: str, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([*CTL, "status", "--json", "--config", str(config)], capture_output=True, check=False)
        if out.returncode == 0 and predicate(json.loads(out.stdout)):
            return
        time.sleep(0.5)
    raise SystemExit(f"demo: timed out waiting for {what}")


def walk_through_flows(repo: ManifestRepo, key: SshKey, config: Path, a: str, b: str) -> None:
    """Deploy by signed merge, roll back by revert, refuse an unsigned commit."""
    say("flow 1 — deploy: a PR branch changes envs/prod.yaml to image B, merged with a signed merge commit")
    repo.git("checkout", "-q", "-b", "bump-prod")
    repo.write("envs/prod.yaml", manifest_text("prod", b, LOG_LEVEL="info"))
    repo.commit("prod: runtime B")
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "-S", "-m", "Merge pull request #1 from bump-prod", "bump-prod", key=key)
    repo.push()
    merge = repo.head()
    wait_for(config, lambda s: (s.get("applied") or {}).get("revision") == merge, "the merge to deploy")
    show_status(config)

    say("flow 2 — roll back: git revert -S of the merge")
    repo.git("revert", "-S", "-m", "1", "--no-edit", merge, key=key)
    repo.push()
    revert = repo.head()
    wait_for(config, lambda s: (s.get("applied") or {}).get("revision") == revert, "the revert to deploy")
    show_status(config)

    say("an unsigned commit is refused; the running container is untouched")
    repo.write("envs/prod.yaml", manifest_text("prod", b))
    repo.commit("unsigned change")
    repo.push()
    unsigned = repo.head()
    wait_for(
        config,
        lambda s: (
            (s.get("last_attempt") or {}).get("revision") == unsigned and s["last_attempt"]["result"] == "refused"
        ),
        "the refusal",
    )
    state = show_status(config)
    if state["container"]["image"] != a:  # type: ignore[index]
        raise SystemExit("demo: the refused commit changed the container")


def start_engine(engine: PrivateDocker, *, swarm: PrivateSwarm | None) -> None:
    """Start the private engine; in Swarm mode, the manager of its own swarm with the node labelled for prod."""
    if swarm is None:
        engine.start()
        return
    swarm.start()
    swarm.label("prod")
    print(f"swarm node {swarm.hostname} ({swarm.node_id}) labelled dreichor.env=prod")


def main(argv: list[str]) -> int:
    base = Path(tempfile.mkdtemp(prefix="dreichor-demo-"))
    swarm = PrivateSwarm(base / "docker") if "--swarm" in argv else None
    engine = swarm.engine if swarm else PrivateDocker(base / "docker")
    mode = ", mode: swarm" if swarm else ""
    registry = LocalRegistry(base / "registry")
    daemon: subprocess.Popen[bytes] | None = None
    try:
        say(f"sandbox in {base}: a private dockerd{' (a swarm manager)' if swarm else ''}, a registry, two images")
        start_engine(engine, swarm=swarm)
        registry.start()
        images = build_images(engine, registry, base / "images")
        a, b = images["healthy-a"], images["healthy-b"]
        print(f"image A: {a}\nimage B: {b}")

        say("a signing key, a signed manifest repository, and the prod host layout")
        key = make_ssh_key(base / "keys", name="maintainer")
        repo = ManifestRepo(base / "manifests")
        repo.write("envs/dev.yaml", manifest_text("dev", a))
        repo.write("envs/prod.yaml", manifest_text("prod", a, LOG_LEVEL="info"))
        repo.commit("Initial manifests", key=key)
        repo.push()
        root = base / "opt-dreichor"
        init_layout(root, "prod")
        agent = root / "prod" / "deploy-agent"
        (agent / "trust" / "allowed_signers").write_text(key.allowed_signers_line + "\n")
        (agent / ".env").write_text("DATABASE_URL=postgresql://dreichor@127.0.0.1:5432/dreichor_prod\n")
        config = agent / "controller.yaml"
        config.write_text(
            f"environment: prod\nroot: {root}\n"
            f"source: {{url: '{repo.url}', branch: main, interval: 2}}\n"
            "trust: {allowed_signers: trust/allowed_signers}\n"
            f"image: {{repository: {registry.repository}}}\n"
            f"docker: {{url: '{engine.url}'{mode}}}\n"
            f"api: {{listen: '127.0.0.1:{free_port()}'}}\n"  # never 3005/3006: a real controller may hold them
            "health: {timeout: 30, stable: 3}\n"
        )
        print(config.read_text())

        say("start the prod controller (dreichor-controller run); it deploys the signed head")
        log = (base / "controller.log").open("wb")
        daemon = subprocess.Popen([*CTL, "run", "--config", str(config)], stdout=log, stderr=log)
        wait_for(config, lambda s: s["phase"] == "InSync", "the first deploy")
        show_status(config)
        if swarm:
            print(engine.cli("service", "ps", "dreichor-runtime-prod"))

        walk_through_flows(repo, key, config, a, b)

        say("flow 3 — observe: the audit log, hash-chained")
        subprocess.run([*CTL, "history", "--verify", "--config", str(config)], check=True)
        return 0
    finally:
        say("cleaning up")
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
        registry.stop()
        (swarm or engine).stop()
        shutil.rmtree(base, ignore_errors=True)
        print("done")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
