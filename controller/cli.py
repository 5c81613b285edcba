"""The ``dreichor-controller`` command line: argument parsing and printing, nothing else.

Every command is one call into ``EnvironmentService`` (docs/design.md §7); this
module turns the answer into text or JSON and an exit code.  The parser is
a table, so the commands, their flags and their help read in one place.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller import __version__, completion, compose
from controller.daemon.logs import LOG_LEVELS, setup_cli_logging, setup_logging
from controller.daemon.scheduler import DRAIN_SECONDS, Daemon
from controller.errors import ConfigError, ControllerError, Refused
from controller.model.config import ENVIRONMENTS, config_path, default_root, parse_duration
from controller.service import (
    APPROVAL_VALIDITY,
    EnvironmentService,
    PassOptions,
    PlanAnswer,
    init_layout,
    next_steps,
    validate_file,
    write_approval,
)

log = logging.getLogger("dreichor.cli")
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_ROLLED_BACK = 4
EXIT_WAITING = 5  # held for approvals (docs/design.md §15): no refusal
EXIT_CHANGE = 2  # plan --exit-code: a change would be applied (as ``terraform plan -detailed-exitcode``)
EXIT_OUT_OF_SYNC = 3  # status --check
EXIT_UNHEALTHY = 4  # status --check
SYNC_EXIT = {
    "applied": EXIT_OK,
    "unchanged": EXIT_OK,
    "suspended": EXIT_OK,
    "refused": EXIT_REFUSED,
    "rolled_back": EXIT_ROLLED_BACK,
    "waiting": EXIT_WAITING,
}

Handler = Callable[[argparse.Namespace], int]
LOG_LINES = 5  # the rollback log's first lines in ``status``


PLAN_EXIT = {
    "applied": EXIT_OK,
    "unchanged": EXIT_OK,
    "suspended": EXIT_OK,
    "waiting": EXIT_OK,
    "refused": EXIT_REFUSED,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code.

    Every failure is one sentence on stderr naming what failed and why; with
    ``--json`` also a JSON object with ``error`` on stdout, so a script that
    parses the output never meets an empty one.  A reader that closes the pipe
    early (``status --json | head -1``) ends the command quietly.
    """
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at the interpreter's exit, where a closed pipe is a message and 120
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "run":
        setup_cli_logging(args.log_level)
    handler: Handler = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        raise  # the reader is gone: saying so into the same pipe would fail again
    except Refused as exc:
        return _failed(args, exc.reasons, refused=True)
    except ControllerError as exc:
        return _failed(args, (str(exc),))
    except OSError as exc:
        return _failed(args, (os_error(exc),))
    except Exception as exc:  # a bug: its traceback is for the report, the user still gets one sentence
        log.exception("internal error in '%s'", args.command)
        return _failed(args, (f"internal error in '{args.command}': {type(exc).__name__}: {exc}",))


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's own flush at exit does not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no real file (a test's capture): nothing will flush into a pipe
        pass


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


def _config_file(args: argparse.Namespace) -> Path:
    """``--config``, else ``-e ENV`` under the root, else ``$DREICHOR_CONFIG`` (docs/design.md §7)."""
    return config_path(getattr(args, "config", None), environment=getattr(args, "environment", None))


def _service(args: argparse.Namespace) -> EnvironmentService:
    service = compose.service_from_file(_config_file(args))
    environment = getattr(args, "environment", None)
    if environment and service.config.environment != environment:
        raise ConfigError(f"the config is for '{service.config.environment}', not '{environment}' (-e)")
    return service


@contextlib.contextmanager
def _notifying(service: EnvironmentService) -> Iterator[None]:
    """Tell the command's decisions, then wait (``DRAIN_SECONDS`` at most) for them to go out.

    An unusable notification config does not block a one-shot command (a
    break-glass rollback must work): it is said on stderr and nothing is told.
    """
    try:
        notifier = compose.notifier(service)
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
    return Daemon(_config_file(args)).run()


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
        _print_json(answer if code in (EXIT_OK, EXIT_WAITING) else {**answer, "error": result.reason})
    else:
        print(f"{result.result}: {result.reason}")
    return code


