"""A state folder that fills up: appends are whole or absent, and nothing recorded before is lost.

A real tmpfs of 1 MiB, filled by a competing writer that keeps taking every page
freed, as a log shipper beside the controller would.  Needs root to mount; the
test says so where it cannot.
"""

from __future__ import annotations

import errno
import json
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.cli.render import check_code
from controller.errors import Reason
from controller.records.audit import append_event, read_events, verify_chain
from controller.records.host_init import init_layout
from controller.records.status import ContainerStatus, SourceStatus, Status, write_status
from controller.source.git import GitSource, SourceError
from testbed import ManifestRepo, free_port, wait_for
from testbed.disk import PAGE, DiskUnavailable, Hog, set_read_only, small_tmpfs
from tests.unit.test_pass import GOOD_A, GOOD_B, Crash, Env, deployed, env, key  # noqa: F401 the fixtures

AT = datetime(2026, 12, 8, tzinfo=UTC)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted after the test."""
    try:
        with small_tmpfs(tmp_path / "state", size="1m") as mounted:
            yield mounted
    except DiskUnavailable as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")


def test_appends_on_a_disk_a_competing_writer_fills_are_whole_or_absent(small_disk: Path) -> None:
    log = small_disk / "audit.jsonl"
    for n in range(20):
        append_event(log, "applied", at=AT, revision=f"r{n}", reason="before the disk filled")
    hog = Hog(small_disk / "hog")
    hog.start()
    assert hog.full.wait(10), "the competing writer never filled the disk"
    shuffle = random.Random(38)  # noqa: S311 a repeatable race, not a secret
    written, failures = 20, []
    try:
        for n in range(300):
            hog.release(PAGE * shuffle.randint(0, 2))  # a page or two freed: a race for them
            try:
                append_event(log, "refused", at=AT, revision=f"x{n}", reason="y" * shuffle.randint(500, 3000))
            except OSError as exc:
                failures.append(exc)
            else:
                written += 1
    finally:
        hog.stop()
    short = [exc for exc in failures if "short write" in str(exc.strerror)]
    assert short, f"no append met a short write ({len(failures)} failed outright, {written} written)"
    assert verify_chain(log) is None
    assert len(read_events(log)) == written
    assert [e["revision"] for e in read_events(log)[:20]] == [f"r{n}" for n in range(20)]


def test_a_log_torn_by_an_earlier_release_on_a_full_disk_is_cut_once_there_is_room(small_disk: Path) -> None:
    log = small_disk / "audit.jsonl"
    append_event(log, "applied", at=AT, revision="r0")
    with log.open("ab") as handle:
        handle.write(b'{"at":"2026-12-08T00:00:00+00:00","event":"resumed","by":"op')  # what 45269f2 left
    hog = Hog(small_disk / "hog")
    hog.start()
    assert hog.full.wait(10)
    hog.stop()
    with pytest.raises(OSError):
        append_event(log, "resumed", at=AT, **{f"note{i}": "z" * 400 for i in range(20)})  # past the page
    assert "torn" in (verify_chain(log) or "")
    (small_disk / "hog").unlink()
    append_event(log, "resumed", at=AT, reason="room again")
    assert [e["event"] for e in read_events(log)] == ["applied", "torn_line_cut", "resumed"]
    assert verify_chain(log) is None


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:
        return 0, b""  # not listening yet


def test_a_daemon_on_a_read_only_state_folder_serves_its_status_and_runs_no_pass(tmp_path: Path) -> None:
    init_layout(tmp_path / "opt", "prod")
    agent = tmp_path / "opt" / "prod" / "deploy-agent"
    repo = ManifestRepo(tmp_path / "manifests")
    port = free_port()
    (agent / "controller.yaml").write_text(
        f"environment: prod\nroot: {tmp_path / 'opt'}\nsource: {{url: '{repo.url}', interval: 1}}\n"
        "trust: {allowed_signers: trust/allowed_signers}\nimage: {repository: registry.test/dreichor/runtime}\n"
        f"docker: {{url: 'unix:///nonexistent.sock'}}\napi: {{listen: '127.0.0.1:{port}'}}\n"
    )
    state = agent / "state"
    kept = tmp_path / "kept-state"
    shutil.copytree(state, kept)
    try:
        with small_tmpfs(state, size="1m"):
            shutil.copytree(kept, state, dirs_exist_ok=True)
            status = Status(
                environment="prod",
                updated_at=AT,
                source=SourceStatus(url=repo.url, branch="main"),
                container=ContainerStatus(name="dreichor-runtime-prod"),
            )
            write_status(state / "status.json", status)
            before = {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()}
            set_read_only(state, True)
            log = tmp_path / "daemon.log"
            with log.open("w") as out:
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "controller", "run", "--config", str(agent / "controller.yaml")],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            try:
                wait_for(lambda: _get(port, "/healthz")[0] == 503, timeout=30, what="/healthz answering")
                code, body = _get(port, "/status")
                assert code == 200 and json.loads(body)["environment"] == "prod"
                time.sleep(2)  # two intervals: a pass would have run by now
                assert '"msg": "pass"' not in log.read_text()
                assert {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()} == before
                set_read_only(state, False)
                wait_for(lambda: '"msg": "pass"' in log.read_text(), timeout=30, what="a pass once writable")
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=30)
            output = log.read_text()
            assert daemon.returncode == 0, output
            assert "the state folder takes no write" in output and "(EROFS)" in output
            assert "the state folder takes writes again" in output and "Traceback" not in output
    except DiskUnavailable as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")


@pytest.fixture
def read_only_state(deployed: Env, tmp_path: Path) -> Iterator[Path]:  # noqa: F811 the fixture imported above
    """The deployed environment's state folder on a tmpfs of its own, to be remounted read-only."""
    state = deployed.config.paths.state
    kept = tmp_path / "kept-state"
    shutil.copytree(state, kept, symlinks=True)
    try:
        with small_tmpfs(state, size="32m"):
            shutil.copytree(kept, state, symlinks=True, dirs_exist_ok=True)
            yield state
    except DiskUnavailable as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")


