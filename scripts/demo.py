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

import argparse
import contextlib
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
from tests.cosign_signing import RegistryWriter, make_signing_key, sign_classic

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


def config_text(
    root: Path,
    repo: ManifestRepo,
    registry: LocalRegistry,
    engine: PrivateDocker,
    *,
    mode: str,
    port: int,
    extra: str = "",
) -> str:
    """The demo's prod config; ``extra`` adds sections (image signatures, approvals)."""
    image = f"image: {{repository: {registry.repository}}}\n"
    if "signatures" in extra:
        image = f"image: {{repository: {registry.repository}, signatures: {{keys: [trust/cosign.pub]}}}}\n"
    return (
        f"environment: prod\nroot: {root}\n"
        f"source: {{url: '{repo.url}', branch: main, interval: 2}}\n"
        "trust: {allowed_signers: trust/allowed_signers}\n" + image + f"docker: {{url: '{engine.url}'{mode}}}\n"
        f"api: {{listen: '127.0.0.1:{port}'}}\n"  # never 3005/3006 unless asked: a real controller may hold them
        "health: {timeout: 30, stable: 3}\n"
        + ("approvals: {threshold: 2, approvers: trust/approvers, max_age: 14d}\n" if "approvals" in extra else "")
    )


def held_and_refused(
    repo: ManifestRepo, key: SshKey, config: Path, daemon: subprocess.Popen[bytes], write_config, a: str, b: str
) -> None:  # type: ignore[no-untyped-def]
    """An unsigned image refused, then a change held for two people's approvals."""
    say("the unsigned commit leaves the branch (force-push): the controller goes back to the applied revision")
    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.push(force=True)
    say("image signatures: the host now needs a cosign signature; image A is signed, image B is not")
    agent = config.parent
    cosign = make_signing_key(agent / "trust", name="cosign")
    sign_classic(RegistryWriter(a.split("/", maxsplit=1)[0]), a, cosign)
    write_config("signatures")
    daemon.send_signal(signal.SIGHUP)  # the daemon reads its config again
    repo.write("envs/prod.yaml", manifest_text("prod", b, LOG_LEVEL="info"))
    repo.commit("prod: runtime B (never signed)", key=key)
    repo.push()
    wait_for(config, lambda s: (s.get("last_attempt") or {}).get("result") == "refused", "the unsigned image's refusal")
    show_status(config)

    say("two people for prod: a change to image A with debug logs waits for 2 approvals")
    colleague = make_ssh_key(agent / "keys", name="colleague")
    (agent / "trust" / "approvers").write_text(key.allowed_signers_line + "\n" + colleague.allowed_signers_line + "\n")
    write_config("signatures approvals")
    daemon.send_signal(signal.SIGHUP)
    repo.write("envs/prod.yaml", manifest_text("prod", a, LOG_LEVEL="debug"))
    repo.commit("prod: debug logs", key=key)
    repo.push()
    wait_for(config, lambda s: (s.get("sync") or {}).get("state") == "Waiting", "the change to wait for approvals")
    show_status(config)
    print("(each approver runs 'dreichor-controller approve envs/prod.yaml' in a clone and pushes the file)")


def signed_repository(base: Path, image: str) -> tuple[SshKey, ManifestRepo]:
    """A maintainer's key and a manifest repository whose first commit, signed by it, runs ``image``."""
    key = make_ssh_key(base / "keys", name="maintainer")
    repo = ManifestRepo(base / "manifests")
    repo.write("envs/dev.yaml", manifest_text("dev", image))
    repo.write("envs/prod.yaml", manifest_text("prod", image, LOG_LEVEL="info"))
    repo.commit("Initial manifests", key=key)
    repo.push()
    return key, repo


def host_layout(root: Path, key: SshKey) -> Path:
    """The prod layout (``init``), the maintainer trusted, the database named; the config's path."""
    init_layout(root, "prod")
    agent = root / "prod" / "deploy-agent"
    (agent / "trust" / "allowed_signers").write_text(key.allowed_signers_line + "\n")
    (agent / ".env").write_text("DATABASE_URL=postgresql://dreichor@127.0.0.1:5432/dreichor_prod\n")
    return agent / "controller.yaml"


def start_engine(engine: PrivateDocker, *, swarm: PrivateSwarm | None) -> None:
    """Start the private engine; in Swarm mode, the manager of its own swarm with the node labelled for prod."""
    if swarm is None:
        engine.start()
        return
    swarm.start()
    swarm.label("prod")
    print(f"swarm node {swarm.hostname} ({swarm.node_id}) labelled dreichor.env=prod")


def point_at_page(port: int, *, keep: bool) -> None:
    """The page's URL; with ``--keep`` the sandbox stays up until Ctrl-C."""
    print(f"\nthe status page: http://127.0.0.1:{port}/   (/status and /history: the same as JSON)")
    if not keep:
        print("(./scripts/demo --keep keeps it up to open it)")
        return
    print("kept up until Ctrl-C (--keep)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()


def arguments(argv: list[str]) -> argparse.Namespace:
    """``--swarm``, ``--keep`` and ``--port`` (default ``$DREICHOR_DEMO_PORT``, else a free port)."""
    parser = argparse.ArgumentParser(prog="scripts/demo", description="The controller end to end on a sandbox.")
    parser.add_argument("--swarm", action="store_true", help="the runtime as a one-replica Swarm service")
    parser.add_argument("--keep", action="store_true", help="keep the sandbox and its page up until Ctrl-C")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("DREICHOR_DEMO_PORT") or 0), help="the API's port on 127.0.0.1"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    options = arguments(argv)
    base = Path(tempfile.mkdtemp(prefix="dreichor-demo-"))
    swarm = PrivateSwarm(base / "docker") if options.swarm else None
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
        key, repo = signed_repository(base, a)
        root = base / "opt-dreichor"
        config = host_layout(root, key)
        port = options.port or free_port()

        def write_config(extra: str = "") -> None:
            config.write_text(config_text(root, repo, registry, engine, mode=mode, port=port, extra=extra))

        write_config()
        print(config.read_text())

        say("start the prod controller (dreichor-controller run); it deploys the signed head")
        log = (base / "controller.log").open("wb")
        daemon = subprocess.Popen([*CTL, "run", "--config", str(config)], stdout=log, stderr=log)
        wait_for(config, lambda s: s["phase"] == "InSync", "the first deploy")
        show_status(config)
        if swarm:
            print(engine.cli("service", "ps", "dreichor-runtime-prod"))

        walk_through_flows(repo, key, config, a, b)
        held_and_refused(repo, key, config, daemon, write_config, a, b)

        say("flow 3 — observe: the audit log, hash-chained, and the page")
        subprocess.run([*CTL, "history", "--verify", "--config", str(config)], check=True)
        point_at_page(port, keep=options.keep)
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
