"""The parser as a table: every command with its help, example, exit codes, handler and arguments."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller import __version__
from controller.cli import completion
from controller.cli.host import cmd_completion, cmd_init, cmd_notify
from controller.cli.operator import cmd_resume, cmd_rollback, cmd_suspend
from controller.cli.passes import cmd_plan, cmd_run, cmd_sync
from controller.cli.reading import cmd_history, cmd_status
from controller.cli.trust import cmd_approvals, cmd_approve, cmd_validate, cmd_verify, cmd_verify_image
from controller.daemon.logs import LOG_LEVELS
from controller.model.config import ENVIRONMENTS

Handler = Callable[[argparse.Namespace], int]


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
            Arg(("--all",), {"action": "store_true", "help": "one line per environment on this host (--json: a list)"}),
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
