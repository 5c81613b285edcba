"""The webhook replay memory (``records.deliveries``): on disk, by id and body, for at least a day, bounded."""

from __future__ import annotations

import json
from pathlib import Path

from controller.records.deliveries import DeliveryMemory

HOUR = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_delivery_is_refused_again_after_a_restart_by_its_id_or_its_body(tmp_path: Path) -> None:
    path = tmp_path / "webhook-deliveries.json"
    assert DeliveryMemory(path).first(delivery="d1", body=b'{"ref": "a"}')
    restarted = DeliveryMemory(path)
    assert not restarted.first(delivery="d1", body=b'{"ref": "other"}')  # the same id
    assert not restarted.first(delivery="d2", body=b'{"ref": "a"}')  # the same signed body under a new id
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_delivery_is_remembered_for_at_least_a_day_then_forgotten(tmp_path: Path) -> None:
    clock = Clock()
    memory = DeliveryMemory(tmp_path / "m.json", clock=clock)
    assert memory.first(delivery="d1", body=b"1")
    clock.now += 25 * HOUR
    assert not DeliveryMemory(tmp_path / "m.json", clock=clock).first(delivery="d1", body=b"1")
    clock.now += 24 * HOUR  # two days and more: gone, and the file shrinks with it
    assert memory.first(delivery="d2", body=b"2")
    assert len(json.loads((tmp_path / "m.json").read_bytes())["seen"]) == 2


def test_the_memory_is_bounded_oldest_first(tmp_path: Path) -> None:
    memory = DeliveryMemory(tmp_path / "m.json", limit=10)
    for n in range(20):
        assert memory.first(delivery=f"d{n}", body=str(n).encode())
    assert len(json.loads((tmp_path / "m.json").read_bytes())["seen"]) == 10
    assert not memory.first(delivery="d19", body=b"19")


def test_the_previous_release_has_no_file_and_a_damaged_one_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "webhook-deliveries.json"
    assert DeliveryMemory(path).first(delivery="d1", body=b"x")  # none yet: an upgrade starts empty
    path.write_text("{not json")
    assert DeliveryMemory(path).first(delivery="d1", body=b"x")
