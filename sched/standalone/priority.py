"""What `adsub prio` (like sprio) and `adsched share` (like sshare) show, computed by the core's own
code on the daemon's view of now (Store.snapshot: usage accrued to now, read only), so they
cannot disagree with the order the next cycle uses:

- the order is core.order.order_pending's; each job's terms are core.order.priority_factors
  (priority_score is their sum), its fair-share factors core.fairshare.factors;
- shares and factors per user and queue are core.fairshare.shares and factors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from adsched.core import fairshare
from adsched.core.order import order_pending, priority_factors

from .store import Store


@dataclass(frozen=True)
class PrioRow:
    rank: int  # 1 = considered first by the next cycle
    job_id: int
    user: str
    queue: str
    tier: int
    score: float  # age + fairshare + size + priority, the weighted terms below
    age: float
    fairshare: float
    size: float
    priority: float  # weight_priority x the job's own priority
    own_priority: int
    user_factor: float  # the fair-share factors the fairshare term multiplies
    queue_factor: float

    def to_dict(self) -> dict:
        return asdict(self)


def weights(config) -> dict[str, float]:
    s = config.scheduler
    return {"age": s.weight_age, "fairshare": s.weight_fairshare, "size": s.weight_size,
            "priority": s.weight_priority, "age_max": s.age_max, "fairshare_half_life": s.fairshare_half_life}


def prio(store: Store, now: float, user: str | None = None, queue: str | None = None,
         job_ids: tuple[int, ...] = ()) -> list[PrioRow]:
    """Every pending job (or those asked for) in the core's order, with its score's terms."""
    config = store.config
    snap = store.snapshot(now)
    by_user, by_queue = fairshare.factors(snap, config)
    total = sum(n.whole_gpus for n in config.nodes) or 1
    rows = []
    for rank, job in enumerate(order_pending(snap.pending, config, now, by_user, by_queue), 1):
        if (user and job.user != user) or (queue and job.queue != queue) or (job_ids and job.id not in job_ids):
            continue
        terms = priority_factors(job, config, now, by_user, by_queue, total)
        q = config.queues.get(job.queue)
        rows.append(PrioRow(rank=rank, job_id=job.id, user=job.user, queue=job.queue, tier=q.tier if q else 0,
                            score=terms["priority"] + terms["age"] + terms["fairshare"] + terms["size"],
                            age=terms["age"], fairshare=terms["fairshare"], size=terms["size"],
                            priority=terms["priority"], own_priority=job.priority,
                            user_factor=by_user.get(job.user, 1.0), queue_factor=by_queue.get(job.queue, 1.0)))
    return rows


@dataclass(frozen=True)
class ShareRow:
    kind: str  # "user" or "queue"
    name: str
    usage_gpu_hours: float  # decayed (half-life fairshare_half_life)
    norm_usage: float  # its fraction of all decayed usage of its kind
    share: float  # the fraction it is entitled to
    factor: float  # 2^(-norm_usage / share): 1 = no recent usage, 0.5 = used exactly its share

    def to_dict(self) -> dict:
        return asdict(self)


def share(store: Store, now: float) -> list[ShareRow]:
    """Users (everyone with usage, a pending or a running job), then queues, by name."""
    snap = store.snapshot(now)
    user_shares, queue_shares = fairshare.shares(snap, store.config)
    by_user, by_queue = fairshare.factors(snap, store.config)
    rows = []
    for kind, usage, shares, factors in (("user", snap.user_usage, user_shares, by_user),
                                         ("queue", snap.queue_usage, queue_shares, by_queue)):
        total = sum(usage.values())
        for name in sorted(shares):
            used = usage.get(name, 0.0)
            rows.append(ShareRow(kind, name, used, used / total if total > 0 else 0.0, shares[name], factors[name]))
    return rows
