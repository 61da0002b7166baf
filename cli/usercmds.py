"""adsub's accounting, priority and job-control commands (sacct, sprio, scontrol hold/release/update).

Thin: one library call each (sched/standalone/accounting.py, priority.py, jobctl.py).
"""

from __future__ import annotations

import time

import click

from adsched.errors import AdschedError

from .common import json_option, library_errors, print_json, print_table, state_option


def local_store(state_dir):
    """The store itself (these commands read its history); a store this user cannot read is said."""
    from adsched.backend import open_backend
    from adsched.publicconfig import read_public_config
    from adsched.standalone.remote import needs_daemon

    if needs_daemon(state_dir) and read_public_config(state_dir) is None:
        raise AdschedError(f"the store in {state_dir} belongs to another user; this command reads it directly "
                           "(ask an admin, or run it as the store's owner)")
    store = open_backend(state_dir)  # a Slurm cluster's store may be unreadable: its public config says Slurm
    if store.config.backend != "standalone":
        from adsched.errors import InvalidRequest

        raise InvalidRequest(f"this command needs the standalone backend; cluster {store.config.name} runs on Slurm "
                             "(there: sacct, sprio, sshare, scontrol)")
    return store


@click.command()
@state_option
@click.option("-u", "--user", default=None, help="Only this user's jobs.")
@click.option("-q", "-p", "--queue", "--partition", "queue", default=None, help="Only this queue (partition).")
@click.option("-s", "-t", "--states", default=None, metavar="LIST",
              help="States, e.g. CD,F or completed,failed.  [default: every final state]")
@click.option("-S", "--starttime", default=None, metavar="TIME",
              help="Jobs that ended at or after TIME: 2026-12-03, 2026-12-03T08:00, now-2h, epoch seconds.")
@click.option("-E", "--endtime", default=None, metavar="TIME", help="Jobs that ended at or before TIME.")
@click.option("-o", "--format", "format_text", default=None, metavar="FIELDS",
              help="Columns, e.g. JobID,State,ExitCode,GPUHours (sacct's names; see --help-format).")
@click.option("--help-format", is_flag=True, help="List the --format fields and exit.")
@json_option
@library_errors
def acct(state_dir, user, queue, states, starttime, endtime, format_text, help_format, as_json):
    """Finished jobs with state, exit code, times, wait, GPU-hours, nodes and leaves (like sacct)."""
    from adsched.standalone import accounting

    if help_format:
        click.echo(" ".join(h for h, _ in accounting.FIELDS.values()))
        return
    now = time.time()
    keys = accounting.columns(format_text)  # bad input fails before the store is opened
    wanted = accounting.parse_states(states)
    since = accounting.parse_time(starttime, now, "--starttime") if starttime else None
    until = accounting.parse_time(endtime, now, "--endtime") if endtime else None
    records = accounting.accounting(local_store(state_dir), wanted, user=user, queue=queue, since=since, until=until)
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    print_table(*accounting.table(records, keys))


