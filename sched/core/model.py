"""The core's vocabulary: jobs (Job) and why they wait (Reason) here; allocations, the snapshot the core reads
and the decisions it returns in snapshot.py (importable from here too).

Plain data, no I/O. The store, the simulator and the Slurm controller all build a Snapshot
and apply a Decisions value; none of them makes a scheduling decision of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

# Final states of finished jobs, as carried in Snapshot.finished (Slurm's names).
COMPLETED = "COMPLETED"

# snapshot.py's types, made on first use: creating a dataclass costs about 1 ms here, and submitting a
# job (`adsub submit`: Job, Reason) needs none of these. `from adsched.core.model import Snapshot` still works.
SNAPSHOT_TYPES = frozenset({"NodeAlloc", "Placement", "RunningJob", "Snapshot", "Start", "Reservation", "Preemption",
                            "Decisions"})


def __getattr__(name: str):
    if name in SNAPSHOT_TYPES:
        from . import snapshot

        return getattr(snapshot, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    # Job arrays: every task is its own Job sharing `array_id`; `array_throttle` is Slurm's
    # `%N`, the most tasks of the array running at once (counted from running jobs).
    array_id: int | None = None
    array_index: int | None = None
    array_throttle: int | None = None
    # Dependencies (`--dependency afterok:1,2` / `afterany:3`): job ids that must have
    # finished (afterok: COMPLETED; afterany: in any final state) before this job may start.
    after_ok: tuple[int, ...] = ()
    after_any: tuple[int, ...] = ()
    # MIG: (profile, slices), e.g. ("1g.10gb", 2); such a job has num_nodes=1, gpus_per_node=0.
    mig: tuple[str, int] | None = None
    # Not eligible before `begin_time` (Slurm's BeginTime): set by a shell when it requeues a
    # gang whose ranks did not all start (the start backoff); `begin_cause` is that requeue's
    # reason. The core holds the job until then with a BeginTime pending reason naming it.
    begin_time: float | None = None
    begin_cause: str = ""

    @property
    def total_gpus(self) -> int:
        return self.num_nodes * self.gpus_per_node


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a job waits (or is cancelled), as data, kept apart from the text users see (as
    Kueue keeps a condition's reason apart from its message). Programs read `code` and the
    fields; `message` is rendered from the same values where the reason is made (reasons.py).
    str(reason) is the text shown: "Code: message"."""

    code: str  # e.g. "Resources", "Topology", "Reservation", "Preempting" (reasons.py lists them)
    message: str
    job: int | None = None  # the job it waits on: ahead of it, promised its GPUs, a dependency, a victim
    jobs: tuple[int, ...] = ()  # every job it waits on, when there can be several (dependencies, victims)
    leaf: str | None = None  # Topology: the leaf with the most fitting nodes
    need: float | None = None  # what it asks: nodes, GPUs or slices
    have: float | None = None  # what there is (free nodes) or what is in use (quota, running jobs)
    limit: float | None = None  # the limit it meets: max leaves, quota + borrow limit, throttle
    time: float | None = None  # Reservation: the start it would delay; BeginTime: when it is eligible

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
