"""The deployment manifest ``envs/<env>.yaml``: safe loading and the strict model.

A manifest says one thing: which image digest an environment runs, with a few
non-secret settings.  Everything else about the container belongs to the
controller (docs/design.md §3), so keys that try to set it are refused by name with
the layout rule they would break — not lumped in with typos.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from controller.model.config import DEFAULT_REPOSITORY
from controller.model.safe_yaml import did_you_mean, line_of, load_mapping

MAX_MANIFEST_BYTES = 64 * 1024
# Whole-string patterns, used with ``fullmatch``: ``$`` would also match before a final newline.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROLLER_MANAGES = "the controller owns execution-plane enforcement"

# Container settings a manifest may not declare, and the layout rule that owns each.
OWNED_KEYS: dict[str, str] = {
    "volumes": "exactly two mounts per environment",
    "mounts": "exactly two mounts per environment",
    "binds": "exactly two mounts per environment",
    "ports": "runtime containers do not expose ports",
    "expose": "runtime containers do not expose ports",
    "network": "networking is internal and set by the controller",
    "network_mode": "networking is internal and set by the controller",
    "networks": "networking is internal and set by the controller",
    "container_name": "the container is named dreichor-runtime-<env>",
    "name": "the container is named dreichor-runtime-<env>",
    "privileged": _CONTROLLER_MANAGES,
    "cap_add": _CONTROLLER_MANAGES,
    "devices": _CONTROLLER_MANAGES,
    "user": _CONTROLLER_MANAGES,
    "pid": _CONTROLLER_MANAGES,
    "ipc": _CONTROLLER_MANAGES,
    "security_opt": _CONTROLLER_MANAGES,
    "restart": _CONTROLLER_MANAGES,
    "labels": _CONTROLLER_MANAGES,
    "DATABASE_URL": "DATABASE_URL comes from the environment's own .env",
}


class Manifest(BaseModel):
    """One environment's desired runtime: ``environment``, ``image`` and optional ``env``."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        title="Dreichor deployment manifest",
        json_schema_extra={"$id": "https://dreichor.invalid/schemas/manifest.schema.json"},
    )

    environment: Literal["dev", "prod"] = Field(
        description="dev or prod; must equal the file name (envs/<environment>.yaml).",
    )
    image: StrictStr = Field(
        description="<repository>[:tag]@sha256:<64 hex>; a digest is required, 'latest' is refused in prod.",
        json_schema_extra={"pattern": r"^[^@\s]+@sha256:[0-9a-f]{64}$"},
    )
    env: dict[str, StrictStr] = Field(
        default_factory=dict,
        description="Non-secret runtime settings; DATABASE_URL comes from the host's .env.",
        json_schema_extra={
            "propertyNames": {
                "pattern": f"^{ENV_NAME.pattern}$",
                "not": {"pattern": "^([Dd][Aa][Tt][Aa][Bb][Aa][Ss][Ee]_[Uu][Rr][Ll]$|[Pp][Gg]|[Ll][Dd]_)"},
            },
        },
    )


def manifest_path(environment: str) -> str:
    """Where an environment's manifest sits in the repository: ``envs/<env>.yaml``."""
    return f"envs/{environment}.yaml"


def manifest_sha256(data: bytes) -> str:
    """A manifest file's SHA-256, hex: what approvals approve and the container's manifest label carries."""
    return hashlib.sha256(data).hexdigest()


def load_manifest(data: bytes, *, what: str = "manifest") -> dict[str, Any]:
    """Bytes to a raw mapping, refusing anything unsafe (size, encoding, YAML features)."""
    return load_mapping(data, max_bytes=MAX_MANIFEST_BYTES, what=what)


def manifest_reasons(raw: dict[str, Any], *, environment: str) -> list[str]:
    """Every reason the raw mapping is not a manifest for ``environment`` (image rules aside)."""
    return [*_owned_key_reasons(raw), *_field_reasons(raw, environment=environment)]


def build_manifest(raw: dict[str, Any]) -> Manifest:
    """The model of a mapping that ``manifest_reasons`` found nothing wrong with."""
    return Manifest(environment=raw["environment"], image=raw["image"], env=raw.get("env", {}))


def _owned_key_reasons(raw: dict[str, Any]) -> list[str]:
    reasons = [f"'{key}' is owned by the controller (layout: {OWNED_KEYS[key]})" for key in raw if key in OWNED_KEYS]
    known = set(Manifest.model_fields) | set(OWNED_KEYS)
    reasons += [
        f"unknown field '{key}'{_at_line(raw, key)}{did_you_mean(key, Manifest.model_fields)} "
        "(manifest: only environment, image and env are allowed)"
        for key in raw
        if key not in known
    ]
    return reasons


def _at_line(raw: dict[str, Any], key: str) -> str:
    line = line_of(raw, (key,))
    return f" at line {line}" if line is not None else ""


