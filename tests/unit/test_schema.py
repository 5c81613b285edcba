"""``envs/manifest.schema.json`` is generated from the model and must not go stale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from controller.errors import Refused
from controller.model.config import DEFAULT_REPOSITORY, HostPaths
from controller.model.desired import desired_from_bytes
from controller.model.manifest import manifest_schema

SCHEMA = Path(__file__).resolve().parents[2] / "envs" / "manifest.schema.json"
CHECKER = str(Path(sys.executable).with_name("check-jsonschema"))  # installed by the dev extra


def test_the_committed_schema_matches_the_model() -> None:
    committed = json.loads(SCHEMA.read_text())
    assert committed == manifest_schema(), "stale schema: run ./scripts/schema"


def test_the_schema_forbids_unknown_fields_and_requires_a_digest() -> None:
    schema = manifest_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"environment", "image"}
    assert "@sha256:" in schema["properties"]["image"]["pattern"]


DIGEST = "sha256:" + "ab" * 32
REPO = DEFAULT_REPOSITORY

# Manifests the schema must judge as the controller does, checked by check-jsonschema itself.
MANIFESTS = {
    "good": f"environment: prod\nimage: {REPO}:1.4.2@{DIGEST}\nenv:\n  LOG_LEVEL: info\n  WORKERS: '4'\n",
    "latest in dev": f"environment: dev\nimage: {REPO}:latest@{DIGEST}\n",
    "quoted yes-like word stays valid": f"environment: dev\nimage: {REPO}@{DIGEST}\nenv:\n  A: 'nope'\n",
    "latest in prod": f"environment: prod\nimage: {REPO}:latest@{DIGEST}\n",
    "wrong repository": f"environment: prod\nimage: ghcr.io/evil/runtime@{DIGEST}\n",
    "lookalike repository": f"environment: prod\nimage: {REPO}-evil@{DIGEST}\n",
    "no digest": f"environment: prod\nimage: {REPO}:1.4.2\n",
    "digest with a newline": f"environment: prod\nimage: |\n  {REPO}@{DIGEST}\n",
    "yaml 1.1 no": f"environment: prod\nimage: {REPO}@{DIGEST}\nenv:\n  DEBUG: no\n",
    "yaml 1.1 on": f"environment: prod\nimage: {REPO}@{DIGEST}\nenv:\n  FEATURE: on\n",
    "yaml 1.1 sexagesimal": f"environment: prod\nimage: {REPO}@{DIGEST}\nenv:\n  TIME: 10:30\n",
    "date": f"environment: prod\nimage: {REPO}@{DIGEST}\nenv:\n  SINCE: 2024-01-01\n",
    "timestamp": f"environment: prod\nimage: {REPO}@{DIGEST}\nenv:\n  AT: 2024-01-01 10:00:00Z\n",
    "number": f"environment: prod\nimage: {REPO}@{DIGEST}\nenv:\n  WORKERS: 4\n",
    "control character": f'environment: prod\nimage: {REPO}@{DIGEST}\nenv:\n  A: "x\\ey"\n',
    "env name with a newline": f'environment: prod\nimage: {REPO}@{DIGEST}\nenv:\n  "A\\n": x\n',
    "DATABASE_URL": f"environment: prod\nimage: {REPO}@{DIGEST}\nenv:\n  DATABASE_URL: x\n",
    "owned key": f"environment: prod\nimage: {REPO}@{DIGEST}\nports: []\n",
    "unknown environment": f"environment: staging\nimage: {REPO}@{DIGEST}\n",
}


def controller_accepts(text: str) -> bool:
    environment = "dev" if "environment: dev" in text else "prod"
    try:
        desired_from_bytes(
            text.encode(),
            environment=environment,
            repository=REPO,
            paths=HostPaths(Path("/x"), environment),
            dotenv=None,
        )
    except Refused:
        return False
    return True


def test_check_jsonschema_judges_manifests_as_the_controller_does(tmp_path: Path) -> None:
    files = {}
    for number, (name, text) in enumerate(MANIFESTS.items()):
        files[name] = tmp_path / f"m{number}.yaml"
        files[name].write_text(text)
    proc = subprocess.run(
        [CHECKER, "--schemafile", str(SCHEMA), "-o", "JSON", *map(str, files.values())],
        capture_output=True,
        text=True,
        check=False,
    )
    failed = {Path(error["filename"]).name for error in json.loads(proc.stdout)["errors"]}
    verdicts = {name: path.name not in failed for name, path in files.items()}
    assert verdicts == {name: controller_accepts(text) for name, text in MANIFESTS.items()}
    assert verdicts["good"] and not verdicts["latest in prod"]  # the table means something
