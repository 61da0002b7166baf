"""Queue quotas with borrowing, and the per-queue/per-array running limits.

`Usage` counts, for this cycle, what is running plus what the cycle has started:
  - GPUs per queue (fairshare.gpu_equiv: MIG slices count as sevenths of a GPU);
  - running jobs per (queue, user), against queues.NAME.max_running_per_user;
  - running tasks per job array, against the array's `%N` throttle.

Quota (Kueue's nominal quota + borrowingLimit): a job whose queue stays within quota_gpus
starts normally. One that would take its queue beyond the quota is *borrowing*: it may start
only on idle GPUs, after every within-quota job of the cycle has had its turn, up to
borrow_limit_gpus beyond the quota; its Start is marked `borrowing` so a later cycle can
reclaim it. Beyond the borrowing limit it waits with a QuotaExceeded reason.

A preemptor (a pending job in Snapshot.preempting: its victims are draining, or were requeued
and it has not started yet) has its GPUs *committed*: they count against its queue's quota for
every other job, so a later job of the same queue cannot take the quota the preemption was made
for (which would strand the preemptor and waste the preemption).
"""

from __future__ import annotations

from .config import ClusterConfig
from .fairshare import gpu_equiv
from . import reasons
from .model import Job, Reason, Snapshot

WITHIN, BORROW = "within", "borrow"


class Usage:
    def __init__(self, snapshot: Snapshot, committed: tuple[Job, ...] = ()):
        # Counted on first need (_counted): a cycle whose queues have neither quota nor
        # running limits, and whose jobs no array throttle, never needs them.
        self._running = snapshot.running
        self._uncounted: list[Job] | None = []  # committed or started before: counted after the running
        self.queue_gpus: dict[str, float] = {}
        self.user_jobs: dict[tuple[str, str], int] = {}
        self.array_tasks: dict[int, int] = {}
        # Draining preemptors count as running for every other job (quota, user and array limits).
        self.committed: set[int] = set()
        for job in committed:
            self.commit(job)

    def _counted(self) -> "Usage":
        if self._uncounted is not None:
            jobs, self._uncounted = self._uncounted, None
            for run in self._running:  # in the order an eager count would add them
                self._count(run.job)
            for job in jobs:
                self._count(job)
        return self

    def commit(self, job: Job) -> None:
        """A preemptor from now until it starts: its share is held against everyone else's."""
        if job.id not in self.committed:
            self.committed.add(job.id)
            self._count(job)

    def _count(self, job: Job) -> None:
        if self._uncounted is not None:
            self._uncounted.append(job)
            return
        self.queue_gpus[job.queue] = self.queue_gpus.get(job.queue, 0.0) + gpu_equiv(job)
        key = (job.queue, job.user)
        self.user_jobs[key] = self.user_jobs.get(key, 0) + 1
        if job.array_id is not None:
            self.array_tasks[job.array_id] = self.array_tasks.get(job.array_id, 0) + 1

    def add(self, job: Job) -> None:
        """A job started in this cycle."""
        if job.id in self.committed:
            self.committed.discard(job.id)  # counted since the cycle began
        else:
            self._count(job)

    def limits(self, job: Job, config: ClusterConfig) -> Reason | None:
        """Why a running-count limit holds the job back now, or None."""
        own = 1 if job.id in self.committed else 0  # a committed job is not its own competitor
        if job.array_throttle is not None and job.array_id is not None:
            n = self._counted().array_tasks.get(job.array_id, 0) - own
            if n >= job.array_throttle:
                return reasons.array_task_limit(job.array_id, n, job.array_throttle)
        cap = config.queues[job.queue].max_running_per_user
        if cap is not None:
            n = self._counted().user_jobs.get((job.queue, job.user), 0) - own
            if n >= cap:
                return reasons.user_limit(job.user, n, job.queue, cap)
        return None

    def quota(self, job: Job, config: ClusterConfig) -> str | Reason:
        """WITHIN, BORROW, or the QuotaExceeded reason."""
        q = config.queues[job.queue]
        if q.quota_gpus is None:
            return WITHIN
        used = self._counted().queue_gpus.get(q.name, 0.0)
        need = job.num_nodes * job.gpus_per_node if job.mig is None else gpu_equiv(job)
        if job.id in self.committed:
            used -= gpu_equiv(job)  # its own commitment is what it asks for, not someone else's use
        if used + need <= q.quota_gpus:
            return WITHIN
        if q.borrow_limit_gpus is not None and used + need > q.quota_gpus + q.borrow_limit_gpus:
            return reasons.quota_exceeded(q.name, used, q.quota_gpus, q.borrow_limit_gpus, need)
        return BORROW
