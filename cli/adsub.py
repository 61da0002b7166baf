"""adsub: submit and watch jobs (users)."""

from __future__ import annotations

import getpass
import os
import shlex
import sys
import time
from pathlib import Path

import click

from adsched.config import tomllib
from adsched.errors import InvalidRequest
from adsched.store import JobRecord, JobRequest, Store
from adsched.timefmt import format_duration

from .common import CommandError, json_option, library_errors, print_json, print_table, state_option

JOB_FILE_KEYS = {"command", "nodes", "gpus_per_node", "gpus", "queue", "time", "name", "priority", "max_leaves",
                 "workdir", "env"}


def _user() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return str(os.getuid())


def load_job_file(path: str) -> dict:
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise InvalidRequest(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidRequest(f"{path}: malformed TOML: {e}") from None
    unknown = sorted(set(data) - JOB_FILE_KEYS)
    if unknown:
        raise InvalidRequest(f"{path}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(JOB_FILE_KEYS))})")
    if isinstance(data.get("command"), str):
        data["command"] = shlex.split(data["command"])
    return data


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adsched")
def main():
    """Submit GPU jobs to adsched and follow them (like sbatch/squeue/scancel)."""


@main.command(context_settings={"ignore_unknown_options": False})
@state_option
@click.option("-N", "--nodes", type=int, default=None, help="Nodes (ranks), all started together.  [default: 1]")
@click.option("--gpus-per-node", type=int, default=None, help="GPUs per node.  [default: all of a node]")
@click.option("--gpus", type=int, default=None, help="GPUs on one node, for sub-node jobs.")
@click.option("-q", "--queue", default=None, help="Queue (partition).  [default: the cluster's default]")
@click.option("-t", "--time", "time_limit", default=None, help="Time limit: MM, HH:MM:SS or D-HH:MM:SS.")
@click.option("-J", "--job-name", default=None, help="Job name.  [default: the command's name]")
@click.option("--max-leaves", type=int, default=None, help="Run within at most this many leaf switches.")
@click.option("--priority", type=int, default=None, help="Your own priority within the queue tier.")
@click.option("-D", "--chdir", default=None, type=click.Path(), help="Working directory.  [default: here]")
@json_option
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@library_errors
def submit(state_dir, nodes, gpus_per_node, gpus, queue, time_limit, job_name, max_leaves, priority, chdir,
           as_json, args):
    """Submit a job: `adsub submit -N 4 -q train -- python train.py`, or a job TOML file.

    A job TOML file holds the same settings (command, nodes, gpus_per_node, gpus, queue,
    time, name, priority, max_leaves, workdir, env); flags override it.
    """
    spec: dict = {}
    command = list(args)
    if len(command) == 1 and command[0].endswith(".toml") and os.path.isfile(command[0]):
        spec = load_job_file(command[0])
        command = spec.pop("command", [])
    for key, value in (("nodes", nodes), ("gpus_per_node", gpus_per_node), ("gpus", gpus), ("queue", queue),
                       ("time", time_limit), ("name", job_name), ("max_leaves", max_leaves),
                       ("priority", priority), ("workdir", chdir)):
        if value is not None:
            spec[key] = value
    spec.setdefault("nodes", 1)
    spec.setdefault("priority", 0)
    spec["workdir"] = os.path.abspath(spec.get("workdir", "."))
    req = JobRequest(command=command, user=_user(), **spec)
    job_id = Store(state_dir).submit(req, time.time())
    if as_json:
        print_json({"job_id": job_id})
    else:
        click.echo(f"Submitted job {job_id}")


def _gpus(j: JobRecord) -> int:
    return j.num_nodes * j.gpus_per_node


def _elapsed(j: JobRecord, now: float) -> str:
    if j.start_time is None:
        return "0:00"
    return format_duration((j.end_time or now) - j.start_time)


SHORT = {"PENDING": "PD", "RUNNING": "R", "COMPLETED": "CD", "FAILED": "F", "CANCELLED": "CA", "TIMEOUT": "TO"}


@main.command()
@state_option
@click.option("-a", "--all", "show_all", is_flag=True, help="Include ended jobs.")
@click.option("-u", "--user", default=None, help="Only this user's jobs.")
@click.option("-q", "--queue", default=None, help="Only this queue.")
@json_option
@library_errors
def queue(state_dir, show_all, user, queue, as_json):
    """List jobs like squeue: pending and running (all with -a)."""
    store = Store(state_dir)
    jobs = store.jobs(states=None if show_all else ("PENDING", "RUNNING"), user=user, queue=queue)
    if as_json:
        print_json([j.to_dict() for j in jobs])
        return
    now = time.time()
    rows = [[j.id, j.queue, j.name[:20], j.user, SHORT.get(j.state, j.state), _elapsed(j, now), j.num_nodes,
             _gpus(j), j.nodelist if j.state != "PENDING" else f"({j.reason or 'None'})"] for j in jobs]
    print_table(["JOBID", "QUEUE", "NAME", "USER", "ST", "TIME", "NODES", "GPUS", "NODELIST(REASON)"], rows)


@main.command()
@state_option
@click.argument("job_id", type=int)
@json_option
@library_errors
def show(state_dir, job_id, as_json):
    """Show one job in full, with its history."""
    store = Store(state_dir)
    job = store.job(job_id)
    events = store.events(job_id)
    if as_json:
        print_json({**job.to_dict(), "events": events})
        return
    fields = [("JobId", job.id), ("Name", job.name), ("User", job.user), ("Queue", job.queue),
              ("State", job.state), ("Reason", job.reason or "None"), ("Nodes", job.num_nodes),
              ("GpusPerNode", job.gpus_per_node), ("MaxLeaves", job.max_leaves or "-"),
              ("TimeLimit", format_duration(job.time_limit)), ("Priority", job.priority),
              ("NodeList", job.nodelist or "-"), ("ExitCode", "-" if job.exit_code is None else job.exit_code),
              ("Command", shlex.join(job.command)), ("WorkDir", job.workdir)]
    for k, v in fields:
        click.echo(f"{k:>12}: {v}")
    for a in job.allocations:
        click.echo(f"{'Rank ' + str(a['rank']):>12}: {a['node']} gpus={','.join(map(str, a['gpus']))}")
    click.echo("     History:")
    for e in events:
        click.echo(f"    {time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(e['time']))}  {e['kind']}  {e['data']}")


@main.command()
@state_option
@click.argument("job_ids", type=int, nargs=-1, required=True)
@json_option
@library_errors
def cancel(state_dir, job_ids, as_json):
    """Cancel jobs: pending ones at once, running ones when the daemon stops their ranks."""
    store = Store(state_dir)
    results = {}
    for job_id in job_ids:
        results[job_id] = store.cancel(job_id, time.time())
    if as_json:
        print_json(results)
    else:
        for job_id, state in results.items():
            click.echo(f"job {job_id}: {state}")


if __name__ == "__main__":  # pragma: no cover
    main()
