"""The layout contract, table-driven: every bad manifest of the Foundation issue, with its reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from controller.errors import Refused
from controller.model.config import DEFAULT_REPOSITORY, HostPaths
from controller.model.desired import (
    CONTAINER_AUDIT,
    CONTAINER_SNAPSHOTS,
    container_name,
    database_reasons,
    desired_from_bytes,
    parse_image,
)
from controller.records.dotenv import read_dotenv

REPO = DEFAULT_REPOSITORY
DIGEST = "sha256:" + "ab" * 32
GOOD = f"{REPO}:1.4.2@{DIGEST}"
PATHS = HostPaths(Path("/srv/dreichor"), "prod")


def manifest(*lines: str, image: str = GOOD, environment: str = "prod") -> bytes:
    return "\n".join([f"environment: {environment}", f"image: {image}", *lines, ""]).encode()


def refusal(data: bytes, *, environment: str = "prod", dotenv: dict[str, str] | None = None) -> str:
    with pytest.raises(Refused) as info:
        desired_from_bytes(data, environment=environment, repository=REPO, paths=PATHS, dotenv=dotenv)
    return "\n".join(info.value.reasons)


def test_a_good_manifest_derives_the_layouts_container() -> None:
    desired = desired_from_bytes(
        manifest("env:", "  LOG_LEVEL: info"),
        environment="prod",
        repository=REPO,
        paths=PATHS,
        dotenv={"DATABASE_URL": "postgresql://u:pw@127.0.0.1/dreichor_prod", "REGISTRY_TOKEN": "x"},
        revision="abc",
    )
    assert desired.name == "dreichor-runtime-prod"
    assert desired.image == f"{REPO}@{DIGEST}"
    assert desired.tag == "1.4.2"
    assert [(m.source, m.target) for m in desired.mounts] == [
        ("/srv/dreichor/prod/volumes/audit-events", CONTAINER_AUDIT),
        ("/srv/dreichor/prod/volumes/snapshots", CONTAINER_SNAPSHOTS),
    ]
    assert desired.env == {"DATABASE_URL": "postgresql://u:pw@127.0.0.1/dreichor_prod", "LOG_LEVEL": "info"}
    assert desired.labels["io.dreichor.environment"] == "prod"
    assert desired.labels["io.dreichor.revision"] == "abc"
    assert desired.labels["io.dreichor.managed-by"] == "dreichor-controller"
    assert len(desired.labels["io.dreichor.manifest-sha256"]) == 64
    assert (desired.restart_policy, desired.init, desired.network_mode) == ("unless-stopped", True, "bridge")
    assert desired.describe()["env"]["DATABASE_URL"] == "<from .env>"


BAD = [
    ("unknown field", manifest("replicas: 2"), "unknown field 'replicas' at line 3 (manifest: only"),
    (
        "misspelt field",
        b"environment: prod\nimgae: x\n",
        "unknown field 'imgae' at line 2, did you mean 'image'? (manifest: only environment, image and env",
    ),
    ("missing image", b"environment: prod\n", "missing field 'image'"),
    ("tag without digest", manifest(image=f"{REPO}:1.4.2"), "not pinned by digest"),
    ("63 hex", manifest(image=f"{REPO}@sha256:{'a' * 63}"), "digest 'sha256:aaa"),
    ("65 hex", manifest(image=f"{REPO}@sha256:{'a' * 65}"), "is malformed"),
    ("uppercase hex", manifest(image=f"{REPO}@sha256:{'AB' * 32}"), "is malformed"),
    ("sha512", manifest(image=f"{REPO}@sha512:{'a' * 128}"), "is malformed"),
    ("sha256 alone", manifest(image=f"'{REPO}@sha256:'"), "is malformed"),
    ("lookalike suffix", manifest(image=f"{REPO}-evil@{DIGEST}"), "runtime-evil' is not the configured"),
    ("sub path", manifest(image=f"{REPO}/sub@{DIGEST}"), "runtime/sub' is not the configured"),
    ("prefix host", manifest(image=f"evil.io/{REPO}@{DIGEST}"), "'evil.io/ghcr.io"),
    ("latest alone", manifest(image=f"{REPO}:latest"), "'latest' is refused in prod"),
    ("latest and digest", manifest(image=f"{REPO}:latest@{DIGEST}"), "'latest' is refused in prod"),
    ("env mismatch", manifest(environment="dev"), "does not match the file's environment 'prod'"),
    ("env unknown", manifest(environment="staging"), "'staging' is not dev or prod"),
    (
        "volumes",
        manifest("volumes: ['/:/host']"),
        "'volumes' is owned by the controller (layout: exactly two",
    ),
    ("ports", manifest("ports: ['0.0.0.0:80:80']"), "'ports' is owned by the controller"),
    ("network_mode", manifest("network_mode: host"), "'network_mode' is owned by the controller"),
    ("privileged", manifest("privileged: true"), "'privileged' is owned by the controller"),
    ("cap_add", manifest("cap_add: [SYS_ADMIN]"), "'cap_add' is owned by the controller"),
    ("devices", manifest("devices: ['/dev/mem']"), "'devices' is owned by the controller"),
    ("container_name", manifest("container_name: x"), "'container_name' is owned by the controller"),
    ("name", manifest("name: dreichor-runtime-dev"), "'name' is owned by the controller"),
    ("user root", manifest("user: root"), "'user' is owned by the controller"),
    (
        "DATABASE_URL",
        manifest("env:", "  DATABASE_URL: postgres://x/dreichor_prod"),
        "'env.DATABASE_URL' is owned",
    ),
    ("bad env name", manifest("env:", "  1BAD: x"), "env name '1BAD' is not a valid variable name"),
    ("dash env name", manifest("env:", "  A-B: x"), "env name 'A-B'"),
    (
        "env bool",
        manifest("env:", "  DEBUG: no"),
        "'env.DEBUG' must be a string but YAML read false: quote it",
    ),
    ("env number", manifest("env:", "  WORKERS: 4"), "'env.WORKERS' must be a string but YAML read 4"),
    ("env list", manifest("env: [a]"), "'env' must be a mapping"),
    ("image number", b"environment: prod\nimage: 12\n", "'image' must be a string"),
    ("empty file", b"", "is empty"),
    ("comment only", b"# nothing\n", "is empty"),
    ("top-level list", b"- environment: prod\n", "not a list"),
    ("top-level scalar", b"prod\n", "not a string"),
    (
        "two documents",
        manifest() + b"---\n" + manifest(),
        "expected a single document in the stream but found another document",
    ),
    ("duplicate keys", manifest("image: other"), "duplicate key 'image'"),
    (
        "python tag",
        manifest("env: !!python/object/apply:os.system ['true']"),
        "tag 'tag:yaml.org,2002:python",
    ),
    ("custom tag", manifest("env: !secret x"), "YAML tag '!secret' is refused"),
    ("anchor", manifest("env: &a {A: b}"), "YAML anchors are refused"),
    ("merge key", manifest("env:", "  <<: {A: b}"), "merge keys '<<' are refused"),
    (
        "alias bomb",
        b'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b]\n',
        "YAML anchors are refused",
    ),
    ("deep nesting", b"environment: prod\nimage: " + b"[" * 10_000 + b"]" * 10_000 + b"\n", "nesting deeper"),
    ("too large", manifest("# " + "x" * 70_000), "more than the limit of 65536 bytes"),
    ("invalid utf-8", manifest("env:", "  A: caf\xe9").replace(b"\xc3\xa9", b"\xe9"), "not valid UTF-8"),
    (
        "utf-16 with bom",
        "\ufeff".encode("utf-16-le") + manifest().decode().encode("utf-16-le"),
        "byte order mark",
    ),
    ("utf-8 bom", b"\xef\xbb\xbf" + manifest(), "byte order mark"),
    ("non-string key", manifest("1: x"), "mapping keys must be strings"),
    ("control character", b"\x00", "not valid YAML: unacceptable character #x0000"),
]


@pytest.mark.parametrize(("data", "expected"), [(d, e) for _, d, e in BAD], ids=[n for n, _, _ in BAD])
def test_a_bad_manifest_is_refused_with_its_reason(data: bytes, expected: str) -> None:
    assert expected in refusal(data)


def test_every_reason_of_one_manifest_is_reported_together() -> None:
    reasons = refusal(manifest("volumes: []", "ports: []", image="evil.io/x:latest", environment="dev"))
    for expected in ("'volumes'", "'ports'", "'dev' does not match", "not pinned", "evil.io/x", "'latest'"):
        assert expected in reasons


def test_latest_is_allowed_next_to_a_digest_in_dev() -> None:
    desired = desired_from_bytes(
        manifest(image=f"{REPO}:latest@{DIGEST}", environment="dev"),
        environment="dev",
        repository=REPO,
        paths=HostPaths(Path("/srv/dreichor"), "dev"),
        dotenv=None,
    )
    assert desired.image == f"{REPO}@{DIGEST}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@127.0.0.1:5432/dreichor_prod", None),
        (
            "postgresql://u:p@127.0.0.1:5432/dreichor_dev",
            "names database 'dreichor_dev', not 'dreichor_prod'",
        ),
        ("postgresql://127.0.0.1/postgres", "names database 'postgres'"),
        (None, "has no DATABASE_URL"),
        ("", "has no DATABASE_URL"),
    ],
)
def test_database_url_must_name_the_environments_database(url: str | None, expected: str | None) -> None:
    reasons = database_reasons(url, environment="prod")
    assert (reasons == []) if expected is None else (expected in reasons[0])


def test_a_dotenv_naming_another_environments_database_refuses_the_manifest() -> None:
    reasons = refusal(manifest(), dotenv={"DATABASE_URL": "postgresql://h/dreichor_dev"})
    assert "(layout: separate databases per environment)" in reasons


def test_only_database_url_from_dotenv_reaches_the_container() -> None:
    desired = desired_from_bytes(
        manifest(),
        environment="prod",
        repository=REPO,
        paths=PATHS,
        dotenv={"DATABASE_URL": "postgresql://h/dreichor_prod", "GIT_TOKEN": "t", "REGISTRY_PASSWORD": "p"},
    )
    assert set(desired.env) == {"DATABASE_URL"}


@pytest.mark.parametrize(
    ("image", "repo", "tag"),
    [
        (f"{REPO}@{DIGEST}", REPO, None),
        (f"{REPO}:1.0@{DIGEST}", REPO, "1.0"),
        (f"127.0.0.1:5000/dreichor/runtime:x@{DIGEST}", "127.0.0.1:5000/dreichor/runtime", "x"),
        (f"127.0.0.1:5000/dreichor/runtime@{DIGEST}", "127.0.0.1:5000/dreichor/runtime", None),
    ],
)
def test_image_references_split_into_repository_and_tag(image: str, repo: str, tag: str | None) -> None:
    ref = parse_image(image, repository=repo, environment="prod")
    assert (ref.repository, ref.tag, ref.pinned) == (repo, tag, f"{repo}@{DIGEST}")


def test_container_names_never_collide() -> None:
    assert container_name("dev") != container_name("prod")


def test_dotenv_reads_comments_export_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("# c\nexport DATABASE_URL=\"postgresql://h/dreichor_dev\"  # dev db\nTOKEN='a=b'\n\nPASS=x$y${Z}\n")
    path.chmod(0o600)
    assert read_dotenv(path) == {"DATABASE_URL": "postgresql://h/dreichor_dev", "TOKEN": "a=b", "PASS": "x$y${Z}"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=1\nBROKEN\n", r"line 2 \(BROKEN\) has no '='"),
        ('A=1\n\nB="unclosed secret\n', r"line 3 is not KEY=value"),
    ],
)
def test_a_dotenv_line_that_cannot_be_read_is_an_error_naming_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / ".env"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(OSError, match=message) as raised:
        read_dotenv(path)
    assert "secret" not in str(raised.value)


def test_a_dotenv_others_can_read_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("A=1\n")
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        read_dotenv(path)


# -- hard edges: whole-string matching, control characters, values YAML cannot build ----------------

HARD_EDGES = [
    ("digest with a newline (block scalar)", f"environment: prod\nimage: |\n  {GOOD}\n".encode(), "is malformed"),
    ("digest with an escaped newline", manifest(image=f'"{GOOD}\\n"'), "is malformed"),
    ("latest with a newline in prod", manifest(image=f'"{REPO}:latest\\n@{DIGEST}"'), "tag 'latest\\n'"),
    ("env name with a newline", manifest("env:", '  "DATABASE_URL\\n": x'), "env name 'DATABASE_URL\\n'"),
    ("env name with a tab", manifest("env:", '  "A\\tB": x'), "env name 'A\\tB'"),
    ("env value with NUL", manifest("env:", '  A: "x\\0y"'), "'env.A' holds a control character"),
    ("env value with an escape", manifest("env:", '  A: "\\e[31mred"'), "'env.A' holds a control character"),
    ("env value with a newline", manifest("env:", '  A: "x\\n"'), "'env.A' holds a control character"),
    ("env value with DEL", manifest("env:", '  A: "x\\x7f"'), "'env.A' holds a control character"),
    ("impossible date", manifest("env:", "  A: 2024-02-30"), "line 4, column 6"),
    ("impossible date as a key", manifest("2024-02-30: x"), "line 3, column 1"),
    ("impossible timestamp", manifest("env:", "  A: 2024-01-01T25:00:00Z"), "cannot be read as a date"),
    ("5,000 digits", manifest("env:", "  A: " + "7" * 5000), "cannot be read as a number"),
    ("5,000 digits in a list", manifest("volumes: [" + "9" * 5000 + "]"), "line 3, column 11"),
]


@pytest.mark.parametrize(("data", "expected"), [(d, e) for _, d, e in HARD_EDGES], ids=[n for n, _, _ in HARD_EDGES])
def test_a_hard_edge_is_refused_with_its_reason(data: bytes, expected: str) -> None:
    assert expected in refusal(data)


def test_a_value_yaml_cannot_build_is_refused_and_told_how_to_fix() -> None:
    reasons = refusal(manifest("env:", "  A: 2024-02-30"))
    assert "'2024-02-30'" in reasons and "quote it" in reasons


def test_a_huge_number_is_not_echoed_in_full() -> None:
    reasons = refusal(manifest("env:", "  A: " + "7" * 5000))
    assert len(reasons) < 300


def test_a_control_character_is_shown_escaped_never_raw() -> None:
    reasons = refusal(manifest("env:", '  "A\\e[2J": x'))
    assert "\x1b" not in reasons and "\\x1b" in reasons


# -- .env: a secrets file others cannot read or replace ------------------------------------------------


def private_dotenv(tmp_path: Path, *, mode: int = 0o600, owner: int | None = None) -> Path:
    path = tmp_path / ".env"
    path.write_text("DATABASE_URL=postgresql://h/dreichor_prod\n")
    path.chmod(mode)
    if owner is not None:
        os.chown(path, owner, -1)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_dotenv_is_read(tmp_path: Path, mode: int) -> None:
    assert read_dotenv(private_dotenv(tmp_path, mode=mode)) == {"DATABASE_URL": "postgresql://h/dreichor_prod"}


@pytest.mark.parametrize(("mode", "shown"), [(0o644, "0644"), (0o640, "0640"), (0o602, "0602"), (0o660, "0660")])
def test_a_dotenv_others_can_read_or_write_is_refused_with_the_fix(tmp_path: Path, mode: int, shown: str) -> None:
    path = private_dotenv(tmp_path, mode=mode)
    with pytest.raises(OSError, match=shown) as info:
        read_dotenv(path)
    assert f"chmod 600 {path}" in str(info.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_dotenv_owned_by_another_user_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = private_dotenv(tmp_path, owner=65534)
    with pytest.raises(OSError, match="owned by uid 65534") as info:
        read_dotenv(path)
    assert f"chown root {path}" in str(info.value)


def test_a_dotenv_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    os.mkfifo(path, 0o600)  # a reader must not hang on it either
    with pytest.raises(OSError, match="not a regular file"):
        read_dotenv(path)


@pytest.mark.parametrize(
    "name",
    [
        "database_url",
        "Database_Url",
        "PGHOST",
        "PGHOSTADDR",
        "PGDATABASE",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGPASSFILE",
        "PGOPTIONS",
        "PGSSLMODE",
        "pgpassword",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
    ],
)
def test_env_names_libpq_or_the_loader_read_are_refused_with_the_layout_rule(name: str) -> None:
    reasons = refusal(manifest("env:", f"  {name}: /tmp/x"))
    assert f"'env.{name}' is owned by the controller (layout:" in reasons


def test_the_schema_refuses_what_the_controller_refuses() -> None:
    schema = json.loads((Path(__file__).parents[2] / "envs" / "manifest.schema.json").read_text())
    document = {"environment": "prod", "image": f"{REPO}@{DIGEST}"}
    for name in ("PGHOST", "LD_PRELOAD", "database_url"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**document, "env": {name: "x"}}, schema)
    jsonschema.validate({**document, "env": {"LOG_LEVEL": "info"}}, schema)