def cmd_plan(args: argparse.Namespace) -> int:
    """``plan``: fetch, verify, validate and plan; change nothing.  What was learned is said even when
    a later step fails (no Docker: the commit was still fetched, verified and validated)."""
    service = _service(args)
    try:
        answer = service.plan_report()
    finally:
        service.close()
    result = answer.result
    decided, code = result.plan, PLAN_EXIT.get(result.result, EXIT_ERROR)
    if args.exit_code and code == EXIT_OK and decided is not None and decided.action != "nothing":
        code = EXIT_CHANGE
    if args.json:
        action, drift = (decided.action, list(decided.drift)) if decided else (None, [])
        data = {
            "result": result.result,
            "reason": result.reason,
            "action": action,
            "drift": drift,
            "image_signer": result.image_signer,
            "head": answer.head,
            "signer": answer.signer,
            "image": answer.image,
            "would_wait": result.approvals,
        }
        _print_json(
            data if code in (EXIT_OK, EXIT_CHANGE) else {**data, "error": result.reason, "code": str(result.code)}
        )
        return code
    _print_learned(answer)
    if decided is not None:
        print(f"plan:      {decided.action}: {decided.reason}")
        if result.result == "waiting":
            print(f"would wait: {result.approvals}")
        if result.image_signer:
            print(f"image signed by {result.image_signer}")
    elif code == EXIT_OK:
        print(f"plan:      none: {result.result}: {result.reason}")
    else:
        _fail(f"{'refused' if code == EXIT_REFUSED else 'error'}: cannot plan: {result.reason}")
    return code


def _print_learned(answer: PlanAnswer) -> None:
    """The steps a plan got through: fetched, verified, validated."""
    if answer.head:
        print(f"fetched:   {answer.branch} at {answer.head[:12]}")
    if answer.signer:
        print(f"verified:  signed by {answer.signer}")
    if answer.image:
        print(
            f"valid:     envs/{answer.environment}.yaml runs {answer.image}"
            + (f" (tag {answer.tag})" if answer.tag else "")
        )


def cmd_status(args: argparse.Namespace) -> int:
    """``status``: print the status file; before the first pass, say so (0, or 1 with ``--check``).

    A status file that exists but cannot be read is an error (1).  ``--check``: 0 in sync and
    healthy, 3 out of sync, 4 the container is unhealthy, missing or unknown (docs/design.md §7).
    """
    service = _service(args)
    status = service.status()
    if status is None and not service.paths.status.exists():
        reason = f"no pass has run yet: {service.paths.status} does not exist"
        if args.json:
            _print_json({"environment": service.config.environment, "phase": None, "reason": reason})
        else:
            print(f"environment: {service.config.environment}   {reason}")
        return EXIT_ERROR if args.check else EXIT_OK
    if status is None:
        raise ConfigError(f"cannot read the status file {service.paths.status}: it is not a valid status")
    if args.json:
        print(status.model_dump_json(indent=2))
    else:
        print("\n".join(_status_lines(status, now=datetime.now(UTC))))
    return _check_code(status) if args.check else EXIT_OK


def _check_code(status: Any) -> int:
    """``status --check``: a down container (4) outranks a held change (3)."""
    if status.health != "Healthy":
        return EXIT_UNHEALTHY
    return EXIT_OK if status.sync.state == "InSync" else EXIT_OUT_OF_SYNC


