"""adsub: submit and watch jobs (users)."""

from __future__ import annotations

import gc
import os
import shlex
import time

import click

from adsched.errors import InvalidRequest
from adsched.inputcheck import printable
from adsched.core.hostlist import compress
from adsched.jobspec import check_workdir
from adsched.backend import open_backend
from adsched.specfile import load_job_file, read_spec_lines, request
from adsched.standalone.auth import current_identity
from adsched.standalone.remote import RemoteStore
from adsched.standalone.store import JobRecord, Store
from adsched.core.timefmt import format_duration

from .common import json_option, library_errors, print_json, print_table, state_option
from .lazy import LazyGroup

# What the imports made lives as long as an `adsub` process: the collector need not look at it again. Its passes
# over these objects (mostly the collections at exit) were ~6% of one `adsub submit`'s instructions.
gc.freeze()


def _user() -> str:
    """The caller's real uid's name: $USER and $LOGNAME are not identity (anyone can set them)."""
    return current_identity().name


# sacct, sprio and scontrol hold/release/update: in usercmds.py, imported only when run (lazy.py).
USERCMDS = {name: f"adsched.cli.usercmds:{name}" for name in ("acct", "prio", "hold", "release", "update")}


@click.group(cls=LazyGroup, lazy_commands={**USERCMDS, "history": USERCMDS["acct"]},
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adsched")
def main():
    """Submit GPU jobs to adsched and follow them (like sbatch/squeue/scancel)."""


@main.command(context_settings={"ignore_unknown_options": False})
@state_option
@click.option("-N", "--nodes", type=int, default=None, help="Nodes (ranks), all started together.  [default: 1]")
@click.option("--gpus-per-node", type=int, default=None, help="GPUs per node.  [default: all of a node]")
@click.option("--gpus", default=None, metavar="N|PROFILE:N",
              help="GPUs on one node (sub-node job), or MIG slices: --gpus 1g.10gb:2.")
@click.option("-q", "-p", "--queue", "--partition", "queue", default=None,
              help="Queue (partition).  [default: the cluster's default]")
@click.option("-t", "--time", "time_limit", default=None, help="Time limit: MM, HH:MM:SS or D-HH:MM:SS.")
@click.option("-J", "--job-name", default=None, help="Job name.  [default: the command's name]")
@click.option("--max-leaves", type=int, default=None, help="Run within at most this many leaf switches.")
@click.option("--priority", type=int, default=None, help="Your own priority within the queue tier.")
@click.option("-D", "--chdir", default=None, help="Working directory.  [default: here]")
@click.option("-a", "--array", default=None, metavar="SPEC", help="A job array: 0-999%50 (at most 50 at once).")
@click.option("-d", "--dependency", default=None, metavar="SPEC", help="afterok:ID[:ID],afterany:ID")
@click.option("--signal", default=None, metavar="SIG[@SECS]",
              help="Signal sent before a preemption kill, e.g. USR1@120 to checkpoint.  [default: the queue's]")
@click.option("--no-requeue", is_flag=True, default=None, help="If preempted, cancel instead of requeueing.")
@click.option("--test-only", is_flag=True, help="Print the estimated start and placement; submit nothing.")
@click.option("--file", "spec_file", default=None,
              help="Submit every job spec of FILE (one JSON object or TOML inline table a line) at once.")
@json_option
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@library_errors
def submit(state_dir, nodes, gpus_per_node, gpus, queue, time_limit, job_name, max_leaves, priority, chdir,
           array, dependency, signal, no_requeue, test_only, spec_file, as_json, args):
    """Submit a job: `adsub submit -N 4 -q train -- python train.py`, or a job TOML file.

    A job TOML file holds the same settings (command, nodes, gpus_per_node, gpus, queue,
    time, name, priority, max_leaves, workdir, env, array, dependency, signal, no_requeue);
    flags override it. Each array task gets ADSCHED_ARRAY_TASK_ID.
    """
    spec: dict = {}
    command = list(args)
    if len(command) == 1 and command[0].endswith(".toml") and os.path.isfile(command[0]):
        spec = load_job_file(command[0])
        command = spec.pop("command", [])
    for key, value in (("nodes", nodes), ("gpus_per_node", gpus_per_node), ("gpus", gpus), ("queue", queue),
                       ("time", time_limit), ("name", job_name), ("max_leaves", max_leaves),
                       ("priority", priority), ("workdir", chdir), ("array", array), ("dependency", dependency),
                       ("signal", signal), ("no_requeue", no_requeue)):
        if value is not None:
            spec[key] = value
    if spec_file:
        _submit_file(state_dir, spec_file, spec, command, test_only, as_json)
        return
    req = request(spec, command, _user())
    backend = open_backend(state_dir)
    check_workdir(backend.config, req.workdir)  # here, as the submitter: the daemon may be root
    if test_only:
        if not isinstance(backend, (Store, RemoteStore)):
            raise InvalidRequest("--test-only needs the standalone backend (on Slurm: sbatch --test-only)")
        _print_explanation(backend.test_only(req, time.time()), as_json, backend, test_only=True)
        return
    job_id = backend.submit(req, time.time())
    if as_json:
        print_json({"job_id": job_id})
    elif req.array:
        click.echo(f"Submitted job array {job_id}")
    else:
        click.echo(f"Submitted job {job_id}")


def _submit_file(state_dir, path: str, flags: dict, command: list[str], test_only: bool, as_json: bool) -> None:
    """`submit --file`: each line's spec with the flags over it, all in one transaction."""
    if test_only:
        raise InvalidRequest("--test-only takes one job, not --file")
    if command:
        raise InvalidRequest("--file takes the commands from the file; give none after it")
    user, cwd = _user(), os.getcwd()
    reqs = []
    for spec in read_spec_lines(path):
        line_command = spec.pop("command", [])
        reqs.append(request({**spec, **flags}, line_command, user, cwd))
    store = _standalone(state_dir)
    for workdir in dict.fromkeys(req.workdir for req in reqs):  # each directory once, in file order
        check_workdir(store.config, workdir)
    ids = store.submit_many(reqs, time.time())
    if as_json:
        print_json({"job_ids": ids})
    else:
        click.echo(f"Submitted {len(ids)} jobs: {compress_ids(ids)}")


def compress_ids(ids: list[int]) -> str:
    """[1, 2, 3, 7] -> 1-3,7"""
    parts, start = [], None
    for i, job_id in enumerate(ids):
        if start is None:
            start = job_id
        if i + 1 == len(ids) or ids[i + 1] != job_id + 1:
            parts.append(str(start) if start == job_id else f"{start}-{job_id}")
            start = None
    return ",".join(parts)


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "unknown (no capacity estimate applies)"
    if ts <= now:
        return "now"
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(ts))} (in {format_duration(ts - now)})"


