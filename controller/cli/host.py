"""The commands about the host itself: ``init`` its layout, test its ``notify`` targets, print ``completion``."""

from __future__ import annotations

import argparse

from controller.cli.exits import EXIT_ERROR, EXIT_OK
from controller.cli.render import print_json
from controller.errors import ConfigError

# Each command imports what it uses when it runs: a completion script needs neither the service nor Apprise.


def cmd_notify(args: argparse.Namespace) -> int:
    """``notify --test``: a test message to every target; 0 when all answered, 1 otherwise."""
    from controller import compose
    from controller.cli.environment import service_for

    notifier = compose.notifier(service_for(args))
    answers = notifier.send_test() if notifier is not None else []
    if notifier is not None:
        notifier.close(0)
    if args.json:
        print_json({"targets": [{"target": a.target, "answered": a.answered, "detail": a.detail} for a in answers]})
    elif not answers:
        print("no notification targets configured (notify.urls, github)")
    for answer in [] if args.json else answers:
        print(f"{'answered' if answer.answered else 'FAILED':<9} {answer.target}: {answer.detail}")
    return EXIT_OK if all(a.answered for a in answers) else EXIT_ERROR


def cmd_completion(args: argparse.Namespace) -> int:
    """``completion bash|zsh|fish``: print the shell's completion script."""
    from controller.cli import completion

    print(completion.script(args.parser, args.shell), end="")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    """``init``: create the host layout; never overwrite."""
    from controller.model.config import default_root
    from controller.service import init_layout, next_steps

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
