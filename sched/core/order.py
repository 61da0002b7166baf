"""Priority order of pending jobs.

Queue tier first (a release queue is always considered before exploration), then the
job's priority score, then submit time, and the job id last so the order is total and
every cycle over the same snapshot decides the same thing.

The score (Slurm's multifactor, kept small), each weight from [scheduler] in the TOML:

    score = weight_age       * min(1, waited / age_max)
          + weight_fairshare * fair-share factor (fairshare.py, 1 = no recent usage)
          + weight_size      * job GPUs / cluster GPUs (favours big gangs)
          + weight_priority  * the job's own priority (per point, not normalized)

The defaults (only weight_priority = 1) keep the plain "own priority, then FIFO" order.
"""

from __future__ import annotations

from typing import Mapping

from .config import ClusterConfig
from .fairshare import gpu_equiv
from .model import Job


def priority_factors(
    job: Job,
    config: ClusterConfig,
    now: float,
    user_factor: Mapping[str, float] | None = None,
    queue_factor: Mapping[str, float] | None = None,
    total_gpus: int | None = None,
) -> dict[str, float]:
    """Each weighted term of the score (`adsub prio` shows them); priority_score is their sum."""
    s = config.scheduler
    terms = {"priority": s.weight_priority * job.priority, "age": 0.0, "fairshare": 0.0, "size": 0.0}
    if s.weight_age:
        terms["age"] = s.weight_age * min(1.0, max(0.0, now - job.submit_time) / s.age_max)
    if s.weight_fairshare:
        fair = (user_factor or {}).get(job.user, 1.0) * (queue_factor or {}).get(job.queue, 1.0)
        terms["fairshare"] = s.weight_fairshare * fair
    if s.weight_size:
        total = total_gpus or sum(n.whole_gpus for n in config.nodes) or 1
        terms["size"] = s.weight_size * min(1.0, gpu_equiv(job) / total)
    return terms


def priority_score(
    job: Job,
    config: ClusterConfig,
    now: float,
    user_factor: Mapping[str, float] | None = None,
    queue_factor: Mapping[str, float] | None = None,
    total_gpus: int | None = None,
) -> float:
    t = priority_factors(job, config, now, user_factor, queue_factor, total_gpus)
    return t["priority"] + t["age"] + t["fairshare"] + t["size"]


class _Memo(dict):
    """A per-call table filled on first use: one factor per queue or user, not per job."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def __missing__(self, key):
        value = self[key] = self.fn(key)
        return value


def order_pending(
    jobs: tuple[Job, ...] | list[Job],
    config: ClusterConfig,
    now: float = 0.0,
    user_factor: Mapping[str, float] | None = None,
    queue_factor: Mapping[str, float] | None = None,
) -> list[Job]:
    """Jobs sorted by (tier desc, score desc, submit time, id).

    This runs over every pending job (10,000 in bench/cycle.py) each cycle, so it is a
    least-significant-first series of stable sorts, each on one plain list of numbers
    (CPython's fast path for ints or floats), instead of one sort on tuples; the per-queue
    and per-user factors are looked up once per queue and user. Same order as the tuples.
    """
    queues, s = config.queues, config.scheduler
    w_prio, w_age, w_fair, w_size = s.weight_priority, s.weight_age, s.weight_fairshare, s.weight_size
    jobs = list(jobs)
    if len(jobs) < 2:  # nothing to sort (a fifth of the cycles of a KTH-SP2 replay)
        return jobs
    tier = _Memo(lambda q: queues[q].tier if q in queues else 0)
    if not (w_age or w_fair or w_size):  # the default: own priority only
        score = [w_prio * j.priority for j in jobs]
    else:
        # The same sum as priority_score, with the per-cycle constants hoisted.
        age_max, per_second = s.age_max, w_age / s.age_max
        per_gpu = w_size / (sum(n.whole_gpus for n in config.nodes) or 1)
        user_get, queue_get = (user_factor or {}).get, (queue_factor or {}).get
        fair_user = _Memo(lambda u: w_fair * user_get(u, 1.0))
        fair_queue = _Memo(lambda q: queue_get(q, 1.0))
        score = [
            w_prio * j.priority
            # max(0.0, waited) * per_second, without a call per job: 0.0 unless waited > 0
            + (w_age if (waited := now - j.submit_time) >= age_max else (waited * per_second if waited > 0.0 else 0.0))
            + fair_user[j.user] * fair_queue[j.queue]
            + (j.num_nodes * j.gpus_per_node if j.mig is None else gpu_equiv(j)) * per_gpu
            for j in jobs
        ]
    idx = sorted(range(len(jobs)), key=[j.id for j in jobs].__getitem__)
    idx.sort(key=[j.submit_time for j in jobs].__getitem__)
    idx.sort(key=score.__getitem__, reverse=True)  # stable: ties keep (submit time, id) order
    tiers = [tier[j.queue] for j in jobs]
    if len(set(tier.values())) > 1:  # with one tier for all, this stable sort changes nothing
        idx.sort(key=tiers.__getitem__, reverse=True)
    return [jobs[i] for i in idx]