def test_a_read_only_state_folder_during_recovery_is_a_state_io_failure_and_the_undo_is_told_later(
    deployed: Env,  # noqa: F811 the fixture imported above
    read_only_state: Path,
) -> None:
    head = deployed.publish(GOOD_B)
    with pytest.raises(Crash):
        deployed.service(crash_at="stop").sync()  # killed between the stop and the start
    set_read_only(read_only_state, True)
    service = deployed.service()  # one daemon: it lives through the fault
    before = datetime.now(UTC)
    result = service.sync()
    after = datetime.now(UTC)
    assert result.result == "failed" and str(result.code) == "StateIO" and result.retryable
    assert f"cannot write {read_only_state}" in result.reason and "(EROFS)" in result.reason
    assert deployed.image() == GOOD_A  # the undo happened all the same
    assert service.sync().code == Reason.STATE_IO  # still read-only: nothing more to undo, nothing told twice
    set_read_only(read_only_state, False)
    assert service.sync().result == "applied"
    recovered = [e for e in read_events(deployed.config.paths.audit) if e["event"] == "recovered"]
    assert len(recovered) == 1
    assert before <= datetime.fromisoformat(recovered[0]["at"]) <= after  # when it happened, not when told
    assert recovered[0]["revision"] == head and recovered[0]["container"]
    assert deployed.events()[-2:] == ["recovered", "applied"]
    assert verify_chain(deployed.config.paths.audit) is None


def test_recovery_at_the_daemon_start_on_a_read_only_folder_says_so_and_is_told_by_the_next_pass(
    deployed: Env,  # noqa: F811 the fixture imported above
    read_only_state: Path,
) -> None:
    deployed.publish(GOOD_B)
    with pytest.raises(Crash):
        deployed.service(crash_at="stop").sync()
    set_read_only(read_only_state, True)
    service = deployed.service()
    with pytest.raises(OSError, match=r"cannot write .*/state/\S+: Read-only file system \(EROFS\)"):
        service.recover()
    assert deployed.image() == GOOD_A
    set_read_only(read_only_state, False)
    assert service.sync().result == "applied"
    assert deployed.events().count("recovered") == 1
    assert verify_chain(deployed.config.paths.audit) is None


