"""The parser as a table: every command with its help, example, exit codes, handler and arguments."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller import __version__
from controller.cli.exits import EXITS
from controller.daemon.logs import LOG_LEVELS
from controller.model.environments import ENVIRONMENTS

Handler = Callable[[argparse.Namespace], int]
SHELLS = ("bash", "zsh", "fish")  # completion's shells (cli.completion writes their scripts)


def lazy(module: str, name: str) -> Handler:
    """The handler ``name`` of ``controller.cli.<module>``, imported when its command runs.

    A command loads only what it uses: ``status`` reads a file without the engine, git or the
    daemon, ``--version`` and a completion script without any of them
    (``tests/unit/test_cli_imports.py`` holds that).
    """

    def handler(args: argparse.Namespace) -> int:
        run: Handler = getattr(importlib.import_module(f"controller.cli.{module}"), name)
        return run(args)

    handler.__name__ = handler.__qualname__ = name
    return handler


cmd_validate, cmd_verify, cmd_verify_image, cmd_approve, cmd_approvals = (
    lazy("trust", name) for name in ("cmd_validate", "cmd_verify", "cmd_verify_image", "cmd_approve", "cmd_approvals")
)
cmd_run, cmd_sync, cmd_plan = (lazy("passes", name) for name in ("cmd_run", "cmd_sync", "cmd_plan"))
cmd_status, cmd_history = lazy("reading", "cmd_status"), lazy("reading", "cmd_history")
cmd_rollback, cmd_suspend, cmd_resume = (lazy("operator", n) for n in ("cmd_rollback", "cmd_suspend", "cmd_resume"))
cmd_init, cmd_notify, cmd_completion = (lazy("host", name) for name in ("cmd_init", "cmd_notify", "cmd_completion"))


@dataclass(frozen=True)
class Arg:
    """One argument: its flags and ``add_argument``'s keywords."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    """One subcommand: name, one-line help, what it does, an example, handler, arguments; its exit codes
    are ``cli.exits.EXITS[name]``.

    ``config``: takes ``--config`` and ``-e/--environment`` (docs/design.md §7).
    """

    name: str
    help: str
    description: str
    example: str
    handler: Handler
    args: tuple[Arg, ...] = ()
    config: bool = True

    @property
    def exits(self) -> str:
        """``0 done; 1 error …``: the exit codes its ``--help`` and docs/design.md §7 name."""
        return EXITS[self.name]


JSON = Arg(("--json",), {"action": "store_true", "help": "print JSON"})
SUPPRESS = argparse.SUPPRESS  # a subcommand's copy of a global option must not reset what was given before it
COMMANDS = (
    Command(
        "validate",
        "check a manifest offline against the layout contract",
        "Check a manifest against the layout contract without a config, git or Docker; prints the "
        "container it would run, or every reason it is refused. The environment comes from the file name.",
        "dreichor-controller validate envs/prod.yaml",
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
        cmd_verify,
        (Arg(("rev",), {"nargs": "?", "help": "revision to verify (default: the branch head)"}), JSON),
    ),
    Command(
        "verify-image",
        "verify an image's cosign signature against image.signatures.keys",
        "Check a pinned image's cosign signature in the registry against image.signatures.keys, pulling nothing.",
        "dreichor-controller verify-image -e prod ghcr.io/ceerkle/dreichor-trading/runtime@sha256:<64 hex>",
        cmd_verify_image,
        (Arg(("image",), {"help": "repository@sha256:<digest>"}), JSON),
    ),
    Command(
        "run",
        "the daemon: scheduler, recovery at start",
        "The daemon: one pass per source.interval, the local API, crash recovery at start; "
        "SIGTERM finishes the pass in flight, SIGHUP reloads the config. Runs under systemd.",
        "dreichor-controller run -e prod",
        cmd_run,
    ),
    Command(
        "sync",
        "one reconcile pass now",
        "Run one reconcile pass now: fetch, verify, validate, plan, apply, health gate, record.",
        "dreichor-controller sync -e prod",
        cmd_sync,
        (
            Arg(("--force",), {"action": "store_true", "help": "retry a quarantined revision; act while suspended"}),
            Arg(("--allow-rewrite",), {"action": "store_true", "help": "accept a rewritten history once"}),
            Arg(
                ("--adopt",),
                {"action": "store_true", "help": "replace a runtime container the controller did not create"},
            ),
            Arg(
                ("--break-glass",),
                {"action": "store_true", "help": "apply now although the deploy window is closed (needs --reason)"},
            ),
            Arg(("--reason",), {"help": "why the window is broken: for the audit log, notifications and page"}),
            JSON,
        ),
    ),
    Command(
        "plan",
        "what the next sync would do, doing nothing",
        "Fetch, verify, validate and plan as the next sync would, changing nothing; says what each step "
        "learned even when a later one fails.",
        "dreichor-controller plan -e prod --exit-code",
        cmd_plan,
        (
            Arg(("--exit-code",), {"action": "store_true", "help": "exit 2 when a change would be applied, 5 wait"}),
            JSON,
        ),
    ),
    Command(
        "status",
        "read the status file",
        "Read the status file: sync and health, the running version, the last attempt, the quarantine, "
        "the source, the suspension. --check turns it into a check for scripts and monitoring.",
        "dreichor-controller status -e prod --check",
        cmd_status,
        (
            Arg(
                ("--check",),
                {"action": "store_true", "help": "exit 0 in sync and healthy, 3 out of sync, 4 unhealthy or unknown"},
            ),
            Arg(("--json",), {"action": "store_true", "help": "print the status file's JSON"}),
            Arg(("--all",), {"action": "store_true", "help": "one line per environment on this host (--json: a list)"}),
        ),
    ),
    Command(
        "history",
        "snapshots and the audit log",
        "List the snapshots (newest first) and the audit log; --verify checks the log's hash chain "
        "and that it ends where the status file last saw it.",
        "dreichor-controller history -e prod --verify",
        cmd_history,
        (Arg(("--verify",), {"action": "store_true", "help": "check the audit log's hash chain"}), JSON),
    ),
    Command(
        "rollback",
        "break-glass: restore a snapshot, then suspend",
        "Break-glass without git: restore a snapshot (default: the newest), then suspend the environment "
        "so the next poll does not undo it, until 'resume'.",
        "dreichor-controller rollback -e prod 20261205T130417Z-abc123 --reason 'fills lost after 1.4.3'",
        cmd_rollback,
        (
            Arg(("snapshot",), {"nargs": "?", "help": "snapshot id (default: the newest)"}),
            Arg(("--reason",), {"default": "no reason given", "help": "why, for the audit log, status and page"}),
        ),
    ),
    Command(
        "notify",
        "send a test message to every notification target and say which answered",
        "Send a test message to every notification target (notify.urls, github) and say which answered.",
        "dreichor-controller notify -e prod --test",
        cmd_notify,
        (Arg(("--test",), {"action": "store_true", "required": True, "help": "send the test message"}), JSON),
    ),
    Command(
        "approve",
        "sign an approval of a manifest's content (in a clone of the manifest repository)",
        "Sign an approval of FILE's content as it is in the working tree (ssh-keygen -Y sign, namespace "
        "dreichor-approval) and write it under approvals/<env>/<sha256>/; print the path to commit and push.",
        "dreichor-controller approve envs/prod.yaml --expires 3d",
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
        cmd_approvals,
        (JSON,),
    ),
    Command(
        "suspend",
        "suspend acting on new revisions",
        "Stop acting on new revisions until 'resume'; the running container is left as it is. "
        "Who (SUDO_USER, else the Unix user) and why are recorded in the audit log, status and page. The source "
        "is still fetched, so 'plan' shows what 'resume' would do; a second 'suspend' says so and records nothing.",
        'dreichor-controller suspend -e prod --reason "database migration until 15:00"',
        cmd_suspend,
        (Arg(("--reason",), {"default": "no reason given", "help": "why, for the audit log, status and page"}),),
    ),
    Command(
        "resume",
        "resume acting on new revisions",
        "Act on new revisions again from the next pass; the status says what is true meanwhile. "
        "Not suspended: it says so and records nothing.",
        "dreichor-controller resume -e prod",
        cmd_resume,
    ),
    Command(
        "init",
        "create an environment's host layout and a starter config",
        "Create <root>/<env>/deploy-agent with a starter controller.yaml, .env and trust/allowed_signers, "
        "and the systemd drop-in for a root other than /opt/dreichor; never overwrites a file.",
        "dreichor-controller init -e prod",
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
        cmd_completion,
        (Arg(("shell",), {"choices": SHELLS}),),
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
  0 done, in sync, valid or trusted     3 refused, held, suspended, out of sync or a broken audit chain
  1 an error (config, state, git, Docker)  4 rolled back (sync) or unhealthy or unknown (status --check)
  2 a usage error, or a change would be applied (plan --exit-code)   5 the change waits (sync, plan --exit-code)

The config is --config PATH, else <root>/<env>/deploy-agent/controller.yaml for -e ENV
(root: $DREICHOR_ROOT or /opt/dreichor), else $DREICHOR_CONFIG.
"""


