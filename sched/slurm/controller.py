"""The Slurm controller: adsched's core decides what runs on a real Slurm (22.05 and newer).

Slurm keeps running the jobs (slurmctld, slurmd, prologs, accounting); adsched decides which
job starts, when and on which nodes, and which jobs are preempted:

  - job_submit.lua (controller mode) holds every job at submit (priority 0) and forces
    requeue=1, so Slurm's own schedulers never start a job by themselves;
  - each cycle reads Slurm's state (`squeue --json`, `sinfo --json`), builds the same Snapshot
    the standalone store builds, calls `schedule()` and applies its Decisions:
      start      -> `scontrol update JobId NumNodes=k-k ReqNodeList=<the core's k nodes>
                    ExcNodeList=<every other node>`, then `scontrol release`;
      preemption -> `scancel --signal=SIG --full`, the victim queue's grace period, then
                    `scontrol requeuehold` + `scontrol hold` (admin hold), or `scancel` for a
                    job that may not be requeued; Slurm counts the restart;
      cancel     -> `scancel` (a failed afterok dependency);
      reasons    -> stored in the adsched store, and published in each held job's AdminComment
                    (published.py) for the users who cannot read the store; `adsub queue` / `show` /
                    `explain` show them;
  - reservations need nothing on Slurm's side: nothing starts without a release, so a later
    job only starts where the core let it backfill;
  - a job that ended and is COMPLETING hands its nodes over (Controller._handing_over): the next
    job is pinned there and released at once, and Slurm starts it when the last epilog reports.

Crash safety: every action is written to the store as an intent (table slurm_ctl) before its
command is sent, and every command is safe to send again. Each cycle first reconciles Slurm with
the intents: a pending job with priority > 0 that the controller did not release is held again;
a released job that is not running `release_timeout` seconds later is held again and decided
anew; a half-done start or preemption is carried on. Mismatches (a job running on other nodes
than the core chose, a job that vanished, a command that failed) are events of kind
"mismatch" or "command_failed", listed by `adsched slurm status`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from adsched.core import fairshare
from adsched.core.config import ClusterConfig
from adsched.core.explain import Explanation, explain
from adsched.core.model import Decisions, Job, NodeAlloc, RunningJob, Snapshot
from adsched.core.schedule import schedule
from adsched.errors import AdschedError, InvalidRequest, NotFound
from adsched.jobspec import parse_array
from adsched.publicconfig import publish_beat
from adsched.standalone.store import Store

from . import published
from .client import SlurmClient, SlurmError, SlurmJob, SlurmNode

# Slurm states: a job in one of these holds its nodes; one in FINAL has ended.
ACTIVE = {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
         "BOOT_FAIL", "DEADLINE"}
STARTED = {"RUNNING", "CONFIGURING"}
# Node states (sinfo) that take no new job.
UNAVAILABLE = {"down", "drained", "draining", "drain", "fail", "failing", "unknown", "future", "not_responding",
               "maint", "reboot_issued", "power_down", "powered_down", "invalid", "inval"}

# Phases of a managed job in table slurm_ctl (absent: held and never decided to start).
STARTING = "starting"  # intent: pin on `nodes` and release (commands may or may not have been sent)
RELEASED = "released"  # pinned and released; Slurm has not shown it running yet
RUNNING = "running"  # seen running (on `nodes`, or on others: a mismatch was logged)
PREEMPTING = "preempting"  # signalled at signal_at; requeued (or cancelled) after grace_until
HELD = "held"  # held again (after a preemption or a release that did not take)
DONE = "done"  # ended (final state in slurm_final)
GONE = "gone"  # vanished from Slurm without a final state

SCHEMA = """
CREATE TABLE IF NOT EXISTS slurm_ctl (
    job_id INTEGER PRIMARY KEY, phase TEXT NOT NULL, nodes TEXT NOT NULL DEFAULT '[]',
    gpus TEXT NOT NULL DEFAULT '[]', borrowing INTEGER NOT NULL DEFAULT 0, phase_time REAL NOT NULL,
    preempted_by INTEGER, signal_name TEXT, grace_until REAL, signalled INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '', est_start REAL, est_nodes TEXT NOT NULL DEFAULT '',
    mismatch TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS slurm_final (
    job_id INTEGER PRIMARY KEY, state TEXT NOT NULL, exit_code INTEGER, end_time REAL, restarts INTEGER
);
CREATE TABLE IF NOT EXISTS slurm_task (
    job_id INTEGER PRIMARY KEY, array_id INTEGER NOT NULL, task_index INTEGER NOT NULL
);
""" + published.SCHEMA

MISMATCH, COMMAND_FAILED = "mismatch", "command_failed"
# Between cycles (Controller._wait): how often the store is checked for new events, and how soon the next
# cycle comes while a job is completing and others wait (seconds).
POLL, FOLLOW = 0.05, 0.25


class ControllerError(AdschedError):
    pass


@dataclass
class Row:
    job_id: int
    phase: str
    nodes: list[str]
    gpus: list[list[int]]
    borrowing: bool
    phase_time: float
    preempted_by: int | None
    signal_name: str | None
    grace_until: float | None
    signalled: bool
    reason: str
    est_start: float | None
    est_nodes: str
    mismatch: str


@dataclass
class CycleReport:
    now: float
    cost: float = 0.0  # seconds: the whole cycle, Slurm commands included
    decide: float = 0.0  # seconds in schedule()
    started: list[int] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    rehold: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    ended: dict[int, str] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    published: list[int] = field(default_factory=list)  # jobs whose reason was written into Slurm
    pending: int = 0
    running: int = 0
    completing: int = 0  # jobs ending in Slurm (their nodes free up in a moment)

    def summary(self) -> str:
        parts = [f"{k} {','.join(map(str, v))}" for k, v in (
            ("started", self.started), ("preempted", self.preempted), ("requeued", self.requeued),
            ("held again", self.rehold), ("cancelled", self.cancelled), ("ended", list(self.ended)),
            ("reasons published", self.published))
            if v]
        parts += self.mismatches
        return (f"cycle {self.cost * 1000:.0f} ms (decide {self.decide * 1000:.1f} ms): "
                f"{self.pending} pending, {self.running} running; " + "; ".join(parts))

    @property
    def changed(self) -> bool:
        return bool(self.started or self.preempted or self.requeued or self.rehold or self.cancelled
                    or self.ended or self.mismatches)


class ControlTable:
    """The controller's own tables in the adsched store (created on first use)."""

    def __init__(self, store: Store):
        self.store = store
        self.conn = store.conn
        with store.transaction():
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    self.conn.execute(stmt)

    def rows(self) -> dict[int, Row]:
        out = {}
        for r in self.conn.execute("SELECT job_id, phase, nodes, gpus, borrowing, phase_time, preempted_by,"
                                   " signal_name, grace_until, signalled, reason, est_start, est_nodes, mismatch"
                                   " FROM slurm_ctl"):
            out[r[0]] = Row(r[0], r[1], json.loads(r[2]), json.loads(r[3]), bool(r[4]), r[5], r[6], r[7], r[8],
                            bool(r[9]), r[10], r[11], r[12], r[13])
        return out

    def set_phase(self, job_id: int, phase: str, now: float, **fields) -> None:
        cols = {"phase": phase, "phase_time": now, **fields}
        for key in ("nodes", "gpus"):
            if key in cols:
                cols[key] = json.dumps(cols[key])
        names = ", ".join(cols)
        marks = ", ".join("?" * len(cols))
        updates = ", ".join(f"{k} = excluded.{k}" for k in cols)
        self.conn.execute(f"INSERT INTO slurm_ctl(job_id, {names}) VALUES (?, {marks})"
                          f" ON CONFLICT(job_id) DO UPDATE SET {updates}", (job_id, *cols.values()))

    def final(self) -> dict[int, str]:
        return {r[0]: r[1] for r in self.conn.execute("SELECT job_id, state FROM slurm_final")}

    def ended_tasks(self) -> dict[tuple[int, int], int]:
        """{(array id, task index): job id} of the array tasks seen ending (squeue forgets them after MinJobAge)."""
        return {(r[1], r[2]): r[0] for r in self.conn.execute("SELECT job_id, array_id, task_index FROM slurm_task")}

    def event(self, job_id: int | None, kind: str, data: dict, now: float) -> None:
        self.store._event(job_id, kind, data, now)


def _max_leaves(comment: str) -> int | None:
    m = re.search(r"max_leaves=(\d+)", comment or "")
    return int(m.group(1)) if m else None


_DEP = re.compile(r"(afterok|afterany|afternotok|after|singleton)(?::([\d:_*]+))?(?:\((\w+)\))?")
_DEP_REF = re.compile(r"(\d+)(?:_(\d+|\*))?")


def _whole(job_id: int, index: int | str | None) -> tuple[int, ...]:
    return (job_id,)


def _dependencies(text: str, resolve: Callable[[int, int | str | None], tuple[int, ...]] = _whole
                  ) -> tuple[tuple[int, ...], tuple[int, ...], dict[int, str]]:
    """after_ok ids, after_any ids and what Slurm already knows of them ({id: "FAILED"} for a failed one).
    Slurm names a dependency N, A_I (task I of array A) or A_* (every task of array A: `afterok:A` on an
    array); `resolve(N or A, None or I or "*")` gives the core's job ids for it (SlurmView.dependency_ids)."""
    ok: list[int] = []
    anyof: list[int] = []
    known: dict[int, str] = {}
    for kind, ids, state in _DEP.findall(text or ""):
        numbers = []
        for ref in (ids or "").split(":"):
            m = _DEP_REF.fullmatch(ref)
            if m:
                index = m.group(2)
                numbers += resolve(int(m.group(1)), int(index) if index and index.isdigit() else index)
        if kind == "afterok":
            if state == "failed":  # Slurm's own verdict on the array or job as a whole
                whole = [int(m.group(1)) for ref in ids.split(":") if (m := _DEP_REF.fullmatch(ref))]
                known.update({n: "FAILED" for n in whole})
                numbers += [n for n in whole if n not in numbers]
            ok += numbers
        elif kind in ("afterany", "after"):
            anyof += numbers
    return tuple(ok), tuple(anyof), known


# A pending array's tasks that Slurm keeps in one record (squeue --json: array_task_id null,
# array_task_string "0-2,4-5%2") reach the core as one Job each, with an id of their own above any Slurm
# job id: TASK_IDS + array id * 2**22 + index. Starting one pins "A_I", which Slurm splits off the record.
TASK_IDS, _TASK_SPAN = 1 << 40, 1 << 22


def task_id(array_id: int, index: int) -> int:
    return TASK_IDS + array_id * _TASK_SPAN + index


def shown_text(text: str) -> str:
    """A reason's text as users read it: an unsplit task's core id (TASK_IDS + ...) as Slurm names it, A_I."""
    def name(m: re.Match) -> str:
        n = int(m.group(0))
        if n < TASK_IDS:
            return m.group(0)
        array_id, index = divmod(n - TASK_IDS, _TASK_SPAN)
        return f"{array_id}_{index}"
    return re.sub(r"\d{13,}", name, text)


class SlurmView:
    """One reading of Slurm's state, turned into the core's vocabulary."""

    def __init__(self, config: ClusterConfig, jobs: list[SlurmJob], nodes: list[SlurmNode],
                 ended_tasks: dict[tuple[int, int], int] | None = None):
        self.config = config
        self.jobs = {j.id: j for j in jobs}
        self.nodes = nodes
        self.known_nodes = {n.name for n in config.nodes}
        # {task id: (the array's pending record, index)} for the tasks not split off yet
        self.tasks: dict[int, tuple[SlurmJob, int]] = {}
        # {array id: {task index: the core's id for it}}: split tasks by their Slurm job id, unsplit ones by
        # their task id, and those squeue no longer shows by the job id they ended with (ended_tasks).
        self.arrays: dict[int, dict[int, int]] = {}
        for (array_id, index), job_id in (ended_tasks or {}).items():
            self.arrays.setdefault(array_id, {})[index] = job_id
        for j in jobs:
            if j.task:
                self.arrays.setdefault(j.task[0], {})[j.task[1]] = j.id
            for index in _unsplit_tasks(j):
                self.tasks[task_id(j.id, index)] = (j, index)
                self.arrays.setdefault(j.id, {})[index] = task_id(j.id, index)

    def dependency_ids(self, job_id: int, index: int | str | None) -> tuple[int, ...]:
        """The core's ids for Slurm's dependency on N (index None), on task A_I, or on every task of array A
        ("*": Slurm's afterok:A is satisfied when every task completed). Unknown tasks: the id as given."""
        tasks = self.arrays.get(job_id, {})
        if index == "*":
            return tuple(tasks[i] for i in sorted(tasks)) or (job_id,)
        if isinstance(index, int):
            return (tasks[index],) if index in tasks else (job_id,)
        return (job_id,)

    def core_jobs(self, j: SlurmJob) -> list[Job]:
        """The core's Jobs for one pending Slurm record: itself, or each task of an unsplit array."""
        job = self.as_job(j)
        indexes = _unsplit_tasks(j)
        if not indexes:
            return [job]
        return [replace(job, id=task_id(j.id, i), array_id=j.id, array_index=i) for i in indexes]

    def as_job(self, j: SlurmJob) -> Job:
        queue = self.config.queues.get(j.partition)
        limit = j.time_limit
        if limit is None:
            limit = (queue.max_time or queue.default_time) if queue else None
        ok, anyof, _ = _dependencies(j.dependency, self.dependency_ids)
        array_id = j.raw.get("array_job_id") or None
        index = j.raw.get("array_task_id") if array_id else None
        throttle = j.raw.get("array_max_tasks") if array_id else None
        return Job(
            id=j.id, queue=j.partition, num_nodes=j.num_nodes,
            # A job that asks for no GPU still takes a node's slot: counted as one GPU per node.
            gpus_per_node=j.gpus_per_node or 1,
            time_limit=int(limit or 365 * 86400), submit_time=float(j.submit_time or 0), user=j.user, name=j.name,
            max_leaves=_max_leaves(j.comment), array_id=array_id if isinstance(array_id, int) else None,
            array_index=index if isinstance(index, int) else None, after_ok=ok, after_any=anyof,
            array_throttle=throttle if isinstance(throttle, int) and throttle > 0 else None,
        )

    def unavailable(self) -> frozenset[str]:
        down = {n.name for n in self.nodes if n.state in UNAVAILABLE or any(
            s in n.state for s in ("drain", "down", "fail", "not_responding"))}
        seen = {n.name for n in self.nodes}
        return frozenset(down | (self.known_nodes - seen))


def _ref(j: SlurmJob) -> int | str:
    """How commands name a job: "A_I" for a task of array A (scontrol 22.05 refuses a node-count or node-list
    update by the bare id once the array has more than one record: "Job resizing not supported for job
    arrays"), else its id."""
    return f"{j.task[0]}_{j.task[1]}" if j.task else j.id


def _unsplit_tasks(j: SlurmJob) -> list[int]:
    """The task indexes a pending array record still holds ([] for any other record)."""
    text = j.raw.get("array_task_string") or ""
    if j.state != "PENDING" or isinstance(j.raw.get("array_task_id"), int) or not text:
        return []
    try:
        return parse_array(text)[0]
    except InvalidRequest:
        return []


def placement_for(view: SlurmView, running: list[tuple[SlurmJob, list[str], Row | None]]
                  ) -> dict[int, tuple[NodeAlloc, ...]]:
    """Each running job's placement on `nodes`: the GPUs the core chose when Slurm runs it where the core
    put it, else the lowest free GPU indexes of those nodes (squeue does not say which GPUs Slurm gave)."""
    used: dict[str, set[int]] = {}
    out: dict[int, tuple[NodeAlloc, ...]] = {}
    later = []
    for j, nodes, row in running:
        if row is not None and row.nodes == nodes and len(row.gpus) == len(nodes):
            out[j.id] = tuple(NodeAlloc(n, tuple(g)) for n, g in zip(row.nodes, row.gpus))
            for n, g in zip(row.nodes, row.gpus):
                used.setdefault(n, set()).update(g)
        else:
            later.append((j, nodes))
    for j, nodes in later:
        allocs = []
        for n in nodes:
            if n not in view.known_nodes:
                continue
            have = view.config.node(n).gpus
            free = [g for g in range(have) if g not in used.get(n, set())]
            take = tuple(free[: max(1, j.gpus_per_node)])
            used.setdefault(n, set()).update(take)
            allocs.append(NodeAlloc(n, take))
        out[j.id] = tuple(allocs)
    return out


class Controller:
    def __init__(self, store: Store, client: SlurmClient, clock: Callable[[], float] = time.time,
                 release_timeout: float = 30.0, log: Callable[[str], None] | None = None):
        self.store = store
        self.config = store.config
        self.client = client
        self.clock = clock
        self.release_timeout = release_timeout
        self.table = ControlTable(store)
        self.log = log or (lambda msg: None)
        self.all_nodes = [n.name for n in self.config.nodes]
        self.interval = self.config.scheduler.cycle_interval  # run()'s, recorded in the heartbeat

    # --- reading ---------------------------------------------------------------------------

    def read(self) -> SlurmView:
        return SlurmView(self.config, self.client.jobs(), self.client.nodes(), self.table.ended_tasks())

    def snapshot(self, view: SlurmView, rows: dict[int, Row], now: float | None) -> Snapshot:
        """The Snapshot the standalone store would build, from Slurm's jobs and nodes (usage accrues with `now`)."""
        pending_jobs = [j for j in view.jobs.values() if j.state == "PENDING" and not self._releasing(j, rows)]
        # Running: what holds nodes in Slurm (but a job handing its nodes over), and the jobs released on the
        # nodes the core chose that Slurm has not started yet (they will start there: nobody else may have those
        # nodes).
        at = self.clock() if now is None else now
        running = [(j, j.nodes, rows.get(j.id)) for j in view.jobs.values()
                   if j.state in ACTIVE and j.nodes and not self._handing_over(j, rows, at)]
        running += [(j, rows[j.id].nodes, rows[j.id]) for j in view.jobs.values()
                    if j.state == "PENDING" and self._releasing(j, rows)]
        placements = placement_for(view, running)
        runs = tuple(RunningJob(view.as_job(j), float(j.start_time or (row.phase_time if row else 0) or now or 0),
                                placements[j.id], borrowing=bool(row and row.borrowing))
                     for j, _, row in running)
        # Every pending job goes to the core, those with a begin time too (the core's BeginTime gate decides).
        pending = tuple(replace(job, begin_time=b, begin_cause=f"not eligible before {published.when(b)} (Slurm's BeginTime)")
                        if (b := self._begin_time(j, rows)) is not None else job
                        for j in pending_jobs for job in view.core_jobs(j))
        finished = dict(self.table.final())
        for j in view.jobs.values():
            if j.state in FINAL:
                finished[j.id] = j.state
        for j in pending_jobs:
            finished.update({k: v for k, v in _dependencies(j.dependency, view.dependency_ids)[2].items()
                             if k not in finished})
        deps = {d for job in pending for d in (*job.after_ok, *job.after_any)}
        finished = {k: v for k, v in finished.items() if k in deps}
        waiting = {j.id for j in pending}
        preempting: dict[int, list[int]] = {}
        for row in rows.values():
            if row.preempted_by in waiting and row.phase in (PREEMPTING, HELD) and row.job_id in view.jobs:
                preempting.setdefault(row.preempted_by, []).append(row.job_id)
        users, queues = self._usage(runs, now)
        return Snapshot(pending=pending, running=runs, unavailable=view.unavailable(), finished=finished,
                        user_usage=users, queue_usage=queues,
                        preempting={k: tuple(sorted(v)) for k, v in preempting.items()})

    def _usage(self, runs: tuple[RunningJob, ...], now: float | None) -> tuple[dict, dict]:
        """Decayed GPU-hours per user and queue in the store's usage table (as the standalone daemon keeps
        them), accrued up to `now` and saved; with now=None (explain) accrued to the clock, not saved."""
        usage: dict[str, dict[str, float]] = {"user": {}, "queue": {}}
        for kind, name, hours in self.store.conn.execute("SELECT kind, name, gpu_hours FROM usage"):
            usage.setdefault(kind, {})[name] = hours
        row = self.store.conn.execute("SELECT value FROM meta WHERE key = 'usage_time'").fetchone()
        until = self.clock() if now is None else now
        since = float(row[0]) if row else until
        half_life = self.config.scheduler.fairshare_half_life
        users = fairshare.accrue(usage["user"], runs, since, until, half_life, key=lambda r: r.job.user)
        queues = fairshare.accrue(usage["queue"], runs, since, until, half_life, key=lambda r: r.job.queue)
        if now is not None:
            with self.store.transaction():
                self.store.conn.execute("DELETE FROM usage")
                self.store.conn.executemany("INSERT INTO usage(kind, name, gpu_hours) VALUES (?,?,?)",
                                            [("user", k, v) for k, v in users.items()]
                                            + [("queue", k, v) for k, v in queues.items()])
                self.store.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('usage_time', ?)",
                                        (str(now),))
        return users, queues

    @staticmethod
    def _begin_time(j: SlurmJob, rows: dict[int, Row]) -> float | None:
        """Slurm's eligible time (sbatch --begin, or the backoff after Slurm's own requeue) as the core's
        Job.begin_time; None for a job the controller requeued (its release overrides the backoff)."""
        eligible = j.raw.get("eligible_time")
        eligible = eligible.get("number") if isinstance(eligible, dict) else eligible
        row = rows.get(j.id)
        if row is not None and row.preempted_by is not None:
            return None
        return float(eligible) if isinstance(eligible, (int, float)) and eligible > 0 else None

    def _handing_over(self, j: SlurmJob, rows: dict[int, Row], now: float) -> bool:
        """A job that ended and is COMPLETING (its epilogs run) hands its nodes over: the core may start the
        next job there now, and Slurm starts it the moment the last epilog reports (22.05 proc_req.c: the
        epilog-complete RPC runs the main scheduler at once), as Slurm alone starts its next job. Otherwise the
        core sees those nodes busy until the job's time limit (so it backfills around them), and once they are
        free a release still waits for slurmctld's next 1 s tick. Not for a preemption's victim (its requeue is
        the preemption's), nor for a job completing longer than a release may take to start (a hung epilog:
        its nodes may never free)."""
        if j.state != "COMPLETING" or not j.end_time or now - j.end_time > self.release_timeout:
            return False
        row = rows.get(j.id)
        return row is None or (row.phase != PREEMPTING and row.preempted_by is None)

    @staticmethod
    def _releasing(j: SlurmJob, rows: dict[int, Row]) -> bool:
        """A pending job the controller pinned and released (or is about to): it counts as running."""
        row = rows.get(j.id)
        return row is not None and row.phase in (STARTING, RELEASED)

    # --- one cycle -------------------------------------------------------------------------

    def cycle(self) -> CycleReport:
        t0 = time.perf_counter()
        now = self.clock()
        report = CycleReport(now)
        view = self.read()
        rows = self.table.rows()
        self._prolog_reasons(view, now, report)
        self._reconcile(view, rows, now, report)
        rows = self.table.rows()
        snap = self.snapshot(view, rows, now)
        t1 = time.perf_counter()
        decisions = schedule(snap, self.config, now)
        report.decide = time.perf_counter() - t1
        self._apply(decisions, view, rows, now, report)
        report.pending = len(snap.pending) - len(report.started)
        report.running = len(snap.running) + len(report.started)
        report.completing = sum(j.state == "COMPLETING" for j in view.jobs.values())
        report.cost = time.perf_counter() - t0
        self._heartbeat(report)
        return report

    def _send(self, what: str, job_id: int, fn, *args, now: float, report: CycleReport) -> bool:
        try:
            fn(*args)
            return True
        except SlurmError as e:
            with self.store.transaction():
                self.table.event(job_id, COMMAND_FAILED, {"command": what, "error": str(e)[:300]}, now)
            report.mismatches.append(f"job {job_id}: {what} failed: {e}")
            self.log(f"job {job_id}: {what} failed: {e}")
            return False

    def _mismatch(self, job_id: int, text: str, now: float, report: CycleReport, **fields) -> None:
        self.table.event(job_id, MISMATCH, {"what": text}, now)
        report.mismatches.append(f"job {job_id}: {text}")
        self.log(f"mismatch: job {job_id}: {text}")

    def _prolog_reasons(self, view: SlurmView, now: float, report: CycleReport) -> None:
        """Slurm drains a node whose prolog failed with reason "Prolog error" only; the hook recorded the real
        reason (e.g. "expected 8 GPUs, found 1") in the store: put it in the node's reason."""
        bare = [n.name for n in view.nodes if n.reason.strip().lower() == "prolog error"]
        if not bare:
            return
        for e in self.store.db.query("SELECT job_id, data FROM events WHERE kind = 'prolog_failed' ORDER BY id DESC"
                                     " LIMIT 200"):
            data = json.loads(e["data"])
            if data.get("node") in bare:
                bare.remove(data["node"])
                reason = f"Prolog error: {data.get('reason', '')}"[:250]
                if self._send("drain", e["job_id"], self.client.drain, data["node"], reason, now=now, report=report):
                    self.log(f"node {data['node']}: reason set to {reason!r}")
            if not bare:
                return

    def _reconcile(self, view: SlurmView, rows: dict[int, Row], now: float, report: CycleReport) -> None:
        """Bring the intents and Slurm back in line before deciding (see module doc)."""
        to_hold: list[int] = []
        with self.store.transaction():
            for j in view.jobs.values():
                row = rows.get(j.id)
                phase = row.phase if row else None
                if j.state in FINAL and phase != PREEMPTING:
                    if phase != DONE:
                        self.table.conn.execute(
                            "INSERT OR IGNORE INTO slurm_final(job_id, state, exit_code, end_time, restarts)"
                            " VALUES (?,?,?,?,?)", (j.id, j.state, j.exit_code, j.end_time or now, j.restart_count))
                        if j.task:
                            self.table.conn.execute("INSERT OR IGNORE INTO slurm_task(job_id, array_id, task_index)"
                                                    " VALUES (?,?,?)", (j.id, *j.task))
                        self.table.set_phase(j.id, DONE, now, reason="")
                        report.ended[j.id] = j.state
                    continue
                if j.state in ACTIVE and j.state not in STARTED:
                    continue  # completing (ending, or being requeued): it holds its nodes, nothing to do
                if j.state in STARTED and j.nodes:
                    if phase in (STARTING, RELEASED, HELD, None, DONE, GONE) or (phase == RUNNING and row.nodes != j.nodes and not row.mismatch):
                        if row is None or phase in (HELD, None, DONE, GONE):
                            self._mismatch(j.id, f"running on {','.join(j.nodes)} without a release by the "
                                           "controller", now, report)
                            self.table.set_phase(j.id, RUNNING, now, nodes=j.nodes, gpus=[], mismatch="unreleased")
                        elif row.nodes != j.nodes:
                            self._mismatch(j.id, f"running on {','.join(j.nodes)}, the core chose "
                                           f"{','.join(row.nodes)}", now, report)
                            self.table.set_phase(j.id, RUNNING, now, nodes=j.nodes, gpus=[], mismatch="nodes")
                        else:
                            self.table.set_phase(j.id, RUNNING, now, preempted_by=None, reason="",
                                                 est_start=None, est_nodes="")
                    continue
                if j.state != "PENDING":
                    continue
                held = (j.priority or 0) == 0
                if phase == RELEASED and not held and now - row.phase_time > self.release_timeout:
                    self.table.event(j.id, "release_timeout", {"reason": j.reason, "nodes": row.nodes}, now)
                    to_hold.append(j.id)
                elif phase in (STARTING, RELEASED) and held and phase == RELEASED:
                    to_hold.append(j.id)  # someone held it again: decide anew
                elif phase not in (STARTING, RELEASED, PREEMPTING) and not held:
                    self._mismatch(j.id, "pending with priority > 0 without a release by the controller: held",
                                   now, report)
                    to_hold.append(j.id)
                elif phase == RUNNING:  # requeued by someone else (or by Slurm): it is pending again
                    self.table.set_phase(j.id, HELD, now)
            for job_id, row in rows.items():
                if job_id not in view.jobs and row.phase not in (DONE, GONE):
                    self._mismatch(job_id, f"vanished from Slurm while {row.phase}", now, report)
                    self.table.set_phase(job_id, GONE, now)
        for job_id in to_hold:
            if self._send("hold", job_id, self.client.hold, _ref(view.jobs[job_id]), now=now, report=report):
                with self.store.transaction():
                    self.table.set_phase(job_id, HELD, now)
                report.rehold.append(job_id)
        # Preemptions in flight: after the grace period (or as soon as the job ended), requeue held.
        for job_id, row in rows.items():
            if row.phase != PREEMPTING:
                continue
            j = view.jobs.get(job_id)
            if j is None:
                continue
            if not row.signalled and j.state in ACTIVE:
                if self._send("signal", job_id, self.client.signal, _ref(j), row.signal_name or "TERM",
                              now=now, report=report):
                    with self.store.transaction():
                        self.table.conn.execute("UPDATE slurm_ctl SET signalled = 1 WHERE job_id = ?", (job_id,))
                continue
            ended = j.state in FINAL
            if j.state == "PENDING":  # requeued already (a crash after requeuehold): make the hold an admin one
                self._finish_preemption(j, row, now, report, requeued=True)
            elif ended or (row.grace_until is not None and now >= row.grace_until and j.state != "COMPLETING"):
                self._finish_preemption(j, row, now, report, requeued=False)

    def _finish_preemption(self, j: SlurmJob, row: Row, now: float, report: CycleReport, requeued: bool) -> None:
        if not j.requeue or not j.batch:
            if j.state not in FINAL and not self._send("cancel", j.id, self.client.cancel, _ref(j), now=now,
                                                       report=report):
                return
            with self.store.transaction():
                self.table.event(j.id, "preempt_cancel", {"by": row.preempted_by}, now)
                self.table.set_phase(j.id, HELD, now)  # becomes DONE when Slurm shows it CANCELLED
            report.cancelled.append(j.id)
            return
        if not requeued and not self._send("requeuehold", j.id, self.client.requeue_hold, _ref(j), now=now,
                                           report=report):
            return
        if not self._send("hold", j.id, self.client.hold, _ref(j), now=now, report=report):
            return
        with self.store.transaction():
            self.table.event(j.id, "requeue", {"by": row.preempted_by, "restart_count": j.restart_count + 1}, now)
            self.table.set_phase(j.id, HELD, now, reason=f"preempted by job {row.preempted_by}")
        report.requeued.append(j.id)

    def _apply(self, decisions: Decisions, view: SlurmView, rows: dict[int, Row], now: float,
               report: CycleReport) -> None:
        # Intents first, in one transaction; then the commands; a crash in between is carried on next cycle.
        starts = [s for s in decisions.starts if view.jobs.get(s.job_id) and view.jobs[s.job_id].state == "PENDING"]
        starts += self._split_tasks([s for s in decisions.starts if s.job_id in view.tasks], view, now, report)
        preemptions = [p for p in decisions.preemptions
                       if view.jobs.get(p.victim_id) and view.jobs[p.victim_id].state in ACTIVE
                       and (rows.get(p.victim_id) is None or rows[p.victim_id].phase != PREEMPTING)]
        reserved = {r.job_id: r for r in decisions.reservations}
        starting = {s.job_id for s in starts}
        wanted: dict[int, published.Published] = {}  # the reasons to publish in Slurm (held pending jobs)
        with self.store.transaction():
            for s in starts:
                self.table.set_phase(s.job_id, STARTING, now, nodes=[a.node for a in s.placement],
                                     gpus=[list(a.gpus) for a in s.placement], borrowing=int(s.borrowing),
                                     reason="", est_start=None, est_nodes="")
                self.table.event(s.job_id, "start", {"nodes": [a.node for a in s.placement],
                                                     "borrowing": s.borrowing}, now)
            for p in preemptions:
                victim = view.jobs[p.victim_id]
                queue = self.config.queues.get(victim.partition)
                grace = float(getattr(queue, "grace_period", 60))
                self.table.set_phase(p.victim_id, PREEMPTING, now, preempted_by=p.preemptor_id,
                                     signal_name=getattr(queue, "preempt_signal", "TERM"),
                                     grace_until=now + grace, signalled=0, reason=p.reason)
                self.table.event(p.victim_id, "preempt", {"by": p.preemptor_id, "reason": p.reason,
                                                          "grace": grace}, now)
            shown: set[int] = set()
            for core_id, reason in decisions.pending_reasons.items():
                # An unsplit array's tasks: the first one's reason (in the core's order) is the array record's.
                job_id = view.tasks[core_id][0].id if core_id in view.tasks else core_id
                if job_id in shown:
                    continue
                shown.add(job_id)
                reason = shown_text(str(reason))  # the text users see (a Reason's code leads it)
                r = reserved.get(core_id)
                est = r.start_time if r else None
                where = ",".join(a.node for a in r.placement) if r else ""
                row = rows.get(job_id)
                j = view.jobs.get(job_id)
                if j is not None and j.state == "PENDING" and job_id not in starting and (
                        row is None or row.phase not in (STARTING, RELEASED, PREEMPTING)):
                    wanted[job_id] = published.Published(reason, est, tuple(a.node for a in r.placement) if r else ())
                if row is None or (row.reason, row.est_start, row.est_nodes) != (reason, est, where):
                    phase = row.phase if row is not None and row.phase not in (STARTING, RELEASED) else HELD
                    if row is not None and row.phase == PREEMPTING:
                        continue
                    self.table.set_phase(job_id, phase, row.phase_time if row else now, reason=reason,
                                         est_start=est, est_nodes=where)
        for s in starts:
            self._start(view.jobs[s.job_id], [a.node for a in s.placement], now, report)
        self._publish(wanted, view, now, report)
        for p in preemptions:
            victim = view.jobs[p.victim_id]
            if self._send("signal", victim.id, self.client.signal, _ref(victim),
                          getattr(self.config.queues.get(victim.partition), "preempt_signal", "TERM"),
                          now=now, report=report):
                with self.store.transaction():
                    self.table.conn.execute("UPDATE slurm_ctl SET signalled = 1 WHERE job_id = ?", (victim.id,))
            report.preempted.append(victim.id)
        for core_id, reason in decisions.cancels.items():
            reason = shown_text(str(reason))
            job_id, ref = core_id, core_id
            if core_id in view.tasks:  # one task of an unsplit array: scancel A_I
                meta, index = view.tasks[core_id]
                job_id, ref = meta.id, f"{meta.id}_{index}"
            if self._send("cancel", job_id, self.client.cancel, ref, now=now, report=report):
                with self.store.transaction():
                    self.table.event(job_id, "cancel", {"reason": reason}, now)
                    self.table.set_phase(job_id, HELD, now, reason=reason)
                report.cancelled.append(job_id)

    def _publish(self, wanted: dict[int, published.Published], view: SlurmView, now: float,
                 report: CycleReport) -> None:
        """Write the changed reasons into the held jobs' AdminComment (one scontrol for all; see published.py),
        remember what was sent, and forget what was sent to jobs no longer pending."""
        sent = dict(self.store.conn.execute("SELECT job_id, text FROM slurm_published").fetchall())
        in_slurm = {i: view.jobs[i].raw.get("admin_comment") for i in wanted if "admin_comment" in view.jobs[i].raw}
        texts = published.updates(wanted, {i: t or "" for i, t in in_slurm.items()}, sent)
        failed: set[int] = set()
        if texts:
            try:
                errors = self.client.set_admin_comments(texts)
            except SlurmError as e:
                errors = [str(e)]
            if errors:
                failed = {int(n) for line in errors for n in re.findall(r"job (\d+)", line)} or set(texts)
                with self.store.transaction():
                    self.table.event(min(failed), COMMAND_FAILED, {"command": "publish reasons",
                                                                   "error": "; ".join(errors)[:300]}, now)
                report.mismatches.append(f"publishing reasons failed: {'; '.join(errors)[:200]}")
        gone = [i for i in sent if i not in view.jobs or view.jobs[i].state != "PENDING"]
        with self.store.transaction():
            self.store.conn.executemany("INSERT OR REPLACE INTO slurm_published(job_id, text, time) VALUES (?,?,?)",
                                        [(i, t, now) for i, t in texts.items() if i not in failed])
            self.store.conn.executemany("DELETE FROM slurm_published WHERE job_id = ?", [(i,) for i in gone])
        report.published = sorted(set(texts) - failed)

    def _split_tasks(self, starts: list, view: SlurmView, now: float, report: CycleReport) -> list:
        """Split the array tasks the core starts off their array record, pinned on the core's nodes and still
        held (`scontrol update JobId=A_I ...`: Slurm gives each its own job id), then read those ids: the
        starts, renamed, go on as any other. Killed before the intent is written, a split task is only a held
        pending job: the next cycle decides it anew."""
        sent = []
        for s in starts:
            meta, index = view.tasks[s.job_id]
            if self._send("split", meta.id, self.client.pin, f"{meta.id}_{index}", [a.node for a in s.placement],
                          self.all_nodes, False, False, now=now, report=report):
                sent.append((s, meta.id, index))
        if not sent:
            return []
        try:
            split = {(j.raw.get("array_job_id"), j.raw.get("array_task_id")): j for j in self.client.jobs()}
        except SlurmError as e:
            report.mismatches.append(f"squeue after splitting array tasks failed: {e}")
            return []
        out = []
        for s, array_id, index in sent:
            j = split.get((array_id, index))
            if j is None or j.state != "PENDING":
                with self.store.transaction():
                    self._mismatch(array_id, f"task {array_id}_{index} not pending after its split", now, report)
                continue
            view.jobs[j.id] = j
            out.append(replace(s, job_id=j.id))
        return out

    def _start(self, j: SlurmJob, nodes: list[str], now: float, report: CycleReport) -> None:
        ref = _ref(j)
        if not self._send("pin", j.id, self.client.pin, ref, nodes, self.all_nodes, j.restart_count > 0,
                          ref == j.id, now=now, report=report):
            with self.store.transaction():
                self.table.set_phase(j.id, HELD, now)
            return
        if not self._send("release", j.id, self.client.release, ref, now=now, report=report):
            with self.store.transaction():
                self.table.set_phase(j.id, HELD, now)
            return
        with self.store.transaction():
            self.table.set_phase(j.id, RELEASED, now)
        report.started.append(j.id)

    def resume_starts(self, now: float, report: CycleReport) -> None:
        """Carry on the starts a killed controller recorded but may not have sent (idempotent)."""
        view = self.read()
        for job_id, row in self.table.rows().items():
            j = view.jobs.get(job_id)
            if row.phase == STARTING and j is not None and j.state == "PENDING":
                self._start(j, row.nodes, now, report)

    def _heartbeat(self, report: CycleReport) -> None:
        with self.store.transaction():
            row = self.conn_meta("slurm_controller")
            costs = (row or {}).get("costs", [])[-99:] + [round(report.cost, 4)]
            decides = (row or {}).get("decides", [])[-99:] + [round(report.decide, 4)]
            data = {"time": report.now, "pid": os.getpid(), "interval": self.interval, "costs": costs,
                    "decides": decides, "pending": report.pending, "running": report.running}
            self.store.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('slurm_controller', ?)",
                                    (json.dumps(data),))
        try:  # the same, for users who cannot read the store
            publish_beat(self.store.state_dir, report.now, self.interval)
        except OSError as e:
            self.log(f"could not write the public heartbeat: {e}")

    def conn_meta(self, key: str) -> dict | None:
        row = self.store.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    # --- the daemon ------------------------------------------------------------------------

    def run(self, once: bool = False, interval: float | None = None, max_seconds: float | None = None,
            on_cycle: Callable[[CycleReport], None] | None = None) -> None:
        interval = self.interval = self.config.scheduler.cycle_interval if interval is None else interval
        with _lock(self.store):
            report = CycleReport(self.clock())
            self.resume_starts(report.now, report)
            deadline = None if max_seconds is None else time.monotonic() + max_seconds
            try:
                while True:
                    report = self.cycle()
                    if on_cycle:
                        on_cycle(report)
                    if once or (deadline is not None and time.monotonic() >= deadline):
                        return
                    self._wait(interval, report)
            except (KeyboardInterrupt, SystemExit):  # stopped (SIGINT, or SIGTERM via run_controller)
                try:
                    self.publish_stopped(self.clock())
                except AdschedError as e:  # Slurm or the store unreachable (SlurmError too): stop all the same
                    self.log(f"could not publish that the controller stopped: {e}")
                raise

    def publish_stopped(self, now: float) -> None:
        """Say on every held job the core kept waiting that nothing starts while no controller runs: in its
        AdminComment (what users read) and in the store (what `adsub queue` reads for an admin), so nobody reads
        a reason or an estimated start that no longer holds. The next controller's first cycle puts the core's
        reasons back (they differ from this one)."""
        view, rows = self.read(), self.table.rows()
        text = published.stopped(published.when(now))
        waiting = [j.id for j in view.jobs.values() if j.state == "PENDING" and (j.priority or 0) == 0
                   and j.id in rows and rows[j.id].phase not in (STARTING, RELEASED, PREEMPTING)]
        with self.store.transaction():
            for job_id in waiting:
                self.table.set_phase(job_id, rows[job_id].phase, rows[job_id].phase_time, reason=text,
                                     est_start=None, est_nodes="")
        self._publish({i: published.Published(text) for i in waiting}, view, now, CycleReport(now))

    def _wait(self, interval: float, report: CycleReport) -> None:
        """Sleep until the next cycle, cut short when a job ends (a job waiting for nodes should not also wait
        for the controller): while a job is completing and others wait, the next cycle comes after FOLLOW s
        (its nodes free up in a moment); otherwise a new event in the store (the Slurm hooks record one when
        a job's epilog runs) wakes the controller at once. Checking is one cheap SQLite read every POLL s."""
        if report.completing and report.pending:
            time.sleep(min(interval, FOLLOW))
            return
        mark = self._last_event()
        end = time.monotonic() + interval
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(POLL, left))
            if self._last_event() != mark:
                return

    def _last_event(self) -> int:
        return self.store.conn.execute("SELECT MAX(id) FROM events").fetchone()[0] or 0


