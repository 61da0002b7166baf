"""The standalone daemon: load a snapshot, call the core, persist, apply through an executor.

One cycle (`Daemon.cycle`):
  1. Reap: read which ranks ended; apply the gang rule (one failed rank fails the job,
     the others are stopped), cancellations, preemptions, gang start timeouts and time
     limits. Stopping sends a signal (SIGTERM, or the preemption signal), then SIGKILL
     after a grace period; the job ends (or is requeued whole) once every rank is gone.
  2. Decide: snapshot from the store -> schedule() -> decisions (pure).
  3. Persist the decisions in one transaction, launch what started, signal preemption victims.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from adsched.errors import AdschedError, NodeFailure, StorageError
from adsched.jobspec import SIGNALS, parse_signal
from . import crashpoints, recovery
from .executors import Executor, RankEnd
from adsched.core.memo import Memo
from .executors.runas import JobRefused
from adsched.core.schedule import schedule
from .store import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, TIMEOUT, JobRecord, Store


@dataclass
class CycleReport:
    now: float
    started: list[int] = field(default_factory=list)
    ended: dict[int, str] = field(default_factory=dict)
    preempted: list[int] = field(default_factory=list)
    pending: int = 0
    running: int = 0


REQUEUE = "REQUEUE"  # not a final state: the job goes back to PENDING whole


@dataclass(frozen=True)
class Verdict:
    """How a running job will end once its ranks are gone, and how to stop them meanwhile."""

    state: str  # a final state, or REQUEUE
    reason: str
    exit_code: int | None  # None: taken from the ranks when they are all gone
    kill_at: float  # when stopping escalates to SIGKILL
    signum: int = signal.SIGTERM  # what stopping sends first
    begin_time: float | None = None  # REQUEUE: not eligible again before this (start backoff)
    start_try: bool = False  # REQUEUE after a gang start timeout: counts towards giving up


class Daemon:
    def __init__(self, store: Store, executor: Executor, clock: Callable[[], float] = time.time,
                 kill_wait: float = 5.0, start_timeout: float = 300.0, start_tries: int = 3,
                 start_backoff: float = 30.0, server=None):
        self.store = store
        self.server = server  # a SocketServer: started once this daemon holds the state dir's lock
        self.executor = executor
        self.clock = clock
        self.kill_wait = kill_wait  # SIGTERM -> SIGKILL when stopping for any reason but preemption
        # Gang start timeout (Kueue #4803): every rank must be running within `start_timeout`
        # of the start, else the gang is stopped and requeued after start_backoff * 2^(try-1);
        # after `start_tries` tries it fails.
        self.start_timeout = start_timeout
        self.start_tries = start_tries
        self.start_backoff = start_backoff
        self._stopping: dict[int, Verdict] = {}  # jobs being stopped, and how they will end (also in `stops`)
        self._memo = Memo()  # answers this daemon's cycles share (core/memo.py)
        recovery.ensure_schema(store)

    def _decide(self, job: JobRecord, ends: list[RankEnd], now: float) -> Verdict | None:
        """Whether a running job is over (or must be stopped), and why. None: let it run."""
        if job.cancel_requested:
            return Verdict(CANCELLED, "cancelled by user", None, now + self.kill_wait)
        if job.preempted_by:  # before the rank check: the preemption signal makes ranks exit non-zero
            return self._preemption_verdict(job, now)
        lost = sorted({job.allocations[e.rank]["node"] for e in ends if e.node_lost})
        if lost:  # a node died: drained, and the whole gang goes back to the queue
            for node in lost:
                self.store.set_node_state(node, "drain", f"not responding (job {job.id})", now)
            return Verdict(REQUEUE, f"node {', '.join(lost)} stopped responding", None, now + self.kill_wait)
        failed = sorted((e for e in ends if e.exit_code != 0), key=lambda e: e.rank)
        if failed:  # the gang rule: the first failure decides, the other ranks are stopped
            e = failed[0]
            how = f"killed by signal {-e.exit_code}" if e.exit_code < 0 else f"exited with code {e.exit_code}"
            return Verdict(FAILED, f"rank {e.rank} on {job.allocations[e.rank]['node']} {how}", e.exit_code,
                           now + self.kill_wait)
        if job.start_time is not None and now - job.start_time >= self.start_timeout:
            up = self.executor.started(job) | {e.rank for e in ends}
            if len(up) < len(job.allocations):
                missing = sorted(set(range(len(job.allocations))) - up)
                why = f"ranks {missing} not running {self.start_timeout:g} s after the gang started"
                if job.start_tries + 1 >= self.start_tries:
                    return Verdict(FAILED, f"{why} ({job.start_tries + 1} tries)", None, now + self.kill_wait)
                backoff = self.start_backoff * 2 ** job.start_tries
                return Verdict(REQUEUE, f"{why}; retry after {backoff:g} s", None, now + self.kill_wait,
                               begin_time=now + backoff, start_try=True)
        if job.start_time is not None and now >= job.start_time + job.time_limit:
            return Verdict(TIMEOUT, "time limit reached", None, now + self.kill_wait)
        if len(ends) == len(job.allocations):
            return Verdict(COMPLETED, "", 0, now)
        return None

    def _preemption_verdict(self, job: JobRecord, now: float) -> Verdict:
        """The job's own --signal SIG@SECS if it gave one, else its queue's signal and grace period."""
        queue = self.store.config.queues.get(job.queue)
        signum = SIGNALS.get(getattr(queue, "preempt_signal", "TERM"), signal.SIGTERM)
        grace = float(getattr(queue, "grace_period", self.kill_wait))
        if job.signal:
            signum, secs = parse_signal(job.signal)
            grace = float(secs) if secs is not None else grace
        reason = f"preempted by job {job.preempted_by}"
        state = CANCELLED if job.no_requeue else REQUEUE
        return Verdict(state, reason, None, now + grace, signum=signum)

    def _stop(self, job: JobRecord, verdict: Verdict, now: float) -> None:
        """First call: send the verdict's signal; past its deadline: SIGKILL."""
        if job.id not in self._stopping:
            recovery.save_stop(self.store, job.id, job.restart_count, verdict)  # before the signal: a restart resumes it
            self._stopping[job.id] = verdict
            self.executor.signal(job, verdict.signum)
            crashpoints.hit("signal")
        elif now >= verdict.kill_at:
            self.executor.signal(job, signal.SIGKILL)
            crashpoints.hit("kill")

    def _end(self, job: JobRecord, verdict: Verdict, ends: list[RankEnd], now: float) -> None:
        was_stopping = self._stopping.pop(job.id, None) is not None
        if verdict.state == REQUEUE:
            self.store.requeue(job.id, verdict.reason, now, begin_time=verdict.begin_time,
                               start_try=verdict.start_try)
        else:
            code = verdict.exit_code if verdict.exit_code is not None else _job_exit_code(ends)
            self.store.finish(job.id, verdict.state, code, verdict.reason, now)
        if was_stopping:
            recovery.forget_stop(self.store, job.id)

    def cycle(self) -> CycleReport:
        now = self.clock()
        report = CycleReport(now)
        recovery.sweep_returned_nodes(self)  # a node back in service may still run ranks of a requeued gang

        # Phase 1: reap; enforce the gang rule, cancellations, preemptions, start timeouts
        # and time limits; pick up checkpoints jobs reported through their checkpoint file.
        for job in self.store.jobs(states=(RUNNING,)):
            ends = self.executor.ended(job)
            checkpoint = self.executor.checkpoint_time(job)
            if checkpoint and (job.checkpoint_time is None or checkpoint > job.checkpoint_time):
                self.store.checkpointed(job.id, checkpoint)
            verdict = self._stopping.get(job.id)
            if job.cancel_requested and verdict is not None and verdict.state != CANCELLED:
                self._stopping.pop(job.id)  # a user's cancel overrides a preemption's grace period
                verdict = None
            verdict = verdict or self._decide(job, ends, now)
            if verdict is None:
                continue
            if len(ends) == len(job.allocations):
                self._end(job, verdict, ends, now)
                report.ended[job.id] = verdict.state
                continue
            self._stop(job, verdict, now)

        # Phase 2: decide (pure).
        snap = self.store.snapshot(now)
        decisions = schedule(snap, self.store.config, now, self._memo)

        # Phase 3: persist, then apply. A node that cannot take its rank is drained and
        # the job goes back to the queue whole (as Slurm does on a launch failure).
        for job in self.store.record_cycle(decisions, now, snap):
            try:
                self.store.set_pids(job.id, self.executor.launch(job))
            except JobRefused as e:  # nothing ran: this daemon must not run the job (runas.py)
                self.store.finish(job.id, FAILED, None, str(e), now)
                report.ended[job.id] = FAILED
                continue
            except NodeFailure as e:
                self.executor.signal(self.store.job(job.id), signal.SIGKILL)
                self.store.set_node_state(e.node, "drain", str(e), now)
                self.store.requeue(job.id, f"launch failed: {e}", now)
                continue
            report.started.append(job.id)
        # Preemption: signal the victims now; they end (requeued whole) when their ranks are gone,
        # and the core keeps their GPUs for the preemptor meanwhile (Snapshot.preempting).
        for p in decisions.preemptions:
            victim = self.store.mark_preempted(p.victim_id, p.preemptor_id, p.reason, now)
            if victim is not None:
                self._stop(victim, self._preemption_verdict(victim, now), now)
                report.preempted.append(p.victim_id)
        report.pending = len(snap.pending) - len(report.started)
        report.running = len(snap.running) + len(report.started)
        return report

    def run(self, once: bool = False, until_idle: bool = False, max_seconds: float | None = None,
            on_cycle: Callable[[CycleReport], None] | None = None) -> None:
        with self._lock():
            deadline = None if max_seconds is None else time.monotonic() + max_seconds
            recovered = False
            while True:
                try:
                    if not recovered:  # at start, and after a cycle the store cut short
                        recovery.recover(self, self.clock())
                        recovered = True
                    report = self.cycle()
                except StorageError as e:  # disk full, read-only: keep every job, retry next cycle
                    if once:
                        raise
                    print(f"adsched: {e}; retrying", file=sys.stderr, flush=True)
                    recovered, report = False, None
                if on_cycle and report is not None:
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
        if self.server is not None:
            self.server.start()
        return f


def _job_exit_code(ends: list[RankEnd]) -> int:
    """The job's exit code: the first non-zero rank's, else 0."""
    for e in sorted(ends, key=lambda e: e.rank):
        if e.exit_code != 0:
            return e.exit_code
    return 0
