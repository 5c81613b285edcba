"""An ssh source as docs/operations.md sets it up, under the unit's command line.

A real ``sshd`` on 127.0.0.1 (its own host key and authorised deploy key) serves
the signed manifest repository.  The layout comes from ``init``; the known-hosts
file is filled with ``ssh-keyscan`` and checked with ``ssh-keygen -lf`` against
the server's own key, as the guide says; the root and the key's folder have a
space in their names, so an unquoted path would break.  Then the unit (with
``init``'s drop-in for that root) passes ``systemd-analyze verify``, and its
``ExecStart`` line is run by hand with the unit's environment: the daemon fetches
over ssh and records the head.  An empty known-hosts file fails the fetch.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.records.status import read_status
from testbed import ManifestRepo, SshKey, free_port, manifest_text, wait_for

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "dreichor-controller@.service"
CLI = Path(sys.executable).with_name("dreichor-controller")
IMAGE = "ghcr.io/ceerkle/dreichor-trading/runtime@sha256:" + "c" * 64


@dataclass
class SshServer:
    """``sshd -D`` on 127.0.0.1 with a host key of its own."""

    port: int
    host_key: Path
    process: subprocess.Popen[bytes]


def _keygen(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[SshServer, Path]]:
    """The server, and the deploy key it lets in (in a folder whose name has a space)."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(binary).exists():
        pytest.fail("sshd is missing: run ./scripts/setup (Debian package openssh-server)", pytrace=False)
    if os.geteuid() != 0:
        pytest.skip("sshd needs root")
    folder = tmp_path / "sshd"
    host_key = _keygen(folder / "host_key")
    deploy_key = _keygen(tmp_path / "my keys" / "deploy_key")
    authorized = folder / "authorized_keys"
    authorized.write_text(deploy_key.with_suffix(".pub").read_text())
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1:{port}\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n"
        f"PidFile {folder / 'sshd.pid'}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    process = subprocess.Popen([binary, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    scan = ["ssh-keyscan", "-p", str(port), "127.0.0.1"]
    wait_for(lambda: subprocess.run(scan, capture_output=True, check=False).stdout != b"")
    yield SshServer(port, host_key, process), deploy_key
    process.terminate()
    process.wait(timeout=10)


def _operator(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DREICHOR_ROOT": str(root)}
    env.pop("DREICHOR_CONFIG", None)
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env, timeout=120, check=check)


def _layout(tmp_path: Path, server: SshServer, deploy_key: Path, repo: ManifestRepo, key: SshKey) -> Path:
    """The guide's steps: init, source.url, the deploy key in .env, the signer, known_hosts by ssh-keyscan."""
    root = tmp_path / "opt dreichor"
    _operator(root, "init", "-e", "prod", "--root", str(root))
    agent = root / "prod" / "deploy-agent"
    config = agent / "controller.yaml"
    url = f"ssh://root@127.0.0.1:{server.port}{repo.bare}"
    socket = tmp_path / "no-docker.sock"
    text = config.read_text().replace("  # url: ssh://git@github.com/<owner>/<repo>.git", f"  url: '{url}'")
    config.write_text(
        text.replace("unix:///var/run/docker.sock", f"unix://{socket}").replace(":3006", f":{free_port()}")
    )
    (agent / ".env").write_text(
        f'DATABASE_URL=postgresql://h/dreichor_prod\nGIT_SSH_KEY="{deploy_key}"   # the read-only deploy key\n'
    )
    (agent / "trust" / "allowed_signers").write_text(key.allowed_signers_line + "\n")
    scan = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(server.port), "127.0.0.1"], capture_output=True, check=True
    )
    (agent / "trust" / "known_hosts").write_bytes(scan.stdout)
    return root


def _fingerprint(path: Path) -> str:
    listed = subprocess.run(["ssh-keygen", "-lf", str(path)], capture_output=True, text=True, check=True).stdout
    return listed.split()[1]


def test_an_ssh_source_set_up_as_the_guide_says_is_fetched_under_the_units_command_line(
    sshd: tuple[SshServer, Path], tmp_path: Path, ssh_key: SshKey
) -> None:
    server, deploy_key = sshd
    repo = ManifestRepo(tmp_path / "manifests")
    repo.write("envs/prod.yaml", manifest_text("prod", IMAGE))
    head = repo.commit("prod", key=ssh_key)
    repo.push()
    root = _layout(tmp_path, server, deploy_key, repo, ssh_key)
    agent = root / "prod" / "deploy-agent"
    # The guide's check: the fingerprint in known_hosts is the server's own.
    assert _fingerprint(agent / "trust" / "known_hosts") == _fingerprint(server.host_key.with_suffix(".pub"))

    verified = _operator(root, "verify", "-e", "prod", check=False)
    assert verified.stdout.startswith(f"trusted: {ssh_key.principal}"), verified.stderr

    # The unit, with init's drop-in for this root, verifies; then its ExecStart runs by hand.
    units = tmp_path / "units"
    (units / "dreichor-controller@prod.service.d").mkdir(parents=True)
    (units / "dreichor-controller@.service").write_text(
        UNIT.read_text().replace("/usr/local/bin/dreichor-controller", str(CLI))
    )
    shutil.copyfile(agent / "systemd-root.conf", units / "dreichor-controller@prod.service.d" / "root.conf")
    analysed = subprocess.run(
        ["systemd-analyze", "verify", str(units / "dreichor-controller@prod.service")],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"},
        check=False,
    )
    assert analysed.returncode == 0, analysed.stderr
    exec_start = next(line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart="))
    command = exec_start.removeprefix("ExecStart=").replace("/usr/local/bin/dreichor-controller", str(CLI))
    daemon = subprocess.Popen(
        command.replace("%i", "prod").split(),
        env={**os.environ, "DREICHOR_ROOT": str(root)},  # the drop-in's Environment=
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        status_file = agent / "state" / "status.json"
        wait_for(lambda: (s := read_status(status_file)) is not None and s.source.head == head, timeout=60)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    status = read_status(agent / "state" / "status.json")
    assert status is not None and status.source.last_error is None


def test_an_unknown_host_key_fails_the_fetch_and_is_never_learned(
    sshd: tuple[SshServer, Path], tmp_path: Path, ssh_key: SshKey
) -> None:
    server, deploy_key = sshd
    repo = ManifestRepo(tmp_path / "manifests")
    repo.write("envs/prod.yaml", manifest_text("prod", IMAGE))
    repo.commit("prod", key=ssh_key)
    repo.push()
    root = _layout(tmp_path, server, deploy_key, repo, ssh_key)
    known_hosts = root / "prod" / "deploy-agent" / "trust" / "known_hosts"
    known_hosts.write_text("")
    refused = _operator(root, "verify", "-e", "prod", check=False)
    assert refused.returncode == 1
    assert "Host key verification failed" in refused.stderr
    assert known_hosts.read_text() == ""