@click.command()
@state_option
@click.option("-u", "--user", default=None, help="Only this user's jobs.")
@click.option("-q", "-p", "--queue", "--partition", "queue", default=None, help="Only this queue (partition).")
@click.option("-j", "--jobs", "job_ids", default=None, metavar="ID[,ID]", help="Only these jobs.")
@click.option("-w", "--weights", "show_weights", is_flag=True, help="Print the weights from the cluster TOML only.")
@json_option
@library_errors
def prio(state_dir, user, queue, job_ids, show_weights, as_json):
    """Each pending job's priority in its factors, in the order the next cycle considers them (like sprio).

    Jobs are ordered by queue tier first, then by SCORE = AGE + FAIRSHARE + SIZE + PRIORITY, each
    a weight from [scheduler] times its factor; ties go to the earlier submit, then the lower id.
    """
    from adsched.errors import InvalidRequest
    from adsched.standalone import priority

    ids: tuple[int, ...] = ()
    if job_ids:
        try:
            ids = tuple(int(i) for i in job_ids.split(","))
        except ValueError:
            raise InvalidRequest(f"--jobs: {job_ids!r} is not a list of job ids like 12,13") from None
    store = local_store(state_dir)
    if show_weights:
        w = priority.weights(store.config)
        if as_json:
            print_json(w)
        else:
            print_table(["AGE", "FAIRSHARE", "SIZE", "PRIORITY", "AGE_MAX", "HALF_LIFE"],
                        [[f"{w['age']:g}", f"{w['fairshare']:g}", f"{w['size']:g}", f"{w['priority']:g}",
                          _span(w["age_max"]), _span(w["fairshare_half_life"])]])
        return
    rows = priority.prio(store, time.time(), user=user, queue=queue, job_ids=ids)
    if as_json:
        print_json({"weights": priority.weights(store.config), "jobs": [r.to_dict() for r in rows]})
        return
    print_table(["RANK", "JOBID", "QUEUE", "USER", "TIER", "SCORE", "AGE", "FAIRSHARE", "SIZE", "PRIORITY"],
                [[r.rank, r.job_id, r.queue, r.user, r.tier, f"{r.score:.4f}", f"{r.age:.4f}",
                  f"{r.fairshare:.4f}", f"{r.size:.4f}", f"{r.priority:.4f}"] for r in rows])


def _span(seconds) -> str:
    from adsched.core.timefmt import format_duration

    return format_duration(seconds)


def job_store(state_dir):
    """The store, or the daemon for a user who cannot write it; standalone clusters only."""
    from adsched.backend import open_backend
    from adsched.errors import InvalidRequest

    store = open_backend(state_dir)  # the store, or its daemon; on Slurm, a backend that says so below
    if store.config.backend != "standalone":
        raise InvalidRequest(f"this command needs the standalone backend; cluster {store.config.name} runs on "
                             "Slurm (use scontrol hold|release|update there)")
    return store


def _each(state_dir, job_ids, action, as_json):
    from adsched.standalone import jobctl
    from adsched.standalone.auth import current_identity

    store, who = job_store(state_dir), current_identity()
    results = {job_id: getattr(jobctl, action)(store, job_id, who, time.time()) for job_id in job_ids}
    if as_json:
        print_json(results)
    else:
        for job_id, result in results.items():
            click.echo(f"job {job_id}: {result}")


@click.command()
@state_option
@click.argument("job_ids", metavar="JOBID...", type=int, nargs=-1, required=True)
@json_option
@library_errors
def hold(state_dir, job_ids, as_json):
    """Hold pending jobs: not started until released (like scontrol hold)."""
    _each(state_dir, job_ids, "hold", as_json)


@click.command()
@state_option
@click.argument("job_ids", metavar="JOBID...", type=int, nargs=-1, required=True)
@json_option
@library_errors
def release(state_dir, job_ids, as_json):
    """Release held jobs (a hold an admin put on your job: only an admin releases it)."""
    _each(state_dir, job_ids, "release", as_json)


@click.command()
@state_option
@click.argument("job_id", metavar="JOBID", type=int)
@click.option("-t", "--time", "time_limit", default=None, help="New time limit (lower only, unless admin).")
@click.option("--priority", type=int, default=None, help="New own priority (admins only).")
@click.option("-q", "-p", "--queue", "--partition", "queue", default=None, help="New queue (pending jobs only).")
@json_option
@library_errors
def update(state_dir, job_id, time_limit, priority, queue, as_json):
    """Change a job's time limit, priority or queue (like scontrol update jobid=...)."""
    from adsched.core.timefmt import format_duration
    from adsched.standalone import jobctl
    from adsched.standalone.auth import current_identity

    changes = jobctl.update(job_store(state_dir), job_id, current_identity(), time.time(), time_limit=time_limit,
                            priority=priority, queue=queue)
    if as_json:
        print_json({"job_id": job_id, "changes": changes})
        return
    show = lambda k, v: format_duration(v) if k == "time_limit" else v
    click.echo(f"job {job_id}: " + ", ".join(f"{k} {show(k, old)} -> {show(k, new)}" for k, (old, new) in changes.items()))