class HelpText(argparse.HelpFormatter):
    """Wraps a one-line description; keeps a text of several lines (examples, exit codes) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def build_parser() -> argparse.ArgumentParser:
    """The parser, from ``COMMANDS``; the handler and the parser itself (for ``completion``) are in the namespace."""
    parser = argparse.ArgumentParser(
        prog="dreichor-controller",
        description="Pull-based GitOps deployment controller for Dreichor.",
        epilog=EPILOG,
        formatter_class=HelpText,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("-e", "--environment", choices=ENVIRONMENTS, help=ENV_HELP)

    parser.set_defaults(parser=parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=f"example:\n  {command.example}\n\nexit codes:\n  " + command.exits.replace("; ", "\n  "),
            formatter_class=HelpText,
        )
        for arg in config_args(command) + command.args + (LOG_LEVEL,):
            sub.add_argument(*arg.flags, **arg.options)
        sub.set_defaults(handler=command.handler)
    return parser


def config_args(command: Command) -> tuple[Arg, ...]:
    """``--config`` and ``-e`` again after the subcommand; given there, they win over the ones before it."""
    if not command.config:
        return ()
    return (
        Arg(("--config",), {"default": SUPPRESS, "help": CONFIG_HELP}),
        Arg(("-e", "--environment"), {"choices": ENVIRONMENTS, "default": SUPPRESS, "help": ENV_HELP}),
    )
