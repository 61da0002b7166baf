"""Job ids as users type them (Slurm's notation), and job arrays as squeue shows them.

    123            a job; when 123 is an array's id, every task of the array (as `scancel 123`)
    123_4          task 4 of array 123
    123_*          every task of array 123
    123_[1,3,5-9]  those tasks of array 123

An array's id is the id of its first task (Store.submit), so a plain id alone cannot tell
"the array" from "its task 0": like Slurm, it means the array; `123_0` is task 0.

Works on any backend with `job`, `jobs(states=...)` and `cancel(job_id, now, by=)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidRequest, NotFound
from .jobspec import MAX_ARRAY_TASKS, MAX_JOB_ID

ACTIVE = ("PENDING", "RUNNING")
_REF = re.compile(r"^(\d+)(?:_(\d+|\*|\[[\d,\-]+\]))?$")


@dataclass(frozen=True)
class JobRef:
    job_id: int
    tasks: tuple[int, ...] | None = None  # None: the job (or the whole array); else these task indexes
    text: str = ""

    @property
    def whole(self) -> bool:
        return self.tasks is None


def parse_job_ref(text: str) -> JobRef:
    """'123', '123_4', '123_*' or '123_[0-9,12]'; InvalidRequest otherwise."""
    m = _REF.match(text.strip())
    if not m:
        raise InvalidRequest(f"{text!r} is not a job id (123, or an array's tasks: 123_4, 123_*, 123_[0-9])")
    job_id, tail = int(m.group(1)), m.group(2)
    if job_id > MAX_JOB_ID:
        raise InvalidRequest(f"{text!r}: no such job id (too large)")
    if tail is None or tail == "*":
        return JobRef(job_id, None, text.strip())
    if tail.isdecimal():
        return JobRef(job_id, (int(tail),), text.strip())
    tasks: list[int] = []
    for part in tail[1:-1].split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdecimal() or (hi and not hi.isdecimal()) or (hi and int(hi) < int(lo)):
            raise InvalidRequest(f"{text!r}: bad task range {part!r}")
        if int(hi or lo) - int(lo) + len(tasks) >= MAX_ARRAY_TASKS:  # a typo must not build a huge list
            raise InvalidRequest(f"{text!r}: more than {MAX_ARRAY_TASKS} tasks")
        tasks.extend(range(int(lo), int(hi or lo) + 1))
    return JobRef(job_id, tuple(sorted(set(tasks))), text.strip())


def resolve(backend, ref: JobRef) -> list:
    """The jobs a reference stands for: the job itself, or the array's active tasks it names."""
    if ref.whole:
        job = backend.job(ref.job_id)  # NotFound for an unknown id
        if job.array_id != ref.job_id:
            if ref.text.endswith("_*"):
                raise InvalidRequest(f"job {ref.job_id} is not a job array")
            return [job]
    tasks = [j for j in backend.jobs(states=ACTIVE) if j.array_id == ref.job_id]
    if not ref.whole:
        tasks = [j for j in tasks if j.array_index in ref.tasks]
    if not tasks:
        raise NotFound(f"no pending or running task in {'array ' + str(ref.job_id) if ref.whole else ref.text}")
    return sorted(tasks, key=lambda j: (j.array_index is None, j.array_index or 0, j.id))


def one(backend, text: str) -> int:
    """The one job `text` names: '123' (the job itself, an array's task 0 for its id) or '123_4'."""
    if text.strip().isdecimal() and text.strip().isascii():
        return int(text)  # any size: the backend says "no job N"
    ref = parse_job_ref(text)
    if ref.whole:
        if ref.text.endswith("_*"):
            raise InvalidRequest(f"{text} names every task of array {ref.job_id}; name one: {ref.job_id}_N")
        return ref.job_id
    if len(ref.tasks) != 1:
        raise InvalidRequest(f"{text} names {len(ref.tasks)} tasks; name one: {ref.job_id}_N")
    for j in backend.listing():  # any state: a finished task is shown too
        if j.array_id == ref.job_id and j.array_index == ref.tasks[0]:
            return j.id
    raise NotFound(f"no job {text}")


def cancel(backend, refs: list[str], now: float, by=None) -> dict[str, str]:
    """Cancel every job the references name: {"123_4": "CANCELLED", "7": "CANCELLING", ...}."""
    parsed = [parse_job_ref(r) for r in refs]  # all checked before anything is cancelled
    results: dict[str, str] = {}
    for ref in parsed:
        for job in resolve(backend, ref):
            results[task_label(job)] = backend.cancel(job.id, now, by=by)
    return results


def task_label(job) -> str:
    """'123_4' for task 4 of array 123; the plain id otherwise (also for a record of an array whose
    task index is not known, as Slurm lists the pending rest of an array)."""
    if job.array_id is None or job.array_index is None:
        return str(job.id)
    return f"{job.array_id}_{job.array_index}"


def index_ranges(indexes: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8'."""
    nums = sorted(set(indexes))
    out, lo = [], nums[0]
    for a, b in zip(nums, nums[1:] + [None]):
        if b != a + 1:
            out.append(str(lo) if lo == a else f"{lo}-{a}")
            lo = b
    return ",".join(out)


def group_arrays(jobs: list) -> list[tuple[str, object, int]]:
    """squeue's view: (label, job, tasks) rows in the jobs' order, where an array's pending tasks
    fold into one row at its first pending task, labelled like '123_[4-99%5]'."""
    pending: dict[int, list] = {}
    for j in jobs:
        if j.array_id is not None and j.array_index is not None and j.state == "PENDING":
            pending.setdefault(j.array_id, []).append(j)
    rows: list[tuple[str, object, int]] = []
    for j in jobs:
        group = pending.get(j.array_id) if j.array_index is not None and j.state == "PENDING" else None
        if group is None:
            rows.append((task_label(j), j, 1))
        elif group[0] is j:
            if len(group) == 1:
                rows.append((task_label(j), j, 1))
                continue
            throttle = f"%{j.array_throttle}" if j.array_throttle else ""
            rows.append((f"{j.array_id}_[{index_ranges([t.array_index for t in group])}{throttle}]", j, len(group)))
    return rows
