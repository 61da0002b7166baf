"""Preemption: which running gangs to stop so that a blocked job can start.

Called by schedule.py (phase 5) for a within-quota job that phase 4 could not place, at
its turn in priority order, for at most `scheduler.preemption_depth` such jobs per cycle.

Who may be a victim of preemptor P (queue Q):
  - a running whole-GPU job (MIG slices never free a whole GPU) that is not already
    signalled (Snapshot.preempting) nor chosen earlier in this cycle;
  - that has run at least its queue's min_run_time (Slurm's PreemptExemptTime);
  - whose queue is in Q.preempts (only preemptible queues are), or which is *borrowing*
    (started beyond its queue's quota) while Q has a quota that P stays within: borrowed
    GPUs are reclaimed whatever the queues' tiers (Kueue's reclaimWithinCohort).
Only whole gangs are stopped: a victim frees every GPU of every rank.

The search is leaf-aware and greedy, on what-if mutations of the cycle's Capacity (all
undone). Candidate victim lists: for each leaf, the victims with a rank in it; and all
victims. Each list is in victim order (queue tier, priority, work lost, job id). Victims
are added in that order until P fits (place.find_placement, with P's max_leaves and the
normal fewest-leaves placement), then any victim whose removal still lets P fit is dropped
(most important first, repeated until none can be), so every chosen set is minimal.
Among the candidates' sets the choice is, in order:
  1. the lowest priority of its most important victim (queue tier, then priority);
  2. the fewest leaves P's placement spans (free one leaf rather than scattered nodes);
  3. the least work lost: GPUs x seconds since the last checkpoint (or since start);
  4. the victims' ids, so the choice is total and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .capacity import Capacity
from .config import ClusterConfig
from .model import Job, Placement, RunningJob, Snapshot
from .place import NoFit, find_placement


@dataclass(frozen=True, slots=True, eq=False)
class Victim:
    run: RunningJob
    order: tuple  # (tier, priority, work lost, id): the least important first
    lost: float  # GPU-seconds of work lost if stopped now
    leaves: frozenset[int]  # leaf indexes of its ranks

    @property
    def id(self) -> int:
        return self.run.job.id


@dataclass(frozen=True, slots=True)
class Choice:
    victims: tuple[Victim, ...]  # in victim order
    placement: Placement  # where the preemptor starts once they have stopped
    key: tuple


def work_lost(run: RunningJob, now: float) -> float:
    """GPU-seconds since the job's last checkpoint (or its start): what stopping it loses."""
    since = run.start_time if run.checkpoint_time is None else max(run.start_time, run.checkpoint_time)
    return run.job.num_nodes * run.job.gpus_per_node * max(0.0, now - since)


def signalled(snapshot: Snapshot) -> set[int]:
    """Jobs an earlier cycle already chose as victims."""
    return {v for victims in snapshot.preempting.values() for v in victims}


def pool(snapshot: Snapshot, config: ClusterConfig, cap: Capacity, now: float) -> list[Victim]:
    """Every running job some preemptor could stop this cycle, in victim order."""
    taken = signalled(snapshot)
    out = []
    for run in snapshot.running:
        job = run.job
        q = config.queues.get(job.queue)
        if q is None or job.mig is not None or job.id in taken or not run.placement:
            continue
        if not (q.preemptible or run.borrowing) or now - run.start_time < q.min_run_time:
            continue
        if any(a.node not in cap.index for a in run.placement):
            continue
        lost = work_lost(run, now)
        leaves = frozenset(cap.leaf_of[cap.index[a.node]] for a in run.placement)
        out.append(Victim(run, (q.tier, job.priority, lost, job.id), lost, leaves))
    out.sort(key=lambda v: v.order)
    return out


def may_preempt(preemptor: Job, victim: RunningJob, config: ClusterConfig) -> str | None:
    """How `preemptor` (within its queue's quota) may stop `victim`: "preempt", "reclaim" or None."""
    q, vq = config.queues[preemptor.queue], config.queues.get(victim.job.queue)
    if vq is None or victim.job.queue == preemptor.queue:
        return None
    if vq.preemptible and vq.name in q.preempts:
        return "preempt"
    if victim.borrowing and q.quota_gpus is not None:
        return "reclaim"
    return None


def reason(preemptor: Job, victim: RunningJob, config: ClusterConfig) -> str:
    how = may_preempt(preemptor, victim, config)
    extra = " reclaims borrowed GPUs" if how == "reclaim" else ""
    return f"preempted by job {preemptor.id} (queue {preemptor.queue}{extra})"


