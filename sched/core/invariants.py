"""Invariants that must hold after every cycle; tests and the simulator call `check`.

  - every start is a pending job, started once, never also pending or cancelled;
  - every gang is complete: N distinct nodes, each with the GPUs asked for, within max leaves;
  - no GPU and no MIG slice is used twice (running + started); MIG-split GPUs never go whole,
    and a MIG job gets exactly its count of its profile's slices;
  - quotas hold: replaying the starts in order, a start not marked borrowing keeps its queue
    within quota_gpus, and any start keeps it within quota + borrow_limit_gpus;
  - array throttles and per-user running limits hold; a started job's dependencies are met;
  - with `now`: no job starts before its begin time (the start backoff); reservations are sound (the GPUs they hold are free by their start, and two
    reservations never hold a GPU at the same time) and no start delays a reservation; a
    job being preempted (this cycle or signalled earlier) counts as ending at `now`;
  - with `now`, preemptions: a victim is a running job (so the whole gang goes), chosen once,
    never one signalled before; it has run its queue's min_run_time and the preemptor's queue
    may preempt its (preemptible) queue, or it is borrowing and the preemptor's queue has a
    quota (reclaim); a preemptor whose earlier victims still run chooses no new ones; the
    preemptor waits ("Preempting") with a Reservation at `now`; it did not fit without its
    victims, fits with all of them, and does not fit without any one of them (minimal).
"""

from __future__ import annotations

from .capacity import Capacity
from .config import ClusterConfig
from .deps import check as check_dependencies
from .fairshare import gpu_equiv
from .model import Decisions, Job, Snapshot
from .place import NoFit, find_placement
from .reasons import PREEMPTING
from .reserve import conflicts


class InvariantError(AssertionError):
    pass


def check(snapshot: Snapshot, decisions: Decisions, config: ClusterConfig, now: float | None = None) -> None:
    jobs = {j.id: j for j in snapshot.pending}
    _placements(snapshot, decisions, config, jobs)
    _limits(snapshot, decisions, config, jobs)
    if now is not None:
        for start in decisions.starts:
            held = jobs[start.job_id].begin_time
            if held is not None and held > now:
                raise InvariantError(f"job {start.job_id} started before its begin time t={held:g}")
        _reservations(snapshot, decisions, jobs, now)
        _preemptions(snapshot, decisions, config, jobs, now)
    elif decisions.preemptions:
        raise InvariantError("preemptions are checked against `now`: pass it")
    for job in snapshot.pending:
        if job.id in decisions.cancels and job.id in decisions.pending_reasons:
            raise InvariantError(f"job {job.id}: both cancelled and pending")
        if not (job.id in decisions.pending_reasons or job.id in decisions.cancels
                or any(s.job_id == job.id for s in decisions.starts)):
            raise InvariantError(f"job {job.id}: neither started, cancelled nor given a pending reason")


def _placements(snapshot: Snapshot, decisions: Decisions, config: ClusterConfig, jobs: dict[int, Job]) -> None:
    nodes = {n.name: n for n in config.nodes}
    used: set[tuple[str, int]] = set()
    slices: set[tuple[str, int, int]] = set()
    for run in snapshot.running:
        for a in run.placement:
            used.update((a.node, g) for g in a.gpus)
            slices.update((a.node, g, k) for g, k in a.slices)
    started = set()
    for start in decisions.starts:
        job = jobs.get(start.job_id)
        if job is None:
            raise InvariantError(f"started job {start.job_id} is not pending")
        if start.job_id in started:
            raise InvariantError(f"job {start.job_id} started twice")
        started.add(start.job_id)
        if start.job_id in decisions.pending_reasons or start.job_id in decisions.cancels:
            raise InvariantError(f"job {start.job_id} both started and pending or cancelled")
        names = [a.node for a in start.placement]
        if len(names) != job.num_nodes or len(set(names)) != job.num_nodes:
            raise InvariantError(f"job {job.id}: gang incomplete, {len(set(names))}/{job.num_nodes} nodes")
        for a in start.placement:
            spec = nodes.get(a.node)
            if spec is None:
                raise InvariantError(f"job {job.id}: unknown node {a.node}")
            if a.node in snapshot.unavailable:
                raise InvariantError(f"job {job.id}: placed on unavailable node {a.node}")
            if job.mig is not None:
                _mig_alloc(job, a, spec, slices)
                continue
            if len(a.gpus) != job.gpus_per_node or a.slices:
                raise InvariantError(f"job {job.id}: {len(a.gpus)} GPUs on {a.node}, wants {job.gpus_per_node}")
            for g in a.gpus:
                if not 0 <= g < spec.whole_gpus:
                    raise InvariantError(f"job {job.id}: GPU {g} on {a.node} is not a whole GPU")
                if (a.node, g) in used:
                    raise InvariantError(f"job {job.id}: GPU {a.node}:{g} used twice")
                used.add((a.node, g))
        if job.max_leaves is not None:
            leaves = {nodes[a.node].leaf for a in start.placement}
            if len(leaves) > job.max_leaves:
                raise InvariantError(f"job {job.id}: spans {len(leaves)} leaves > max {job.max_leaves}")


