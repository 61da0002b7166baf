"""Whether a job can ever run on this cluster: `validate_job`, used at submit and in every cycle.

Its own module (re-exported by schedule.py) so that `adsub submit` validates a request without
importing the whole scheduler.
"""

from __future__ import annotations

from .config import ClusterConfig
from .fairshare import gpu_equiv
from .model import Job, Reason
from .reasons import INVALID_QUEUE, INVALID_REQUEST, QUEUE_LIMIT, never_runs


def validate_job(job: Job, config: ClusterConfig) -> Reason | None:
    """Why a job can never run on this cluster, or None. Used at submit and in every cycle."""
    queue = config.queues.get(job.queue)
    if queue is None:
        return never_runs(INVALID_QUEUE, f"unknown queue {job.queue!r} (queues: {', '.join(config.queues)})")
    if job.mig is not None:
        invalid = _validate_mig(job, config)
        if invalid:
            return invalid
    else:
        if job.num_nodes < 1:
            return never_runs(INVALID_REQUEST, "needs at least 1 node")
        if job.gpus_per_node < 1:
            return never_runs(INVALID_REQUEST, "needs at least 1 GPU per node")
        fitting = config.nodes_with_at_least(job.gpus_per_node)
        if job.num_nodes > fitting:
            return never_runs(INVALID_REQUEST, f"needs {job.num_nodes} nodes with {job.gpus_per_node} GPUs; "
                                               f"the cluster has {fitting}", need=job.num_nodes, limit=fitting)
    if job.max_leaves is not None and job.max_leaves < 1:
        return never_runs(INVALID_REQUEST, "max leaves must be >= 1")
    if job.max_leaves is not None and job.mig is None and job.num_nodes > 1:
        # Even an idle cluster cannot hold the gang within max_leaves leaves: it would wait forever.
        within = sum(config.leaf_sizes(job.gpus_per_node)[: job.max_leaves])
        if job.num_nodes > within:
            largest = "the largest leaf has" if job.max_leaves == 1 else f"the {job.max_leaves} largest leaves have"
            return never_runs(INVALID_REQUEST, f"needs {job.num_nodes} nodes with {job.gpus_per_node} GPUs within "
                              f"{job.max_leaves} {'leaf' if job.max_leaves == 1 else 'leaves'}; {largest} {within}",
                              need=job.num_nodes, limit=within)
    if job.array_throttle is not None and job.array_throttle < 1:
        return never_runs(INVALID_REQUEST, "array throttle must be >= 1")
    if queue.max_gpus_per_job is not None and gpu_equiv(job) > queue.max_gpus_per_job:
        return never_runs(QUEUE_LIMIT, f"{gpu_equiv(job):g} GPUs > queue {queue.name} limit of "
                                       f"{queue.max_gpus_per_job} per job", need=gpu_equiv(job),
                          limit=queue.max_gpus_per_job)
    if queue.max_time is not None and job.time_limit > queue.max_time:
        return never_runs(QUEUE_LIMIT, f"time limit exceeds queue {queue.name} max_time", need=job.time_limit,
                          limit=queue.max_time)
    if queue.quota_gpus is not None and queue.borrow_limit_gpus is not None:
        ceiling = queue.quota_gpus + queue.borrow_limit_gpus  # quota.py never lets the queue beyond it
        if gpu_equiv(job) > ceiling:
            return never_runs(QUEUE_LIMIT, f"needs {gpu_equiv(job):g} GPUs; queue {queue.name} may use at most "
                                           f"{ceiling} (quota {queue.quota_gpus} + borrow limit "
                                           f"{queue.borrow_limit_gpus})", need=gpu_equiv(job), limit=ceiling)
    return None


def _validate_mig(job: Job, config: ClusterConfig) -> Reason | None:
    profile, count = job.mig
    if job.num_nodes != 1 or job.gpus_per_node != 0:
        return never_runs(INVALID_REQUEST, "a MIG job asks for slices on 1 node (num_nodes=1, gpus_per_node=0)")
    if count < 1:
        return never_runs(INVALID_REQUEST, "needs at least 1 MIG slice")
    have = config.mig_slices(profile)
    if count > have:
        return never_runs(INVALID_REQUEST, f"needs {count} {profile} MIG slices on one node; the most any node "
                                           f"has is {have}", need=count, limit=have)
    return None
