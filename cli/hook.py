"""`adsched hook KIND`: the scripts slurm.conf names (Prolog, PrologSlurmctld, Epilog)."""

from __future__ import annotations

import os
import sys

import click

from adsched.errors import AdschedError
from adsched.plugins.hooks import HOOKS, HookSettings


@click.command()
@click.argument("kind", type=click.Choice(sorted(HOOKS)))
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The hooks TOML (cluster, store, hints_dir).")
def hook(kind, config_path):
    """Run a Slurm hook. Exit 1 fails the node (Prolog: drain + requeue) or the job (PrologSlurmctld)."""
    try:
        message = HOOKS[kind](HookSettings.load(config_path), os.environ)
    except AdschedError as e:
        click.echo(f"adsched {kind}: {e}", err=True)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - a prolog fails closed on anything unexpected
        click.echo(f"adsched {kind}: unexpected error: {type(e).__name__}: {e}", err=True)
        sys.exit(1)
    click.echo(f"adsched {kind}: {message}", err=True)
