"""From a trigger to the new container running: ``POST /sync`` vs ``dreichor-controller sync``, and the webhook.

Each run pushes a signed change of ``envs/prod.yaml``, drops the new image
locally (so both paths pull), triggers, and polls the engine until the new
container runs.  Run: ``.venv/bin/python -m bench.trigger``.  Goals: the API
adds at most 10%; webhook to running within 3 s plus the pull.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.common import Result, report
from bench.sandbox import Sandbox, sandbox
from controller.records.host_init import init_layout
from testbed import JwksServer, ManifestRepo, SshKey, free_port, make_ssh_key, manifest_text

RUNS = 4
TEAM, AUDIENCE, SECRET = "https://bench.cloudflareaccess.com", "bench", "bench-secret"
CTL = [sys.executable, "-m", "controller"]


def _running(box: Sandbox, image: str) -> bool:
    state = box.engine.inspect("dreichor-runtime-prod")
    return bool(state and state["Config"]["Image"] == image and state["State"]["Running"])  # type: ignore[index]


def _until_running(box: Sandbox, image: str, start: float) -> float:
    deadline = start + 120
    while time.monotonic() < deadline:
        if _running(box, image):
            return time.monotonic() - start
        time.sleep(0.01)
    raise SystemExit("bench: the new container never ran")


def _post(url: str, body: bytes, headers: dict[str, str]) -> None:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 loopback
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 loopback
        if reply.status != 202:
            raise SystemExit(f"bench: trigger answered {reply.status}")


def _setup(box: Sandbox, jwks: JwksServer) -> tuple[ManifestRepo, SshKey, Path, int]:
    key = make_ssh_key(box.base / "keys", name="bench")
    repo = ManifestRepo(box.base / "manifests")
    repo.write("envs/prod.yaml", manifest_text("prod", box.images["healthy-a"]))
    repo.commit("initial", key=key)
    repo.push()
    root = box.base / "opt"
    init_layout(root, "prod")
    agent = root / "prod" / "deploy-agent"
    (agent / "trust" / "allowed_signers").write_text(key.allowed_signers_line + "\n")
    (agent / ".env").write_text(f"DATABASE_URL=postgresql://h/dreichor_prod\nGITHUB_WEBHOOK_SECRET={SECRET}\n")
    port = free_port()
    config = agent / "controller.yaml"
    config.write_text(
        f"environment: prod\nroot: {root}\nsource: {{url: '{repo.url}', interval: 3600}}\n"
        "trust: {allowed_signers: trust/allowed_signers}\n"
        f"image: {{repository: {box.registry.repository}}}\ndocker: {{url: '{box.engine.url}'}}\n"
        f"api: {{listen: '127.0.0.1:{port}', access: {{team_domain: '{TEAM}', audience: {AUDIENCE},"
        f" jwks_url: '{jwks.url}'}}}}\nhealth: {{timeout: 30, stable: 1}}\n"
    )
    return repo, key, config, port


def measure() -> tuple[Result, float]:
    """Medians of API and CLI trigger→running, and of webhook→running."""
    jwks = JwksServer(team=TEAM, audience=AUDIENCE)
    with sandbox() as box:
        repo, key, config, port = _setup(box, jwks)
        log = (box.base / "daemon.log").open("wb")
        daemon = subprocess.Popen([*CTL, "run", "--config", str(config)], stdout=log, stderr=log)
        try:
            _until_running(box, box.images["healthy-a"], time.monotonic())
            api, cli, hook = [], [], []
            image = box.images["healthy-a"]
            for run in range(RUNS * 3):
                image = box.images["healthy-b" if image == box.images["healthy-a"] else "healthy-a"]
                repo.write("envs/prod.yaml", manifest_text("prod", image))
                repo.commit(f"run {run}", key=key)
                repo.push()
                time.sleep(1.5)  # let the previous health gate finish
                box.engine.cli("image", "rm", "--force", image)
                start = time.monotonic()
                if run % 3 == 0:
                    _post(f"http://127.0.0.1:{port}/sync", b"", {"Cf-Access-Jwt-Assertion": jwks.token()})
                    api.append(_until_running(box, image, start))
                elif run % 3 == 1:
                    body = json.dumps({"ref": "refs/heads/main", "after": f"run {run}"}).encode()
                    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                    headers = {
                        "Content-Type": "application/json",
                        "X-Hub-Signature-256": sig,
                        "X-GitHub-Event": "push",
                        "X-GitHub-Delivery": f"d{run}",
                    }
                    _post(f"http://127.0.0.1:{port}/hooks/github", body, headers)
                    hook.append(_until_running(box, image, start))
                else:
                    proc = subprocess.Popen(
                        [*CTL, "sync", "--config", str(config)], stdout=subprocess.DEVNULL, env={**os.environ}
                    )
                    cli.append(_until_running(box, image, start))
                    proc.wait(timeout=120)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
    jwks.stop()
    result = Result(
        "trigger to running (POST /sync vs dreichor-controller sync)",
        statistics.median(api),
        statistics.median(cli),
        "s",
        1.10,
    )
    return result, statistics.median(hook)


def main() -> int:
    """Print the results."""
    result, hook = measure()
    report(result)
    print(f"webhook to running: {hook:.3f} s (goal <= 3 s plus the pull)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
