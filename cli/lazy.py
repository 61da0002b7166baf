"""A click group that imports a subcommand's module only when that subcommand runs.

`adsub submit` is typed far more than any other command and pays for every import at each call
(bench/submit.py): the commands kept in other modules (and what those import) are loaded by
name when run, listed in --help or completed, never on the way to another command.
"""

from __future__ import annotations

import importlib

import click


class LazyGroup(click.Group):
    """click.Group with `lazy_commands`: {name: "module:attribute"} imported on first use.

    Several names may point at one command (an alias, like `acct` and `history`).
    """

    def __init__(self, *args, lazy_commands: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            module_name, _, attribute = self.lazy_commands[cmd_name].partition(":")
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command):  # a typo in the table, not a user error
                raise TypeError(f"{self.lazy_commands[cmd_name]} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)
