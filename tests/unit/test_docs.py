"""The docs name what the code has: every module in ARCHITECTURE.md, every command and config key in docs/design.md.

Read from the code itself (the module files, the CLI's parser, the config models), so a module,
command, option or key added without its documentation fails here, naming what is missing.
"""

from __future__ import annotations

import argparse
import re
import typing
from pathlib import Path

from pydantic import BaseModel

from controller.cli import parser as cli
from controller.cli.exits import EXITS
from controller.cli.parser import COMMANDS
from controller.model.config import Config
from controller.reconcile.steps import STEPS

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "ARCHITECTURE.md"
DESIGN = ROOT / "docs" / "design.md"
NOT_MODULES = ("__init__.py", "__main__.py")
RETIRED = "DESIGN" + r"(\.md| §)"  # the contract's old home, outside the repository


def module_files() -> list[Path]:
    """Every module file under ``controller/``, packages' ``__init__`` and ``__main__`` aside."""
    return sorted(p for p in (ROOT / "controller").rglob("*.py") if p.name not in NOT_MODULES)


def named(text: str, module: Path) -> bool:
    """Whether ``text`` names ``module`` by its path (``controller/api/page.py``) or dotted name."""
    path = module.relative_to(ROOT).as_posix()
    dotted = path.removesuffix(".py").replace("/", ".")
    return any(re.search(rf"(?<![\w./]){re.escape(name)}(?![\w/])", text) for name in (path, dotted))


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """The CLI's subcommands as its parser has them."""
    (action,) = (a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> list[str]:
    """A subcommand's long options (``--json``), help aside."""
    flags = (flag for action in parser._actions for flag in action.option_strings)
    return [flag for flag in flags if flag.startswith("--") and flag != "--help"]


def config_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every key of ``controller.yaml`` as a dotted path (``api.access.audience``), sections included."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        key = prefix + name
        keys.append(key)
        for section in sections(field.annotation):
            keys += config_keys(section, key + ".")
    return keys


def sections(annotation: object) -> list[type[BaseModel]]:
    """The config models inside a field's type (``X | None``, ``list[X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [section for arg in typing.get_args(annotation) for section in sections(arg)]


def test_every_module_is_named_in_the_architecture() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    missing = [m.relative_to(ROOT).as_posix() for m in module_files() if not named(text, m)]
    assert not missing, f"ARCHITECTURE.md does not name these modules: {', '.join(missing)}"


def test_every_command_has_a_row_in_the_design() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    missing = [name for name in subcommands() if not re.search(rf"^\| `{re.escape(name)}[ `]", text, re.MULTILINE)]
    assert not missing, f"docs/design.md has no command table row for: {', '.join(missing)}"


def test_every_command_option_is_in_the_design() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    missing = [
        f"{name} {flag}"
        for name, parser in subcommands().items()
        for flag in options(parser)
        if not re.search(rf"`[^`\n]*{re.escape(flag)}(?![\w-])", text)
    ]
    assert not missing, f"docs/design.md does not mention these options: {', '.join(missing)}"


def test_every_config_key_is_in_the_design() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    missing = [key for key in config_keys(Config) if f"`{key}`" not in text]
    assert not missing, f"docs/design.md does not name these config keys: {', '.join(missing)}"


def test_the_docs_cite_the_contract_where_it_is() -> None:
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "controller").rglob("*.py")]
    citing = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if re.search(RETIRED, line)
    ]
    assert not citing, f"cite docs/design.md (same section numbers) or ARCHITECTURE.md instead of DESIGN: {citing}"


def test_the_checks_see_what_they_check() -> None:
    """The helpers find the code's parts, so an empty list cannot pass the tests above by itself."""
    assert len(module_files()) > 40 and ROOT / "controller" / "cli" / "main.py" in module_files()
    assert {"run", "sync", "validate", "completion"} <= set(subcommands())
    assert "--allow-rewrite" in options(subcommands()["sync"])
    assert {"source.url", "api.access.audience", "image.signatures.keys"} <= set(config_keys(Config))
    assert not named("`controller/api/pager.py` and controller.api.page_x", ROOT / "controller" / "api" / "page.py")


def pass_table() -> list[tuple[str, str]]:
    """ARCHITECTURE.md's pass table: (step, function) per row, in order."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    table = text[text.index("| step | function |") :].split("\n\n", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    return [(step.strip(), function.strip().strip("`")) for step, function in rows]


def test_the_pass_table_is_the_step_list() -> None:
    wanted = [(step.name, step.run.__qualname__) for step in STEPS]
    assert pass_table() == wanted


def exit_codes(text: str) -> set[str]:
    """The codes an exit-code text names: ``0 done; 3 refused, 4 rolled back`` → {0, 3, 4}."""
    return set(re.findall(r"(?:^|; |, |\*\*)(\d)\b", text))


def design_exits() -> dict[str, str]:
    """docs/design.md §7's exit-code cell, per command."""
    text = DESIGN.read_text(encoding="utf-8")
    section = text[text.index("\n## 7") : text.index("\n## 8")]
    rows = (line for line in section.splitlines() if re.match(r"\| `[a-z-]+", line) and line.count("|") >= 4)
    cells: dict[str, str] = {}
    for row in rows:
        cells.setdefault(row.split("`")[1].split()[0], row.split("|")[-2].strip())
    return cells


def test_each_commands_exit_codes_are_one_table_in_its_help_and_the_design() -> None:
    cells = design_exits()
    for command in COMMANDS:
        assert exit_codes(EXITS[command.name]) == exit_codes(cells[command.name]), command.name
        help_text = cli.build_parser()._subparsers._group_actions[0].choices[command.name].format_help()  # type: ignore[union-attr]
        assert all(f"  {part}" in help_text for part in EXITS[command.name].split("; ")), command.name
