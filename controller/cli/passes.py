"""The commands that run passes: ``run`` (the daemon), ``sync`` and ``plan``."""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Iterator

from controller.cli.environment import config_file, notifying, operator, service_for
from controller.cli.exits import EXIT_CHANGE, EXIT_ERROR, EXIT_OK, EXIT_REFUSED, EXIT_WAITING, PLAN_EXIT, SYNC_EXIT
from controller.cli.render import fail, print_json, print_learned
from controller.daemon.logs import setup_logging
from controller.daemon.scheduler import Daemon
from controller.errors import Reason
from controller.service import BreakGlass, PassOptions, PassResult


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: the daemon, until SIGTERM."""
    setup_logging(args.log_level)
    return Daemon(config_file(args)).run()


def cmd_sync(args: argparse.Namespace) -> int:
    """``sync``: one pass; 0 in sync or applied, 3 refused, 4 rolled back, 5 waits, 1 other."""
    if args.break_glass != bool(args.reason):
        fail("error: --break-glass needs --reason TEXT (who and why are recorded), and --reason needs --break-glass")
        return EXIT_ERROR
    service = service_for(args)
    glass = BreakGlass(by=operator(), reason=args.reason) if args.break_glass else None
    options = PassOptions(force=args.force, allow_rewrite=args.allow_rewrite, adopt=args.adopt, break_glass=glass)
    try:
        with notifying(service), _finishing_on_interrupt():
            result = service.sync(options)
    finally:
        service.close()
    code = SYNC_EXIT.get(result.result, EXIT_ERROR)
    if args.json:
        answer = {"result": result.result, "reason": result.reason, "code": str(result.code)}
        print_json(answer if code in (EXIT_OK, EXIT_WAITING) else {**answer, "error": result.reason})
    else:
        print(f"{verdict_word(result)}: {result.reason}")
    return code


@contextlib.contextmanager
def _finishing_on_interrupt() -> Iterator[None]:
    """Ctrl-C during ``sync`` is said at once and changes nothing: a swap stopped halfway could leave the
    environment without its runtime, so the pass is finished and ``sync`` exits with its code."""
    heard = 0

    def interrupted(signum: int, frame: object) -> None:
        nonlocal heard
        heard += 1
        fail(
            "interrupt: the pass in flight is being finished (a swap cannot be stopped halfway safely); "
            "its exit code follows"
            if heard == 1
            else "interrupt again: this changes nothing; the pass in flight is being finished"
        )

    try:
        previous = signal.signal(signal.SIGINT, interrupted)
    except ValueError:  # not the main thread (a test's runner): the default stays
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def verdict_word(result: PassResult) -> str:
    """``held`` for a pass that met a head already refused or rolled back (docs/design.md §16), else the result."""
    return "held" if result.result == "refused" and result.code == Reason.QUARANTINED else result.result


def cmd_plan(args: argparse.Namespace) -> int:
    """``plan``: fetch, verify, validate and plan; change nothing.  What was learned is said even when
    a later step fails (no Docker: the commit was still fetched, verified and validated)."""
    service = service_for(args)
    try:
        answer = service.plan_report()
    finally:
        service.close()
    result = answer.result
    decided, code = result.plan, PLAN_EXIT.get(result.result, EXIT_ERROR)
    if args.exit_code and code == EXIT_OK and decided is not None and decided.action != "nothing":
        code = EXIT_WAITING if result.result == "waiting" else EXIT_CHANGE
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
            "would_wait": result.approvals or (result.reason if result.result == "waiting" else None),
        }
        print_json(
            data
            if code in (EXIT_OK, EXIT_CHANGE, EXIT_WAITING)
            else {**data, "error": result.reason, "code": str(result.code)}
        )
        return code
    print_learned(answer)
    if decided is not None:
        print(f"plan:      {decided.action}: {decided.reason}")
        if result.result == "waiting":
            print(f"would wait: {result.approvals or result.reason}")
        if result.image_signer:
            print(f"image signed by {result.image_signer}")
    elif code == EXIT_OK:
        print(f"plan:      none: {result.result}: {result.reason}")
    else:
        fail(f"{'refused' if code == EXIT_REFUSED else 'error'}: cannot plan: {result.reason}")
    return code
