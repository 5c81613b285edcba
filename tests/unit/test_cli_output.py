"""What a user and a script see from the command line: exit codes, JSON on failure, errors that name
their cause, revisions as git reads them, stdin, completion, ``init``'s starter kit, logs and gauges.

Real git, ssh-keygen and the real layout; the Docker Engine is a socket path that does not exist, so
every command that needs it fails the way an operator would meet it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from controller.cli import main
from controller.daemon.metrics import Metrics
from controller.daemon.scheduler import Daemon
from controller.engine.docker import Engine
from controller.errors import ConfigError, ControllerError
from controller.glance import Glance
from controller.model.config import Config, load_config
from controller.records.status import ContainerStatus, SourceStatus, Status
from controller.signatures.commits.allowed_signers import parse_allowed_signers
from testbed import ManifestRepo, SshKey, make_ssh_key, manifest_text

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/ceerkle/dreichor-trading/runtime@sha256:" + "ab" * 32
DOTENV_KEYS = (
    "DATABASE_URL",
    "GIT_TOKEN",
    "GIT_SSH_KEY",
    "REGISTRY_USERNAME",
    "REGISTRY_PASSWORD",
    "GITHUB_WEBHOOK_SECRET",
    "GITHUB_TOKEN",
)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SshKey:
    return make_ssh_key(tmp_path_factory.mktemp("keys"), name="alice")


class Host:
    """An initialised prod layout following a signed manifest repo, with no Docker Engine at its socket."""

    def __init__(self, tmp: Path, key: SshKey) -> None:
        self.repo = ManifestRepo(tmp / "manifests")
        self.socket = tmp / "no-docker.sock"
        assert main(["init", "--environment", "prod", "--root", str(tmp / "opt")]) == 0
        agent = tmp / "opt" / "prod" / "deploy-agent"
        (agent / "trust" / "allowed_signers").write_text(key.allowed_signers_line + "\n")
        (agent / ".env").write_text("DATABASE_URL=postgresql://h/dreichor_prod\n")
        self.config = agent / "controller.yaml"
        text = self.config.read_text()
        text = text.replace("  # url: ssh://git@github.com/<owner>/<repo>.git", f"  url: {self.repo.url}")
        text = text.replace("unix:///var/run/docker.sock", f"unix://{self.socket}")
        self.config.write_text(text)
        self.status_file = agent / "state" / "status.json"
        self.commits = [self.publish(key), self.publish(key)]

    def publish(self, key: SshKey) -> str:
        self.repo.write("envs/prod.yaml", manifest_text("prod", IMAGE, N=str(len(list(self.repo.work.iterdir())))))
        sha = self.repo.commit("a manifest", key=key)
        self.repo.push()
        return sha

    def run(self, *args: str) -> int:
        return main([args[0], "--config", str(self.config), *args[1:]])


@pytest.fixture
def host(tmp_path: Path, key: SshKey) -> Host:
    return Host(tmp_path, key)


def out_json(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


# -- exit codes and JSON on failure --------------------------------------------------------------


def test_plan_exits_1_when_it_cannot_plan_and_names_the_socket_and_errno(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    assert host.run("plan") == 1
    err = capsys.readouterr().err
    assert str(host.socket) in err and "ENOENT" in err
    assert host.run("plan", "--json") == 1
    answer = out_json(capsys)
    assert str(host.socket) in answer["error"] and answer["code"] == "EngineUnavailable"


def test_plan_without_docker_still_says_what_fetch_verify_and_validate_found(
    host: Host, key: SshKey, capsys: pytest.CaptureFixture[str]
) -> None:
    assert host.run("plan") == 1
    said = capsys.readouterr()
    lines = said.out.splitlines()
    assert lines[0] == f"fetched:   main at {host.commits[-1][:12]}"
    assert lines[1].startswith(f"verified:  signed by {key.principal} (ssh-ed25519 SHA256:")
    assert lines[2].startswith("valid:     envs/prod.yaml runs ")
    assert str(host.socket) in said.err  # then the engine's error
    assert host.run("plan", "--json") == 1
    answer = out_json(capsys)
    assert answer["head"] == host.commits[-1] and answer["signer"].startswith(key.principal)


def test_sync_json_carries_an_error_when_the_pass_fails(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    assert host.run("sync", "--json") == 1
    answer = out_json(capsys)
    assert answer["result"] == "failed" and str(host.socket) in answer["error"]


@pytest.mark.parametrize(
    "command",
    [["status"], ["plan"], ["sync"], ["verify"], ["history"], ["notify", "--test"]],
)
def test_every_json_command_prints_an_error_object_when_it_cannot_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    missing = tmp_path / "nowhere.yaml"
    assert main([*command, "--config", str(missing), "--json"]) == 1
    captured = capsys.readouterr()
    assert str(missing) in json.loads(captured.out)["error"]
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err


def test_verify_json_on_a_refusal_is_one_object_with_error(
    host: Host, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host.publish(make_ssh_key(tmp_path / "k", name="mallory"))
    assert host.run("verify", "--json") == 3
    answer = out_json(capsys)
    assert answer["trusted"] is False and "allowed_signers" in answer["error"]


def test_validate_json_on_a_refusal_carries_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "prod.yaml"
    bad.write_text("environment: prod\n")
    assert main(["validate", str(bad), "--json"]) == 3
    assert "missing field 'image'" in out_json(capsys)["error"]


# -- revisions as git users name them -----------------------------------------------------------


@pytest.mark.parametrize("rev", ["main~1", "HEAD^", "short", "origin/main~1", "full"])
def test_verify_resolves_revisions_as_git_does(host: Host, capsys: pytest.CaptureFixture[str], rev: str) -> None:
    first = host.commits[0]
    name = {"short": first[:8], "full": first}.get(rev, rev)
    assert host.run("verify", name, "--json") == 0
    assert out_json(capsys)["revision"] == first
    reference = subprocess.run(
        ["git", "-C", str(host.repo.work), "rev-parse", "--verify", f"{name}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert reference == first  # the same answer git gives in a clone


def test_an_unknown_revision_is_refused_by_name(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    assert host.run("verify", "--", "--output=/tmp/x") == 3
    assert "revision '--output=/tmp/x' is not a commit" in capsys.readouterr().err


# -- status before any pass ---------------------------------------------------------------------


def test_status_before_any_pass_says_so_and_exits_0(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    assert host.run("status") == 0
    assert "no pass has run yet" in capsys.readouterr().out
    assert host.run("status", "--json") == 0
    assert out_json(capsys)["phase"] is None


def test_status_that_cannot_be_read_is_an_error(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.status_file.write_text("{not json")
    assert host.run("status", "--json") == 1
    assert str(host.status_file) in out_json(capsys)["error"]


# -- validate from stdin ------------------------------------------------------------------------


def test_validate_dash_reads_the_manifest_from_stdin() -> None:
    def validate(*args: str, text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "controller", "validate", "-", *args],
            input=text,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )

    good = (REPO_ROOT / "envs" / "prod.yaml").read_text()
    assert validate("--environment", "prod", text=good).returncode == 0
    refused = validate("--environment", "prod", text=good + "ports: [80]\n")
    assert refused.returncode == 3 and "'ports' is owned" in refused.stderr
    unnamed = validate(text=good)
    assert unnamed.returncode == 1 and "pass --environment" in unnamed.stderr


# -- errors: bugs, Docker ------------------------------------------------------------------------


def test_a_bug_is_one_sentence_for_the_user_and_a_traceback_in_the_log(
    host: Host, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Glance) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Glance, "status", broken)
    assert host.run("status", "--json") == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error"] == "internal error in 'status': RuntimeError: boom"
    assert "ERROR dreichor.cli: internal error in 'status'" in captured.err and "Traceback" in captured.err


def test_an_engine_that_is_not_there_is_named_with_its_errno(tmp_path: Path) -> None:
    with pytest.raises(ControllerError, match=rf"{tmp_path}/docker.sock is unreachable: .* \(ENOENT\)"):
        Engine(f"unix://{tmp_path}/docker.sock", environment="prod").current()


# -- completion ---------------------------------------------------------------------------------


def _script(capsys: pytest.CaptureFixture[str], shell: str, tmp_path: Path) -> Path:
    assert main(["completion", shell]) == 0
    script = tmp_path / f"completion.{shell}"
    script.write_text(capsys.readouterr().out)
    return script


def _bash_complete(script: Path, words: list[str]) -> list[str]:
    line = " ".join(f"'{w}'" for w in words)
    call = (
        f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
        f"_shtab_dreichor_controller {words[0]} '{words[-1]}' '{words[-2]}'; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", call], capture_output=True, text=True, check=True)
    return done.stdout.split()


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["dreichor-controller", "s"], ["sync", "status", "suspend"]),
        (["dreichor-controller", "sync", "--f"], ["--force"]),
        (["dreichor-controller", "init", "--environment", ""], ["dev", "prod"]),
        (["dreichor-controller", "plan", "--log-level", "w"], ["warning"]),
        (["dreichor-controller", "plan", "--exit"], ["--exit-code"]),
        (["dreichor-controller", "completion", ""], ["bash", "fish", "zsh"]),
    ],
)
def test_bash_completes_commands_flags_and_choices(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, words: list[str], expected: list[str]
) -> None:
    assert sorted(_bash_complete(_script(capsys, "bash", tmp_path), words)) == sorted(expected)


def test_bash_offers_help_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    offered = _bash_complete(_script(capsys, "bash", tmp_path), ["dreichor-controller", "sync", "--"])
    assert offered.count("--help") == 1


def test_the_zsh_script_parses_registers_itself_and_keeps_apostrophes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    zsh = shutil.which("zsh")
    assert zsh is not None, "zsh is installed by scripts/setup"
    script = _script(capsys, "zsh", tmp_path)
    subprocess.run([zsh, "-n", str(script)], check=True)
    folder = tmp_path / "fpath"
    folder.mkdir()
    (folder / "_dreichor-controller").write_text(script.read_text())
    compinit = f"autoload -U compinit; compinit -u -d {tmp_path}/zcd"
    probe = f"fpath=({folder} $fpath); {compinit}; print $_comps[dreichor-controller]"
    done = subprocess.run([zsh, "-f", "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "_dreichor-controller"
    # The commands zsh offers, read back by zsh itself: a help text's apostrophe survives.
    call = (
        f"source {script} >/dev/null 2>&1; _describe() {{ print -l -- ${{(P)2}} }}; _shtab_dreichor_controller_commands"
    )
    words = subprocess.run([zsh, "-f", "-c", call], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "verify-image:Check a pinned image's cosign signature" in next(
        w for w in words if w.startswith("verify-image")
    )


def test_fish_completes_commands_and_flags_with_their_help(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fish = shutil.which("fish")
    assert fish is not None, "fish is installed by scripts/setup"
    script = _script(capsys, "fish", tmp_path)

    def offered(line: str) -> list[str]:
        call = f"source {script}; complete -C '{line}'"
        done = subprocess.run([fish, "--no-config", "-c", call], capture_output=True, text=True, check=True)
        return [row.split("\t")[0] for row in done.stdout.splitlines()]

    assert {"sync", "status", "suspend"} <= set(offered("dreichor-controller s"))
    assert "--force" in offered("dreichor-controller sync --f")
    assert "--check" in offered("dreichor-controller status --c")


# -- init's starter kit -------------------------------------------------------------------------


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        inner = [a for a in getattr(field.annotation, "__args__", (field.annotation,)) if isinstance(a, type)]
        for sub in inner:
            if issubclass(sub, BaseModel):
                keys += _keys(sub, prefix + name + ".")
    return keys


def test_init_writes_a_config_naming_every_key_with_its_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--environment", "dev", "--root", str(tmp_path)]) == 0
    path = tmp_path / "dev/deploy-agent/controller.yaml"
    lines = path.read_text().splitlines()
    for key in _keys(Config):
        leaf = key.rpartition(".")[2]
        named = [line for line in lines if line.lstrip("# -").startswith(f"{leaf}:")]  # "- cron:": a list's item
        assert named, f"{key} is not in the starter config"
        assert all(" # " in line or line.lstrip().startswith("#") for line in named), f"{key} has no why"
    with pytest.raises(ConfigError, match=r"source.url is not set: the controller polls no repository"):
        load_config(path)  # a skipped step polls nothing, rather than someone else's repository
    path.write_text(path.read_text().replace("  # url: ssh://", "  url: ssh://"))
    config = load_config(path)
    assert config.source.model_dump(exclude={"url"}) == type(config.source)(url="x").model_dump(exclude={"url"})
    assert (config.health, config.docker, config.image) == (
        type(config.health)(),
        type(config.docker)(),
        type(config.image)(),
    )
    steps = capsys.readouterr().out.split("Next steps:")[1]
    assert re.findall(r"^\s*(\d)\. ", steps, re.MULTILINE) == ["1", "2", "3"]
    assert f"{tmp_path}/dev/deploy-agent/systemd-root.conf" in steps  # the unit learns this root from it
    assert f"DREICHOR_ROOT={tmp_path}" in steps
    drop_in = (tmp_path / "dev/deploy-agent/systemd-root.conf").read_text()
    assert f"Environment=DREICHOR_ROOT={tmp_path}" in drop_in
    assert f"AssertPathExists={tmp_path}/dev/deploy-agent/controller.yaml" in drop_in
    assert f"ReadWritePaths=\nReadWritePaths={tmp_path}/dev/deploy-agent/state\n" in drop_in  # not /opt/dreichor


def test_init_writes_a_private_dotenv_template_listing_every_key(tmp_path: Path) -> None:
    assert main(["init", "--environment", "prod", "--root", str(tmp_path)]) == 0
    dotenv = tmp_path / "prod/deploy-agent/.env"
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600
    text = dotenv.read_text()
    assert all(f"# {name}=" in text for name in DOTENV_KEYS)
    read_by_the_controller = subprocess.run(
        ["grep", "-rhoE", r"\b(" + "|".join(DOTENV_KEYS) + r")\b", str(REPO_ROOT / "controller")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert set(read_by_the_controller) == set(DOTENV_KEYS)


def test_init_writes_allowed_signers_with_an_example_that_ssh_keygen_would_read(tmp_path: Path) -> None:
    assert main(["init", "--environment", "prod", "--root", str(tmp_path)]) == 0
    text = (tmp_path / "prod/deploy-agent/trust/allowed_signers").read_text()
    example = [line for line in text.splitlines() if "ssh-ed25519" in line]
    assert example and example[0].startswith("# ")
    assert parse_allowed_signers(text) == []  # comments only: nobody is trusted until a key is added


# -- logs and gauges ----------------------------------------------------------------------------


def test_the_daemon_logs_a_refusal_at_warning_and_a_bug_at_error_with_its_traceback(
    host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = Daemon(host.config)
    host.publish(make_ssh_key(tmp_path / "m", name="mallory"))
    with caplog.at_level(logging.INFO, logger="dreichor"):
        assert daemon.tick().result == "refused"
        pass_levels = [r.levelno for r in caplog.records if r.getMessage() == "pass"]
        assert pass_levels == [logging.WARNING]

        def bug(*args: object) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(daemon.service, "sync", bug)
        caplog.clear()
        daemon.tick()
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.exc_info is not None and "boom" in str(error.exc_info[1])


def test_gauges_follow_the_status(tmp_path: Path) -> None:
    metrics = Metrics()
    now = datetime.now(UTC)
    status = Status(
        environment="prod",
        phase="Degraded",
        updated_at=now,
        source=SourceStatus(url="file:///x", branch="main", stale=True),
        quarantined="abc:def",
        container=ContainerStatus(name="dreichor-runtime-prod"),
    )
    metrics.record_status(status)
    text = metrics.exposition().decode()
    assert 'dreichor_phase{phase="Degraded"} 1.0' in text and 'dreichor_phase{phase="InSync"} 0.0' in text
    assert "dreichor_source_stale 1.0" in text and "dreichor_quarantined 1.0" in text
    assert "dreichor_suspended 0.0" in text
    assert 'dreichor_build_info{version="' in text
    metrics.record_status(None)
    assert 'dreichor_phase{phase="Degraded"} 0.0' in metrics.exposition().decode()


def test_in_swarm_mode_the_metrics_name_the_runtimes_node() -> None:
    metrics = Metrics()
    container = ContainerStatus(name="dreichor-runtime-prod", state="running", node="p1", task="t1")
    status = Status(
        environment="prod",
        phase="InSync",
        updated_at=datetime.now(UTC),
        source=SourceStatus(url="file:///x", branch="main"),
        container=container,
    )
    metrics.record_status(status)
    metrics.record_status(status.model_copy(update={"container": container.model_copy(update={"node": "m1"})}))
    text = metrics.exposition().decode()
    assert 'dreichor_runtime_info{node="m1"} 1.0' in text and 'node="p1"' not in text
