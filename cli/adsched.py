"""adsched: the admins' command — set up state, check configs, run the daemon."""

from __future__ import annotations

import time
from pathlib import Path

import click

from adsched.core.config import ConfigError

from adsched.configfile import cluster_file, load_config
from adsched.standalone.daemon import CycleReport, Daemon
from adsched.standalone.demo import run_demo
from adsched.errors import InvalidRequest
from adsched.core.hostlist import compress
from adsched.standalone.executors.local import LocalExecutor
from adsched.standalone.auth import current_identity, lock_down_state
from adsched.standalone.server import SocketServer
from adsched.standalone.store import Store

from .hook import hook
from .minicluster import minicluster
from .sim import sim
from .slurm import slurm
from .common import json_option, library_errors, print_json, print_table, state_option


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adsched")
def main():
    """adsched: a GPU batch scheduler for AI-training clusters (admin commands)."""


@main.command()
@state_option
@click.option("--cluster", "cluster_path", required=True, type=click.Path(dir_okay=False),
              help="The cluster TOML (nodes, switches, queues), or a shipped example's name (demo).")
@library_errors
def init(state_dir, cluster_path):
    """Create the state directory and store for a cluster (re-run to load a changed config)."""
    try:
        text = cluster_file(cluster_path).read_text()
    except OSError as e:
        raise InvalidRequest(f"{cluster_path}: cannot read: {e.strerror}") from None
    try:
        store = Store.init(state_dir, text)
    except ConfigError as e:
        e.source = cluster_path
        raise
    c = store.config
    _warn(c)
    click.echo(f"Initialised {state_dir}: cluster {c.name}, {len(c.nodes)} nodes, {c.total_gpus} GPUs, "
               f"{len(c.leaves)} leaves, queues {', '.join(c.queues)}")


@main.command()
@state_option
@click.option("--once", is_flag=True, help="Run one cycle and exit.")
@click.option("--until-idle", is_flag=True, help="Exit when no job is pending or running.")
@click.option("--max-seconds", type=float, default=None, help="Exit after this long.")
@click.option("-v", "--verbose", is_flag=True, help="Print a line for each cycle that changed something.")
@click.option("--ssh-user", default="root", show_default=True, help="SSH executor: user on the nodes.")
@click.option("--ssh-port", type=int, default=22, show_default=True, help="SSH executor: port on the nodes.")
@click.option("--ssh-key", default=None, type=click.Path(dir_okay=False), help="SSH executor: private key file.")
@click.option("--ssh-known-hosts", default=None, type=click.Path(dir_okay=False),
              help="SSH executor: a known_hosts file checked besides /etc/ssh/ssh_known_hosts and ~/.ssh/known_hosts"
                   " (a node whose host key none holds is refused).")
@click.option("--ssh-accept-new-host-keys", is_flag=True,
              help="SSH executor: trust a node's host key on first sight (OpenSSH's accept-new; a changed key is "
                   "still refused). Only on a network you trust.")
@click.option("--remote-python", default="python3", show_default=True,
              help="SSH executor: Python with adsched installed on the nodes.")
@click.option("--metrics-file", default=None, type=click.Path(dir_okay=False),
              help="Write Prometheus metrics here after every cycle (node_exporter's textfile collector).")
@library_errors
def run(state_dir, once, until_idle, max_seconds, verbose, ssh_user, ssh_port, ssh_key, ssh_known_hosts,
        ssh_accept_new_host_keys, remote_python, metrics_file):
    """Run the scheduler daemon: cycles of reap -> schedule -> start.

    Ranks run on this host (`[standalone] executor = "local"`, the default) or on each
    node's `addresses` over SSH (`executor = "ssh"`).
    """
    store = Store(state_dir)
    if store.config.executor == "ssh":
        from adsched.standalone.executors.ssh import SSHExecutor, SSHSettings

        executor = SSHExecutor(state_dir, {n.name: n.address for n in store.config.nodes},
                               SSHSettings(user=ssh_user, port=ssh_port, key_file=ssh_key, python=remote_python,
                                           known_hosts=ssh_known_hosts, accept_new_host_keys=ssh_accept_new_host_keys),
                               owner_mode=True)  # each job runs as its owner (with a root login)
    else:
        executor = LocalExecutor(state_dir, owner_mode=True)  # each job runs as its owner (if root)

    from adsched.standalone.metrics import MetricsWriter

    metrics = MetricsWriter(store, metrics_file)  # the cycle-duration histogram, and the textfile

    server = None
    if store.config.backend == "standalone":
        lock_down_state(state_dir, Store.DB_NAME)
        server = SocketServer(state_dir)
        me = current_identity()
        if me.uid != 0:
            click.echo(f"adsched: the daemon runs as {me.name} (uid {me.uid}), not root: it runs only {me.name}'s "
                       f"jobs and refuses other users' submissions", err=True)


    def show(r: CycleReport):
        metrics.after_cycle(r.now)
        if verbose and (r.started or r.ended):
            click.echo(f"{time.strftime('%H:%M:%S')} started={r.started} ended={r.ended} "
                       f"pending={r.pending} running={r.running}")

    try:
        Daemon(store, executor, server=server).run(once=once, until_idle=until_idle, max_seconds=max_seconds,
                                                   on_cycle=show)
    finally:
        if server is not None:
            server.close()


