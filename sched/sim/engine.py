"""Discrete-event simulator: a virtual clock around the very `schedule()` the daemon calls.

Events are job submissions (at the trace's submit time) and job ends (start + actual duration,
from the simulated executor). All events at one instant are applied together, then one cycle
runs: `schedule(snapshot, config, now)`; its starts become running jobs with an end event.
Cycles happen only at event times, never on a timer, so a year of trace is a few ten thousand
cycles. The simulator makes no decision of its own: a policy is a toggle of the core's config.

Decisions the core may grow are honoured when present:
  cancels      {job_id: reason}      the job leaves the pending set, counted as cancelled
  preemptions  job ids (or objects with .job_id)   the job stops, gives back its GPUs and is
               requeued; it reruns in full (no checkpoint), and each stop is counted
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from ..config import ClusterConfig
from ..invariants import check
from ..model import RunningJob, Snapshot
from ..schedule import schedule
from .traces import SimJob, Workload

# name -> (backfill, topology_aware): each step of the ladder adds one feature of the core.
POLICIES: dict[str, dict[str, bool]] = {
    "fifo": {"backfill": False, "topology_aware": False},  # strict priority order, first fit
    "backfill-flat": {"backfill": True, "topology_aware": False},  # backfill, first fit by node order
    "adsched": {"backfill": True, "topology_aware": True},  # the full core
}


def policy_config(config: ClusterConfig, policy: str) -> ClusterConfig:
    try:
        toggles = POLICIES[policy]
    except KeyError:
        raise ValueError(f"unknown policy {policy!r} (known: {', '.join(POLICIES)})") from None
    return replace(config, scheduler=replace(config.scheduler, **toggles))


@dataclass
class SimResult:
    policy: str
    config: ClusterConfig
    jobs: list[SimJob]
    start: list[float | None]  # per job (index into `jobs`): its (last) start time, None if never
    end: list[float | None]
    leaves: list[int]  # leaf switches the job's placement spans (0 if it never started)
    preemptions: int = 0
    cancelled: dict[int, str] = field(default_factory=dict)  # job id -> reason
    cycles: int = 0
    busy: list[tuple[float, int]] = field(default_factory=list)  # (time, GPUs busy) after each cycle
    wall_seconds: float = 0.0
    schedule_seconds: float = 0.0  # inside schedule()
    check_seconds: float = 0.0  # inside invariants.check()


def _job_id(item) -> int:
    return item if isinstance(item, int) else item.job_id


def simulate(workload: Workload | list[SimJob], config: ClusterConfig, policy: str | None = None,
             check_invariants: bool = False, progress: Callable[[int], None] | None = None) -> SimResult:
    """Replay `workload` on `config` (with `policy`'s toggles, when given) and record every job.

    `progress(n)` is called now and then with the number of jobs finished since the last call.
    """
    jobs = workload.jobs if isinstance(workload, Workload) else list(workload)
    jobs = sorted(jobs, key=lambda s: (s.job.submit_time, s.job.id))
    if policy is not None:
        config = policy_config(config, policy)
    n = len(jobs)
    index = {s.job.id: k for k, s in enumerate(jobs)}
    if len(index) != n:
        raise ValueError("job ids must be unique")
    res = SimResult(policy=policy or "config", config=config, jobs=jobs,
                    start=[None] * n, end=[None] * n, leaves=[0] * n)
    leaf_of = {node.name: node.leaf for node in config.nodes}

    pending: dict[int, object] = {}  # job id -> Job, in submit order
    running: dict[int, RunningJob] = {}
    ends: list[tuple[float, int, int]] = []  # (end time, job index, run token)
    token = [0] * n  # bumped on preemption: a stale end event is ignored
    busy = 0
    next_sub = 0
    finished_since = 0
    t_sched = t_check = 0.0
    clock = time.perf_counter
    wall0 = clock()
    getattr_ = getattr

    while next_sub < n or ends:
        now = ends[0][0] if ends else jobs[next_sub].job.submit_time
        if next_sub < n and jobs[next_sub].job.submit_time < now:
            now = jobs[next_sub].job.submit_time
        # 1. every event at `now`: job ends, then submissions
        while ends and ends[0][0] <= now:
            _, k, tok = heapq.heappop(ends)
            if tok != token[k]:
                continue
            run = running.pop(jobs[k].job.id)
            busy -= run.job.total_gpus
            res.end[k] = now
            finished_since += 1
        while next_sub < n and jobs[next_sub].job.submit_time <= now:
            job = jobs[next_sub].job
            pending[job.id] = job
            next_sub += 1
        if not pending:
            res.busy.append((now, busy))
            continue
        # 2. one cycle of the real core
        snap = Snapshot(pending=tuple(pending.values()), running=tuple(running.values()))
        c0 = clock()
        decisions = schedule(snap, config, now)
        c1 = clock()
        t_sched += c1 - c0
        if check_invariants:
            check(snap, decisions, config)
            t_check += clock() - c1
        res.cycles += 1
        # 3. apply: cancels, preemptions, starts
        for job_id in getattr_(decisions, "cancels", None) or ():
            if pending.pop(job_id, None) is not None:
                res.cancelled[job_id] = decisions.cancels[job_id]
                finished_since += 1
        for item in getattr_(decisions, "preemptions", None) or ():
            job_id = _job_id(item)
            run = running.pop(job_id, None)
            if run is None:
                continue
            k = index[job_id]
            token[k] += 1
            busy -= run.job.total_gpus
            res.preemptions += 1
            res.start[k] = None
            pending[job_id] = run.job
        for start in decisions.starts:
            job = pending.pop(start.job_id)
            k = index[start.job_id]
            running[job.id] = RunningJob(job, now, start.placement)
            busy += job.total_gpus
            res.start[k] = now
            if job.num_nodes > 1:
                res.leaves[k] = len({leaf_of[a.node] for a in start.placement})
            elif start.placement:
                res.leaves[k] = 1
            heapq.heappush(ends, (now + jobs[k].duration, k, token[k]))
        res.busy.append((now, busy))
        if progress is not None and finished_since >= 500:
            progress(finished_since)
            finished_since = 0
    if progress is not None and finished_since:
        progress(finished_since)
    res.wall_seconds = clock() - wall0
    res.schedule_seconds = t_sched
    res.check_seconds = t_check
    return res
