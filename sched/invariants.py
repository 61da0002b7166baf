"""Invariants that must hold after every cycle; tests and the simulator call `check`."""

from __future__ import annotations

from .config import ClusterConfig
from .model import Decisions, Snapshot


class InvariantError(AssertionError):
    pass


def check(snapshot: Snapshot, decisions: Decisions, config: ClusterConfig) -> None:
    jobs = {j.id: j for j in snapshot.pending}
    nodes = {n.name: n for n in config.nodes}
    used: set[tuple[str, int]] = set()
    for run in snapshot.running:
        for a in run.placement:
            for g in a.gpus:
                used.add((a.node, g))
    started = set()
    for start in decisions.starts:
        job = jobs.get(start.job_id)
        if job is None:
            raise InvariantError(f"started job {start.job_id} is not pending")
        if start.job_id in started:
            raise InvariantError(f"job {start.job_id} started twice")
        started.add(start.job_id)
        if start.job_id in decisions.pending_reasons:
            raise InvariantError(f"job {start.job_id} both started and pending")
        names = [a.node for a in start.placement]
        if len(names) != job.num_nodes or len(set(names)) != job.num_nodes:
            raise InvariantError(f"job {job.id}: gang incomplete, {len(set(names))}/{job.num_nodes} nodes")
        for a in start.placement:
            if a.node not in nodes:
                raise InvariantError(f"job {job.id}: unknown node {a.node}")
            if a.node in snapshot.unavailable:
                raise InvariantError(f"job {job.id}: placed on unavailable node {a.node}")
            if len(a.gpus) != job.gpus_per_node:
                raise InvariantError(f"job {job.id}: {len(a.gpus)} GPUs on {a.node}, wants {job.gpus_per_node}")
            for g in a.gpus:
                if not 0 <= g < nodes[a.node].gpus:
                    raise InvariantError(f"job {job.id}: GPU {g} does not exist on {a.node}")
                if (a.node, g) in used:
                    raise InvariantError(f"job {job.id}: GPU {a.node}:{g} used twice")
                used.add((a.node, g))
        if job.max_leaves is not None:
            leaves = {nodes[a.node].leaf for a in start.placement}
            if len(leaves) > job.max_leaves:
                raise InvariantError(f"job {job.id}: spans {len(leaves)} leaves > max {job.max_leaves}")
    for job in snapshot.pending:
        if job.id not in started and job.id not in decisions.pending_reasons:
            raise InvariantError(f"job {job.id}: neither started nor given a pending reason")
