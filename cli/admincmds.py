"""adsched's admin commands beside the daemon: fair share (sshare), node drain/resume (scontrol update
nodename), metrics (Prometheus). Thin: one library call each."""

from __future__ import annotations

import time

import click

from .common import json_option, library_errors, print_json, print_table, state_option
from .usercmds import local_store


@click.command()
@state_option
@json_option
@library_errors
def share(state_dir, as_json):
    """Decayed GPU-hours per user and queue, their shares and fair-share factors (like sshare)."""
    from adsched.standalone import priority

    rows = priority.share(local_store(state_dir), time.time())
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    print_table(["KIND", "NAME", "GPU_HOURS", "NORM_USAGE", "SHARE", "FAIRSHARE"],
                [[r.kind, r.name, f"{r.usage_gpu_hours:.3f}", f"{r.norm_usage:.4f}", f"{r.share:.4f}",
                  f"{r.factor:.4f}"] for r in rows])


def _set_nodes(state_dir, node_exprs, state, reason, as_json):
    from adsched.standalone import nodeadmin
    from adsched.standalone.auth import current_identity

    names = nodeadmin.set_state(local_store(state_dir), node_exprs, state, reason, current_identity(), time.time())
    if as_json:
        print_json({"nodes": names, "state": state, "reason": reason})
    else:
        click.echo(f"{', '.join(names)}: {'drained' if state == 'drain' else 'resumed'}"
                   + (f" ({reason})" if state == "drain" else ""))


@click.command()
@state_option
@click.argument("node_exprs", metavar="NODE...", nargs=-1, required=True)
@click.option("--reason", default="", help="Why (required; shown beside the node, kept in its events).")
@json_option
@library_errors
def drain(state_dir, node_exprs, reason, as_json):
    """Drain nodes (node01 node[02-04]): no new rank starts there; running jobs finish. Admins only."""
    _set_nodes(state_dir, node_exprs, "drain", reason, as_json)


@click.command()
@state_option
@click.argument("node_exprs", metavar="NODE...", nargs=-1, required=True)
@click.option("--reason", default="", help="Why (kept in the node's events).")
@json_option
@library_errors
def resume(state_dir, node_exprs, reason, as_json):
    """Return drained or down nodes to service. Admins only."""
    _set_nodes(state_dir, node_exprs, "up", reason, as_json)


@click.command()
@state_option
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="Write to this file (atomically) instead of printing.")
@library_errors
def metrics(state_dir, output):
    """Prometheus text exposition: jobs by state and queue, GPUs per leaf, cycle durations, preemptions,
    pending reasons. `adsched run --metrics-file PATH` writes it after every cycle."""
    from adsched.standalone import metrics as exposition

    text = exposition.exposition(local_store(state_dir))
    if output:
        exposition.write_atomically(output, text)
    else:
        click.echo(text, nl=False)
