"""Why a job waits or is cancelled, as data: one constructor per kind of reason.

Each constructor fills a model.Reason: its `code` (what programs and tests compare), the
values it is about (the job it waits on, the numbers) and the `message` users see, rendered
here from those same values, so the text and the data never disagree. Nothing outside this
module writes a reason's text, and nothing reads a reason by parsing it.
"""

from __future__ import annotations

from .model import Reason

# The codes (Slurm's pending-reason names where Slurm has one).
BEGIN_TIME = "BeginTime"  # held until its begin time (the start backoff after a requeue)
PRIORITY = "Priority"  # strict FIFO: behind the first blocked job
RESOURCES = "Resources"  # not enough free nodes (or MIG slices) now
TOPOLOGY = "Topology"  # enough nodes, but not within its max leaves
RESERVATION = "Reservation"  # it fits only on GPUs a higher-priority job is promised
PREEMPTING = "Preempting"  # its victims are being stopped for it
# It fits now, but only across more leaves than it needs: it waits (scheduler.leaf_wait) for
# fewer. Slurm has no reason name for this wait (--switches=N@time: the job shows Resources, its
# log says "waiting for switches"), hence our own.
LEAF_WAIT = "LeafWait"
DEPENDENCY = "Dependency"  # a job it depends on has not finished
DEPENDENCY_NEVER_SATISFIED = "DependencyNeverSatisfied"  # cancel: an afterok parent did not complete
QUOTA_EXCEEDED = "QuotaExceeded"  # its queue is at quota + borrow limit
USER_LIMIT = "UserLimit"  # the user's running jobs in the queue are at the limit
ARRAY_TASK_LIMIT = "JobArrayTaskLimit"  # the array's running tasks are at its throttle
QUEUE_LIMIT = "QueueLimit"  # beyond a limit of its queue: never runs there
INVALID_QUEUE = "InvalidQueue"  # no such queue
INVALID_REQUEST = "InvalidRequest"  # the cluster can never hold the request

NEVER_RUNS = (QUEUE_LIMIT, INVALID_QUEUE, INVALID_REQUEST)  # validate_job's codes


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def job_list(ids) -> str:
    ids = list(ids)
    return f"job {ids[0]}" if len(ids) == 1 else "jobs " + ", ".join(str(i) for i in ids)


def begin_time(at: float, cause: str) -> Reason:
    return Reason(BEGIN_TIME, cause or "not eligible before its begin time", time=at)


def priority(blocker: int) -> Reason:
    return Reason(PRIORITY, f"waiting behind job {blocker}", job=blocker)


def resources(num_nodes: int, gpus: int, have: int) -> Reason:
    return Reason(RESOURCES, f"needs {plural(num_nodes, 'node')} with {plural(gpus, 'free GPU')}; {have} available",
                  need=num_nodes, have=have)


def resources_for(num_nodes: int, gpus: int, seconds: int) -> Reason:
    """Not enough nodes free for the job's whole time limit (counted on the availability profile)."""
    return Reason(RESOURCES, f"needs {num_nodes} nodes with {gpus} free GPUs for {seconds} s", need=num_nodes)


def mig_resources(profile: str, count: int) -> Reason:
    return Reason(RESOURCES, f"needs {plural(count, profile + ' MIG slice')} on one node; none has them free",
                  need=count, have=0)


def topology(num_nodes: int, max_leaves: int, best_leaf: str, best_free: int) -> Reason:
    return Reason(TOPOLOGY, f"needs {num_nodes} nodes within {plural(max_leaves, 'leaf')}; "
                            f"best leaf {best_leaf} has {best_free} free",
                  leaf=best_leaf, need=num_nodes, have=best_free, limit=max_leaves)


def reservation(job_id: int, start_time: float, nodes: tuple[str, ...]) -> Reason:
    where = ",".join(nodes) if len(nodes) <= 4 else f"{nodes[0]}..{nodes[-1]} ({len(nodes)} nodes)"
    return Reason(RESERVATION, f"would delay job {job_id}, reserved from t={start_time:g} on {where}",
                  job=job_id, jobs=(job_id,), time=start_time)


def leaf_wait(fewest: int, spans: int, until: float) -> Reason:
    """Fits now across `spans` leaves; waits until `until` at most for `fewest`."""
    return Reason(LEAF_WAIT, f"fits now only across {spans} leaves; waits for {plural(fewest, 'leaf')} "
                             f"until t={until:g} at most (leaf_wait), then starts where it fits",
                  need=fewest, have=spans, time=until)


def preempting(victims: tuple[int, ...]) -> Reason:
    return Reason(PREEMPTING, f"waiting for {job_list(victims)} to stop", job=victims[0], jobs=victims)


def dependency(waiting: tuple[int, ...]) -> Reason:
    return Reason(DEPENDENCY, "waiting for job " + ", ".join(str(d) for d in waiting), job=waiting[0],
                  jobs=waiting)


def dependency_never_satisfied(parent: int, state: str) -> Reason:
    return Reason(DEPENDENCY_NEVER_SATISFIED, f"job {parent} {state}", job=parent, jobs=(parent,))


def quota_exceeded(queue: str, used: float, quota: int, borrow_limit: int, need: float) -> Reason:
    return Reason(QUOTA_EXCEEDED, f"queue {queue} uses {used:g} of its {quota} GPUs (may borrow {borrow_limit}); "
                                  f"job needs {need:g}",
                  need=need, have=used, limit=quota + borrow_limit)


def array_task_limit(array_id: int, running: int, throttle: int) -> Reason:
    return Reason(ARRAY_TASK_LIMIT, f"array {array_id} has {running} of at most {throttle} tasks running",
                  job=array_id, have=running, limit=throttle)


def user_limit(user: str, running: int, queue: str, cap: int) -> Reason:
    return Reason(USER_LIMIT, f"user {user} has {running} running jobs in queue {queue} (max {cap})",
                  have=running, limit=cap)


def never_runs(code: str, message: str, need: float | None = None, limit: float | None = None) -> Reason:
    """validate_job's verdicts: a request its queue or the cluster can never take."""
    assert code in NEVER_RUNS
    return Reason(code, message, need=need, limit=limit)