def _lock(store: Store):
    path = os.path.join(store.state_dir, "slurm-controller.lock")
    f = open(path, "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ControllerError(f"another adsched slurm controller runs on {store.state_dir}") from None
    return f


# --- what the CLI and the Slurm backend read -----------------------------------------------------


def pending_reasons(store: Store, now: float | None = None) -> dict[int, tuple[str, float | None]]:
    """{job id: (the core's pending reason, estimated start or None)} as the controller last stored them, or
    NoController if its last cycle is too old (published.without_controller)."""
    try:
        rows = store.conn.execute("SELECT job_id, reason, est_start FROM slurm_ctl WHERE reason != ''").fetchall()
    except Exception:  # noqa: BLE001 - no controller has run on this store yet
        return {}
    row = store.conn.execute("SELECT value FROM meta WHERE key = 'slurm_controller'").fetchone()
    beat = json.loads(row[0]) if row else {}
    return published.without_controller({r[0]: (r[1], r[2]) for r in rows}, beat.get("time"),
                                        beat.get("interval") or 0, time.time() if now is None else now)


def status(store: Store, now: float, events: int = 20) -> dict:
    """The controller's heartbeat and cycle cost, its managed jobs by phase, and the latest mismatches."""
    ControlTable(store)
    row = store.conn.execute("SELECT value FROM meta WHERE key = 'slurm_controller'").fetchone()
    beat = json.loads(row[0]) if row else {}
    costs = beat.get("costs", [])
    phases = dict(store.conn.execute("SELECT phase, COUNT(*) FROM slurm_ctl GROUP BY phase").fetchall())
    problems = [dict(r, data=json.loads(r["data"])) for r in store.db.query(
        "SELECT * FROM events WHERE kind IN (?, ?, 'release_timeout') ORDER BY id DESC LIMIT ?",
        [MISMATCH, COMMAND_FAILED, events])]
    return {
        "last_cycle": beat.get("time"), "seconds_since_last_cycle": None if not beat else round(now - beat["time"], 1),
        "pid": beat.get("pid"), "pending": beat.get("pending"), "running": beat.get("running"),
        "cycle_cost_median_ms": round(statistics.median(costs) * 1000, 1) if costs else None,
        "decide_median_ms": round(statistics.median(beat.get("decides") or [0]) * 1000, 2) if costs else None,
        "cycles_measured": len(costs), "phases": phases,
        "problems": [{"time": e["time"], "job_id": e["job_id"], "kind": e["kind"], **e["data"]} for e in problems],
    }


def explain_job(store: Store, client: SlurmClient, job_id: int, now: float, use_published: bool = False
                ) -> Explanation:
    """The core's explanation for a pending Slurm job, on a snapshot read from Slurm now (writes nothing).
    use_published (a user without the store, whose snapshot lacks fair-share usage): the reason and estimate
    the controller published on the job (published.py) replace the ones computed here."""
    ctl = Controller(store, client)
    view = ctl.read()
    j = view.jobs.get(job_id)
    if j is None:
        raise NotFound(f"no job {job_id} in Slurm")
    if j.state != "PENDING":
        raise InvalidRequest(f"job {job_id} is {j.state}, not pending")
    snap = ctl.snapshot(view, ctl.table.rows(), None)
    tasks = sorted(t for t, (meta, _) in view.tasks.items() if meta.id == job_id)
    if tasks:  # an unsplit array: its first task stands for it
        job_id = tasks[0]
    if not any(p.id == job_id for p in snap.pending):
        raise InvalidRequest(f"job {job_id} is being started by the controller")
    e = explain(snap, store.config, now, job_id=job_id)
    said = published.decode(j.raw.get("admin_comment")) if use_published and (j.priority or 0) == 0 else None
    if said is None:
        return e
    return replace(e, state="pending", reason=said.reason, constraint=said.reason.split(":", 1)[0],
                   waiting_for=e.waiting_for if e.reason == said.reason else None, estimated_start=said.est_start,
                   estimated_placement=tuple(NodeAlloc(n, ()) for n in said.est_nodes))


def open_controller(state_dir, release_timeout: float = 30.0, log=None) -> Controller:
    store = Store(state_dir)
    if store.config.backend != "slurm":
        raise InvalidRequest(f"cluster {store.config.name} has backend {store.config.backend!r}; the Slurm "
                             "controller needs backend = \"slurm\"")
    return Controller(store, SlurmClient(), release_timeout=release_timeout, log=log)


def run_controller(state_dir, *, once=False, interval=None, release_timeout=30.0, max_seconds=None,
                   on_cycle=None, log=None) -> None:
    ctl = open_controller(state_dir, release_timeout, log)
    if threading.current_thread() is threading.main_thread():  # SIGTERM (systemctl stop): stop as on Ctrl-C
        signal.signal(signal.SIGTERM, _exit_on_term)
    ctl.run(once=once, interval=interval, max_seconds=max_seconds, on_cycle=on_cycle)


def _exit_on_term(signum, frame):
    raise SystemExit(128 + signum)


def controller_status(state_dir) -> dict:
    now = time.time()
    info = status(Store(state_dir), now)
    age = info["seconds_since_last_cycle"]
    head = ("no controller cycle recorded yet" if age is None else
            f"last cycle {age:g} s ago (pid {info['pid']}): {info['pending']} pending, {info['running']} running; "
            f"cycle cost median {info['cycle_cost_median_ms']} ms (schedule() {info['decide_median_ms']} ms) "
            f"over {info['cycles_measured']} cycles")
    phases = ", ".join(f"{k} {v}" for k, v in sorted(info["phases"].items()))
    info["summary"] = head + (f"\njobs by phase: {phases}" if phases else "") + \
        f"\nmismatches and failed commands (latest {len(info['problems'])}):"
    return info