def _status_lines(status: Any, *, now: datetime) -> list[str]:
    """The status for people: sync and health first, then what runs, what was tried, and what holds it."""
    applied, attempt, source, container = status.applied, status.last_attempt, status.source, status.container
    version = applied.version() if applied else "-"
    lines = [
        f"environment: {status.environment}   sync: {status.sync.state}   health: {status.health}   "
        f"version: {version}   phase: {status.phase}",
    ]
    if status.sync.state != "InSync":
        lines.append(f"why:         {status.sync.reason}")
    lines.append(f"container:   {container.name} {container.state} (health {container.health})")
    if container.task:  # Swarm mode: the service's running task
        lines.append(f"task:        {container.task} on node {container.node}")
    if applied:
        lines.append(f"applied:     {applied.revision[:12] or '-'} {applied.image}, {_ago(applied.applied_at, now)}")
        lines.append(f"signed by:   {applied.signer}")
        if applied.image_signer:
            lines.append(f"image by:    {applied.image_signer}")
    if attempt:
        code = f" [{attempt.code}]" if attempt.code else ""
        lines.append(
            f"last:        {attempt.result}{code}: {attempt.reason} ({(attempt.revision or '-')[:12]}, "
            f"{_ago(attempt.at, now)})"
        )
    if status.quarantined:
        lines.append(f"quarantine:  {status.quarantine_text()}")
    if status.suspension:
        lines.append(
            f"suspended:   by {status.suspension.by}, {_ago(status.suspension.at, now)}: {status.suspension.reason}"
        )
    if status.approvals is not None:
        held = status.approvals
        lines.append(f"approvals:   have {', '.join(held.have) or '-'}, missing {', '.join(held.missing) or '-'}")
    stale = "   STALE" if source.stale else ""
    fetched = _ago(source.fetched_at, now) if source.fetched_at else "never"
    lines.append(
        f"source:      {source.url} {source.branch} head {(source.head or '-')[:12]}, fetched {fetched}{stale}"
    )
    if source.last_error:
        lines.append(f"fetch error: {source.last_error}")
    if attempt and attempt.logs:
        logs = attempt.logs.splitlines()
        lines.append(f"container log before the rollback (first {min(len(logs), LOG_LINES)} of {len(logs)} lines):")
        lines += [f"  | {line}" for line in logs[:LOG_LINES]]
    lines.append(f"updated:     {_ago(status.updated_at, now)}")
    return lines


def _ago(moment: datetime, now: datetime) -> str:
    """'3 min ago (2026-12-05 13:04:17 UTC)': the age first, for the glance, then the time to the second."""
    seconds = int((now - moment).total_seconds())
    when = f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    if seconds < -5:
        return f"{when} (ahead of this host's clock)"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago ({when})"
    return f"{max(seconds, 0)} s ago ({when})"


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


def operator() -> str:
    """Who runs the command: the person behind ``sudo`` when there is one, else the Unix user."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def cmd_suspend(args: argparse.Namespace) -> int:
    """``suspend [--reason TEXT]``: stop acting on new revisions; who and why go to audit, status and page."""
    service = _service(args)
    by = operator()
    with _notifying(service):
        service.suspend(args.reason, by=by)
    print(f"suspended by {by}: {args.reason}")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    """``resume``: act on new revisions again (from the next pass); say what is true now."""
    service = _service(args)
    with _notifying(service):
        service.resume(by=operator())
    status = service.status()
    sync = f"; sync {status.sync.state}, health {status.health}" if status and status.sync else ""
    print(f"resumed{sync}; the next pass acts on the head")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    """``validate FILE``: exit 0 with the desired container, 3 with every reason."""
    stdin = str(args.file) == "-"
    if stdin and not getattr(args, "environment", None):
        raise ConfigError("reading the manifest from stdin: pass --environment")
    environment = getattr(args, "environment", None) or _environment_from_name(args.file)
    try:
        desired = validate_file(
            args.file,
            environment=environment,
            config_file=config_path(args.config) if getattr(args, "config", None) else None,
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
            print("built from " + " ".join(str(source[k]) for k in ("repository", "ref", "commit") if source[k]))
    return EXIT_OK


def cmd_notify(args: argparse.Namespace) -> int:
    """``notify --test``: a test message to every target; 0 when all answered, 1 otherwise."""
    notifier = compose.notifier(_service(args))
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


def cmd_approve(args: argparse.Namespace) -> int:
    """``approve FILE``: sign an approval of the file's content in its clone; print the path to commit."""
    valid_for = APPROVAL_VALIDITY
    if args.expires:
        try:
            valid_for = parse_duration(args.expires)
        except ValueError as exc:
            raise ConfigError(f"--expires: {exc}") from None
    written = write_approval(
        args.file, key=args.key, valid_for=valid_for, repository=args.repository, now=datetime.now(UTC)
    )
    print(f"wrote {written}")
    print(f"commit and push it: git add '{written}' && git commit -m 'Approve {args.file}' && git push")
    return EXIT_OK


