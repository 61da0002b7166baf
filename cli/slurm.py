"""`adsched slurm`: Slurm configs from the cluster TOML, and the way back for a topology."""

from __future__ import annotations

from pathlib import Path

import click

from adsched.configfile import load_config
from adsched.errors import InvalidRequest
from adsched.slurm.render import EXECUTABLE, PluginSettings, import_topology, render_site

from .common import library_errors


@click.group()
def slurm():
    """Slurm hybrid: render slurm.conf/topology.conf/gres.conf and the adsched plugin from the TOML."""


@slurm.command()
@click.option("--cluster", "cluster_path", required=True, type=click.Path(dir_okay=False), help="The cluster TOML.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory to write into.")
@click.option("--controller", default="slurmctld", show_default=True, help="SlurmctldHost.")
@click.option("--conf-dir", default="/etc/slurm", show_default=True,
              help="Where the files will live on the Slurm hosts (hooks and plugin paths).")
@click.option("--store", default="/var/lib/adsched", show_default=True,
              help="adsched state dir the hooks record events in.")
@click.option("--no-plugin", is_flag=True, help="Only slurm.conf, topology.conf and gres.conf.")
@click.option("--no-gpu-check", is_flag=True, help="The prolog skips the GPU health check.")
@library_errors
def render(cluster_path, out_dir, controller, conf_dir, store, no_plugin, no_gpu_check):
    """Write slurm.conf, topology.conf, gres.conf, job_submit.lua, its rules and the hook scripts."""
    config = load_config(cluster_path)
    plugin = None if no_plugin else PluginSettings(conf_dir=conf_dir, store=store, gpu_check=not no_gpu_check)
    files = render_site(config, Path(cluster_path).read_text(), controller=controller, plugin=plugin)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
        (out / name).chmod(0o755 if name in EXECUTABLE else 0o644)
        click.echo(out / name)


@slurm.command("import-topology")
@click.argument("path", type=click.Path(dir_okay=False))
@library_errors
def import_topology_cmd(path):
    """Print a topology.conf as the TOML's [switches.*] tables (paste them into the cluster TOML)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise InvalidRequest(f"{path}: cannot read: {e.strerror}") from None
    try:
        click.echo(import_topology(text), nl=False)
    except ValueError as e:
        raise InvalidRequest(f"{path}: {e}") from None
