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

from controller.audit import append_event, read_events, verify_chain
from controller.config import DEFAULT_REPOSITORY, ENVIRONMENTS, Config, HostPaths, config_path, load_config
from controller.contract import DesiredContainer, desired_from_bytes, read_dotenv
from controller.daemon import Daemon, setup_logging
from controller.errors import ConfigError, ControllerError, Refused
from controller.files import create_new
from controller.layout import init_layout
from controller.locks import pass_lock
from controller.reconcile import PassOptions, Reconciler
from controller.snapshots import find_snapshot, list_snapshots
from controller.source import GitSource
from controller.status import applied_revision, read_status, write_status
from controller.verification import load_policy, verify_revision

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
    except OSError as exc:
        _fail(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
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
    _config_arg(verify)
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(handler=cmd_verify)

    run = commands.add_parser("run", help="the daemon: scheduler, recovery at start")
    _config_arg(run)
    run.set_defaults(handler=cmd_run)

    sync = commands.add_parser("sync", help="one reconcile pass now")
    _config_arg(sync)
    sync.add_argument("--force", action="store_true", help="retry a quarantined revision; act while suspended")
    sync.add_argument("--allow-rewrite", action="store_true", help="accept a rewritten history once")
    sync.add_argument("--adopt", action="store_true", help="replace a runtime container the controller did not create")
    sync.add_argument("--json", action="store_true", help="print JSON")
    sync.set_defaults(handler=cmd_sync)

    plan = commands.add_parser("plan", help="what the next sync would do, doing nothing")
    _config_arg(plan)
    plan.add_argument("--json", action="store_true", help="print JSON")
    plan.set_defaults(handler=cmd_plan)

    status = commands.add_parser("status", help="read the status file")
    _config_arg(status)
    status.add_argument("--json", action="store_true", help="print the status file's JSON")
    status.set_defaults(handler=cmd_status)

    history = commands.add_parser("history", help="snapshots and the audit log")
    _config_arg(history)
    history.add_argument("--verify", action="store_true", help="check the audit log's hash chain")
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(handler=cmd_history)

    rollback = commands.add_parser("rollback", help="break-glass: restore a snapshot, then suspend")
    _config_arg(rollback)
    rollback.add_argument("snapshot", nargs="?", help="snapshot id (default: the newest)")
    rollback.set_defaults(handler=cmd_rollback)

    for name, handler in (("suspend", cmd_suspend), ("resume", cmd_resume)):
        sub = commands.add_parser(name, help=f"{name} acting on new revisions")
        _config_arg(sub)
        sub.set_defaults(handler=handler)

    init = commands.add_parser("init", help="create an environment's host layout and a starter config")
    init.add_argument("--environment", choices=ENVIRONMENTS, required=True)
    init.add_argument("--root", type=Path, default=Path("/opt/dreichor"))
    init.set_defaults(handler=cmd_init)
    return parser


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="controller.yaml (default: $DREICHOR_CONFIG)")


