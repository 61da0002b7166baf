"""One scheduling cycle: `schedule(snapshot, config, now) -> Decisions`.

Pure: no I/O, no clock (time comes in as `now`), no randomness. The same snapshot and
config always give the same decisions. The phases:

  1. Build this cycle's Capacity from the snapshot (never the live state).
  2. Order pending jobs (order.py): tier, priority, submit time, id.
  3. Admit in that order: validate the request, then find an all-or-nothing,
     topology-aware placement (place.py); a gang that fits starts whole in this cycle.
     Without backfill the first job that cannot start blocks every job after it.
  4. Every job that does not start gets a pending reason.
"""

from __future__ import annotations

from .capacity import Capacity
from .config import ClusterConfig
from .model import Decisions, Job, Snapshot, Start
from .order import order_pending
from .place import NoFit, find_placement


def validate_job(job: Job, config: ClusterConfig) -> str | None:
    """Why a job can never run on this cluster, or None. Used at submit and in every cycle."""
    queue = config.queues.get(job.queue)
    if queue is None:
        return f"InvalidQueue: unknown queue {job.queue!r} (queues: {', '.join(config.queues)})"
    if job.num_nodes < 1:
        return "InvalidRequest: needs at least 1 node"
    if job.gpus_per_node < 1:
        return "InvalidRequest: needs at least 1 GPU per node"
    fitting = config.nodes_with_at_least(job.gpus_per_node)
    if job.num_nodes > fitting:
        return (
            f"InvalidRequest: needs {job.num_nodes} nodes with {job.gpus_per_node} GPUs; "
            f"the cluster has {fitting}"
        )
    if job.max_leaves is not None and job.max_leaves < 1:
        return "InvalidRequest: max leaves must be >= 1"
    if queue.max_gpus_per_job is not None and job.total_gpus > queue.max_gpus_per_job:
        return f"QueueLimit: {job.total_gpus} GPUs > queue {queue.name} limit of {queue.max_gpus_per_job} per job"
    if queue.max_time is not None and job.time_limit > queue.max_time:
        return f"QueueLimit: time limit exceeds queue {queue.name} max_time"
    return None


def schedule(snapshot: Snapshot, config: ClusterConfig, now: float) -> Decisions:
    decisions = Decisions()

    # Phase 1: this cycle's own view of free capacity.
    cap = Capacity(config, snapshot)

    # Phase 2: priority order.
    queue = order_pending(snapshot.pending, config)

    # Phase 3: admission. Capacity only shrinks during the cycle, so once a shape
    # (nodes, GPUs, max leaves) fails, every later job of that shape fails too.
    settings = config.scheduler
    failed_shapes: dict[tuple, str] = {}
    blocker: int | None = None
    for job in queue:
        if blocker is not None:
            decisions.pending_reasons[job.id] = f"Priority: waiting behind job {blocker}"
            continue
        invalid = validate_job(job, config)
        if invalid:
            decisions.pending_reasons[job.id] = invalid
            continue
        shape = (job.num_nodes, job.gpus_per_node, job.max_leaves)
        reason = failed_shapes.get(shape)
        if reason is None:
            picks = find_placement(cap, job.num_nodes, job.gpus_per_node, job.max_leaves, settings.topology_aware)
            if isinstance(picks, NoFit):
                reason = failed_shapes[shape] = picks.reason
            else:
                placement, _ = cap.take(picks)
                decisions.starts.append(Start(job.id, placement))
                continue
        # Phase 4: say why.
        decisions.pending_reasons[job.id] = reason
        if not settings.backfill:
            blocker = job.id
    return decisions
