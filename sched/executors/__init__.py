"""Executors run the ranks of started jobs. The daemon is their only caller.

An executor is told to `launch` a job's ranks, asked which ranks have `ended`, and told
to `signal`/`kill` a job's ranks. It never decides anything: the gang rule (one failed rank
fails the job) and time limits live in the daemon.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from ..store import JobRecord


@dataclass(frozen=True)
class RankEnd:
    job_id: int
    rank: int
    exit_code: int  # negative: killed by that signal


class Executor(Protocol):
    def launch(self, job: JobRecord) -> dict[int, int]:
        """Start every rank of a RUNNING job; returns {rank: pid}."""

    def ended(self, job: JobRecord) -> list[RankEnd]:
        """Ranks of this job that have ended (all of them once the job is over)."""

    def signal(self, job: JobRecord, signum: int) -> None:
        """Send a signal to every live rank of the job (its whole process group)."""


def rank_env(job: JobRecord, rank: int, master_addr: str) -> dict[str, str]:
    """What a training launcher (torchrun, DeepSpeed, a plain script) needs to find its gang."""
    alloc = job.allocations[rank]
    nodes = [a["node"] for a in job.allocations]
    env = {
        "ADSCHED_JOB_ID": str(job.id),
        "ADSCHED_JOB_NAME": job.name,
        "ADSCHED_QUEUE": job.queue,
        "ADSCHED_NODE_RANK": str(rank),
        "ADSCHED_NNODES": str(job.num_nodes),
        "ADSCHED_NODELIST": ",".join(nodes),
        "ADSCHED_NODENAME": alloc["node"],
        "ADSCHED_GPUS_PER_NODE": str(job.gpus_per_node),
        "ADSCHED_RESTART_COUNT": str(job.restart_count),
        "NODE_RANK": str(rank),
        "NNODES": str(job.num_nodes),
        "WORLD_SIZE": str(job.num_nodes * job.gpus_per_node),
        "LOCAL_WORLD_SIZE": str(job.gpus_per_node),
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(20000 + job.id % 20000),
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, alloc["gpus"])),
    }
    env.update({k: str(v) for k, v in job.env.items()})
    return env


def job_dir(state_dir: os.PathLike, job_id: int) -> str:
    return os.path.join(os.fspath(state_dir), "jobs", str(job_id))
