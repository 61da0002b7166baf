"""The standalone daemon: load a snapshot, call the core, persist, apply through an executor.

One cycle (`Daemon.cycle`):
  1. Reap: read which ranks ended; apply the gang rule (one failed rank fails the job,
     the others are stopped), cancellations and time limits. Stopping sends SIGTERM,
     then SIGKILL after `kill_wait` seconds; the job ends once every rank is gone.
  2. Decide: snapshot from the store -> schedule() -> decisions (pure).
  3. Persist the decisions in one transaction, then launch what started.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

from .errors import AdschedError, NodeFailure
from .executors import Executor, RankEnd
from .schedule import schedule
from .store import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, TIMEOUT, JobRecord, Store


@dataclass
class CycleReport:
    now: float
    started: list[int] = field(default_factory=list)
    ended: dict[int, str] = field(default_factory=dict)
    pending: int = 0
    running: int = 0


@dataclass(frozen=True)
class Verdict:
    state: str
    reason: str
    exit_code: int | None  # None: taken from the ranks when they are all gone
    kill_at: float  # when stopping escalates from SIGTERM to SIGKILL


def _verdict(job: JobRecord, ends: list[RankEnd], now: float, kill_wait: float) -> Verdict | None:
    """Whether a running job is over (or must be stopped), and why. None: let it run."""
    if job.cancel_requested:
        return Verdict(CANCELLED, "cancelled by user", None, now + kill_wait)
    failed = sorted((e for e in ends if e.exit_code != 0), key=lambda e: e.rank)
    if failed:  # the gang rule: the first failure decides, the other ranks are stopped
        e = failed[0]
        how = f"killed by signal {-e.exit_code}" if e.exit_code < 0 else f"exited with code {e.exit_code}"
        return Verdict(FAILED, f"rank {e.rank} on {job.allocations[e.rank]['node']} {how}", e.exit_code,
                       now + kill_wait)
    if job.start_time is not None and now >= job.start_time + job.time_limit:
        return Verdict(TIMEOUT, "time limit reached", None, now + kill_wait)
    if len(ends) == len(job.allocations):
        return Verdict(COMPLETED, "", 0, now)
    return None


class Daemon:
    def __init__(self, store: Store, executor: Executor, clock: Callable[[], float] = time.time,
                 kill_wait: float = 5.0):
        self.store = store
        self.executor = executor
        self.clock = clock
        self.kill_wait = kill_wait
        self._stopping: dict[int, Verdict] = {}  # jobs being stopped, and how they will end

    def cycle(self) -> CycleReport:
        now = self.clock()
        report = CycleReport(now)

        # Phase 1: reap and enforce the gang rule.
        for job in self.store.jobs(states=(RUNNING,)):
            ends = self.executor.ended(job)
            verdict = self._stopping.get(job.id) or _verdict(job, ends, now, self.kill_wait)
            if verdict is None:
                continue
            if len(ends) == len(job.allocations):
                code = verdict.exit_code if verdict.exit_code is not None else _job_exit_code(ends)
                self.store.finish(job.id, verdict.state, code, verdict.reason, now)
                self._stopping.pop(job.id, None)
                report.ended[job.id] = verdict.state
                continue
            if job.id not in self._stopping:
                self._stopping[job.id] = verdict
                self.executor.signal(job, signal.SIGTERM)
            elif now >= verdict.kill_at:
                self.executor.signal(job, signal.SIGKILL)

        # Phase 2: decide (pure).
        snap = self.store.snapshot(now)
        decisions = schedule(snap, self.store.config, now)

        # Phase 3: persist, then apply. A node that cannot take its rank is drained and
        # the job goes back to the queue whole (as Slurm does on a launch failure).
        for job in self.store.record_cycle(decisions, now):
            try:
                self.store.set_pids(job.id, self.executor.launch(job))
            except NodeFailure as e:
                self.executor.signal(self.store.job(job.id), signal.SIGKILL)
                self.store.set_node_state(e.node, "drain", str(e), now)
                self.store.requeue(job.id, f"launch failed: {e}", now)
                continue
            report.started.append(job.id)
        report.pending = len(snap.pending) - len(report.started)
        report.running = len(snap.running) + len(report.started)
        return report

    def run(self, once: bool = False, until_idle: bool = False, max_seconds: float | None = None,
            on_cycle: Callable[[CycleReport], None] | None = None) -> None:
        with self._lock():
            deadline = None if max_seconds is None else time.monotonic() + max_seconds
            while True:
                report = self.cycle()
                if on_cycle:
                    on_cycle(report)
                if once:
                    return
                if until_idle and not self.store.jobs(states=(PENDING, RUNNING)):
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    return
                time.sleep(self.store.config.scheduler.cycle_interval)

    def _lock(self):
        path = os.path.join(self.store.state_dir, "daemon.lock")
        f = open(path, "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise AdschedError(f"another adsched daemon is running on {self.store.state_dir}") from None
        return f


def _job_exit_code(ends: list[RankEnd]) -> int:
    """The job's exit code: the first non-zero rank's, else 0."""
    for e in sorted(ends, key=lambda e: e.rank):
        if e.exit_code != 0:
            return e.exit_code
    return 0