def _print_explanation(e, as_json: bool, store: Store, test_only: bool = False) -> None:
    now = time.time()
    if as_json:
        print_json({"job_id": None if test_only else e.job_id, "queue": e.queue, "state": e.state,
                    "position": e.position, "queue_length": e.queue_length, "reason": e.reason,
                    "constraint": e.constraint, "waiting_for": e.waiting_for, "estimated_start": e.estimated_start,
                    "estimated_nodes": list(e.estimated_nodes)})
        return
    leaf = {n.name: n.leaf for n in store.config.nodes}
    where = compress(list(e.estimated_nodes))
    leaves = sorted({leaf[n] for n in e.estimated_nodes})
    head = "If submitted now" if test_only else f"Job {e.job_id}"
    click.echo(f"{head}: queue {e.queue}, position {e.position} of {e.queue_length}")
    if e.state == "starts":
        click.echo(f"  starts in the next cycle on {where} ({', '.join(leaves)})")
        return
    click.echo(f"  {'cancelled' if e.state == 'cancelled' else 'waits'}: {e.reason}")
    if e.waiting_for is not None:
        click.echo(f"  waiting for job {e.waiting_for}")
    click.echo(f"  earliest estimated start: {_when(e.estimated_start, now)}")
    if where:
        click.echo(f"  on: {where} ({', '.join(leaves)})")


def _gpus(j: JobRecord) -> str:
    if j.mig_profile:
        return f"{j.mig_count}x{j.mig_profile}"
    return str(j.num_nodes * j.gpus_per_node)


def _elapsed(j: JobRecord, now: float) -> str:
    if j.start_time is None:
        return "0:00"
    return format_duration((j.end_time or now) - j.start_time)


SHORT = {"PENDING": "PD", "RUNNING": "R", "COMPLETED": "CD", "FAILED": "F", "CANCELLED": "CA", "TIMEOUT": "TO"}


@main.command()
@state_option
@click.option("-a", "--all", "show_all", is_flag=True, help="Include ended jobs.")
@click.option("-u", "--user", default=None, help="Only this user's jobs.")
@click.option("-q", "-p", "--queue", "--partition", "queue", default=None, help="Only this queue (partition).")
@click.option("-t", "--states", "states_text", default=None, metavar="LIST", help="Only these states, e.g. PD,R or CD.")
@click.option("--start", "with_start", is_flag=True,
              help="Only pending jobs, with the start the scheduler expects (squeue --start): the jobs it would "
                   "start now or holds a reservation for; N/A for the others.")
@json_option
@library_errors
def queue(state_dir, show_all, user, queue, states_text, with_start, as_json):
    """List jobs like squeue: pending and running (all with -a)."""
    from adsched import jobrefs  # not on submit's path

    backend, states = open_backend(state_dir), None if show_all else ("PENDING", "RUNNING")
    if states_text:
        from adsched.standalone.accounting import parse_states

        states = parse_states(states_text)
    if with_start:
        states = ("PENDING",)
    now = time.time()
    starts = backend.estimated_starts(now) if with_start else {}
    if as_json:
        rows = [j.to_dict() for j in backend.jobs(states=states, user=user, queue=queue)]
        print_json([{**r, "estimated_start": starts.get(r["id"])} for r in rows] if with_start else rows)
        return
    jobs = backend.listing(states=states, user=user, queue=queue)  # only the columns shown: fast on 10,000
    if with_start:
        rows = [[label, j.queue, j.name[:20], j.user, SHORT.get(j.state, j.state), _start_cell(starts.get(j.id), now),
                 j.num_nodes, _gpus(j), f"({j.reason or 'None'})"] for label, j, _ in jobrefs.group_arrays(jobs)]
        print_table(["JOBID", "QUEUE", "NAME", "USER", "ST", "START_TIME", "NODES", "GPUS", "REASON"], rows)
        return
    rows = [[label, j.queue, j.name[:20], j.user, SHORT.get(j.state, j.state), _elapsed(j, now), j.num_nodes,
             _gpus(j), compress(j.nodelist.split(",")) if j.state != "PENDING" else f"({j.reason or 'None'})"]
            for label, j, _ in jobrefs.group_arrays(jobs)]  # an array's pending tasks: one 123_[4-99%5] line
    print_table(["JOBID", "QUEUE", "NAME", "USER", "ST", "TIME", "NODES", "GPUS", "NODELIST(REASON)"], rows)


