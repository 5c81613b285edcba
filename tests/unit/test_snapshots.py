"""Prior-state snapshots on disk: atomic files, newest first, the newest 20 kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.errors import Refused
from controller.records.snapshots import Snapshot, find_snapshot, list_snapshots, snapshot_id, write_snapshot

T0 = datetime(2026, 11, 27, tzinfo=UTC)


def snap(n: int, *, container: bool = True) -> Snapshot:
    at = T0 + timedelta(minutes=n)
    return Snapshot(
        id=snapshot_id(at, f"rev{n:02d}"),
        environment="prod",
        created_at=at,
        reason="test",
        revision=f"rev{n:02d}",
        image=f"repo@sha256:{n:064d}",
        image_id=None,
        container={"Id": f"c{n}"} if container else None,
        desired={},
    )


def test_only_the_newest_twenty_are_kept(tmp_path: Path) -> None:
    for n in range(25):
        write_snapshot(tmp_path, snap(n))
    kept = list_snapshots(tmp_path)
    assert len(kept) == 20
    assert [s.revision for s in kept[:2]] == ["rev24", "rev23"]
    assert kept[-1].revision == "rev05"


def test_find_takes_a_named_snapshot_or_the_newest_with_a_container(tmp_path: Path) -> None:
    write_snapshot(tmp_path, snap(1))
    write_snapshot(tmp_path, snap(2, container=False))
    assert find_snapshot(tmp_path, None, environment="prod").revision == "rev01"
    assert find_snapshot(tmp_path, snap(2).id, environment="prod").revision == "rev02"
    with pytest.raises(Refused, match="no snapshot named"):
        find_snapshot(tmp_path, snap(3).id, environment="prod")
    with pytest.raises(Refused, match="is not a snapshot id"):
        find_snapshot(tmp_path, "nope", environment="prod")


@pytest.mark.parametrize(
    ("revision", "suffix"),
    [("0123456789abcdef", "0123456789ab"), (None, "none"), ("", "none"), ("rev01", "none"), ("../../x", "none")],
)
def test_a_snapshot_id_is_a_time_and_a_revision_prefix_only(revision: str | None, suffix: str) -> None:
    assert snapshot_id(T0, revision) == f"20261127T000000000000Z-{suffix}"


def test_an_unreadable_snapshot_is_skipped_not_fatal(tmp_path: Path) -> None:
    write_snapshot(tmp_path, snap(1))
    (tmp_path / "29991231T000000000000Z-broken.json").write_text("{")
    assert [s.revision for s in list_snapshots(tmp_path)] == ["rev01"]
