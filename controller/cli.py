"""The ``dreichor-controller`` command line: argument parsing and printing, nothing else.

Every command is one call into ``EnvironmentService`` (DESIGN §7); this
module turns the answer into text or JSON and an exit code.  The parser is
a table, so the commands, their flags and their help read in one place.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller import __version__
from controller.config import ENVIRONMENTS, config_path
from controller.daemon import Daemon, setup_logging
from controller.errors import ConfigError, ControllerError, Refused
from controller.service import EnvironmentService, PassOptions, init_layout, validate_file

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_ROLLED_BACK = 4
SYNC_EXIT = {
    "applied": EXIT_OK,
    "unchanged": EXIT_OK,
    "suspended": EXIT_OK,
    "refused": EXIT_REFUSED,
    "rolled_back": EXIT_ROLLED_BACK,
}

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    args = _parser().parse_args(argv)
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
    except OSError as exc:
        _fail(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return EXIT_ERROR


# -- the commands ---------------------------------------------------------------------------------


def _service(args: argparse.Namespace) -> EnvironmentService:
    return EnvironmentService.from_file(config_path(args.config))


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: the daemon, until SIGTERM."""
    setup_logging()
    return Daemon(config_path(args.config)).run()


def cmd_sync(args: argparse.Namespace) -> int:
    """``sync``: one pass; 0 in sync or applied, 3 refused, 4 rolled back, 1 other."""
    service = _service(args)
    try:
        result = service.sync(PassOptions(force=args.force, allow_rewrite=args.allow_rewrite, adopt=args.adopt))
    finally:
        service.close()
    if args.json:
        _print_json({"result": result.result, "reason": result.reason})
    else:
        print(f"{result.result}: {result.reason}")
    return SYNC_EXIT.get(result.result, EXIT_ERROR)


def cmd_plan(args: argparse.Namespace) -> int:
    """``plan``: fetch, verify, validate and plan; change nothing."""
    service = _service(args)
    try:
        result = service.plan()
    finally:
        service.close()
    decided = result.plan
    if args.json:
        action, drift = (decided.action, list(decided.drift)) if decided else (None, [])
        _print_json({"result": result.result, "reason": result.reason, "action": action, "drift": drift})
    elif decided is not None:
        print(f"plan: {decided.action}: {decided.reason}")
    else:
        print(f"plan: none: {result.result}: {result.reason}")
    return EXIT_OK if result.result != "refused" else EXIT_REFUSED


def cmd_status(args: argparse.Namespace) -> int:
    """``status``: print the status file."""
    service = _service(args)
    status = service.status()
    if status is None:
        raise ConfigError(f"no readable status file at {service.paths.status}: has the controller run yet?")
    if args.json:
        print(status.model_dump_json(indent=2))
        return EXIT_OK
    applied, attempt, source = status.applied, status.last_attempt, status.source
    print(f"environment: {status.environment}   phase: {status.phase}" + ("   SUSPENDED" if status.suspended else ""))
    print(f"container:   {status.container.name} {status.container.state} (health {status.container.health})")
    if status.container.task:  # Swarm mode: the service's running task
        print(f"task:        {status.container.task} on node {status.container.node}")
    if applied:
        print(
            f"applied:     {applied.revision[:12]} {applied.image} signed by {applied.signer} at {applied.applied_at}"
        )
    if attempt:
        print(f"last:        {attempt.result}: {attempt.reason} ({(attempt.revision or '-')[:12]}, {attempt.at})")
    stale = "   STALE" if source.stale else ""
    print(f"source:      {source.url} {source.branch} head {(source.head or '-')[:12]}{stale}")
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    """``history``: snapshots, audit events; ``--verify`` checks the chain (3 when broken)."""
    history = _service(args).history(verify=args.verify)
    broken = history.broken
    if args.json:
        _print_json(
            {
                "snapshots": [{"id": s.id, "revision": s.revision, "image": s.image} for s in history.snapshots],
                "events": history.events,
                "chain": ("broken: " + broken) if broken else "ok" if args.verify else None,
            }
        )
        return EXIT_REFUSED if broken else EXIT_OK
    print("snapshots (newest first):")
    for snap in history.snapshots:
        print(f"  {snap.id}  {(snap.revision or '-')[:12]}  {snap.image or '-'}")
    print("audit log:")
    for event in history.events:
        revision = str(event.get("revision") or "")[:12]
        print(f"  {event.get('at')}  {event.get('event'):<15} {revision}  {event.get('reason', '')}")
    if args.verify:
        print(f"audit chain: {'BROKEN: ' + broken if broken else 'intact'}")
    return EXIT_REFUSED if broken else EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    """``rollback [SNAPSHOT]``: restore it, then suspend so the next poll does not undo it."""
    service = _service(args)
    try:
        snapshot = service.rollback(args.snapshot)
    finally:
        service.close()
    print(f"restored snapshot {snapshot.id} ({snapshot.image}); suspended until 'dreichor-controller resume'")
    return EXIT_OK


