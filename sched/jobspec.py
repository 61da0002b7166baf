"""A user's request (`adsub submit`) and its validation into a core Job, for every backend.

Also the Slurm-style strings users type: arrays, dependencies, MIG, signals."""

from __future__ import annotations

import os
import re
import signal as signals

from dataclasses import dataclass, field

from adsched.core.config import ClusterConfig
from .errors import InvalidRequest
from .inputcheck import MAX_PATH_BYTES, check_request, check_text, printable
from adsched.core.model import Job
from adsched.core.reasons import INVALID_REQUEST
from adsched.core.validate import validate_job
from adsched.core.timefmt import parse_duration

MAX_ARRAY_TASKS = 10_000  # like Slurm's MaxArraySize, a guard against a typo of 0-9999999
MAX_ARRAY_INDEX = 4_000_000  # Slurm's largest MaxArraySize - 1
MAX_JOB_ID = 2**63 - 1  # SQLite's INTEGER: a larger id names no job

_ARRAY = re.compile(r"^([\d,\-:]+)(?:%(\d+))?$")


def parse_array(text: str) -> tuple[list[int], int | None]:
    """"0-999%50" -> ([0..999], 50); "1,3,5-9:2" -> ([1, 3, 5, 7, 9], None)."""
    m = _ARRAY.match(text.strip())
    if not m:
        raise InvalidRequest(f"--array: {text!r} is not like 0-999%50 or 1,3,5-7")
    indexes: list[int] = []
    for part in m.group(1).split(","):
        r = re.match(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$", part)
        if not r:
            raise InvalidRequest(f"--array: bad range {part!r}")
        lo, hi, step = int(r.group(1)), int(r.group(2) or r.group(1)), int(r.group(3) or 1)
        if hi < lo or step < 1:
            raise InvalidRequest(f"--array: range {part!r} is empty")
        if hi > MAX_ARRAY_INDEX:
            raise InvalidRequest(f"--array: index {hi} is above {MAX_ARRAY_INDEX}")
        if (hi - lo) // step + 1 + len(indexes) > MAX_ARRAY_TASKS:
            raise InvalidRequest(f"--array: more than {MAX_ARRAY_TASKS} tasks")
        indexes.extend(range(lo, hi + 1, step))
    if len(set(indexes)) != len(indexes):
        raise InvalidRequest("--array: an index appears twice")
    throttle = int(m.group(2)) if m.group(2) else None
    if throttle is not None and throttle < 1:
        raise InvalidRequest("--array: the %N throttle must be >= 1")
    if throttle is not None and throttle > MAX_ARRAY_TASKS:
        throttle = MAX_ARRAY_TASKS  # no more can run at once anyway
    return sorted(indexes), throttle


def parse_dependency(text: str) -> tuple[list[int], list[int]]:
    """"afterok:12:13,afterany:14" (or "afterok:12,13") -> ([12, 13], [14])."""
    after_ok: list[int] = []
    after_any: list[int] = []
    current = None
    for token in text.replace(" ", "").split(","):
        if not token:
            continue
        kind, _, ids = token.partition(":") if not token.isdigit() else (None, "", token)
        if kind is not None:
            if kind not in ("afterok", "afterany"):
                raise InvalidRequest(f"--dependency: {kind!r} is not supported (afterok, afterany)")
            current = after_ok if kind == "afterok" else after_any
        if current is None:
            raise InvalidRequest(f"--dependency: {text!r} is not like afterok:ID[:ID]")
        for i in ids.split(":"):
            if not i.isdecimal() or int(i) > MAX_JOB_ID:
                raise InvalidRequest(f"--dependency: {i!r} is not a job id")
            current.append(int(i))
    if not after_ok and not after_any:
        raise InvalidRequest(f"--dependency: {text!r} names no job")
    return after_ok, after_any


def parse_mig(text: str) -> tuple[str, int]:
    """"1g.10gb:2" -> ("1g.10gb", 2); "1g.10gb" -> ("1g.10gb", 1)."""
    m = re.match(r"^(\d+g\.\d+gb(?:\+me)?)(?::(\d+))?$", text.strip())
    if not m:
        raise InvalidRequest(f"--gpus: {text!r} is neither a GPU count nor a MIG profile like 1g.10gb:2")
    count = int(m.group(2) or 1)
    if count < 1:
        raise InvalidRequest("--gpus: needs at least 1 MIG slice")
    return m.group(1), count


SIGNALS = {"TERM": signals.SIGTERM, "USR1": signals.SIGUSR1, "USR2": signals.SIGUSR2, "INT": signals.SIGINT,
           "HUP": signals.SIGHUP}


def parse_signal(text: str) -> tuple[int, int | None]:
    """"USR1@120" -> (SIGUSR1, 120); "TERM" -> (SIGTERM, None): signal, seconds of warning."""
    name, _, secs = text.strip().upper().removeprefix("SIG").partition("@")
    name = name.removeprefix("SIG")
    if name not in SIGNALS:
        raise InvalidRequest(f"--signal: {name!r} is not one of {', '.join(SIGNALS)}")
    if secs and not secs.isdecimal():
        raise InvalidRequest(f"--signal: {secs!r} is not a number of seconds")
    return SIGNALS[name], int(secs) if secs else None


@dataclass
class JobRequest:
    """What a user asks for; `submit` turns it into a PENDING job or an InvalidRequest."""

    command: list[str]
    nodes: int = 1
    gpus_per_node: int | None = None  # whole-node share per rank; default: all GPUs of a node
    gpus: int | None = None  # sub-node: total GPUs on one node (exclusive with gpus_per_node)
    queue: str | None = None
    time: str | None = None  # Slurm format
    name: str | None = None
    user: str = "user"
    priority: int = 0
    max_leaves: int | None = None
    workdir: str = "."
    env: dict[str, str] = field(default_factory=dict)
    array: str | None = None  # "0-999%50": task indexes, then the most running at once
    dependency: str | None = None  # "afterok:12:13,afterany:14" (Slurm's syntax; ',' between ids works too)
    mig: str | None = None  # "1g.10gb:2": MIG slices instead of whole GPUs
    signal: str | None = None  # "USR1@120": signal before a preemption kill, seconds of warning
    no_requeue: bool = False  # a preempted job is cancelled instead of requeued



def build_job(config: ClusterConfig, req: JobRequest, now: float, job_id: int = 0) -> Job:
    """Validate a request against the cluster; raises InvalidRequest with one clear line."""
    check_request(req)  # types and texts first: hostile input stays data
    if not req.command or not any(part.strip() for part in req.command):
        raise InvalidRequest("no command given (put it after `--`, or use a job file)")
    queue_name = req.queue or config.scheduler.default_queue
    queue = config.queues.get(queue_name)
    if queue is None:
        raise InvalidRequest(f"unknown queue {queue_name!r} (queues: {', '.join(config.queues)})")
    if req.gpus is not None and req.gpus_per_node is not None:
        raise InvalidRequest("use --gpus (sub-node) or --gpus-per-node, not both")
    if req.nodes is None or req.nodes < 1:
        raise InvalidRequest(f"--nodes must be >= 1, got {req.nodes}")
    mig = None
    if req.mig is not None:
        if req.gpus is not None or req.gpus_per_node is not None or req.nodes != 1:
            raise InvalidRequest("a MIG request (--gpus PROFILE:N) runs on one node without whole GPUs")
        mig = parse_mig(req.mig)
        gpn = 0
    elif req.gpus is not None:
        if req.gpus < 1:
            raise InvalidRequest(f"--gpus must be >= 1, got {req.gpus}")
        if req.nodes != 1:
            raise InvalidRequest("--gpus asks for GPUs on one node; for several nodes use --gpus-per-node")
        gpn = req.gpus
    elif req.gpus_per_node is not None:
        if req.gpus_per_node < 1:
            raise InvalidRequest(f"--gpus-per-node must be >= 1, got {req.gpus_per_node}")
        gpn = req.gpus_per_node
    else:
        gpn = config.max_gpus_per_node
    if req.time is not None:
        try:
            time_limit = parse_duration(req.time)
        except ValueError as e:
            raise InvalidRequest(f"--time: {e}") from None
        if time_limit <= 0:
            raise InvalidRequest("--time must be positive")
    else:
        time_limit = queue.default_time
    if req.signal is not None:
        parse_signal(req.signal)
    after_ok, after_any = parse_dependency(req.dependency) if req.dependency else ([], [])
    array_throttle = parse_array(req.array)[1] if req.array else None
    job = Job(
        id=job_id, queue=queue_name, num_nodes=req.nodes, gpus_per_node=gpn, time_limit=time_limit,
        submit_time=now, user=req.user, name=req.name or req.command[0].rsplit("/", 1)[-1],
        priority=req.priority, max_leaves=req.max_leaves, after_ok=tuple(after_ok), after_any=tuple(after_any),
        mig=mig, array_throttle=array_throttle,
    )
    problem = validate_job(job, config)
    if problem:
        raise InvalidRequest(problem.message if problem.code == INVALID_REQUEST else str(problem))
    return job


def check_workdir(config: ClusterConfig, workdir: str) -> None:
    """Refuse a working directory the ranks could not enter, when they run on this host (standalone,
    local executor), so the submitter sees what they would; elsewhere the rank fails with a clear line."""
    if config.backend != "standalone" or config.executor != "local":
        return
    check_text("workdir", workdir, MAX_PATH_BYTES)  # a NUL or non-UTF-8 path: said as such
    shown = printable(workdir)  # a newline in the path stays on the error's one line
    if not os.path.exists(workdir):
        raise InvalidRequest(f"-D/--chdir: {shown}: no such directory")
    if not os.path.isdir(workdir):
        raise InvalidRequest(f"-D/--chdir: {shown}: not a directory")
    if not os.access(workdir, os.X_OK):
        raise InvalidRequest(f"-D/--chdir: {shown}: permission denied")
