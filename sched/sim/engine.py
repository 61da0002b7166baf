"""Discrete-event simulator: a virtual clock around the very `schedule()` the daemon calls.

Events are job submissions (at the trace's submit time) and job ends (start + actual duration,
from the simulated executor). All events at one instant are applied together, then one cycle
runs: `schedule(snapshot, config, now)`; its starts become running jobs with an end event.
Cycles happen only at event times, never on a timer, so a year of trace is a few ten thousand
cycles. The simulator makes no decision of its own: a policy is a toggle of the core's config.

Decisions beyond starts are honoured as the daemon honours them:
  cancels      {job_id: reason}: the job leaves the pending set, counted as cancelled
  preemptions  [Preemption(victim_id, preemptor_id, reason)]: the victim is signalled and keeps
               its GPUs for its queue's grace_period (Snapshot.preempting tells the next cycles),
               then stops and is requeued whole; it reruns in full (the trace has no checkpoints).
               A victim whose own end comes first just ends. Each stop is counted.
  starts       a Start marked `borrowing` runs as a borrowing RunningJob, so a later cycle may
               reclaim it (as the store keeps `borrowing` for the daemon).
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from adsched.core.config import ALL, ClusterConfig
from adsched.core.invariants import check
from adsched.core.fairshare import accrue
from adsched.core.memo import Memo
from adsched.core.model import COMPLETED, RunningJob, Snapshot
from adsched.core.reasons import LEAF_WAIT
from adsched.core.schedule import schedule
from .traces import SimJob, Workload

# name -> scheduler settings: each step of the ladder adds one feature of the core.
POLICIES: dict[str, dict[str, object]] = {
    "fifo": {"backfill": False, "topology_aware": False},  # strict priority order, first fit
    "backfill-flat": {"backfill": True, "topology_aware": False},  # backfill, first fit by node order
    "adsched": {"backfill": True, "topology_aware": True},  # the full core, the config's reservation depth
    # conservative backfill: every blocked job reserved on the availability profile
    "conservative": {"backfill": True, "topology_aware": True, "reservation_depth": ALL},
}


def _wake_after_leaf_waits(decisions, wakes: list[float]) -> None:
    """A gang waiting for fewer leaves (scheduler.leaf_wait) must be decided again when its wait is over,
    as a daemon's next periodic cycle would: the replay otherwise cycles only when a job ends or arrives."""
    due = set(wakes)  # a job's wait ends at the same time every cycle: queued once
    for reason in decisions.pending_reasons.values():
        if reason.code == LEAF_WAIT and reason.time not in due:
            due.add(reason.time)
            heapq.heappush(wakes, reason.time)


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


def _victim(item) -> tuple[int, int | None]:
    """(victim id, preemptor id) of a Preemption (or of a bare job id)."""
    if isinstance(item, int):
        return item, None
    return getattr(item, "victim_id", getattr(item, "job_id", None)), getattr(item, "preemptor_id", None)