def _mig_alloc(job: Job, a, spec, slices: set) -> None:
    profile, count = job.mig
    layout = [name for name, n in spec.mig_profile for _ in range(n)]
    if a.gpus or len(a.slices) != count:
        raise InvariantError(f"job {job.id}: wants {count} {profile} slices, got {a.slices} + GPUs {a.gpus}")
    for g, k in a.slices:
        if not spec.whole_gpus <= g < spec.gpus or not 0 <= k < len(layout) or layout[k] != profile:
            raise InvariantError(f"job {job.id}: {a.node} GPU {g} slice {k} is not a {profile} slice")
        if (a.node, g, k) in slices:
            raise InvariantError(f"job {job.id}: MIG slice {a.node}:{g}/{k} used twice")
        slices.add((a.node, g, k))


def _limits(snapshot: Snapshot, decisions: Decisions, config: ClusterConfig, jobs: dict[int, Job]) -> None:
    queue_gpus: dict[str, float] = {}
    user_jobs: dict[tuple[str, str], int] = {}
    arrays: dict[int, int] = {}
    for run in snapshot.running:
        j = run.job
        queue_gpus[j.queue] = queue_gpus.get(j.queue, 0.0) + gpu_equiv(j)
        user_jobs[(j.queue, j.user)] = user_jobs.get((j.queue, j.user), 0) + 1
        if j.array_id is not None:
            arrays[j.array_id] = arrays.get(j.array_id, 0) + 1
    for start in decisions.starts:  # in admission order, as the cycle counted them
        j = jobs[start.job_id]
        q = config.queues[j.queue]
        used = queue_gpus[j.queue] = queue_gpus.get(j.queue, 0.0) + gpu_equiv(j)
        if q.quota_gpus is not None:
            if not start.borrowing and used > q.quota_gpus:
                raise InvariantError(f"job {j.id}: queue {q.name} at {used:g} > quota {q.quota_gpus} without borrowing")
            if q.borrow_limit_gpus is not None and used > q.quota_gpus + q.borrow_limit_gpus:
                raise InvariantError(f"job {j.id}: queue {q.name} at {used:g} beyond quota + borrowing limit")
        elif start.borrowing:
            raise InvariantError(f"job {j.id}: marked borrowing in queue {q.name} without a quota")
        n = user_jobs[(j.queue, j.user)] = user_jobs.get((j.queue, j.user), 0) + 1
        if q.max_running_per_user is not None and n > q.max_running_per_user:
            raise InvariantError(f"job {j.id}: user {j.user} runs {n} jobs in {q.name} > {q.max_running_per_user}")
        if j.array_id is not None:
            n = arrays[j.array_id] = arrays.get(j.array_id, 0) + 1
            if j.array_throttle is not None and n > j.array_throttle:
                raise InvariantError(f"job {j.id}: array {j.array_id} runs {n} tasks > throttle {j.array_throttle}")
        if check_dependencies(j, snapshot.finished) is not None:
            raise InvariantError(f"job {j.id}: started with unmet dependencies")
    for job_id, reason in decisions.cancels.items():
        verdict = check_dependencies(jobs[job_id], snapshot.finished) if job_id in jobs else None
        if verdict is None or verdict[1] != reason:
            raise InvariantError(f"job {job_id}: cancelled ({reason}) but its dependencies do not say so")


