"""CPU of a no-change pass in a running controller, on a 10,000-commit manifest repo, against ``git fetch``.

The host has a history: 2,000 audit events (years of decisions) before the
passes are measured, so a pass that read the whole log would show it.

The controller's figure counts its own process and all its children (the
``git fetch`` it runs and GitPython's long-lived ``cat-file`` helpers,
read from /proc), over ``RUNS`` passes, but not the private Docker Engine the
sandbox started in this process tree: its background work (health checks,
containerd) is no cost of a pass.  What a pass asks of the engine is counted
instead, in API calls.  The baseline is a plain no-change ``git fetch`` of the
same repository into the same kind of cache, as many times.  Then RSS after
1,000 passes, and a CPU profile of the controller's own process over 100
passes: what a pass spends besides the fetch and the one engine call.  Run:
``.venv/bin/python -m bench.poll``.  Goals: <= 1.0x, at most one Docker API
call per pass; RSS <= 80 MB, flat.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import Result, report
from bench.sandbox import Sandbox, sandbox
from controller import compose
from controller.engine.docker import Engine
from controller.model.config import parse_config
from controller.records.host_init import init_layout
from controller.service import EnvironmentService
from testbed import ManifestRepo, make_ssh_key, manifest_text

COMMITS = 10_000
DECISIONS = 2_000
PASSES = 1_000
RUNS = 100
ENGINE_PROCESSES = frozenset(
    {"dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "docker-proxy", "runc", "docker-registry"}
)
CLK = os.sysconf("SC_CLK_TCK")


def _history(repo: ManifestRepo, image: str) -> None:
    """10,000 commits through git fast-import, then a signed head."""
    lines = []
    for n in range(1, COMMITS + 1):
        body = f"environment: prod\nimage: {image}\n# change {n}\n".encode()
        msg = f"change {n}\n".encode()
        lines.append(b"commit refs/heads/main\n")
        lines.append(f"committer Bench <b@x> {1_700_000_000 + n} +0000\n".encode())
        lines.append(b"data %d\n%s" % (len(msg), msg))
        lines.append(b"M 100644 inline envs/prod.yaml\ndata %d\n%s\n" % (len(body), body))
    subprocess.run(["git", "fast-import", "--quiet"], input=b"".join(lines), cwd=repo.work, check=True)
    repo.git("reset", "-q", "--hard", "main")


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its live descendants."""
    total = 0.0
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() in ENGINE_PROCESSES:
            return 0.0  # the sandbox's engine and registry, and the containers under them
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLK
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    return total + sum(_tree_cpu(int(child)) for child in children)


def _cpu_now() -> float:
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    return _tree_cpu(os.getpid()) + waited.ru_utime + waited.ru_stime


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _setup(box: Sandbox) -> EnvironmentService:
    key = make_ssh_key(box.base / "keys", name="bench")
    repo = ManifestRepo(box.base / "manifests")
    image = box.images["healthy-a"]
    _history(repo, image)
    repo.write("envs/prod.yaml", manifest_text("prod", image))
    repo.commit("signed head", key=key)
    repo.push()
    root = box.base / "opt"
    init_layout(root, "prod")
    agent = root / "prod" / "deploy-agent"
    (agent / "trust" / "allowed_signers").write_text(key.allowed_signers_line + "\n")
    (agent / ".env").write_text("DATABASE_URL=postgresql://h/dreichor_prod\n")
    config = parse_config(
        {
            "environment": "prod",
            "root": str(root),
            "source": {"url": repo.url},
            "trust": {"allowed_signers": "trust/allowed_signers"},
            "image": {"repository": box.registry.repository},
            "docker": {"url": box.engine.url},
            "health": {"timeout": 30, "stable": 1},
        },
        base=agent,
    )
    service = compose.environment_service(config)
    first = service.sync()
    if first.result != "applied":
        raise SystemExit(f"bench: the first pass did not apply: {first.reason}")
    at = datetime.now(UTC)
    for n in range(DECISIONS):
        service.store.append("refused", {"revision": f"{n:040x}", "reason": "not signed by a trusted key"}, at=at)
    return service


def _api_calls(service: EnvironmentService) -> int:
    engine = service.engine()
    return engine.api_calls if isinstance(engine, Engine) else 0


def profile(service: EnvironmentService, *, passes: int = RUNS, top: int = 30) -> str:
    """CPU profile of ``passes`` no-change passes in this process (children's CPU, the fetch's, is not in it).

    First the split: the fetch step (spawning git, reading the fetched ref),
    the one engine call, and everything else the pass does; then the
    controller's own functions by cumulative time.  Profiling slows Python
    down, so the figures are larger than the unprofiled pass; the shares hold.
    """
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for _ in range(passes):
        service.sync()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    total = stats.total_tt  # type: ignore[attr-defined]
    fetch = _cumulative(stats, "controller/source/git.py", "fetch")
    engine = _cumulative(stats, "controller/engine/docker.py", "current")
    rest = total - fetch - engine
    out.write(
        f"per pass, profiled: {total / passes * 1e3:.2f} ms in-process CPU = fetch step {fetch / passes * 1e3:.2f}"
        f" + engine call {engine / passes * 1e3:.2f} + the rest {rest / passes * 1e3:.2f} ms"
        f" ({rest / total:.0%}); the controller's functions by cumulative time:\n"
    )
    stats.sort_stats("cumulative").print_stats("controller/", top)
    lines = out.getvalue().splitlines()
    return "\n".join(line.replace(str(Path.cwd()) + "/", "") for line in lines if line.strip())


def _cumulative(stats: pstats.Stats, path: str, function: str) -> float:
    """Cumulative seconds of one function in a profile (0 when it was not called)."""
    raw = stats.stats  # type: ignore[attr-defined]
    return sum(row[3] for (file, _, name), row in raw.items() if file.endswith(path) and name == function)


def measure() -> tuple[Result, list[float], str]:
    """CPU per no-change pass vs per git fetch; RSS samples every 100 passes."""
    with sandbox() as box:
        service = _setup(box)
        cache = box.base / "plain-cache.git"
        subprocess.run(["git", "clone", "-q", "--bare", service.config.source.url, str(cache)], check=True)
        runs = RUNS
        start = _cpu_now()
        for _ in range(runs):
            subprocess.run(
                ["git", "fetch", "-q", "--no-tags", "origin", "+refs/heads/main:refs/heads/main"], cwd=cache, check=True
            )
        baseline = (_cpu_now() - start) / runs
        calls_before = _api_calls(service)
        start = _cpu_now()
        for _ in range(runs):
            if service.sync().result != "unchanged":
                raise SystemExit("bench: a no-change pass changed something")
        figure = (_cpu_now() - start) / runs
        calls = _api_calls(service) - calls_before
        profiled = profile(service)
        rss = []
        for n in range(PASSES):
            service.sync()
            if n % 100 == 0 or n == PASSES - 1:
                rss.append(_rss_mb())
        service.close()
    print(f"Docker API calls per no-change pass: {calls / runs:.2f} (goal <= 1)")
    name = f"no-change pass CPU (controller vs git fetch), {runs} passes"
    return (
        Result(name, figure * 1e3, baseline * 1e3, "ms", 1.0, note=f"{calls / runs:.2f} API calls/pass"),
        rss,
        profiled,
    )


def main() -> int:
    """Print the results."""
    result, rss, profiled = measure()
    report(result)
    print(profiled)
    print(f"RSS over {PASSES} passes (MB): first {rss[0]:.1f}, last {rss[-1]:.1f}, max {max(rss):.1f} (goal <= 80)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