def _start_cell(ts: float | None, now: float) -> str:
    """squeue --start's START_TIME: local ISO time, N/A without an estimate."""
    return "N/A" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(max(ts, now)))


@main.command()
@state_option
@click.argument("job_ref")
@json_option
@library_errors
def show(state_dir, job_ref, as_json):
    """Show one job in full, with its history (JOB_REF: 123, or an array's task: 123_4)."""
    from adsched import jobrefs  # not on submit's path

    backend = open_backend(state_dir)
    job_id = jobrefs.one(backend, job_ref)
    job = backend.job(job_id)
    events = backend.events(job_id)
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
        click.echo(f"{k:>12}: {printable(v)}")  # a newline or escape in a value stays visible, on its line
    for a in job.allocations:
        gpus = f" gpus={','.join(map(str, a['gpus']))}" if a["gpus"] else ""  # unknown on Slurm
        click.echo(f"{'Rank ' + str(a['rank']):>12}: {a['node']}{gpus}")
    click.echo("     History:")
    for e in events:
        click.echo(f"    {time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(e['time']))}  {e['kind']}  {e['data']}")


@main.command()
@state_option
@click.argument("job_ref")
@json_option
@library_errors
def explain(state_dir, job_ref, as_json):
    """Why is my job pending? Its position, what blocks it, its earliest estimated start and place
    (JOB_REF: 123, or an array's task: 123_4)."""
    from adsched import jobrefs  # not on submit's path

    backend = open_backend(state_dir)
    job_id = jobrefs.one(backend, job_ref)
    if not isinstance(backend, Store):  # Slurm (controller mode): the core's view of Slurm's queue
        _print_explanation(backend.explain(job_id, time.time()), as_json, backend)
        return
    store = _standalone(state_dir)
    job = store.job(job_id)
    if job.state == "RUNNING" and job.preempted_by:
        msg = {"job_id": job_id, "state": job.state, "reason": f"being preempted by job {job.preempted_by}"}
        print_json(msg) if as_json else click.echo(f"Job {job_id}: running, {msg['reason']}")
        return
    if job.state != "PENDING":
        msg = {"job_id": job_id, "state": job.state, "reason": job.reason, "nodes": job.nodelist}
        if as_json:
            print_json(msg)
        else:
            click.echo(f"Job {job_id}: {job.state}" + (f" on {job.nodelist}" if job.nodelist else "")
                       + (f" ({job.reason})" if job.reason else ""))
        return
    _print_explanation(store.explain(job_id, time.time()), as_json, store)


def _standalone(state_dir) -> Store:
    store = open_backend(state_dir)  # the store or its daemon; a Slurm cluster's backend is refused below
    if store.config.backend != "standalone":
        raise InvalidRequest(f"this command needs the standalone backend; cluster {store.config.name} runs on Slurm")
    return store


@main.command()
@state_option
@click.argument("job_id", type=int, required=False)
@library_errors
def checkpointed(state_dir, job_id):
    """Report that a running job saved a checkpoint (preemption then counts less work lost).

    Inside a job, the job id defaults to $ADSCHED_JOB_ID.
    """
    if job_id is None:
        env_id = os.environ.get("ADSCHED_JOB_ID", "")
        if not env_id.isdigit():
            raise InvalidRequest("give a job id (or run inside a job, where ADSCHED_JOB_ID is set)")
        job_id = int(env_id)
    _standalone(state_dir).checkpointed(job_id, time.time())
    click.echo(f"job {job_id}: checkpoint recorded")


@main.command()
@state_option
@click.argument("job_ids", nargs=-1, required=True)
@json_option
@library_errors
def cancel(state_dir, job_ids, as_json):
    """Cancel jobs: pending ones at once, running ones when the daemon stops their ranks.

    An array's id cancels every task; 123_4, 123_* and 123_[0-9] name tasks (as scancel).
    """
    from adsched import jobrefs  # not on submit's path

    results = jobrefs.cancel(open_backend(state_dir), list(job_ids), time.time(), by=current_identity())
    if as_json:
        print_json(results)
    else:
        for job_id, state in results.items():
            click.echo(f"job {job_id}: {state}")


if __name__ == "__main__":  # pragma: no cover
    main()