def choose(cap: Capacity, job: Job, victims: list[Victim], topology_aware: bool = True) -> Choice | None:
    """The victim set to stop for `job` (see the module doc), or None if none lets it fit.

    `victims` are the ones this job may stop, in victim order. Capacity is left as it was.
    """
    if not victims:
        return None

    def fits() -> bool:
        verdict = find_placement(cap, job.num_nodes, job.gpus_per_node, job.max_leaves, topology_aware, pick=False)
        return not isinstance(verdict, NoFit)

    candidates: list[list[Victim]] = []
    by_leaf: dict[int, list[Victim]] = {}
    for v in victims:
        for l in v.leaves:
            by_leaf.setdefault(l, []).append(v)
    G, N = job.gpus_per_node, job.num_nodes
    if G > cap.max_gpus or not _could_fit(cap, job, victims):
        return None
    for l in sorted(by_leaf):
        # Cheap bound: the nodes that could hold a rank once the leaf's victims stop. They
        # must add a fitting node in leaf l, and be enough (in leaf l alone for max leaves 1).
        gain: dict[int, int] = {}
        for v in by_leaf[l]:
            for a in v.run.placement:
                i = cap.index[a.node]
                gain[i] = gain.get(i, 0) + len(a.gpus)
        new = [i for i, g in gain.items() if cap.up[i] and cap.free[i] < G <= cap.free[i] + g]
        in_leaf = sum(1 for i in new if cap.leaf_of[i] == l)
        if in_leaf == 0 or cap.at_least[G] + len(new) < N:
            continue
        if job.max_leaves == 1 and cap.leaf_at_least[l][G] + in_leaf < N:
            continue
        candidates.append(by_leaf[l])
    candidates.append(victims)

    best: Choice | None = None
    seen: set[tuple[int, ...]] = set()
    for cand in candidates:
        chosen = _minimal(cap, cand, fits)
        if chosen is None:
            continue
        ids = tuple(sorted(v.id for v in chosen))
        if ids in seen:
            continue
        seen.add(ids)
        with cap.trial():
            for v in chosen:
                cap.give(v.run.placement)
            picks = find_placement(cap, job.num_nodes, job.gpus_per_node, job.max_leaves, topology_aware)
            placement = cap.peek(picks)
        n_leaves = len({cap.leaf_of[cap.index[a.node]] for a in placement})
        key = (max(v.order[:2] for v in chosen), n_leaves, sum(v.lost for v in chosen), ids)
        if best is None or key < best.key:
            best = Choice(tuple(chosen), placement, key)
    return best


def _could_fit(cap: Capacity, job: Job, victims: list[Victim]) -> bool:
    """A cheap necessary condition: enough nodes (within max leaves, counted per leaf) would
    have the GPUs if every victim stopped. Saves the greedy search when even all won't do."""
    G, N = job.gpus_per_node, job.num_nodes
    gain: dict[int, int] = {}
    for v in victims:
        for a in v.run.placement:
            i = cap.index[a.node]
            gain[i] = gain.get(i, 0) + len(a.gpus)
    per_leaf = [row[G] for row in cap.leaf_at_least]
    for i, g in gain.items():
        if cap.up[i] and cap.free[i] < G <= cap.free[i] + g:
            per_leaf[cap.leaf_of[i]] += 1
    if job.max_leaves is None:
        return sum(per_leaf) >= N
    return sum(sorted(per_leaf, reverse=True)[:job.max_leaves]) >= N


def _minimal(cap: Capacity, cand: list[Victim], fits: Callable[[], bool]) -> list[Victim] | None:
    """Add victims in order until the job fits, then drop every one it can do without. All
    in a trial the Capacity forgets: dropping a victim is trying its GPUs busy again in a
    nested trial, kept if the job still fits."""
    chosen: list[Victim] = []
    with cap.trial():
        for v in cand:
            cap.give(v.run.placement)
            chosen.append(v)
            if fits():
                break
        else:
            return None
        dropped = True
        while dropped and len(chosen) > 1:  # until no single victim can be spared
            dropped = False
            for v in list(reversed(chosen)):  # most important (and most work lost) first
                with cap.trial() as without:
                    cap.occupy(v.run.placement)
                    if fits():
                        without.commit()
                        chosen = [c for c in chosen if c is not v]
                        dropped = True
        return chosen