def _field_reasons(raw: dict[str, Any], *, environment: str) -> list[str]:
    reasons: list[str] = []
    declared = raw.get("environment")
    if "environment" not in raw:
        reasons.append("missing field 'environment' (layout: environments are dev and prod)")
    elif not isinstance(declared, str):
        reasons.append(_not_a_string("environment", declared))
    elif declared not in ("dev", "prod"):
        reasons.append(f"environment '{declared}' is not dev or prod (layout: environment separation)")
    elif declared != environment:
        reasons.append(
            f"environment '{declared}' does not match the file's environment '{environment}' "
            "(layout: no dev/prod crossover)"
        )
    if "image" not in raw:
        reasons.append("missing field 'image' (layout: image source)")
    elif not isinstance(raw["image"], str):
        reasons.append(_not_a_string("image", raw["image"]))
    reasons += _env_reasons(raw.get("env", {}))
    return reasons


def reserved_env_reason(name: str) -> str | None:
    """Why the controller owns an env name, or ``None``: ``DATABASE_URL`` in any case, ``PG*``, ``LD_*``.

    libpq reads ``PGHOST``, ``PGDATABASE``, ``PGSERVICEFILE`` and the rest beside the connection
    string, and the dynamic loader reads ``LD_PRELOAD``: any of them would redirect or replace the
    database access the layout gives through ``DATABASE_URL`` alone.
    """
    upper = name.upper()
    if upper == "DATABASE_URL":
        return "DATABASE_URL comes from the environment's own .env"
    if upper.startswith("PG"):
        return "access is via DATABASE_URL, and libpq reads PG* variables beside it"
    if upper.startswith("LD_"):
        return "the controller owns execution-plane enforcement, and the dynamic loader reads LD_* variables"
    return None


def _env_reasons(env: Any) -> list[str]:
    if not isinstance(env, dict):
        return ["'env' must be a mapping of NAME: \"value\""]
    reasons = []
    for name, value in env.items():
        if isinstance(name, str) and (owner := reserved_env_reason(name)):
            reasons.append(f"'env.{printable(name)}' is owned by the controller (layout: {owner})")
        elif not ENV_NAME.fullmatch(name):
            reasons.append(f"env name '{printable(name)}' is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)")
        elif not isinstance(value, str):
            reasons.append(_not_a_string(f"env.{name}", value))
        elif has_control_character(value):
            reasons.append(
                f"'env.{name}' holds a control character ('{printable(value, limit=40)}'): "
                "a runtime setting is one line of printable text"
            )
    return reasons


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a C0/C1 control character (NUL, ESC, newline, DEL, …)."""
    return any(unicodedata.category(char) == "Cc" for char in text)


def printable(text: str, *, limit: int = 80) -> str:
    """``text`` safe to print in a refusal: control characters escaped, long text cut.

    A reason ends up on an operator's terminal and in logs; an escape sequence
    from a pull request must not repaint either.
    """
    shown = "".join(
        char.encode("unicode_escape").decode("ascii") if unicodedata.category(char) == "Cc" else char
        for char in text[:limit]
    )
    return shown if len(text) <= limit else f"{shown}… ({len(text)} characters)"


def _not_a_string(field: str, value: Any) -> str:
    return f"'{field}' must be a string but YAML read {_shown(value)}: quote it"


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return "a mapping" if isinstance(value, dict) else "a list"
    return printable(repr(value), limit=40)


def manifest_schema(repository: str = DEFAULT_REPOSITORY) -> dict[str, Any]:
    """The JSON Schema of a manifest for editors and PR checks (``envs/manifest.schema.json``).

    Tighter than the model where a schema can say what the contract refuses: the
    configured repository, no ``latest`` in prod, no control characters, and no
    value that YAML 1.1 (the controller's reader) takes for a boolean or a number
    while YAML 1.2 (most schema checkers) keeps it a string.  A schema cannot see
    quotes, so it flags such a value even quoted; ``validate`` is the authority.
    Its patterns are ECMA-262, where ``$`` is the end of the input.
    """
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    props = schema["properties"]
    props["image"]["pattern"] = f"^{_ecma_literal(repository)}(:{_SCHEMA_TAG})?@sha256:[0-9a-f]{{64}}$"
    props["env"]["additionalProperties"] = {
        "type": "string",
        "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
        "not": {"pattern": _YAML11_NOT_STRING},
    }
    schema["if"] = {"properties": {"environment": {"const": "prod"}}, "required": ["environment"]}
    schema["then"] = {"properties": {"image": {"not": {"pattern": ":latest@"}}}}
    return schema


def _ecma_literal(text: str) -> str:
    """``text`` as an ECMA-262 pattern (``re.escape`` writes ``\\-``, which unicode-mode ECMA refuses)."""
    return re.sub(r"[\\^$.|?*+()\[\]{}]", lambda match: "\\" + match.group(0), text)


_SCHEMA_TAG = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
# Plain scalars PyYAML (YAML 1.1) reads as booleans, sexagesimal numbers or dates, or cannot read
# ('='), while YAML 1.2 checkers hand them over as strings: the schema's only way to flag `DEBUG: no`.
_YAML11_NOT_STRING = (
    "^(yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF|=|[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+"
    "|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\\.[0-9_]*|[0-9]{4}-[0-9]{2}-[0-9]{2}"
    "|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt]|[ \\t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(\\.[0-9]*)?"
    "([ \\t]*(Z|[-+][0-9]{1,2}(:[0-9]{2})?))?)$"
)
