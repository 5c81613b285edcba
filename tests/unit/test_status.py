"""The status file: atomic writes, and a reader that never trusts a broken file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from controller.status import ContainerStatus, SourceStatus, Status, read_status, write_status

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
