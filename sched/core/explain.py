"""Why a job waits and when it would start: `explain(snapshot, config, now, job_id)`.

Pure, like schedule(): it runs the same cycle with the job as its *focus*, so the job gets
a reservation whatever the depth (reserve.py), and reads off:
  - its position among its queue's pending jobs in priority order;
  - the constraint that holds it: the reason code of its pending reason (Dependency,
    QuotaExceeded, UserLimit, JobArrayTaskLimit, QueueLimit, Invalid*, Resources, Topology,
    LeafWait, Reservation, Priority), with the job it waits on where there is one;
  - the earliest estimated start and where: `now` and its placement if it would start in
    this cycle, else its reservation; None when no capacity estimate applies (a dependency,
    a quota, a limit) or the job can never fit.
For `--test-only` pass `job=` a Job that is not pending (an id no pending job has).

Preemption: a pending job that stops others has constraint "Preempting" and `preempting`
lists its victims (chosen now or signalled earlier and still running). A *running* job may be
explained too: state "preempted" with `preempted_by` when a cycle chose it as a victim (now,
or earlier per Snapshot.preempting), else state "running".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .config import ClusterConfig
from .memo import Memo
from .model import Job, Placement, Snapshot
from .reasons import PREEMPTING
from .schedule import Cycle


@dataclass(frozen=True, slots=True)
class Explanation:
    job_id: int
    queue: str
    state: str  # "starts" (in this cycle), "pending" or "cancelled"
    position: int  # 1-based, among the pending jobs of its queue in priority order
    queue_length: int  # pending jobs in its queue
    reason: str | None  # the pending or cancel reason as users read it (str of Decisions' Reason)
    constraint: str | None  # the reason's code, e.g. "Topology"; None when it starts
    waiting_for: int | None  # the job whose reservation, position or result it waits on
    estimated_start: float | None
    estimated_placement: Placement = ()
    preempting: tuple[int, ...] = ()  # the running jobs this job waits on to stop
    preempted_by: int | None = None  # for a running job being preempted: the job it makes way for

    @property
    def estimated_nodes(self) -> tuple[str, ...]:
        return tuple(a.node for a in self.estimated_placement)


def explain(
    snapshot: Snapshot, config: ClusterConfig, now: float, job_id: int | None = None, job: Job | None = None,
    memo: Memo | None = None,
) -> Explanation:
    if job is not None:  # not submitted: what would happen if it were, now
        if any(j.id == job.id for j in snapshot.pending):
            raise ValueError(f"job {job.id} is already pending; pass job_id instead")
        snapshot = replace(snapshot, pending=snapshot.pending + (job,))
        job_id = job.id
    if job_id is None:
        raise ValueError("explain needs job_id or job")
    target = next((j for j in snapshot.pending if j.id == job_id), None)
    if target is None:
        run = next((r for r in snapshot.running if r.job.id == job_id), None)
        if run is None:
            raise KeyError(f"job {job_id} is neither pending nor running")
        return _running(snapshot, config, now, run.job)

    cycle = Cycle(snapshot, config, now, focus=job_id, memo=memo).run()
    d = cycle.decisions
    mates = [j.id for j in cycle.order if j.queue == target.queue]
    common = dict(job_id=job_id, queue=target.queue, position=mates.index(job_id) + 1, queue_length=len(mates))

    start = next((s for s in d.starts if s.job_id == job_id), None)
    if start is not None:
        return Explanation(**common, state="starts", reason=None, constraint=None, waiting_for=None,
                           estimated_start=now, estimated_placement=start.placement)
    cancelled = job_id in d.cancels
    reason = d.cancels[job_id] if cancelled else d.pending_reasons[job_id]
    res = next((r for r in d.reservations if r.job_id == job_id), None)
    running = {r.job.id for r in snapshot.running}
    victims = tuple(p.victim_id for p in d.preemptions if p.preemptor_id == job_id) or tuple(
        v for v in snapshot.preempting.get(job_id, ()) if v in running)
    victims = victims if reason.code == PREEMPTING else ()
    return Explanation(
        **common,
        state="cancelled" if cancelled else "pending",
        reason=str(reason),
        constraint=reason.code,
        waiting_for=reason.job if reason.job is not None else (victims[0] if victims else None),
        estimated_start=res.start_time if res else None,
        estimated_placement=res.placement if res else (),
        preempting=victims,
    )


def _running(snapshot: Snapshot, config: ClusterConfig, now: float, job: Job) -> Explanation:
    """A running job: is it being preempted, and for whom?"""
    by = next((p for p, vs in sorted(snapshot.preempting.items()) if job.id in vs), None)
    reason = None
    if by is not None:
        reason = f"Preempted: signalled for job {by}; stopping"
    else:
        cycle = Cycle(snapshot, config, now).run()
        chosen = next((p for p in cycle.decisions.preemptions if p.victim_id == job.id), None)
        if chosen is not None:
            by, reason = chosen.preemptor_id, "Preempted: " + chosen.reason
    mates = sum(1 for j in snapshot.pending if j.queue == job.queue)
    return Explanation(
        job_id=job.id, queue=job.queue, state="running" if by is None else "preempted", position=0,
        queue_length=mates, reason=reason, constraint=None if by is None else "Preempted",
        waiting_for=None, estimated_start=None, preempted_by=by,
    )
