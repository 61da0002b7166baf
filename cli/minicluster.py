"""`adsched minicluster up|down|status|exec`: a real Slurm 22.05 cluster in Docker containers.

Thin: one adsched.testbed.minicluster call per command; its errors become one clear line (exit 1), never a traceback.
"""

from __future__ import annotations

import json
import sys

from pathlib import Path

import click

from adsched.testbed.minicluster import MiniCluster, MiniClusterError, default_state_dir, render_for_compose

state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False), default=None,
    help="Where running mini-clusters are recorded [default: $ADSCHED_MINICLUSTER_STATE or "
         "~/.local/state/adsched/minicluster].")
name_option = click.option("--name", default=None,
                           help="The mini-cluster [default: adsched-<cluster name> for up; the only one up otherwise].")


def _attach(name: str | None, state_dir: str | None) -> MiniCluster:
    if name is None:
        up = MiniCluster.list_up(state_dir)
        if len(up) != 1:
            where = state_dir or default_state_dir()
            raise MiniClusterError(f"no mini-cluster is up (state in {where})" if not up else
                                   f"several mini-clusters are up ({', '.join(up)}): pick one with --name")
        name = up[0]
    return MiniCluster.attach(name, state_dir)


def _run(fn):
    try:
        return fn()
    except MiniClusterError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def minicluster():
    """A real Slurm 22.05 cluster in Docker containers, one per node of a cluster TOML."""


@minicluster.command()
@click.argument("config")
@name_option
@state_dir_option
@click.option("--timeout", type=float, default=90.0, show_default=True,
              help="Seconds to wait for every node to be idle.")
@click.option("--nvidia-smi-xml", type=click.Path(exists=True, dir_okay=False), default=None,
              help="`nvidia-smi -q -x` output every node's prolog checks (default: GPU check off).")
@click.option("--controller-mode", is_flag=True,
              help="Jobs are held at submit; run `adsched slurm controller` in the controller container to start them.")
def up(config, name, state_dir, timeout, nvidia_smi_xml, controller_mode):
    """Start the cluster of CONFIG (a cluster TOML, or a shipped example: mini8) and wait until every
    node is idle.

    The adsched plugin is live: job_submit.lua, the prolog/epilog hooks, and the store they
    record in (/jobs/adsched-state in the containers: `adsub queue --state /jobs/adsched-state`).
    """
    xml = Path(nvidia_smi_xml).read_text() if nvidia_smi_xml else None
    mc = _run(lambda: MiniCluster(config, name, state_dir=state_dir, node_timeout=timeout, persistent=True,
                                  nvidia_smi_xml=xml, controller_mode=controller_mode))
    _run(mc.up)
    click.echo(f"{mc.name}: {len(mc.nodes)} nodes idle in {mc.timings.get('up', 0):.1f} s; "
               f"run jobs with: adsched minicluster exec --name {mc.name} -- srun -N1 hostname")


@minicluster.command()
@name_option
@state_dir_option
def down(name, state_dir):
    """Remove the cluster's containers and network (and the engine the driver started, if now unused)."""
    mc = _run(lambda: _attach(name, state_dir))
    _run(mc.down)
    click.echo(f"{mc.name}: down")


@minicluster.command()
@name_option
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(name, state_dir, as_json):
    """Containers and Slurm's node states."""
    info = _run(lambda: _attach(name, state_dir).status())
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    click.echo(f"{info['name']}  engine={info['engine']}  config={info['config']}")
    for member, cstate in sorted(info["containers"].items()):
        click.echo(f"  {member:<12} container={cstate:<8} slurm={info['nodes'].get(member, '-')}")


@minicluster.command(name="exec", context_settings={"ignore_unknown_options": True})
@name_option
@state_dir_option
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds before the command is killed.")
@click.option("--user", default=None, help="Run as this user (e.g. tester) instead of root.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(name, state_dir, timeout, user, cmd):
    """Run CMD in the controller container (the Slurm clients are there): exec -- srun -N2 hostname"""
    mc = _run(lambda: _attach(name, state_dir))
    r = _run(lambda: mc.exec(list(cmd), timeout=timeout, user=user))
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    if r.timed_out:
        click.echo(f"exec: timed out after {timeout:g} s", err=True)
    sys.exit(r.rc)


@minicluster.command()
@click.argument("config")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--subnet", default="10.78.0.0/24", show_default=True, help="The network of docker/compose.yml.")
def render(config, dest, subnet):
    """Write what docker/compose.yml mounts into DEST: etc-slurm/, munge.key and jobs/ (CONFIG: a cluster
    TOML, or a shipped example: mini8)."""
    for path in _run(lambda: render_for_compose(config, dest, subnet)):
        click.echo(path)