@main.group()
def config():
    """Cluster configuration commands."""


@config.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
@json_option
@library_errors
def config_check(path, as_json):
    """Validate a cluster TOML (or a shipped example: demo, mini8, ...); every error is listed with its key
    path (exit 2)."""
    c = load_config(path)
    summary = {"cluster": c.name, "nodes": len(c.nodes), "gpus": c.total_gpus, "leaves": len(c.leaves),
               "queues": list(c.queues), "warnings": list(c.warnings)}
    if as_json:
        print_json(summary)
    else:
        _warn(c)
        click.echo(f"{path}: OK — {summary['nodes']} nodes, {summary['gpus']} GPUs, {summary['leaves']} leaves, "
                   f"queues {', '.join(summary['queues'])}")


def _warn(config) -> None:
    for w in config.warnings:
        click.echo(f"warning: {w}", err=True)


@main.group(invoke_without_command=True)
@state_option
@json_option
@click.pass_context
@library_errors
def nodes(ctx, state_dir, as_json):
    """List nodes with their leaf switch, state and GPUs in use (like sinfo -N); drain or resume them."""
    if ctx.invoked_subcommand:  # adsched nodes drain|resume ...
        return
    rows = Store(state_dir).nodes()
    if as_json:
        print_json(rows)
        return
    print_table(["NODE", "LEAF", "STATE", "GPUS", "USED", "MODEL", "JOBS"],
                [[n["name"], n["leaf"], n["status"] + (f" ({n['reason']})" if n["reason"] else ""), n["gpus"],
                  n["gpus_used"], n["gpu_model"], ",".join(map(str, n["jobs"])) or "-"] for n in rows])


def _where(job, config) -> str:
    """node[05-08] for whole nodes, node02:gpu2,3 for a share of one."""
    if not job.allocations:
        return "-"
    nodes = [a["node"] for a in job.allocations]
    if all(len(a["gpus"]) == config.node(a["node"]).gpus for a in job.allocations):
        return compress(nodes)
    return " ".join(f"{a['node']}:gpu{','.join(map(str, a['gpus']))}" for a in job.allocations)


@main.command()
@click.option("--state", "state_dir", default="./demo-state", show_default=True, type=click.Path(file_okay=False),
              help="Where the demo keeps its store and job output (wiped first).")
@json_option
@library_errors
def demo(state_dir, as_json):
    """Run the embedded default: the 16-node demo cluster, a mixed workload, the daemon until all end."""
    t0 = time.time()

    def progress(r: CycleReport):
        if not as_json and (r.started or r.ended):
            click.echo(f"[{time.time() - t0:5.1f}s] started {r.started or '-'}  ended {r.ended or '-'}  "
                       f"pending {r.pending}  running {r.running}", err=True)

    jobs = run_demo(state_dir, on_cycle=progress)
    store = Store(state_dir)
    leaf = {n.name: n.leaf for n in store.config.nodes}
    if as_json:
        print_json([j.to_dict() for j in jobs])
        return
    rows = []
    for j in jobs:
        placed = sorted({a["node"] for a in j.allocations})
        rows.append([j.id, j.name, j.queue, f"{j.num_nodes}x{j.gpus_per_node}", j.state,
                     f"{j.start_time - j.submit_time:.1f}s" if j.start_time else "-",
                     _where(j, store.config),
                     ",".join(sorted({leaf[n] for n in placed})) or "-"])
    print_table(["JOBID", "NAME", "QUEUE", "SHAPE", "STATE", "WAIT", "RAN ON", "LEAVES"], rows)
    click.echo(f"\nstate and job output in {state_dir}; try: adsub queue -a --state {state_dir}")


main.add_command(hook)
main.add_command(minicluster)
main.add_command(sim)
main.add_command(slurm)

# sshare, scontrol update nodename, metrics: in admincmds.py
from .admincmds import drain, metrics, resume, share  # noqa: E402

main.add_command(share)
main.add_command(metrics)
nodes.add_command(drain)
nodes.add_command(resume)

if __name__ == "__main__":  # pragma: no cover
    main()