def _load(args: argparse.Namespace) -> Config:
    return load_config(config_path(args.config))


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: the daemon, until SIGTERM."""
    setup_logging()
    return Daemon(config_path(args.config)).run()


def cmd_sync(args: argparse.Namespace) -> int:
    """``sync``: one pass; 0 in sync or applied, 3 refused, 4 rolled back, 1 other."""
    config = _load(args)
    reconciler = Reconciler(config)
    options = PassOptions(force=args.force, allow_rewrite=args.allow_rewrite, adopt=args.adopt)
    with pass_lock(config.paths.pass_lock):
        if config.paths.journal.exists():
            reconciler.rollout().recover()
        result = reconciler.run_pass(options)
    reconciler.close()
    if args.json:
        _print_json({"result": result.result, "reason": result.reason})
    else:
        print(f"{result.result}: {result.reason}")
    return SYNC_EXIT.get(result.result, EXIT_ERROR)


def cmd_plan(args: argparse.Namespace) -> int:
    """``plan``: fetch, verify, validate and plan; change nothing."""
    config = _load(args)
    reconciler = Reconciler(config)
    result = reconciler.run_pass(PassOptions(dry_run=True))
    reconciler.close()
    decided = result.plan
    if args.json:
        _print_json(
            {
                "result": result.result,
                "reason": result.reason,
                "action": decided.action if decided else None,
                "drift": list(decided.drift) if decided else [],
            }
        )
    elif decided is not None:
        print(f"plan: {decided.action}: {decided.reason}")
    else:
        print(f"plan: none: {result.result}: {result.reason}")
    return EXIT_OK if result.result != "refused" else EXIT_REFUSED


def cmd_status(args: argparse.Namespace) -> int:
    """``status``: print the status file."""
    config = _load(args)
    status = read_status(config.paths.status)
    if status is None:
        raise ConfigError(f"no readable status file at {config.paths.status}: has the controller run yet?")
    if args.json:
        print(status.model_dump_json(indent=2))
        return EXIT_OK
    applied = status.applied
    attempt = status.last_attempt
    print(f"environment: {status.environment}   phase: {status.phase}" + ("   SUSPENDED" if status.suspended else ""))
    print(f"container:   {status.container.name} {status.container.state} (health {status.container.health})")
    if applied:
        print(
            f"applied:     {applied.revision[:12]} {applied.image} signed by {applied.signer} at {applied.applied_at}"
        )
    if attempt:
        print(f"last:        {attempt.result}: {attempt.reason} ({(attempt.revision or '-')[:12]}, {attempt.at})")
    stale = "   STALE" if status.source.stale else ""
    print(f"source:      {status.source.url} {status.source.branch} head {(status.source.head or '-')[:12]}{stale}")
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    """``history``: snapshots, audit events; ``--verify`` checks the chain (3 when broken)."""
    config = _load(args)
    snapshots = list_snapshots(config.paths.snapshots)
    events = read_events(config.paths.audit)
    broken = verify_chain(config.paths.audit) if args.verify else None
    if args.json:
        _print_json(
            {
                "snapshots": [{"id": s.id, "revision": s.revision, "image": s.image} for s in snapshots],
                "events": events,
                "chain": ("broken: " + broken) if broken else "ok" if args.verify else None,
            }
        )
    else:
        print("snapshots (newest first):")
        for snap in snapshots:
            print(f"  {snap.id}  {(snap.revision or '-')[:12]}  {snap.image or '-'}")
        print("audit log:")
        for event in events:
            print(
                f"  {event.get('at')}  {event.get('event'):<15} {str(event.get('revision') or '')[:12]}  "
                f"{event.get('reason', '')}"
            )
        if args.verify:
            print(f"audit chain: {'BROKEN: ' + broken if broken else 'intact'}")
    return EXIT_REFUSED if broken else EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    """``rollback [SNAPSHOT]``: restore it, then suspend so the next poll does not undo it."""
    config = _load(args)
    snapshot = find_snapshot(config.paths.snapshots, args.snapshot)
    reconciler = Reconciler(config)
    with pass_lock(config.paths.pass_lock):
        _set_suspended(config, True, reason=f"rollback to snapshot {snapshot.id}")
        outcome = reconciler.rollout().restore(snapshot)
        now = datetime.now(UTC)
        append_event(
            config.paths.audit,
            "rollback",
            at=now,
            snapshot=snapshot.id,
            revision=snapshot.revision,
            image=snapshot.image,
        )
        reconciler.record_rollback(snapshot, outcome, now=now)
    reconciler.close()
    print(f"restored snapshot {snapshot.id} ({snapshot.image}); suspended until 'dreichor-controller resume'")
    return EXIT_OK


def cmd_suspend(args: argparse.Namespace) -> int:
    """``suspend``: stop acting on new revisions."""
    _set_suspended(_load(args), True, reason="suspended by an operator")
    print("suspended")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    """``resume``: act on new revisions again (from the next pass)."""
    _set_suspended(_load(args), False, reason="resumed by an operator")
    print("resumed")
    return EXIT_OK


def _set_suspended(config: Config, suspended: bool, *, reason: str) -> None:
    marker = config.paths.suspended_marker
    if suspended == marker.exists():
        return
    if suspended:
        create_new(marker, f"{reason}\n".encode(), mode=0o600)
    else:
        marker.unlink()
    append_event(config.paths.audit, "suspended" if suspended else "resumed", at=datetime.now(UTC), reason=reason)
    status = read_status(config.paths.status)
    if status is not None:
        status.suspended = suspended
        status.phase = "Suspended" if suspended else "Progressing"
        status.updated_at = datetime.now(UTC)
        write_status(config.paths.status, status)


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
