"""``envs/manifest.schema.json`` is generated from the model and must not go stale."""

from __future__ import annotations

import json
from pathlib import Path

from controller.manifest import manifest_schema

SCHEMA = Path(__file__).resolve().parents[2] / "envs" / "manifest.schema.json"


def test_the_committed_schema_matches_the_model() -> None:
    committed = json.loads(SCHEMA.read_text())
    assert committed == manifest_schema(), "stale schema: run ./scripts/schema"


def test_the_schema_forbids_unknown_fields_and_requires_a_digest() -> None:
    schema = manifest_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"environment", "image"}
    assert "@sha256:" in schema["properties"]["image"]["pattern"]
