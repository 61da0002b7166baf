"""Small fluent builders for core fixtures (in the spirit of Kueue's testing wrappers)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from adsched.core.config import ClusterConfig, parse_config
from adsched.core.model import Job, NodeAlloc, RunningJob, Snapshot

QUEUES = {
    "release": {"tier": 10, "preemptible": False, "max_time": "2-00:00:00"},
    "explore": {"tier": 1, "preemptible": True, "max_time": "2-00:00:00"},
    "debug": {"tier": 1, "preemptible": True, "max_gpus_per_job": 8, "max_time": "1:00:00"},
}


def cluster(leaves: int = 4, nodes_per_leaf: int = 4, gpus: int = 8, spines: int = 1, *,
            scheduler: dict | None = None, queues: dict | None = None, mig: dict | None = None,
            **extra) -> ClusterConfig:
    """n01.. under leaf1..; leaves split evenly over spines.

    `scheduler` adds [scheduler] keys, `queues` replaces the queue tables, and `mig` (node
    group keys, e.g. {"names": "m[1-2]", "gpus": 2, "mig_gpus": 2, "mig_profile": {...}})
    adds a MIG node group under its own leaf `migleaf`.
    """
    n = leaves * nodes_per_leaf
    data: dict = {
        "cluster": {"name": "test"},
        "nodes": [{"names": f"n[01-{n:02d}]", "gpus": gpus}],
        "switches": {},
        "queues": queues if queues is not None else QUEUES,
        "scheduler": {"default_queue": "explore", **(scheduler or {})},
    }
    if mig is not None:
        data["nodes"].append(mig)
        data["switches"]["migleaf"] = {"nodes": mig["names"]}
    for l in range(leaves):
        lo, hi = l * nodes_per_leaf + 1, (l + 1) * nodes_per_leaf
        data["switches"][f"leaf{l + 1}"] = {"nodes": f"n[{lo:02d}-{hi:02d}]"}
    per_spine = leaves // spines
    for s in range(spines):
        data["switches"][f"spine{s + 1}"] = {"switches": f"leaf[{s * per_spine + 1}-{(s + 1) * per_spine}]"}
    data.update(extra)
    return parse_config(data)


class JobBuilder:
    def __init__(self, job_id: int):
        self._job = Job(id=job_id, queue="explore", num_nodes=1, gpus_per_node=8, time_limit=3600,
                        submit_time=float(job_id))

    def nodes(self, n: int) -> "JobBuilder":
        self._job = replace(self._job, num_nodes=n)
        return self

    def gpus(self, g: int) -> "JobBuilder":
        self._job = replace(self._job, gpus_per_node=g)
        return self

    def queue(self, q: str) -> "JobBuilder":
        self._job = replace(self._job, queue=q)
        return self

    def max_leaves(self, m: int) -> "JobBuilder":
        self._job = replace(self._job, max_leaves=m)
        return self

    def priority(self, p: int) -> "JobBuilder":
        self._job = replace(self._job, priority=p)
        return self

    def submitted(self, t: float) -> "JobBuilder":
        self._job = replace(self._job, submit_time=t)
        return self

    def limit(self, seconds: int) -> "JobBuilder":
        self._job = replace(self._job, time_limit=seconds)
        return self

    def user(self, name: str) -> "JobBuilder":
        self._job = replace(self._job, user=name)
        return self

    def array(self, array_id: int, index: int, throttle: int | None = None) -> "JobBuilder":
        self._job = replace(self._job, array_id=array_id, array_index=index, array_throttle=throttle)
        return self

    def after_ok(self, *ids: int) -> "JobBuilder":
        self._job = replace(self._job, after_ok=ids)
        return self

    def after_any(self, *ids: int) -> "JobBuilder":
        self._job = replace(self._job, after_any=ids)
        return self

    def held_until(self, t: float, cause: str = "") -> "JobBuilder":
        """Requeued by the start backoff: not eligible before `t` (Job.begin_time)."""
        self._job = replace(self._job, begin_time=t, begin_cause=cause)
        return self

    def mig(self, profile: str, count: int) -> "JobBuilder":
        self._job = replace(self._job, mig=(profile, count), num_nodes=1, gpus_per_node=0)
        return self

    def build(self) -> Job:
        return self._job

    def running_on(self, *nodes: str, gpus: tuple[int, ...] | None = None, start: float = 0.0,
                   slices: tuple[tuple[int, int], ...] = (), borrowing: bool = False,
                   checkpoint: float | None = None) -> RunningJob:
        """This job already running on `nodes` (GPUs 0..G-1 unless given; MIG jobs: `slices`)."""
        if self._job.mig is not None:
            return RunningJob(self._job, start, tuple(NodeAlloc(n, (), slices) for n in nodes), borrowing,
                              checkpoint)
        g = gpus if gpus is not None else tuple(range(self._job.gpus_per_node))
        self._job = replace(self._job, num_nodes=len(nodes), gpus_per_node=len(g))
        return RunningJob(self._job, start, tuple(NodeAlloc(n, g) for n in nodes), borrowing, checkpoint)


def job(job_id: int) -> JobBuilder:
    return JobBuilder(job_id)


def snapshot(pending=(), running=(), unavailable=(), finished=None, user_usage=None, queue_usage=None,
             preempting=None) -> Snapshot:
    return Snapshot(
        pending=tuple(j.build() if isinstance(j, JobBuilder) else j for j in pending),
        running=tuple(running),
        unavailable=frozenset(unavailable),
        finished=dict(finished or {}),
        user_usage=dict(user_usage or {}),
        queue_usage=dict(queue_usage or {}),
        preempting=dict(preempting or {}),
    )


def with_settings(config: ClusterConfig, **settings) -> ClusterConfig:
    """The same cluster with some [scheduler] settings changed."""
    return replace(config, scheduler=replace(config.scheduler, **settings))


def run_cycle(config: ClusterConfig, snap: Snapshot, now: float):
    """One cycle with the invariants checked, as every test should run it."""
    from adsched.core.invariants import check
    from adsched.core.schedule import schedule

    decisions = schedule(snap, config, now)
    check(snap, decisions, config, now=now)
    return decisions


@dataclass
class Case:
    """One table row: a cluster state and what the cycle must decide (`now` = 100)."""

    name: str
    pending: list
    running: list = field(default_factory=list)
    config: ClusterConfig | None = None  # None: the runner's default
    finished: dict = field(default_factory=dict)
    want_starts: dict = field(default_factory=dict)  # job id -> node names (None: anywhere)
    # job id -> the reason's code, or (code, {field: value}) to check the fields it names too
    want_pending: dict = field(default_factory=dict)
    want_cancels: dict = field(default_factory=dict)
    want_reservations: dict = field(default_factory=dict)  # job id -> (start time, node names)
    want_borrowing: set = field(default_factory=set)  # started job ids marked borrowing
    want_preemptions: dict = field(default_factory=dict)  # victim id -> preemptor id
    preempting: dict = field(default_factory=dict)  # Snapshot.preempting: signalled earlier
    now: float = 100.0


def assert_reason(reason, want) -> None:
    """`want` is a code, or (code, {field: value}): compared exactly, field by field."""
    code, fields = (want, {}) if isinstance(want, str) else want
    assert reason.code == code, str(reason)
    assert {k: getattr(reason, k) for k in fields} == fields, str(reason)


def run_case(case: Case, default: ClusterConfig):
    """Run a Case: invariants checked; starts, reservations, cancels and preemptions must be
    exactly those wanted."""
    config = case.config or default
    snap = snapshot(case.pending, case.running, finished=case.finished, preempting=case.preempting)
    d = run_cycle(config, snap, case.now)
    starts = {s.job_id: [a.node for a in s.placement] for s in d.starts}
    for job_id, nodes in case.want_starts.items():
        assert job_id in starts, f"job {job_id} did not start: {d.pending_reasons.get(job_id)}"
        if nodes is not None:
            assert starts[job_id] == nodes
    assert set(starts) == set(case.want_starts), f"unexpected starts {set(starts) - set(case.want_starts)}"
    for job_id, want in case.want_pending.items():
        assert_reason(d.pending_reasons[job_id], want)
    assert set(d.cancels) == set(case.want_cancels)
    for job_id, want in case.want_cancels.items():
        assert_reason(d.cancels[job_id], want)
    got = {r.job_id: (r.start_time, [a.node for a in r.placement]) for r in d.reservations}
    assert got == case.want_reservations
    assert {s.job_id for s in d.starts if s.borrowing} == case.want_borrowing
    assert {p.victim_id: p.preemptor_id for p in d.preemptions} == case.want_preemptions
    return d