def _reservations(snapshot: Snapshot, decisions: Decisions, jobs: dict[int, Job], now: float) -> None:
    res = decisions.reservations
    if len({r.job_id for r in res}) != len(res):
        raise InvariantError("a job has two reservations")
    started = {s.job_id for s in decisions.starts}
    stopping = {p.victim_id for p in decisions.preemptions}
    stopping.update(v for vs in snapshot.preempting.values() for v in vs)
    for r in res:
        if r.job_id in started or r.job_id not in jobs:
            raise InvariantError(f"reservation for job {r.job_id}, which is not a waiting job")
        if r.start_time < now:
            raise InvariantError(f"job {r.job_id}: reservation starts in the past")
        for run in snapshot.running:  # the promised GPUs are free by then
            if conflicts(r, now if run.job.id in stopping else max(now, run.end_time), run.placement):
                raise InvariantError(f"job {r.job_id}: reserved GPUs still held by job {run.job.id} at t={r.start_time:g}")
        for s in decisions.starts:
            if conflicts(r, now + jobs[s.job_id].time_limit, s.placement):
                raise InvariantError(f"job {s.job_id} started on GPUs reserved for job {r.job_id} and would delay it")
        for other in res:  # two promises never overlap in GPUs and time
            if other is not r and r.start_time <= other.start_time and conflicts(
                other, r.start_time + jobs[r.job_id].time_limit, r.placement
            ):
                raise InvariantError(f"reservations of jobs {r.job_id} and {other.job_id} overlap")


def _preemptions(snapshot: Snapshot, decisions: Decisions, config: ClusterConfig, jobs: dict[int, Job],
                 now: float) -> None:
    if not decisions.preemptions:
        return
    running = {r.job.id: r for r in snapshot.running}
    signalled = {v for vs in snapshot.preempting.values() for v in vs}
    draining = {p for p, vs in snapshot.preempting.items() if any(v in running for v in vs)}
    started = {s.job_id for s in decisions.starts}
    groups: dict[int, list] = {}
    chosen: set[int] = set()
    for p in decisions.preemptions:
        run, job = running.get(p.victim_id), jobs.get(p.preemptor_id)
        if run is None:
            raise InvariantError(f"preempted job {p.victim_id} is not running")
        if job is None or job.id in started or job.id in decisions.cancels:
            raise InvariantError(f"job {p.preemptor_id} preempts but is not a waiting job")
        if p.victim_id in chosen:
            raise InvariantError(f"job {p.victim_id} preempted twice")
        chosen.add(p.victim_id)
        if p.victim_id in signalled:
            raise InvariantError(f"job {p.victim_id} was already signalled in an earlier cycle")
        if job.id in draining:
            raise InvariantError(f"job {job.id} chose new victims while its earlier ones still run")
        q, vq = config.queues[job.queue], config.queues.get(run.job.queue)
        if vq is None or now - run.start_time < vq.min_run_time:
            raise InvariantError(f"job {run.job.id} preempted inside its exempt time")
        allowed = vq.preemptible and vq.name in q.preempts
        reclaim = run.borrowing and q.quota_gpus is not None and vq.name != q.name
        if not (allowed or reclaim):
            raise InvariantError(f"job {job.id} (queue {q.name}) may not preempt job {run.job.id} (queue {vq.name})")
        reason = decisions.pending_reasons.get(job.id)
        if reason is None or reason.code != PREEMPTING:
            raise InvariantError(f"job {job.id} preempts but its pending reason does not say so")
        groups.setdefault(job.id, []).append(run)
    for preemptor, victims in groups.items():
        _victims_needed(snapshot, decisions, config, jobs[preemptor], victims, now)


def _victims_needed(snapshot: Snapshot, decisions: Decisions, config: ClusterConfig, job: Job, victims: list,
                    now: float) -> None:
    """On the cycle's final capacity (its starts and every other reservation the job could not
    backfill into held): no fit without the victims, a fit with all, none without any one."""
    mine = [r for r in decisions.reservations if r.job_id == job.id]
    if not mine or mine[0].start_time != now:
        raise InvariantError(f"job {job.id} preempts but holds no reservation at now")
    cap = Capacity(config, snapshot)
    for k, s in enumerate(decisions.starts):
        cap.hold(-1 - k, s.placement)
    for r in decisions.reservations:
        if r.job_id != job.id and r.start_time < now + job.time_limit:
            cap.hold(r.job_id, r.placement)

    def fits(stopped: list) -> bool:
        with cap.trial():
            for run in stopped:
                cap.give(run.placement)
            found = find_placement(cap, job.num_nodes, job.gpus_per_node, job.max_leaves,
                                   config.scheduler.topology_aware, pick=False)
        return not isinstance(found, NoFit)

    if fits([]):
        raise InvariantError(f"job {job.id} preempted jobs although it fit without")
    if not fits(victims):
        raise InvariantError(f"job {job.id} does not fit even with its victims stopped")
    for run in victims:
        if fits([r for r in victims if r is not run]):
            raise InvariantError(f"job {job.id}: victim {run.job.id} was not needed")