def cmd_approvals(args: argparse.Namespace) -> int:
    """``approvals``: for the head's content, who approved, who is missing, when each approval expires."""
    report = _service(args).approvals()
    tally = report.tally
    if args.json:
        _print_json(
            {
                "revision": report.revision,
                "content": tally.content,
                "need": tally.need,
                "have": tally.have,
                "missing": tally.missing,
                "enough": tally.enough,
                "approvals": [
                    {"person": a.person, "expires": a.expires.isoformat(), "file": a.file} for a in tally.counted
                ],
                "not_counted": [r.reason for r in tally.rejected],
            }
        )
        return EXIT_OK
    enough = "enough" if tally.enough else "not enough"
    print(f"head {report.revision[:12]}, content {tally.content[:12]}: {tally.describe()}, {enough}")
    for approval in tally.counted:
        print(f"  approved    {approval.person}  until {approval.expires.isoformat()}  ({approval.file})")
    for person in tally.missing:
        print(f"  missing     {person}")
    for rejection in tally.rejected:
        print(f"  not counted {rejection.reason}")
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    """``completion bash|zsh|fish``: print the shell's completion script."""
    print(completion.script(_parser(), args.shell), end="")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    """``init``: create the host layout; never overwrite."""
    if not args.environment:
        raise ConfigError("init needs the environment: pass -e dev or -e prod")
    root = args.root or default_root()
    created = init_layout(root, args.environment)
    for path in created:
        print(f"created {path}")
    if not created:
        print(f"{root / args.environment}: layout already complete, nothing changed")
    print(next_steps(root, args.environment), end="")
    return EXIT_OK