END, KILL = 0, 1
CANCELLED = "CANCELLED"


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
    events: list[tuple[float, int, int, int]] = []  # (time, job index, run token, END or KILL)
    token = [0] * n  # bumped when a run stops early: that run's pending events are stale
    victims: dict[int, int] = {}  # signalled victim id -> its preemptor id, while it drains
    wakes: list[float] = []  # when a LeafWait is over: a cycle is due then, even if nothing ends or arrives
    leaf_waits = config.scheduler.leaf_wait > 0 and config.scheduler.topology_aware
    # The rest of the snapshot contract (model.Snapshot), as the store keeps it: the final state
    # of jobs others depend on, and fair-share usage accrued at every instant (when weighed).
    finished: dict[int, str] = {}
    depended = {d for s in jobs for d in (*s.job.after_ok, *s.job.after_any)}
    fair = config.scheduler.weight_fairshare != 0
    user_usage: dict[str, float] = {}
    queue_usage: dict[str, float] = {}
    half_life = config.scheduler.fairshare_half_life
    usage_time: float | None = None
    busy = 0
    next_sub = 0
    finished_since = 0
    t_sched = t_check = 0.0
    memo = Memo()  # this replay's own: answers its cycles share, seen by no other run
    clock = time.perf_counter
    wall0 = clock()
    getattr_ = getattr

    while next_sub < n or events or wakes:
        now = events[0][0] if events else jobs[next_sub].job.submit_time if next_sub < n else wakes[0]
        if next_sub < n and jobs[next_sub].job.submit_time < now:
            now = jobs[next_sub].job.submit_time
        if wakes and wakes[0] < now:
            now = wakes[0]
        while wakes and wakes[0] <= now:
            heapq.heappop(wakes)
        # 1. every event at `now`: job ends and preemption kills, then submissions
        while events and events[0][0] <= now:
            _, k, tok, kind = heapq.heappop(events)
            if tok != token[k]:
                continue
            job_id = jobs[k].job.id
            run = running.pop(job_id)
            busy -= run.job.total_gpus
            if kind == END:
                victims.pop(job_id, None)
                token[k] += 1  # a victim that ends before its grace period is over: no kill to come
                res.end[k] = now
                if job_id in depended:
                    finished[job_id] = COMPLETED
                finished_since += 1
            else:  # the grace period is over: requeued whole
                token[k] += 1
                res.preemptions += 1
                res.start[k] = None
                res.leaves[k] = 0
                pending[job_id] = run.job
        while next_sub < n and jobs[next_sub].job.submit_time <= now:
            job = jobs[next_sub].job
            pending[job.id] = job
            next_sub += 1
        if fair:  # as Store.snapshot: decay, then add what ran since the last instant (by job id)
            since = now if usage_time is None else usage_time
            runs = sorted(running.values(), key=lambda r: r.job.id)
            user_usage = accrue(user_usage, runs, since, now, half_life, key=lambda r: r.job.user)
            queue_usage = accrue(queue_usage, runs, since, now, half_life, key=lambda r: r.job.queue)
            usage_time = now
        if not pending:
            res.busy.append((now, busy))
            continue
        # 2. one cycle of the real core
        preempting: dict[int, tuple[int, ...]] = {}
        for victim, preemptor in victims.items():  # kept until the preemptor starts, as the store does
            if preemptor in pending:
                preempting[preemptor] = preempting.get(preemptor, ()) + (victim,)
        snap = Snapshot(pending=tuple(pending.values()), running=tuple(running.values()), preempting=preempting,
                        finished=finished, user_usage=user_usage, queue_usage=queue_usage)
        c0 = clock()
        decisions = schedule(snap, config, now, memo)
        c1 = clock()
        t_sched += c1 - c0
        if check_invariants:
            check(snap, decisions, config, now=now)
            t_check += clock() - c1
        res.cycles += 1
        if leaf_waits:
            _wake_after_leaf_waits(decisions, wakes)
        # 3. apply: cancels, preemptions (signal now, stop after the grace period), starts
        cancels = getattr_(decisions, "cancels", None)
        for job_id in cancels or ():
            if pending.pop(job_id, None) is not None:
                res.cancelled[job_id] = str(cancels[job_id])
                if job_id in depended:
                    finished[job_id] = CANCELLED
                finished_since += 1
        for item in getattr_(decisions, "preemptions", None) or ():
            job_id, preemptor = _victim(item)
            run = running.get(job_id)
            if run is None or job_id in victims:
                continue
            victims[job_id] = preemptor if preemptor is not None else -1
            grace = getattr_(config.queues.get(run.job.queue), "grace_period", 0) or 0
            k = index[job_id]
            heapq.heappush(events, (now + grace, k, token[k], KILL))
        if victims and decisions.starts:  # a started victim or preemptor ends its preemption record
            started = {s.job_id for s in decisions.starts}
            for v in [v for v, pre in victims.items() if v in started or pre in started]:
                del victims[v]
        for start in decisions.starts:
            job = pending.pop(start.job_id)
            k = index[start.job_id]
            running[job.id] = RunningJob(job, now, start.placement, borrowing=start.borrowing)
            busy += job.total_gpus
            res.start[k] = now
            if job.num_nodes > 1:
                res.leaves[k] = len({leaf_of[a.node] for a in start.placement})
            elif start.placement:
                res.leaves[k] = 1
            heapq.heappush(events, (now + jobs[k].duration, k, token[k], END))
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