def cmd_suspend(args: argparse.Namespace) -> int:
    """``suspend``: stop acting on new revisions."""
    _service(args).suspend()
    print("suspended")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    """``resume``: act on new revisions again (from the next pass)."""
    _service(args).resume()
    print("resumed")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    """``validate FILE``: exit 0 with the desired container, 3 with every reason."""
    environment = args.environment or _environment_from_name(args.file)
    try:
        desired = validate_file(
            args.file, environment=environment, config_file=config_path(args.config) if args.config else None
        )
    except Refused as exc:
        if args.json:
            _print_json({"file": str(args.file), "valid": False, "reasons": list(exc.reasons)})
        raise
    view = desired.describe()
    if args.json:
        _print_json({"file": str(args.file), "valid": True, "container": view})
    else:
        print(f"valid: {args.file} ({environment})")
        print(_describe(view))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """``verify [REV]``: exit 0 with the signer, 3 with the reason."""
    answer = _service(args).verify(args.rev)
    if answer.refusal is not None:
        if args.json:
            _print_json({"revision": answer.revision, "trusted": False, "reason": str(answer.refusal)})
        raise answer.refusal
    verdict = answer.verdict
    assert verdict is not None  # noqa: S101 a verification without a refusal has a verdict
    if args.json:
        _print_json(
            {
                "revision": answer.revision,
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


# -- the parser, as a table -----------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """One argument: its flags and ``add_argument``'s keywords."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    """One subcommand: name, help, handler, arguments; ``config``: takes ``--config``."""

    name: str
    help: str
    handler: Handler
    args: tuple[Arg, ...] = ()
    config: bool = True


JSON = Arg(("--json",), {"action": "store_true", "help": "print JSON"})
COMMANDS = (
    Command(
        "validate",
        "check a manifest offline against the layout contract",
        cmd_validate,
        (
            Arg(("file",), {"type": Path}),
            Arg(("--environment",), {"choices": ENVIRONMENTS}),
            Arg(("--config",), {"help": "use this config's image repository and .env"}),
            JSON,
        ),
        config=False,
    ),
    Command(
        "verify",
        "fetch, then verify a revision against the trust policy",
        cmd_verify,
        (Arg(("rev",), {"nargs": "?", "help": "revision to verify (default: the branch head)"}), JSON),
    ),
    Command("run", "the daemon: scheduler, recovery at start", cmd_run),
    Command(
        "sync",
        "one reconcile pass now",
        cmd_sync,
        (
            Arg(("--force",), {"action": "store_true", "help": "retry a quarantined revision; act while suspended"}),
            Arg(("--allow-rewrite",), {"action": "store_true", "help": "accept a rewritten history once"}),
            Arg(
                ("--adopt",),
                {"action": "store_true", "help": "replace a runtime container the controller did not create"},
            ),
            JSON,
        ),
    ),
    Command("plan", "what the next sync would do, doing nothing", cmd_plan, (JSON,)),
    Command(
        "status",
        "read the status file",
        cmd_status,
        (Arg(("--json",), {"action": "store_true", "help": "print the status file's JSON"}),),
    ),
    Command(
        "history",
        "snapshots and the audit log",
        cmd_history,
        (Arg(("--verify",), {"action": "store_true", "help": "check the audit log's hash chain"}), JSON),
    ),
    Command(
        "rollback",
        "break-glass: restore a snapshot, then suspend",
        cmd_rollback,
        (Arg(("snapshot",), {"nargs": "?", "help": "snapshot id (default: the newest)"}),),
    ),
    Command("suspend", "suspend acting on new revisions", cmd_suspend),
    Command("resume", "resume acting on new revisions", cmd_resume),
    Command(
        "init",
        "create an environment's host layout and a starter config",
        cmd_init,
        (
            Arg(("--environment",), {"choices": ENVIRONMENTS, "required": True}),
            Arg(("--root",), {"type": Path, "default": Path("/opt/dreichor")}),
        ),
        config=False,
    ),
)
CONFIG = Arg(("--config",), {"help": "controller.yaml (default: $DREICHOR_CONFIG)"})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreichor-controller", description="Pull-based GitOps deployment controller for Dreichor."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help)
        for arg in ((CONFIG,) if command.config else ()) + command.args:
            sub.add_argument(*arg.flags, **arg.options)
        sub.set_defaults(handler=command.handler)
    return parser


# -- printing -------------------------------------------------------------------------------------


def _environment_from_name(path: Path) -> str:
    if path.stem in ENVIRONMENTS and path.suffix in (".yaml", ".yml"):
        return path.stem
    raise ConfigError(f"cannot tell the environment from the name {path.name!r}: pass --environment")


def _describe(view: dict[str, Any]) -> str:
    lines = [
        f"  container:  {view['name']}",
        f"  image:      {view['image']}" + (f"  (tag {view['tag']})" if view["tag"] else ""),
        *(f"  mount:      {m['source']} -> {m['target']}" for m in view["mounts"]),
        *(f"  env:        {k}={v}" for k, v in view["env"].items()),
        f"  restart:    {view['restart_policy']}, init, network {view['network_mode']}, no ports",
    ]
    return "\n".join(lines)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _fail(message: str) -> None:
    print(message, file=sys.stderr)