def test_a_fetch_that_meets_a_full_disk_leaves_no_temporary_objects_in_the_git_cache(tmp_path: Path) -> None:
    repo = ManifestRepo(tmp_path / "manifests")
    repo.write("envs/prod.yaml", "first\n")
    repo.commit("first")
    repo.push()
    noise = random.Random(5).randbytes(3 * 1024 * 1024)  # noqa: S311 incompressible, not secret
    (repo.work / "blob.bin").write_bytes(noise)
    repo.git("add", "blob.bin")
    head = repo.commit("a commit larger than the disk")
    repo.push()
    try:
        with small_tmpfs(tmp_path / "state", size="2m") as state:
            source = GitSource(state / "repo", url=repo.url, branch="main", timeout=30)
            with pytest.raises(SourceError, match="fetching main failed"):
                source.fetch()
            objects = state / "repo" / "objects"
            left = [p.relative_to(objects) for p in objects.rglob("*") if p.is_file() and "tmp" in p.name]
            assert left == []
            assert sum(p.stat().st_size for p in objects.rglob("*") if p.is_file()) < 64 * 1024
    except DiskUnavailable as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    assert head


def test_a_full_state_folder_fails_the_pass_as_state_io_and_loses_nothing(
    deployed: Env,  # noqa: F811 the fixture imported above
    read_only_state: Path,
) -> None:
    deployed.publish(GOOD_B)
    before = deployed.events()
    service = deployed.service()  # one daemon: it lives through the fault
    assert service.plan().plan is not None  # fetched before the disk fills (a fetch then fails as FetchFailed)
    hog = Hog(read_only_state / "hog")
    hog.start()
    try:
        assert hog.full.wait(30)
        written = deployed.config.paths.status.read_bytes()
        result = service.sync()
        assert result.result == "failed" and result.code == Reason.STATE_IO
        assert deployed.config.paths.status.read_bytes() == written  # it ages: status --check says unknown
        assert f"cannot write {read_only_state}" in result.reason and "(ENOSPC)" in result.reason
        assert deployed.image() == GOOD_A  # nothing was touched
        with pytest.raises(OSError) as refused:
            service.suspend("maintenance", by="ops")  # on the command line: exit 1 and the sentence
        assert refused.value.errno == errno.ENOSPC
        assert verify_chain(deployed.config.paths.audit) is None and deployed.events() == before
    finally:
        hog.stop()
        (read_only_state / "hog").unlink()
    assert service.sync().result == "applied" and deployed.image() == GOOD_B
    events = read_events(deployed.config.paths.audit)
    assert [e["event"] for e in events[len(before) :]] == ["applied"]  # a retried failure is no decision
    assert verify_chain(deployed.config.paths.audit) is None


def test_status_check_says_unknown_once_a_full_disk_kept_the_status_for_three_intervals(
    deployed: Env,  # noqa: F811 the fixture imported above
    read_only_state: Path,
) -> None:
    deployed.publish(GOOD_B)
    service = deployed.service()
    service.plan()  # fetched before the disk fills
    hog = Hog(read_only_state / "hog")
    hog.start()
    try:
        assert hog.full.wait(30)
        assert service.sync().code == Reason.STATE_IO
    finally:
        hog.stop()
    status = service.status()
    assert status is not None and status.phase == "InSync"  # what it said before the disk filled
    interval = timedelta(seconds=deployed.config.source.interval)
    assert check_code(status, now=status.updated_at + 2 * interval, interval=int(interval.total_seconds())) == 0
    late = status.updated_at + 3 * interval + timedelta(seconds=1)
    assert check_code(status, now=late, interval=int(interval.total_seconds())) == 4  # "unknown"