# -- the parser, as a table -----------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """One argument: its flags and ``add_argument``'s keywords."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    """One subcommand: name, one-line help, what it does, an example, its exit codes, handler, arguments.

    ``config``: takes ``--config`` and ``-e/--environment`` (docs/design.md §7).
    """

    name: str
    help: str
    description: str
    example: str
    exits: str
    handler: Handler
    args: tuple[Arg, ...] = ()
    config: bool = True


JSON = Arg(("--json",), {"action": "store_true", "help": "print JSON"})
SUPPRESS = argparse.SUPPRESS  # a subcommand's copy of a global option must not reset what was given before it
EXITS_ONE_SHOT = "0 done; 1 error (the config, the state folder or the Docker Engine)"
COMMANDS = (
    Command(
        "validate",
        "check a manifest offline against the layout contract",
        "Check a manifest against the layout contract without a config, git or Docker; prints the "
        "container it would run, or every reason it is refused. The environment comes from the file name.",
        "dreichor-controller validate envs/prod.yaml",
        "0 valid; 3 refused; 1 the file or the config cannot be read",
        cmd_validate,
        (
            Arg(("file",), {"type": Path, "help": "the manifest (envs/<env>.yaml), or - for stdin"}),
            Arg(
                ("-e", "--environment"),
                {"choices": ENVIRONMENTS, "default": SUPPRESS, "help": "the manifest's environment"},
            ),
            Arg(("--config",), {"default": SUPPRESS, "help": "use this config's image repository and .env"}),
            JSON,
        ),
        config=False,
    ),
    Command(
        "verify",
        "fetch, then verify a revision against the trust policy",
        "Fetch the manifest repository, then verify a revision's signature (and, with image.signatures, "
        "its image's) against the host's trust policy.",
        "dreichor-controller verify -e prod main~1",
        "0 trusted; 3 refused (the commit or its image); 1 the repository cannot be fetched or the revision is unknown",
        cmd_verify,
        (Arg(("rev",), {"nargs": "?", "help": "revision to verify (default: the branch head)"}), JSON),
    ),
    Command(
        "verify-image",
        "verify an image's cosign signature against image.signatures.keys",
        "Check a pinned image's cosign signature in the registry against image.signatures.keys, pulling nothing.",
        "dreichor-controller verify-image -e prod ghcr.io/ceerkle/dreichor-trading/runtime@sha256:<64 hex>",
        "0 trusted; 3 refused; 1 other error (registry unreachable, no keys configured)",
        cmd_verify_image,
        (Arg(("image",), {"help": "repository@sha256:<digest>"}), JSON),
    ),
    Command(
        "run",
        "the daemon: scheduler, recovery at start",
        "The daemon: one pass per source.interval, the local API, crash recovery at start; "
        "SIGTERM finishes the pass in flight, SIGHUP reloads the config. Runs under systemd.",
        "dreichor-controller run -e prod",
        "0 after SIGTERM; 1 the config is unusable or another controller holds the environment",
        cmd_run,
    ),
    Command(
        "sync",
        "one reconcile pass now",
        "Run one reconcile pass now: fetch, verify, validate, plan, apply, health gate, record.",
        "dreichor-controller sync -e prod",
        "0 in sync or applied; 3 refused (or held); 4 failed the health gate and rolled back; 1 other error",
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
    Command(
        "plan",
        "what the next sync would do, doing nothing",
        "Fetch, verify, validate and plan as the next sync would, changing nothing; says what each step "
        "learned even when a later one fails.",
        "dreichor-controller plan -e prod --exit-code",
        "0 nothing to do (or a change, without --exit-code); 2 a change would be applied (--exit-code); "
        "3 refused; 1 could not plan (git or Docker unreachable)",
        cmd_plan,
        (
            Arg(("--exit-code",), {"action": "store_true", "help": "exit 2 when a change would be applied"}),
            JSON,
        ),
    ),
    Command(
        "status",
        "read the status file",
        "Read the status file: sync and health, the running version, the last attempt, the quarantine, "
        "the source, the suspension. --check turns it into a check for scripts and monitoring.",
        "dreichor-controller status -e prod --check",
        "0 (with --check: in sync and healthy); 3 out of sync: refused, held, waiting, suspended (--check); "
        "4 the container is unhealthy, missing or unknown (--check); 1 the status cannot be read",
        cmd_status,
        (
            Arg(
                ("--check",), {"action": "store_true", "help": "exit 0 in sync and healthy, 3 out of sync, 4 unhealthy"}
            ),
            Arg(("--json",), {"action": "store_true", "help": "print the status file's JSON"}),
        ),
    ),
    Command(
        "history",
        "snapshots and the audit log",
        "List the snapshots (newest first) and the audit log; --verify checks the log's hash chain "
        "and that it ends where the status file last saw it.",
        "dreichor-controller history -e prod --verify",
        "0; 3 the audit chain is broken (--verify); 1 the state cannot be read",
        cmd_history,
        (Arg(("--verify",), {"action": "store_true", "help": "check the audit log's hash chain"}), JSON),
    ),
    Command(
        "rollback",
        "break-glass: restore a snapshot, then suspend",
        "Break-glass without git: restore a snapshot (default: the newest), then suspend the environment "
        "so the next poll does not undo it, until 'resume'.",
        "dreichor-controller rollback -e prod 20261205T130417Z-abc123",
        "0 restored; 3 the snapshot is refused (another environment, repository or database); 1 other error",
        cmd_rollback,
        (Arg(("snapshot",), {"nargs": "?", "help": "snapshot id (default: the newest)"}),),
    ),
    Command(
        "notify",
        "send a test message to every notification target and say which answered",
        "Send a test message to every notification target (notify.urls, github) and say which answered.",
        "dreichor-controller notify -e prod --test",
        "0 every target answered; 1 otherwise",
        cmd_notify,
        (Arg(("--test",), {"action": "store_true", "required": True, "help": "send the test message"}), JSON),
    ),
    Command(
        "approve",
        "sign an approval of a manifest's content (in a clone of the manifest repository)",
        "Sign an approval of FILE's content as it is in the working tree (ssh-keygen -Y sign, namespace "
        "dreichor-approval) and write it under approvals/<env>/<sha256>/; print the path to commit and push.",
        "dreichor-controller approve envs/prod.yaml --expires 3d",
        "0 written; 1 error (not a clone, no key, ssh-keygen failed)",
        cmd_approve,
        (
            Arg(("file",), {"type": Path, "help": "envs/<env>.yaml in the clone"}),
            Arg(("--key",), {"help": "SSH key for ssh-keygen -Y sign (default: git's user.signingkey)"}),
            Arg(("--expires",), {"help": "how long the approval holds, e.g. 7d (the default) or 48h"}),
            Arg(("--repository",), {"help": "github.com/owner/name (default: from the remote 'origin')"}),
        ),
        config=False,
    ),
    Command(
        "approvals",
        "for the head's content: who approved, who is missing, when each approval expires",
        "Fetch and verify the head, then list for its content who approved (until when), who is missing, "
        "and why any approval file did not count.",
        "dreichor-controller approvals -e prod --json",
        "0 done; 1 error (the config, git or the trust files)",
        cmd_approvals,
        (JSON,),
    ),
    Command(
        "suspend",
        "suspend acting on new revisions",
        "Stop acting on new revisions until 'resume'; the running container is left as it is. "
        "Who (SUDO_USER, else the Unix user) and why are recorded in the audit log, status and page.",
        'dreichor-controller suspend -e prod --reason "database migration until 15:00"',
        EXITS_ONE_SHOT,
        cmd_suspend,
        (Arg(("--reason",), {"default": "no reason given", "help": "why, for the audit log, status and page"}),),
    ),
    Command(
        "resume",
        "resume acting on new revisions",
        "Act on new revisions again from the next pass; the status says what is true meanwhile.",
        "dreichor-controller resume -e prod",
        EXITS_ONE_SHOT,
        cmd_resume,
    ),
    Command(
        "init",
        "create an environment's host layout and a starter config",
        "Create <root>/<env>/deploy-agent with a starter controller.yaml, .env and trust/allowed_signers, "
        "and the systemd drop-in for a root other than /opt/dreichor; never overwrites a file.",
        "dreichor-controller init -e prod",
        "0 created (or already complete); 1 a folder cannot be created",
        cmd_init,
        (
            Arg(("-e", "--environment"), {"choices": ENVIRONMENTS, "default": SUPPRESS, "help": "dev or prod"}),
            Arg(("--root",), {"type": Path, "help": "base of the layout (default: $DREICHOR_ROOT or /opt/dreichor)"}),
        ),
        config=False,
    ),
    Command(
        "completion",
        "print a shell completion script",
        "Print a completion script written from this parser: bash (source it), zsh (save it as "
        "_dreichor-controller on $fpath) or fish (save it in ~/.config/fish/completions/).",
        "dreichor-controller completion bash > /etc/bash_completion.d/dreichor-controller",
        "0",
        cmd_completion,
        (Arg(("shell",), {"choices": completion.SHELLS}),),
        config=False,
    ),
)
CONFIG_HELP = "controller.yaml (default: <root>/<env>/deploy-agent/controller.yaml with -e, else $DREICHOR_CONFIG)"
ENV_HELP = "the environment (dev, prod): its config under $DREICHOR_ROOT or /opt/dreichor"
LOG_LEVEL = Arg(
    ("--log-level",),
    {"choices": LOG_LEVELS, "help": "log from this level on (default: info for run, warning otherwise)"},
)
EPILOG = """\
exit codes (each command's --help names its own):
  0 done, in sync, valid or trusted     3 refused, out of sync or a broken audit chain
  1 an error (config, state, git, Docker)  4 rolled back (sync) or unhealthy (status --check)
  2 a usage error, or a change would be applied (plan --exit-code)

The config is --config PATH, else <root>/<env>/deploy-agent/controller.yaml for -e ENV
(root: $DREICHOR_ROOT or /opt/dreichor), else $DREICHOR_CONFIG.
"""


class _Formatter(argparse.HelpFormatter):
    """Wraps a one-line description; keeps a text of several lines (examples, exit codes) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreichor-controller",
        description="Pull-based GitOps deployment controller for Dreichor.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("-e", "--environment", choices=ENVIRONMENTS, help=ENV_HELP)

    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=f"example:\n  {command.example}\n\nexit codes:\n  " + command.exits.replace("; ", "\n  "),
            formatter_class=_Formatter,
        )
        for arg in _config_args(command) + command.args + (LOG_LEVEL,):
            sub.add_argument(*arg.flags, **arg.options)
        sub.set_defaults(handler=command.handler)
    return parser


def _config_args(command: Command) -> tuple[Arg, ...]:
    """``--config`` and ``-e`` again after the subcommand; given there, they win over the ones before it."""
    if not command.config:
        return ()
    return (
        Arg(("--config",), {"default": SUPPRESS, "help": CONFIG_HELP}),
        Arg(("-e", "--environment"), {"choices": ENVIRONMENTS, "default": SUPPRESS, "help": ENV_HELP}),
    )


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
