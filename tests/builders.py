"""Small fluent builders for core fixtures (in the spirit of Kueue's testing wrappers)."""

from __future__ import annotations

from dataclasses import replace

from adsched.config import ClusterConfig, parse_config
from adsched.model import Job, NodeAlloc, RunningJob, Snapshot

QUEUES = {
    "release": {"tier": 10, "preemptible": False, "max_time": "2-00:00:00"},
    "explore": {"tier": 1, "preemptible": True, "max_time": "2-00:00:00"},
    "debug": {"tier": 1, "preemptible": True, "max_gpus_per_job": 8, "max_time": "1:00:00"},
}


def cluster(leaves: int = 4, nodes_per_leaf: int = 4, gpus: int = 8, spines: int = 1, **extra) -> ClusterConfig:
    """n01.. under leaf1..; leaves split evenly over spines."""
    n = leaves * nodes_per_leaf
    data: dict = {
        "cluster": {"name": "test"},
        "nodes": [{"names": f"n[01-{n:02d}]", "gpus": gpus}],
        "switches": {},
        "queues": QUEUES,
        "scheduler": {"default_queue": "explore"},
    }
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

    def build(self) -> Job:
        return self._job

    def running_on(self, *nodes: str, gpus: tuple[int, ...] | None = None, start: float = 0.0) -> RunningJob:
        """This job already running on `nodes` (GPUs 0..G-1 unless given)."""
        g = gpus if gpus is not None else tuple(range(self._job.gpus_per_node))
        self._job = replace(self._job, num_nodes=len(nodes), gpus_per_node=len(g))
        return RunningJob(self._job, start, tuple(NodeAlloc(n, g) for n in nodes))


def job(job_id: int) -> JobBuilder:
    return JobBuilder(job_id)


def snapshot(pending=(), running=(), unavailable=()) -> Snapshot:
    return Snapshot(
        pending=tuple(j.build() if isinstance(j, JobBuilder) else j for j in pending),
        running=tuple(running),
        unavailable=frozenset(unavailable),
    )
