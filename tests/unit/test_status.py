"""The status file: atomic writes, and a reader that never trusts a broken file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.records.status import (
    ContainerStatus,
    SourceStatus,
    Status,
    applied_revision,
    damaged_copies,
    keep_damaged,
    read_status,
    read_watermark,
    status_problem,
    write_status,
    write_watermark,
)

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def status() -> Status:
    return Status(
        environment="prod",
        phase="InSync",
        updated_at=NOW,
        source=SourceStatus(url="file:///m.git", branch="main", head="abc", fetched_at=NOW),
        container=ContainerStatus(name="dreichor-runtime-prod", state="running", health="healthy"),
    )


def test_a_written_status_reads_back_with_the_design_fields(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_status(path, status())
    data = json.loads(path.read_text())
    for key in (
        "environment",
        "phase",
        "updated_at",
        "source",
        "applied",
        "last_attempt",
        "container",
        "last_snapshot",
        "suspended",
    ):
        assert key in data
    assert data["updated_at"] == "2026-11-27T12:00:00Z"
    assert read_status(path) == status()
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary file left behind


def test_a_broken_status_file_reads_as_absent(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    for text in ("", "{", "[]", '{"environment": "prod"}'):
        path.write_text(text)
        assert read_status(path) is None
    assert read_status(tmp_path / "missing.json") is None


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"environment": "pr', "is not valid JSON"),
        (b"\xff\xfe", "is not UTF-8 text"),
        (b'{"environment": "prod"}', "does not match the status schema"),
    ],
)
def test_a_damaged_status_file_is_named_with_why(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(content)
    problem = status_problem(path)
    assert problem is not None and "status.json" in problem and why in problem


def test_a_missing_or_good_status_file_is_no_problem(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    assert status_problem(path) is None
    write_status(path, status())
    assert status_problem(path) is None


def test_a_damaged_file_is_kept_aside_and_never_overwrites_a_copy(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(b"first")
    first = keep_damaged(path, now=NOW)
    path.write_bytes(b"second")
    second = keep_damaged(path, now=NOW)
    assert first != second and not path.exists()
    assert (first.read_bytes(), second.read_bytes()) == (b"first", b"second")
    assert damaged_copies(path) == [first, second]


def test_the_watermark_round_trips_and_ignores_anything_but_a_revision(tmp_path: Path) -> None:
    path = tmp_path / "watermark"
    assert read_watermark(path) is None
    write_watermark(path, "a" * 40)
    assert read_watermark(path) == "a" * 40
    path.write_text("not a revision\n")
    assert read_watermark(path) is None


def test_a_status_file_of_the_previous_release_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    previous = json.loads(status().model_dump_json())
    for key in ("audit",):
        previous.pop(key)
    previous["applied"] = {
        "revision": "",
        "image": "r@sha256:" + "1" * 64,
        "signer": "x",
        "applied_at": NOW.isoformat(),
    }
    path.write_text(json.dumps(previous))
    loaded = read_status(path)
    assert loaded is not None and loaded.audit is None and applied_revision(loaded) is None
    assert loaded.applied is not None and loaded.applied.image_source is None  # added for keyless provenance
