"""The ``dreichor-controller`` command line: argument parsing and printing, nothing else.

Every command is one call into ``EnvironmentService`` (DESIGN §7); this
module turns the answer into text or JSON and an exit code.  The parser is
a table, so the commands, their flags and their help read in one place.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller import __version__, completion
from controller.config import ENVIRONMENTS, config_path
from controller.daemon import DRAIN_SECONDS, LOG_LEVELS, Daemon, attach_notifier, setup_cli_logging, setup_logging
from controller.errors import ConfigError, ControllerError, Refused
from controller.service import EnvironmentService, PassOptions, init_layout, next_steps, validate_file

log = logging.getLogger("dreichor.cli")
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


PLAN_EXIT = {"applied": EXIT_OK, "unchanged": EXIT_OK, "suspended": EXIT_OK, "refused": EXIT_REFUSED}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code.

    Every failure is one sentence on stderr naming what failed and why; with
    ``--json`` also a JSON object with ``error`` on stdout, so a script that
    parses the output never meets an empty one.
    """
    args = _parser().parse_args(argv)
    if args.command != "run":
        setup_cli_logging(args.log_level)
    handler: Handler = args.handler
    try:
        return handler(args)
    except Refused as exc:
        return _failed(args, exc.reasons, refused=True)
    except ControllerError as exc:
        return _failed(args, (str(exc),))
    except OSError as exc:
        return _failed(args, (os_error(exc),))
    except Exception as exc:  # a bug: its traceback is for the report, the user still gets one sentence
        log.exception("internal error in '%s'", args.command)
        return _failed(args, (f"internal error in '{args.command}': {type(exc).__name__}: {exc}",))


def _failed(args: argparse.Namespace, reasons: Sequence[str], *, refused: bool = False) -> int:
    """Say why a command failed (stderr, and JSON with ``--json``); 3 when refused, else 1."""
    for reason in reasons:
        _fail(f"{'refused' if refused else 'error'}: {reason}")
    if getattr(args, "json", False):
        _print_json({"error": "; ".join(reasons), "refused": refused, "reasons": list(reasons)})
    return EXIT_REFUSED if refused else EXIT_ERROR


def os_error(exc: OSError) -> str:
    """An OS error as one sentence: the file, the cause and its errno name."""
    cause = exc.strerror or str(exc)
    name = errno.errorcode.get(exc.errno or 0)
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{cause}" + (f" ({name})" if name else "")


# -- the commands ---------------------------------------------------------------------------------


def _service(args: argparse.Namespace) -> EnvironmentService:
    return EnvironmentService.from_file(config_path(args.config))


@contextlib.contextmanager
def _notifying(service: EnvironmentService) -> Iterator[None]:
    """Tell the command's decisions, then wait (``DRAIN_SECONDS`` at most) for them to go out.

    An unusable notification config does not block a one-shot command (a
    break-glass rollback must work): it is said on stderr and nothing is told.
    """
    try:
        notifier = attach_notifier(service)
    except ConfigError as exc:
        _fail(f"warning: notifications are off: {exc}")
        notifier = None
    try:
        yield
    finally:
        if notifier is not None:
            sent = notifier.close(DRAIN_SECONDS)
            if not sent or notifier.failed:
                _fail(
                    f"warning: {notifier.failed} notification(s) could not be sent"
                    if sent
                    else f"warning: notifications still queued after {DRAIN_SECONDS:.0f}s were dropped"
                )


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: the daemon, until SIGTERM."""
    setup_logging(args.log_level)
    return Daemon(config_path(args.config)).run()


def cmd_sync(args: argparse.Namespace) -> int:
    """``sync``: one pass; 0 in sync or applied, 3 refused, 4 rolled back, 1 other."""
    service = _service(args)
    try:
        with _notifying(service):
            result = service.sync(PassOptions(force=args.force, allow_rewrite=args.allow_rewrite, adopt=args.adopt))
    finally:
        service.close()
    code = SYNC_EXIT.get(result.result, EXIT_ERROR)
    if args.json:
        answer = {"result": result.result, "reason": result.reason, "code": str(result.code)}
        _print_json(answer if code == EXIT_OK else {**answer, "error": result.reason})
    else:
        print(f"{result.result}: {result.reason}")
    return code


def cmd_plan(args: argparse.Namespace) -> int:
    """``plan``: fetch, verify, validate and plan; change nothing."""
    service = _service(args)
    try:
        result = service.plan()
    finally:
        service.close()
    decided, code = result.plan, PLAN_EXIT.get(result.result, EXIT_ERROR)
    if args.json:
        action, drift = (decided.action, list(decided.drift)) if decided else (None, [])
        answer = {
            "result": result.result,
            "reason": result.reason,
            "action": action,
            "drift": drift,
            "image_signer": result.image_signer,
        }
        _print_json(answer if code == EXIT_OK else {**answer, "error": result.reason, "code": str(result.code)})
    elif decided is not None:
        print(f"plan: {decided.action}: {decided.reason}")
        if result.image_signer:
            print(f"image signed by {result.image_signer}")
    elif code == EXIT_OK:
        print(f"plan: none: {result.result}: {result.reason}")
    else:
        _fail(f"{'refused' if code == EXIT_REFUSED else 'error'}: cannot plan: {result.reason}")
    return code


def cmd_status(args: argparse.Namespace) -> int:
    """``status``: print the status file; before the first pass, say so (still 0: nothing is wrong).

    A status file that exists but cannot be read is an error (1).
    """
    service = _service(args)
    status = service.status()
    if status is None and not service.paths.status.exists():
        reason = f"no pass has run yet: {service.paths.status} does not exist"
        if args.json:
            _print_json({"environment": service.config.environment, "phase": None, "reason": reason})
        else:
            print(f"environment: {service.config.environment}   {reason}")
        return EXIT_OK
    if status is None:
        raise ConfigError(f"cannot read the status file {service.paths.status}: it is not a valid status")
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
        with _notifying(service):
            snapshot = service.rollback(args.snapshot)
    finally:
        service.close()
    print(f"restored snapshot {snapshot.id} ({snapshot.image}); suspended until 'dreichor-controller resume'")
    return EXIT_OK


def cmd_suspend(args: argparse.Namespace) -> int:
    """``suspend``: stop acting on new revisions."""
    service = _service(args)
    with _notifying(service):
        service.suspend()
    print("suspended")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    """``resume``: act on new revisions again (from the next pass)."""
    service = _service(args)
    with _notifying(service):
        service.resume()
    print("resumed")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    """``validate FILE``: exit 0 with the desired container, 3 with every reason."""
    stdin = str(args.file) == "-"
    if stdin and not args.environment:
        raise ConfigError("reading the manifest from stdin: pass --environment")
    environment = args.environment or _environment_from_name(args.file)
    try:
        desired = validate_file(
            args.file,
            environment=environment,
            config_file=config_path(args.config) if args.config else None,
            data=sys.stdin.buffer.read() if stdin else None,
        )
    except Refused as exc:
        if not args.json:
            raise
        for reason in exc.reasons:
            _fail(f"refused: {reason}")
        _print_json({"file": str(args.file), "valid": False, "reasons": list(exc.reasons), "error": str(exc)})
        return EXIT_REFUSED
    view = desired.describe()
    if args.json:
        _print_json({"file": str(args.file), "valid": True, "container": view})
    else:
        print(f"valid: {args.file} ({environment})")
        print(_describe(view))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """``verify [REV]``: exit 0 with the signer (and the image's, with ``image.signatures``), 3 with the reason."""
    answer = _service(args).verify(args.rev)
    if answer.refusal is not None:
        if not args.json:
            raise answer.refusal
        _fail(f"refused: {answer.refusal}")
        reason = str(answer.refusal)
        refused = {"revision": answer.revision, "trusted": False, "reason": reason, "error": reason}
        signer = {"signer": answer.verdict.signer} if answer.verdict else {}  # the commit passed, the image did not
        _print_json({**refused, **signer})
        return EXIT_REFUSED
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
                "image_signer": answer.image.image_signer if answer.image else None,
            }
        )
    else:
        print(f"trusted: {verdict.describe()}")
        if answer.image:
            print(f"image signed by {answer.image.image_signer}")
    return EXIT_OK


