"""Accounting of finished jobs (`adsub acct` / `adsub history`, like sacct), from the store.

A job's runs come from its append-only events: each `start` opens a run, the next `requeue` or
`end` closes it. GPU-hours add up every run (a requeued job is charged for each attempt, as
fair share was), wait is from submit to the first start, nodes and leaves are the last run's.

Times on the command line (-S/-E, `parse_time`): an ISO date or date-time (local time), `now`,
`now-2h` (s, m, h, d, w), or seconds since the epoch. A job is in the window when it ended
within it (-S: at or after, -E: at or before).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime

from adsched.core.fairshare import gpu_equiv
from adsched.core.hostlist import compress
from adsched.core.timefmt import format_duration
from adsched.errors import InvalidRequest

from .store import CANCELLED, COMPLETED, FAILED, FINAL_STATES, PENDING, RUNNING, TIMEOUT, Store

# sacct's short state codes, both ways (queue's ST column uses the same).
STATE_CODES = {"PD": PENDING, "R": RUNNING, "CD": COMPLETED, "F": FAILED, "CA": CANCELLED, "TO": TIMEOUT}


@dataclass(frozen=True)
class AcctRecord:
    job_id: int
    name: str
    user: str
    queue: str
    state: str
    exit_code: int | None
    reason: str
    submit: float
    start: float | None  # of the last run
    end: float | None
    wait: float | None  # seconds from submit to the first start
    elapsed: float | None  # seconds of the last run
    gpus: float  # GPUs held while running (a MIG job: its sevenths of a GPU)
    gpu_hours: float  # over every run
    nodes: str  # the last run's, as a host list
    leaves: str  # the leaf switches of those nodes
    num_nodes: int
    restarts: int
    array_id: int | None
    array_index: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def parse_states(text: str | None) -> tuple[str, ...]:
    """"CD,F" or "completed,failed" -> the state names; None -> every final state."""
    if not text:
        return FINAL_STATES
    out = []
    for part in text.split(","):
        part = part.strip().upper()
        state = STATE_CODES.get(part, part)
        if state not in (*FINAL_STATES, PENDING, RUNNING):
            raise InvalidRequest(f"--states: unknown state {part!r} (CD, F, CA, TO, R, PD or their full names)")
        out.append(state)
    return tuple(out)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RELATIVE = re.compile(r"^now(?:-(\d+)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?|w|weeks?)?)?$")


def parse_time(text: str, now: float, option: str = "--starttime") -> float:
    """A time for -S/-E: ISO date or date-time (local), now, now-2h, or epoch seconds."""
    s = text.strip()
    m = _RELATIVE.match(s.lower())
    if m:
        count, unit = m.groups()
        return now - int(count or 0) * _UNITS[(unit or "s")[0]]
    try:
        return float(s)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(s).timestamp()
    except ValueError:
        raise InvalidRequest(f"{option}: {text!r} is not a time (2026-12-03, 2026-12-03T08:00, now-2h "
                             "or epoch seconds)") from None


def accounting(store: Store, states: tuple[str, ...] = FINAL_STATES, user: str | None = None,
               queue: str | None = None, since: float | None = None, until: float | None = None) -> list[AcctRecord]:
    """Jobs in `states` (finished ones by default) that ended within [since, until], oldest id first."""
    records = [j for j in store.jobs(states=states, user=user, queue=queue)
               if (since is None or (j.end_time is not None and j.end_time >= since))
               and (until is None or (j.end_time is not None and j.end_time <= until))]
    runs = _runs(store, [j.id for j in records])
    leaf_of = {n.name: n.leaf for n in store.config.nodes}
    now = time.time()
    out = []
    for j in records:
        job_runs = runs.get(j.id, [])
        gpus = gpu_equiv(j.as_job())
        hours = sum(((stop if stop is not None else now) - start) for start, stop in job_runs) * gpus / 3600.0
        first_start = job_runs[0][0] if job_runs else j.start_time
        nodes = [a["node"] for a in j.allocations] or [n for n in j.nodelist.split(",") if n]
        out.append(AcctRecord(
            job_id=j.id, name=j.name, user=j.user, queue=j.queue, state=j.state, exit_code=j.exit_code,
            reason=j.reason, submit=j.submit_time, start=j.start_time, end=j.end_time,
            wait=None if first_start is None else first_start - j.submit_time,
            elapsed=None if j.start_time is None else (j.end_time or now) - j.start_time,
            gpus=gpus, gpu_hours=hours, nodes=compress(nodes) if nodes else "",
            leaves=",".join(sorted({leaf_of[n] for n in nodes if n in leaf_of})), num_nodes=j.num_nodes,
            restarts=j.restart_count, array_id=j.array_id, array_index=j.array_index,
        ))
    return out


def _runs(store: Store, job_ids: list[int]) -> dict[int, list[tuple[float, float | None]]]:
    """Each job's runs, (start, stop) from its events; stop None while it still runs."""
    runs: dict[int, list[tuple[float, float | None]]] = {}
    for chunk in range(0, len(job_ids), 500):
        ids = job_ids[chunk : chunk + 500]
        for job_id, kind, at in store.conn.execute(
            f"SELECT job_id, kind, time FROM events WHERE kind IN ('start', 'requeue', 'end')"
            f" AND job_id IN ({','.join('?' * len(ids))}) ORDER BY id", ids,
        ):
            job_runs = runs.setdefault(job_id, [])
            if kind == "start":
                job_runs.append((at, None))
            elif job_runs and job_runs[-1][1] is None:
                job_runs[-1] = (job_runs[-1][0], at)
    return runs


