"""The ``dreichor-controller`` command line: argument parsing and output, nothing else.

Each command is a thin function that calls into the rest of the package and
turns its outcome into text (or JSON) and an exit code (DESIGN §7).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.config import DEFAULT_REPOSITORY, ENVIRONMENTS, Config, HostPaths, config_path, load_config
from controller.contract import DesiredContainer, desired_from_bytes, read_dotenv
from controller.errors import ConfigError, ControllerError, Refused
from controller.layout import init_layout
from controller.source import GitSource
from controller.status import applied_revision
from controller.verification import load_policy, verify_revision

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_ROLLED_BACK = 4

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        _fail(f"error: {exc}")
        return EXIT_ERROR
    except Refused as exc:
        for reason in exc.reasons:
            _fail(f"refused: {reason}")
        return EXIT_REFUSED
    except ControllerError as exc:
        _fail(f"error: {exc}")
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreichor-controller", description="Pull-based GitOps deployment controller for Dreichor."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check a manifest offline against the layout contract")
    validate.add_argument("file", type=Path)
    validate.add_argument("--environment", choices=ENVIRONMENTS)
    validate.add_argument("--config", help="use this config's image repository and .env")
    validate.add_argument("--json", action="store_true", help="print JSON")
    validate.set_defaults(handler=cmd_validate)

    verify = commands.add_parser("verify", help="fetch, then verify a revision against the trust policy")
    verify.add_argument("rev", nargs="?", help="revision to verify (default: the branch head)")
    verify.add_argument("--config", help="controller.yaml (default: $DREICHOR_CONFIG)")
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(handler=cmd_verify)

    init = commands.add_parser("init", help="create an environment's host layout and a starter config")
    init.add_argument("--environment", choices=ENVIRONMENTS, required=True)
    init.add_argument("--root", type=Path, default=Path("/opt/dreichor"))
    init.set_defaults(handler=cmd_init)
    return parser


def cmd_validate(args: argparse.Namespace) -> int:
    """``validate FILE``: exit 0 with the desired container, 3 with every reason."""
    environment = args.environment or _environment_from_name(args.file)
    config: Config | None = load_config(config_path(args.config)) if args.config else None
    if config is not None and config.environment != environment:
        raise ConfigError(f"config is for '{config.environment}', the manifest for '{environment}'")
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        desired = desired_from_bytes(
            data,
            environment=environment,
            repository=config.image.repository if config else DEFAULT_REPOSITORY,
            paths=config.paths if config else HostPaths(Path("/opt/dreichor"), environment),
            dotenv=_dotenv(config) if config else None,
            what=str(args.file),
        )
    except Refused as exc:
        if args.json:
            _print_json({"file": str(args.file), "valid": False, "reasons": list(exc.reasons)})
        raise
    if args.json:
        _print_json({"file": str(args.file), "valid": True, "container": desired.describe()})
    else:
        print(f"valid: {args.file} ({environment})")
        print(_describe(desired))
    return EXIT_OK


def _environment_from_name(path: Path) -> str:
    if path.stem in ENVIRONMENTS and path.suffix in (".yaml", ".yml"):
        return path.stem
    raise ConfigError(f"cannot tell the environment from the name {path.name!r}: pass --environment")


def _dotenv(config: Config) -> dict[str, str]:
    try:
        return read_dotenv(config.paths.dotenv)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {config.paths.dotenv}: {exc}") from None


def _describe(desired: DesiredContainer) -> str:
    view = desired.describe()
    lines = [
        f"  container:  {view['name']}",
        f"  image:      {view['image']}" + (f"  (tag {view['tag']})" if view["tag"] else ""),
        *(f"  mount:      {m['source']} -> {m['target']}" for m in view["mounts"]),
        *(f"  env:        {k}={v}" for k, v in view["env"].items()),
        f"  restart:    {view['restart_policy']}, init, network {view['network_mode']}, no ports",
    ]
    return "\n".join(lines)


def cmd_verify(args: argparse.Namespace) -> int:
    """``verify [REV]``: exit 0 with the signer, 3 with the reason."""
    config = load_config(config_path(args.config))
    source = git_source(config)
    head = source.fetch()
    rev = source.resolve(args.rev) if args.rev else head
    try:
        verdict = verify_revision(
            source,
            load_policy(config),
            mode=config.trust.mode,
            applied=applied_revision(config.paths),
            head=rev,
            now=datetime.now(UTC),
        )
    except Refused as exc:
        if args.json:
            _print_json({"revision": rev, "trusted": False, "reason": str(exc)})
        raise
    if args.json:
        _print_json(
            {
                "revision": rev,
                "trusted": True,
                "signer": verdict.signer,
                "key_type": verdict.key_type,
                "detail": verdict.detail,
            }
        )
    else:
        print(f"trusted: {verdict.describe()}")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    """``init``: create the host layout; never overwrite."""
    created = init_layout(args.root, args.environment)
    for path in created:
        print(f"created {path}")
    if not created:
        print(f"{args.root / args.environment}: layout already complete, nothing changed")
    return EXIT_OK


def git_source(config: Config) -> GitSource:
    """The controller's git cache of the manifest repository."""
    return GitSource(
        config.paths.repo, url=config.source.url, branch=config.source.branch, timeout=config.source.timeout
    )


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _fail(message: str) -> None:
    print(message, file=sys.stderr)
