"""Shell completion for ``dreichor-controller``: bash, zsh and fish scripts written from the parser by shtab.

Generated, not shipped as files, so a new command or flag completes the day
it is added.  shtab quotes help text for each shell itself (a hand-written
zsh script once mangled "an image's cosign" into "an image s cosign"), and
this module only says which arguments are files.  This is the only module
importing ``shtab``.

``dreichor-controller completion bash`` prints a script for ``source`` (or
``/etc/bash_completion.d``); ``completion zsh`` one for an ``fpath`` folder
(as ``_dreichor-controller``); ``completion fish`` one for
``~/.config/fish/completions/dreichor-controller.fish``.
"""

from __future__ import annotations

import argparse

import shtab

PROG = "dreichor-controller"
FILE_ARGUMENTS = frozenset({"--config", "--root", "--key", "file"})  # the root is a folder, offered like a file


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell`` (one of ``cli.parser.SHELLS``)."""
    _mark_files(parser)
    return str(shtab.complete(parser, shell=shell))


def _mark_files(parser: argparse.ArgumentParser) -> None:
    """Tell shtab which arguments complete to file names, in every subcommand."""
    for action in parser._actions:
        names = set(action.option_strings) or {action.dest}
        if names & FILE_ARGUMENTS:
            action.complete = shtab.FILE  # type: ignore[attr-defined]  # shtab reads this attribute
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _mark_files(sub)