# --format fields: sacct's names where the concept is the same (case-insensitive).
FIELDS = {
    "jobid": ("JobID", lambda r: r.job_id if r.array_id is None else f"{r.array_id}_{r.array_index}"),
    "jobname": ("JobName", lambda r: r.name[:20]),
    "user": ("User", lambda r: r.user),
    "partition": ("Partition", lambda r: r.queue),
    "queue": ("Queue", lambda r: r.queue),
    "state": ("State", lambda r: r.state),
    "exitcode": ("ExitCode", lambda r: "-" if r.exit_code is None else r.exit_code),
    "submit": ("Submit", lambda r: _clock(r.submit)),
    "start": ("Start", lambda r: _clock(r.start)),
    "end": ("End", lambda r: _clock(r.end)),
    "wait": ("Wait", lambda r: _span(r.wait)),
    "elapsed": ("Elapsed", lambda r: _span(r.elapsed)),
    "nnodes": ("NNodes", lambda r: r.num_nodes),
    "allocgpus": ("AllocGPUs", lambda r: f"{r.gpus:g}"),
    "gpuhours": ("GPUHours", lambda r: f"{r.gpu_hours:.2f}"),
    "nodelist": ("NodeList", lambda r: r.nodes or "-"),
    "leaves": ("Leaves", lambda r: r.leaves or "-"),
    "restarts": ("Restarts", lambda r: r.restarts),
    "reason": ("Reason", lambda r: r.reason or "-"),
}
DEFAULT_FORMAT = "JobID,JobName,User,Queue,State,ExitCode,Start,End,Wait,Elapsed,GPUHours,NodeList,Leaves,Restarts"


def columns(format_text: str | None) -> list[str]:
    """--format=JobID,State,... -> field keys; an unknown name is bad input."""
    keys = []
    for name in (format_text or DEFAULT_FORMAT).split(","):
        key = name.strip().lower()
        if key not in FIELDS:
            raise InvalidRequest(f"--format: unknown field {name.strip()!r} (fields: "
                                 f"{', '.join(h for h, _ in FIELDS.values())})")
        keys.append(key)
    return keys


def table(records: list[AcctRecord], keys: list[str]) -> tuple[list[str], list[list]]:
    return [FIELDS[k][0] for k in keys], [[FIELDS[k][1](r) for k in keys] for r in records]


def _clock(ts: float | None) -> str:
    return "Unknown" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts))


def _span(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(max(0.0, seconds))
