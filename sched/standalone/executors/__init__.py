"""Executors run the ranks of started jobs. The daemon is their only caller.

An executor is told to `launch` a job's ranks, asked which ranks have `ended`, and told
to `signal`/`kill` a job's ranks. It never decides anything: the gang rule (one failed rank
fails the job) and time limits live in the daemon.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from adsched.standalone.store import JobRecord


@dataclass(frozen=True)
class RankEnd:
    job_id: int
    rank: int
    exit_code: int  # negative: killed by that signal
    node_lost: bool = False  # the rank's node stopped answering: its fate is unknown


class Executor(Protocol):
    def launch(self, job: JobRecord) -> dict[int, int]:
        """Start every rank of a RUNNING job; returns {rank: pid}."""

    def ended(self, job: JobRecord) -> list[RankEnd]:
        """Ranks of this job that have ended (all of them once the job is over)."""

    def signal(self, job: JobRecord, signum: int) -> None:
        """Send a signal to every live rank of the job (its whole process group)."""

    def started(self, job: JobRecord) -> set[int]:
        """Ranks whose command is running or has run (for the gang start timeout)."""

    def checkpoint_time(self, job: JobRecord) -> float | None:
        """When the job last touched its checkpoint file ($ADSCHED_CHECKPOINT_FILE), if known."""

    def reconcile(self, job: JobRecord) -> dict[int, int]:
        """After a daemon crash: {rank: pid} for this attempt's ranks the store has no pid for.

        A rank wrapper still running is adopted; a rank that was never launched is launched
        now (the start was recorded, so the whole gang is owed); one that ran and vanished
        without an exit code is recorded as killed.
        """


def rank_env(job: JobRecord, rank: int, master_addr: str, state_dir: os.PathLike) -> dict[str, str]:
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
        "ADSCHED_CHECKPOINT_FILE": checkpoint_file(state_dir, job.id),
    }
    if alloc.get("slices"):  # MIG: which slices of which GPUs this rank holds
        env["ADSCHED_MIG_SLICES"] = ",".join(f"{g}:{s}" for g, s in alloc["slices"])
    env.update({k: str(v) for k, v in job.env.items()})
    return env


def job_dir(state_dir: os.PathLike, job_id: int) -> str:
    return os.path.join(os.fspath(state_dir), "jobs", str(job_id))


def rank_base(state_dir: os.PathLike, job: JobRecord, rank: int) -> str:
    """STATE/jobs/ID/rank-R.TRY: the exit-code files of one attempt (restart) of one rank.

    Per attempt, so a requeued job's new ranks never read (or are mistaken for) an earlier
    attempt's, and a wrapper's command line says which attempt it belongs to.
    """
    return os.path.join(job_dir(state_dir, job.id), f"rank-{rank}.{job.restart_count}")


def checkpoint_file(state_dir: os.PathLike, job_id: int) -> str:
    """Touching this file reports a checkpoint (as `adsub checkpointed` does)."""
    return os.path.join(job_dir(state_dir, job_id), "checkpoint")
