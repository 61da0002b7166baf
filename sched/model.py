"""The core's vocabulary: jobs, allocations, the snapshot it reads and the decisions it returns.

Plain data, no I/O. The store, the simulator and the Slurm controller all build a Snapshot
and apply a Decisions value; none of them makes a scheduling decision of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class NodeAlloc:
    """One rank's share of a node: the node and the GPU indexes it holds."""

    node: str
    gpus: tuple[int, ...]


Placement = tuple[NodeAlloc, ...]  # rank order: grouped by leaf, then node order


@dataclass(frozen=True, slots=True)
class Job:
    """A request: `num_nodes` ranks, each on its own node with `gpus_per_node` GPUs, all or nothing."""

    id: int
    queue: str
    num_nodes: int
    gpus_per_node: int
    time_limit: int  # seconds
    submit_time: float
    user: str = "user"
    name: str = ""
    priority: int = 0  # the user's own priority within a queue tier
    max_leaves: int | None = None  # None: as few as possible, but any number is allowed

    @property
    def total_gpus(self) -> int:
        return self.num_nodes * self.gpus_per_node


@dataclass(frozen=True, slots=True)
class RunningJob:
    job: Job
    start_time: float
    placement: Placement

    @property
    def end_time(self) -> float:
        """When the time limit runs out: the latest this job can hold its GPUs."""
        return self.start_time + self.job.time_limit


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the core sees in one cycle. Node names not in `unavailable` are up and schedulable."""

    pending: tuple[Job, ...]
    running: tuple[RunningJob, ...] = ()
    unavailable: frozenset[str] = frozenset()  # down or drained nodes


@dataclass(frozen=True, slots=True)
class Start:
    job_id: int
    placement: Placement


@dataclass(slots=True)
class Decisions:
    """The result of one cycle: jobs to start now (all ranks at once) and why the rest wait."""

    starts: list[Start] = field(default_factory=list)
    pending_reasons: dict[int, str] = field(default_factory=dict)
