"""What the docs and help texts show a new user must match what the commands do."""

import re
from pathlib import Path

import click

from adsched.cli import adsched as adsched_cli
from adsched.cli import adsub as adsub_cli
from adsched.sim import metrics

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands(group: click.Command, path: tuple[str, ...] = ()):
    yield path, group
    if isinstance(group, click.Group):  # through click's API: adsub loads some commands by name (cli/lazy.py)
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            yield from _commands(group.get_command(ctx, name), (*path, name))


def _subcommands(group: click.Group) -> set[str]:
    return {path[0] for path, _ in _commands(group) if path}


def test_help_examples_name_a_subcommand_first():
    """`adsub --state X queue` fails (the option belongs to the subcommand): every example in a help
    text names the subcommand right after the program."""
    known = {"adsub": _subcommands(adsub_cli.main), "adsched": _subcommands(adsched_cli.main)}
    bad = []
    for program in (adsub_cli.main, adsched_cli.main):
        for path, cmd in _commands(program):
            for prog, first in re.findall(r"`(adsub|adsched) (\S+)", cmd.help or ""):
                if first not in known[prog]:
                    bad.append(f"{program.name or ''} {' '.join(path)}: `{prog} {first} ...`")
    assert bad == []


def test_readme_sim_table_has_the_columns_sim_prints():
    header = next(line for line in README.splitlines() if line.startswith("policy ") and "wait mean" in line)
    assert re.split(r"\s{2,}", header.strip()) == list(metrics.COLUMNS)


def test_readme_says_plots_need_the_plots_option():
    assert "--plots DIR" in README


def test_readme_command_lines_name_a_subcommand_first():
    known = {"adsub": _subcommands(adsub_cli.main), "adsched": _subcommands(adsched_cli.main)}
    bad = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        for line in block.splitlines():
            for prog, first in re.findall(r"(?:^|&& |; )(adsub|adsched) (\S+)", line.strip()):
                if first not in known[prog]:
                    bad.append(line.strip())
    assert bad == []
