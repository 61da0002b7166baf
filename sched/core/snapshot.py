"""What one cycle of the core reads and returns: allocations, running jobs, the Snapshot and the Decisions.

Part of the core's vocabulary (model.py, which re-exports these names): kept apart so that code needing only
Job and Reason, such as `adsub submit`, does not create these dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .model import Job, Reason  # noqa: F401 (the annotations below name them)


@dataclass(frozen=True, slots=True)
class NodeAlloc:
    """One rank's share of a node: the node and the GPU indexes it holds.

    A MIG job holds no whole GPU: `gpus` is empty and `slices` lists (GPU index, slice index)
    pairs on the node's MIG-split GPUs.
    """

    node: str
    gpus: tuple[int, ...]
    slices: tuple[tuple[int, int], ...] = ()


Placement = tuple[NodeAlloc, ...]  # rank order: grouped by leaf, then node order


@dataclass(frozen=True, slots=True)
class RunningJob:
    job: Job
    start_time: float
    placement: Placement
    borrowing: bool = False  # started beyond its queue's quota (Start.borrowing): reclaimable
    # When the job last reported a checkpoint (None: never): preempting it loses the work
    # done since then (or since start_time), which preempt.py weighs in GPU-seconds.
    checkpoint_time: float | None = None

    @property
    def end_time(self) -> float:
        """When the time limit runs out: the latest this job can hold its GPUs."""
        return self.start_time + self.job.time_limit


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the core sees in one cycle. Node names not in `unavailable` are up and schedulable.

    The contract every shell follows (store, simulator, Slurm controller): a snapshot for
    `now` is built by reading only, never writing; it holds every pending job, held ones too
    (with Job.begin_time: the core decides they wait), every running job with its placement,
    `borrowing` and last checkpoint, fair-share usage accrued up to `now`, and the preemptions
    still in course. Anything the shell would filter out is a decision, and decisions are the
    core's. The shell then applies the Decisions as they are.
    """

    pending: tuple[Job, ...]
    running: tuple[RunningJob, ...] = ()
    unavailable: frozenset[str] = frozenset()  # down or drained nodes
    # Final state (COMPLETED, FAILED, CANCELLED, TIMEOUT, ...) of finished jobs that pending
    # jobs depend on. A dependency missing here has not finished yet.
    finished: Mapping[int, str] = field(default_factory=dict)
    # Decayed GPU-hours (fairshare.py) per user and per queue, kept by the store.
    user_usage: Mapping[str, float] = field(default_factory=dict)
    queue_usage: Mapping[str, float] = field(default_factory=dict)
    # Preemptions already signalled (by an earlier cycle's Decisions.preemptions): preemptor
    # job id -> its victims' ids, kept until the preemptor starts. Victims still in `running`
    # are draining (signal sent, grace period running); the core never chooses them again, and
    # the preemptor waits for them; its quota stays committed to it meanwhile (quota.py).
    preempting: Mapping[int, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Start:
    job_id: int
    placement: Placement
    borrowing: bool = False  # beyond its queue's quota: a later cycle may reclaim it


@dataclass(frozen=True, slots=True)
class Reservation:
    """A blocked job's promised start: `placement` is held for it from `start_time` on.

    Later jobs may use these GPUs now only if they end by `start_time` (backfill).
    """

    job_id: int
    start_time: float
    placement: Placement


@dataclass(frozen=True, slots=True)
class Preemption:
    """Stop running job `victim_id` (the whole gang) so that pending `preemptor_id` can start.

    The daemon signals every rank with the victim queue's preempt_signal, kills it after the
    queue's grace_period and requeues it whole; until then its GPUs stay busy and are held
    by the preemptor's Reservation (start_time = now).
    """

    victim_id: int
    preemptor_id: int
    reason: str  # e.g. "preempted by job 12 (queue release)"


@dataclass(slots=True)
class Decisions:
    """The result of one cycle: jobs to start now (all ranks at once) and why the rest wait.

    `starts` is in admission order; `cancels` maps job id -> reason for jobs that can never
    run (a failed afterok dependency); `reservations` are the top blocked jobs' promises;
    `preemptions` are the running jobs to stop for a blocked higher-priority job (preempt.py).
    """

    starts: list[Start] = field(default_factory=list)
    pending_reasons: dict[int, Reason] = field(default_factory=dict)
    cancels: dict[int, Reason] = field(default_factory=dict)
    reservations: list[Reservation] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
