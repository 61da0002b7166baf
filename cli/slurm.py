"""`adsched slurm`: Slurm configs from the cluster TOML, and the way back for a topology."""

from __future__ import annotations

import time
from pathlib import Path

import click

from adsched.configfile import load_config
from adsched.errors import InvalidRequest
from adsched.slurm.render import EXECUTABLE, PluginSettings, import_topology, render_site

from .common import json_option, library_errors, print_json, state_option


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
@click.option("--mode", type=click.Choice(["plugin", "controller"]), default="plugin", show_default=True,
              help="plugin: Slurm schedules, adsched checks at submit and in the prolog; controller: jobs are "
                   "held at submit and `adsched slurm controller` decides (needs the plugin).")
@library_errors
def render(cluster_path, out_dir, controller, conf_dir, store, no_plugin, no_gpu_check, mode):
    """Write slurm.conf, topology.conf, gres.conf, job_submit.lua, its rules and the hook scripts."""
    config = load_config(cluster_path)
    if no_plugin and mode == "controller":
        raise InvalidRequest("--mode controller needs the plugin (job_submit.lua holds the jobs): drop --no-plugin")
    plugin = None if no_plugin else PluginSettings(conf_dir=conf_dir, store=store, gpu_check=not no_gpu_check,
                                                   controller=mode == "controller")
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


@slurm.command("controller")
@state_option
@click.option("--once", is_flag=True, help="Run one cycle and exit.")
@click.option("--interval", type=float, default=None, help="Seconds between cycles (default: the TOML's cycle_interval).")
@click.option("--release-timeout", type=float, default=30.0, show_default=True,
              help="A released job not running after this long is held again and decided anew.")
@click.option("--max-seconds", type=float, default=None, help="Exit after this long.")
@click.option("-v", "--verbose", is_flag=True, help="Print a line for each cycle that changed something.")
@library_errors
def controller_cmd(state_dir, once, interval, release_timeout, max_seconds, verbose):
    """Decide on Slurm with adsched's core: start jobs on the core's nodes, preempt, requeue (controller mode)."""
    from adsched.slurm.controller import run_controller

    def report(r):
        if verbose and r.changed:
            click.echo(f"{time.strftime('%H:%M:%S', time.localtime(r.now))} {r.summary()}")

    run_controller(state_dir, once=once, interval=interval, release_timeout=release_timeout,
                   max_seconds=max_seconds, on_cycle=report, log=lambda m: click.echo(m, err=True))


@slurm.command("status")
@state_option
@json_option
@library_errors
def status_cmd(state_dir, as_json):
    """The controller's last cycle, its cycle cost, its jobs by phase and the latest mismatches."""
    from adsched.slurm.controller import controller_status

    info = controller_status(state_dir)
    if as_json:
        print_json(info)
        return
    click.echo(info["summary"])
    for p in info["problems"]:
        click.echo(f"  job {p['job_id']}: {p['kind']}: {p.get('what') or p.get('error') or p.get('reason') or ''}")
