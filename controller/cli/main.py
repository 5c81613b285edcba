"""``main``: parse the arguments, run the command's handler, turn every failure into a sentence and an exit code."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence

from controller.cli.exits import EXIT_ERROR, EXIT_OK, EXIT_REFUSED
from controller.cli.parser import Handler, build_parser
from controller.cli.render import fail, print_json
from controller.daemon.logs import setup_cli_logging
from controller.errors import ControllerError, Refused

log = logging.getLogger("dreichor.cli")


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
    parser = build_parser()
    twice = given_twice(sys.argv[1:] if argv is None else list(argv))
    if twice:
        parser.error(f"{twice} is given twice: name one environment and at most one config")
    args = parser.parse_args(argv)
    if args.command != "run":
        setup_cli_logging(args.log_level)
    handler: Handler = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        raise  # the reader is gone: saying so into the same pipe would fail again
    except Refused as exc:
        return failed(args, exc.reasons, refused=True)
    except ControllerError as exc:
        return failed(args, (str(exc),))
    except OSError as exc:
        return failed(args, (os_error(exc),))
    except Exception as exc:  # a bug: its traceback is for the report, the user still gets one sentence
        log.exception("internal error in '%s'", args.command)
        return failed(args, (f"internal error in '{args.command}': {type(exc).__name__}: {exc}",))


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's own flush at exit does not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no real file (a test's capture): nothing will flush into a pipe
        pass


def failed(args: argparse.Namespace, reasons: Sequence[str], *, refused: bool = False) -> int:
    """Say why a command failed (stderr, and JSON with ``--json``); 3 when refused, else 1."""
    for reason in reasons:
        fail(f"{'refused' if refused else 'error'}: {reason}")
    if getattr(args, "json", False):
        print_json({"error": "; ".join(reasons), "refused": refused, "reasons": list(reasons)})
    return EXIT_REFUSED if refused else EXIT_ERROR


def os_error(exc: OSError) -> str:
    """An OS error as one sentence: the file, the cause and its errno name.

    A permission the caller lacks is the caller's limit, not the host's damage: it says who may.
    """
    if isinstance(exc, PermissionError):
        return f"permission denied: run as root or the controller's user ({exc.filename or exc})"
    cause = exc.strerror or str(exc)
    name = errno.errorcode.get(exc.errno or 0)
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{cause}" + (f" ({name})" if name else "")


# The options that choose the environment; before or after the command, but once.
_CHOOSERS = {"-e": "-e/--environment", "--environment": "-e/--environment", "--config": "--config"}


def given_twice(argv: Sequence[str]) -> str | None:
    """The option that chooses the environment and appears twice in ``argv`` (``-e prod status -e dev``), if any."""
    seen: list[str] = []
    for word in argv:
        if word == "--":
            break
        name = word.partition("=")[0] if word.startswith("--") else word[:2] if word.startswith("-e") else word
        if name in _CHOOSERS:
            if _CHOOSERS[name] in seen:
                return _CHOOSERS[name]
            seen.append(_CHOOSERS[name])
    return None
