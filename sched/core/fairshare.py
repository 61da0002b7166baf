"""Fair share from decayed GPU-hours: pure helpers; the store keeps the usage between cycles.

Usage is GPU-hours with exponential decay (half-life `scheduler.fairshare_half_life`):
an hour used one half-life ago counts half. The store calls `accrue` every cycle (or on
each job end) and passes the result in Snapshot.user_usage / Snapshot.queue_usage.

Factor (Slurm's classic formula, 2^(-usage/share)): a user's normalized usage is its share
of all decayed usage; its share is 1 / (number of users seen). The factor is 1.0 for a user
with no usage, 0.5 for one that used exactly its share, and falls towards 0 beyond. A queue's
share is its quota over the sum of quotas (equal shares when a queue has none). A job's
fair-share factor is user factor x queue factor, in [0, 1].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Mapping

if TYPE_CHECKING:  # annotations only: validate.py imports this module on `adsub submit`'s path
    from .snapshot import RunningJob


def decay(usage: Mapping[str, float], elapsed: float, half_life: float) -> dict[str, float]:
    """Usage `elapsed` seconds later: every value halves once per half-life."""
    f = 0.5 ** (max(0.0, elapsed) / half_life)
    return {k: v * f for k, v in usage.items()}


def accrue(
    usage: Mapping[str, float],
    running: Iterable[RunningJob],
    since: float,
    now: float,
    half_life: float,
    key: Callable[[RunningJob], str] = lambda r: r.job.user,
) -> dict[str, float]:
    """Decay `usage` from `since` to `now`, then add the GPU-hours each running job used in
    that span (keyed by user by default; `key=lambda r: r.job.queue` for queues).

    Call it often (every cycle): usage inside one span is added undecayed.
    """
    out = decay(usage, now - since, half_life)
    for r in running:
        seconds = now - max(since, r.start_time)
        if seconds > 0:
            k = key(r)
            out[k] = out.get(k, 0.0) + gpu_equiv(r.job) * seconds / 3600.0
    return out


def gpu_equiv(job) -> float:
    """Whole GPUs a job holds; a MIG job counts the sevenths of a GPU its slices take."""
    if job.mig is not None:
        from .config import mig_sevenths

        return job.mig[1] * mig_sevenths(job.mig[0]) / 7.0
    return float(job.total_gpus)


def factor(usage: Mapping[str, float], who: str, share: float, total: float | None = None) -> float:
    """2^(-(who's fraction of all usage) / share); 1.0 when nobody has used anything."""
    total = sum(usage.values()) if total is None else total
    if total <= 0 or share <= 0:
        return 1.0
    return 2.0 ** (-(usage.get(who, 0.0) / total) / share)


def shares(snapshot, config) -> tuple[dict[str, float], dict[str, float]]:
    """The share of all decayed usage each user and each queue is entitled to (`adsched share`)."""
    users = set(snapshot.user_usage)
    users.update(j.user for j in snapshot.pending)
    users.update(r.job.user for r in snapshot.running)
    share = 1.0 / max(1, len(users))
    quotas = {name: q.quota_gpus for name, q in config.queues.items()}
    if all(v for v in quotas.values()):
        qsum = float(sum(quotas.values()))
        queue_shares = {name: v / qsum for name, v in quotas.items()}
    else:
        queue_shares = {name: 1.0 / len(quotas) for name in quotas}
    return {u: share for u in users}, queue_shares


def factors(snapshot, config) -> tuple[dict[str, float], dict[str, float]]:
    """Fair-share factor of every user and every queue for this cycle."""
    user_shares, queue_shares = shares(snapshot, config)
    total = sum(snapshot.user_usage.values())
    by_user = {u: factor(snapshot.user_usage, u, share, total) for u, share in user_shares.items()}
    qtotal = sum(snapshot.queue_usage.values())
    by_queue = {name: factor(snapshot.queue_usage, name, s, qtotal) for name, s in queue_shares.items()}
    return by_user, by_queue
