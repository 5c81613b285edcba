"""Shell completion for ``dreichor-controller``: bash and zsh scripts written from the parser itself.

Generated, not shipped as files, so a new command or flag completes the day
it is added.  ``dreichor-controller completion bash`` prints a script for
``source`` (or ``/etc/bash_completion.d``); ``completion zsh`` one for an
``fpath`` folder (as ``_dreichor-controller``) or for ``source``.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass

PROG = "dreichor-controller"
FILE_OPTIONS = frozenset({"--config", "--root"})


@dataclass(frozen=True)
class Option:
    """One flag of a command: its spellings, help, and what its value completes to (None: no value)."""

    flags: tuple[str, ...]
    help: str
    values: tuple[str, ...] | None = None  # () : a file; (...) : these words


@dataclass(frozen=True)
class CommandSpec:
    """One command as completion sees it."""

    name: str
    help: str
    options: tuple[Option, ...]
    takes_file: bool = False  # a positional that is a file (validate)


def commands_of(parser: argparse.ArgumentParser) -> list[CommandSpec]:
    """The commands, their help and their flags, read from the parser."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help or "" for choice in sub._choices_actions}
    return [_spec(name, helps.get(name, ""), command) for name, command in sub.choices.items()]


def _spec(name: str, help_text: str, parser: argparse.ArgumentParser) -> CommandSpec:
    options, takes_file = [], False
    for action in parser._actions:
        if not action.option_strings:
            takes_file = takes_file or action.dest == "file"
            continue
        options.append(Option(tuple(action.option_strings), action.help or "", _values(action)))
    return CommandSpec(name, help_text, tuple(options), takes_file)


def _values(action: argparse.Action) -> tuple[str, ...] | None:
    if action.nargs == 0:
        return None
    if action.choices is not None:
        return tuple(str(c) for c in action.choices)
    return () if set(action.option_strings) & FILE_OPTIONS else ("",)


def bash(parser: argparse.ArgumentParser) -> str:
    """A bash completion script (``complete -F``)."""
    commands = commands_of(parser)
    cases, values = [], []
    for command in commands:
        flags = " ".join(f for o in command.options for f in o.flags)
        cases.append(f"    {command.name}) opts={shlex.quote(flags)}; files={int(command.takes_file)} ;;")
    for option in {o.flags[0]: o for c in commands for o in c.options if o.values not in (None, ("",))}.values():
        words = f'COMPREPLY=($(compgen -W {shlex.quote(" ".join(option.values or ()))} -- "$cur"))'
        action = 'COMPREPLY=($(compgen -f -- "$cur"))' if option.values == () else words
        values.append(f"    {'|'.join(option.flags)}) {action}; return ;;")
    names = " ".join(c.name for c in commands)
    return "\n".join(
        [
            f"# bash completion for {PROG}: source it, or put it in /etc/bash_completion.d/{PROG}",
            "_dreichor_controller() {",
            '  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" opts="" files=0',
            '  if [ "$COMP_CWORD" -eq 1 ]; then',
            f'    COMPREPLY=($(compgen -W "{names} --version --help" -- "$cur")); return',
            "  fi",
            '  case "$prev" in',
            *values,
            "  esac",
            '  case "${COMP_WORDS[1]}" in',
            *cases,
            "  esac",
            '  COMPREPLY=($(compgen -W "$opts --help" -- "$cur"))',
            '  if [ "$files" = 1 ] && [[ "$cur" != -* ]]; then COMPREPLY+=($(compgen -f -- "$cur")); fi',
            "}",
            f"complete -F _dreichor_controller {PROG}",
            "",
        ]
    )


def zsh(parser: argparse.ArgumentParser) -> str:
    """A zsh completion script (``_arguments``), for ``fpath`` or ``source``."""
    commands = commands_of(parser)
    listed = " ".join(shlex.quote(f"{c.name}:{_plain(c.help)}") for c in commands)
    cases = []
    for command in commands:
        specs = [_zsh_option(o) for o in command.options]
        if command.takes_file:
            specs.append(shlex.quote("1:manifest file:_files"))
        cases.append(f"    {command.name}) _arguments {' '.join(specs)} ;;")
    return "\n".join(
        [
            f"#compdef {PROG}",
            f"# zsh completion for {PROG}: save as _{PROG} in a folder on $fpath, or source it",
            "_dreichor_controller() {",
            f"  local -a commands; commands=({listed})",
            "  if (( CURRENT == 2 )); then _describe command commands; return; fi",
            "  local command=$words[2]; shift words; (( CURRENT-- ))",
            "  case $command in",
            *cases,
            "  esac",
            "}",
            'if [ "$funcstack[1]" = "_dreichor_controller" ]; then _dreichor_controller "$@";',
            f"else compdef _dreichor_controller {PROG}; fi",
            "",
        ]
    )


def _zsh_option(option: Option) -> str:
    spec = f"[{_plain(option.help)}]"
    if option.values == ():
        spec += ":file:_files"
    elif option.values == ("",):
        spec += ":value:"
    elif option.values:
        spec += f":value:({' '.join(option.values)})"
    if len(option.flags) == 1:
        return shlex.quote(option.flags[0] + spec)
    # '(-h --help)'{-h,--help}'[...]': brace expansion outside the quotes, the spec inside (no glob)
    return f"'({' '.join(option.flags)})'{{{','.join(option.flags)}}}{shlex.quote(spec)}"


def _plain(text: str) -> str:
    """Help text safe inside zsh's ``[...]`` and ``name:help`` specs."""
    return "".join(" " if c in "[]:'\"\\$`" else c for c in text.replace("%(default)s", "")).strip()
