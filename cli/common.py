"""What every command shares: the state dir option, error mapping, tables and --json."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import sys
from pathlib import Path

import click

from adsched.core.config import ConfigError
from adsched.errors import AdschedError
from adsched.inputcheck import printable


class CommandError(click.ClickException):
    """A library error as one line; bad input exits 2 (like a usage error), the rest 1."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def library_errors(fn):
    """Library errors become one clear line and an exit status, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:  # every error at once, one line each
            if len(e.errors) == 1:
                raise CommandError(f"{e.source}: {e.errors[0]}", 2) from None
            raise CommandError(f"{e.source}: {len(e.errors)} errors\n  " + "\n  ".join(e.errors), 2) from None
        except AdschedError as e:
            raise CommandError(str(e), e.exit_code) from None
        except sqlite3.OperationalError as e:  # one the store did not name (StoreError is an AdschedError)
            raise CommandError(f"the adsched store: {e}", 1) from None

    return wrapper


def default_state_dir() -> str:
    return os.environ.get("ADSCHED_STATE") or str(Path.home() / ".adsched")


state_option = click.option(
    "--state", "state_dir", default=default_state_dir, show_default="$ADSCHED_STATE or ~/.adsched",
    type=click.Path(file_okay=False, readable=False), help="State directory (SQLite store, job output).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def print_json(value) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def print_table(headers: list[str], rows: list[list], file=None) -> None:
    cells = [[c if c.isprintable() else printable(c) for c in map(str, row)] for row in rows]  # one value, one line
    widths = [max(len(h), *map(len, column)) for h, column in zip(headers, zip(*cells))] if cells else \
        [len(h) for h in headers]
    out = file or sys.stdout
    row_format = "  ".join(f"{{:<{w}}}" for w in widths)  # one format call a row (10,000 in adsub queue)
    lines = [row_format.format(*headers).rstrip()]
    lines += [row_format.format(*r).rstrip() for r in cells]
    click.echo("\n".join(lines), file=out)  # one write: 10,000 rows in one echo, not 10,000