def cmd_verify_image(args: argparse.Namespace) -> int:
    """``verify-image IMAGE@DIGEST``: exit 0 with the image's signer, 3 refused, 1 other."""
    verdict = _service(args).verify_image(args.image)
    source = verdict.source.as_record() if verdict.source else None
    if args.json:
        _print_json(
            {"image": args.image, "trusted": True, "image_signer": verdict.image_signer, "image_source": source}
        )
    else:
        print(f"trusted: {args.image} signed by {verdict.image_signer} ({verdict.format})")
        if source:
            print(f"built from {source['repository']} {source['ref'] or ''} {source['commit'] or ''}".rstrip())
    return EXIT_OK


def cmd_notify(args: argparse.Namespace) -> int:
    """``notify --test``: a test message to every target; 0 when all answered, 1 otherwise."""
    notifier = attach_notifier(_service(args))
    answers = notifier.send_test() if notifier is not None else []
    if notifier is not None:
        notifier.close(0)
    if args.json:
        _print_json({"targets": [{"target": a.target, "answered": a.answered, "detail": a.detail} for a in answers]})
    elif not answers:
        print("no notification targets configured (notify.urls, github)")
    for answer in [] if args.json else answers:
        print(f"{'answered' if answer.answered else 'FAILED':<9} {answer.target}: {answer.detail}")
    return EXIT_OK if all(a.answered for a in answers) else EXIT_ERROR


def cmd_completion(args: argparse.Namespace) -> int:
    """``completion bash|zsh``: print the shell's completion script."""
    print(completion.bash(_parser()) if args.shell == "bash" else completion.zsh(_parser()), end="")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    """``init``: create the host layout; never overwrite."""
    created = init_layout(args.root, args.environment)
    for path in created:
        print(f"created {path}")
    if not created:
        print(f"{args.root / args.environment}: layout already complete, nothing changed")
    print(next_steps(args.root, args.environment), end="")
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
    Command(
        "verify-image",
        "verify an image's cosign signature against image.signatures.keys",
        cmd_verify_image,
        (Arg(("image",), {"help": "repository@sha256:<digest>"}), JSON),
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
    Command(
        "notify",
        "send a test message to every notification target and say which answered",
        cmd_notify,
        (Arg(("--test",), {"action": "store_true", "required": True, "help": "send the test message"}), JSON),
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
    Command(
        "completion",
        "print a shell completion script (bash: source it; zsh: save it as _dreichor-controller on $fpath)",
        cmd_completion,
        (Arg(("shell",), {"choices": ("bash", "zsh")}),),
        config=False,
    ),
)
CONFIG = Arg(("--config",), {"help": "controller.yaml (default: $DREICHOR_CONFIG)"})
LOG_LEVEL = Arg(
    ("--log-level",),
    {"choices": LOG_LEVELS, "help": "log from this level on (default: info for run, warning otherwise)"},
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreichor-controller", description="Pull-based GitOps deployment controller for Dreichor."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help)
        for arg in ((CONFIG,) if command.config else ()) + command.args + (LOG_LEVEL,):
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
