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


def priority_score(
    job: Job,
    config: ClusterConfig,
    now: float,
    user_factor: Mapping[str, float] | None = None,
    queue_factor: Mapping[str, float] | None = None,
    total_gpus: int | None = None,
) -> float:
    s = config.scheduler
    score = s.weight_priority * job.priority
    if s.weight_age:
        score += s.weight_age * min(1.0, max(0.0, now - job.submit_time) / s.age_max)
    if s.weight_fairshare:
        fair = (user_factor or {}).get(job.user, 1.0) * (queue_factor or {}).get(job.queue, 1.0)
        score += s.weight_fairshare * fair
    if s.weight_size:
        total = total_gpus or sum(n.whole_gpus for n in config.nodes) or 1
        score += s.weight_size * min(1.0, gpu_equiv(job) / total)
    return score


def order_pending(
    jobs: tuple[Job, ...] | list[Job],
    config: ClusterConfig,
    now: float = 0.0,
    user_factor: Mapping[str, float] | None = None,
    queue_factor: Mapping[str, float] | None = None,
) -> list[Job]:
    tiers = {name: q.tier for name, q in config.queues.items()}
    s = config.scheduler
    w_prio, w_age, w_fair, w_size = s.weight_priority, s.weight_age, s.weight_fairshare, s.weight_size
    if not (w_age or w_fair or w_size):  # the default: own priority only
        return sorted(jobs, key=lambda j: (-tiers.get(j.queue, 0), -w_prio * j.priority, j.submit_time, j.id))
    # The same sum as priority_score, as one comprehension with the per-cycle constants
    # hoisted: this runs over every pending job (10,000 in bench/cycle.py) each cycle.
    age_max, per_second = s.age_max, w_age / s.age_max
    per_gpu = w_size / (sum(n.whole_gpus for n in config.nodes) or 1)
    user_get, queue_get = (user_factor or {}).get, (queue_factor or {}).get
    jobs = list(jobs)
    keys = [
        (
            -tiers.get(j.queue, 0),
            -(
                w_prio * j.priority
                + (w_age if (waited := now - j.submit_time) >= age_max else max(0.0, waited) * per_second)
                + w_fair * user_get(j.user, 1.0) * queue_get(j.queue, 1.0)
                + (j.num_nodes * j.gpus_per_node if j.mig is None else gpu_equiv(j)) * per_gpu
            ),
            j.submit_time,
            j.id,
        )
        for j in jobs
    ]
    return [jobs[i] for i in sorted(range(len(jobs)), key=keys.__getitem__)]
