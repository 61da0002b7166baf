"""Priority order of pending jobs.

Queue tier first (a release queue is always considered before exploration), then the
job's own priority, then submit time, and the job id last so the order is total and
every cycle over the same snapshot decides the same thing.
"""

from __future__ import annotations

from .config import ClusterConfig
from .model import Job


def order_pending(jobs: tuple[Job, ...] | list[Job], config: ClusterConfig) -> list[Job]:
    tiers = {name: q.tier for name, q in config.queues.items()}
    return sorted(jobs, key=lambda j: (-tiers.get(j.queue, 0), -j.priority, j.submit_time, j.id))
