"""Crash safety for the standalone daemon: what it must remember, and what it does on start.

A start is recorded before any rank is launched (`record_cycle` commits the job RUNNING
with its allocations and no pids): that row is the intent. The ranks' exit-code files are
per attempt (STATE/jobs/ID/rank-R.TRY.rc) and a rank wrapper's command line names its file,
so after a kill -9 the next daemon can tell, for every RUNNING job, which ranks are really
running, which ended, and which were never launched (`recover`):

- a live wrapper of the current attempt whose pid the store lacks is adopted;
- a rank that was never launched is launched now (the gang's start was recorded);
- a live wrapper of any other attempt, or of a job that is not RUNNING, is killed
  (`Executor.sweep`, on this host or on every SSH node): it can never run beside a
  requeued copy of itself;
- a gang with a node that does not answer is requeued whole (its other ranks killed),
  the node drained, as when a launch fails;
- a node back in service (resumed after it stopped answering) is swept before the cycle
  places anything (`sweep_returned_nodes`): a rank of a gang requeued while the node was
  cut off is killed there before the gang runs again.

A rank wrapper claims its rank before it runs anything (rankwrap.py, probe.py), so a rank
launched again by recovery while a crashed daemon's launch is still on its way (over SSH,
a remote shell outlives the connection) still runs once.

How a job is being stopped (the verdict: final state, reason, when SIGTERM turns into
SIGKILL) is written to `stops` before the first signal goes out, so a grace period and a
pending kill survive a restart, and a job killed for its time limit still ends TIMEOUT
(not FAILED by the SIGTERM it got). Rows are per attempt: a stale one is ignored.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from adsched.errors import NodeFailure
from .store import RUNNING, Store

if TYPE_CHECKING:  # pragma: no cover
    from .daemon import Daemon, Verdict

STOPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS stops (
    job_id INTEGER NOT NULL, attempt INTEGER NOT NULL,
    state TEXT NOT NULL, reason TEXT NOT NULL, exit_code INTEGER, kill_at REAL NOT NULL,
    signum INTEGER NOT NULL, begin_time REAL, start_try INTEGER NOT NULL,
    PRIMARY KEY (job_id, attempt)
)
"""


@dataclass
class Recovery:
    adopted: dict[int, list[int]] = field(default_factory=dict)  # job -> ranks given a pid (found or launched)
    stops: list[int] = field(default_factory=list)  # jobs whose stop was resumed
    killed: list[str] = field(default_factory=list)  # orphaned wrappers killed
    requeued: list[int] = field(default_factory=list)  # gangs that could not be made whole (a node lost)


def ensure_schema(store: Store) -> None:
    if store.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'stops'").fetchone() is None:
        with store.transaction():
            store.conn.execute(STOPS_SCHEMA)


def save_stop(store: Store, job_id: int, attempt: int, verdict: "Verdict") -> None:
    with store.transaction():
        store.conn.execute(
            "INSERT OR REPLACE INTO stops(job_id, attempt, state, reason, exit_code, kill_at, signum, begin_time,"
            " start_try) VALUES (?,?,?,?,?,?,?,?,?)",
            (job_id, attempt, verdict.state, verdict.reason, verdict.exit_code, verdict.kill_at,
             int(verdict.signum), verdict.begin_time, int(verdict.start_try)),
        )


def forget_stop(store: Store, job_id: int) -> None:
    with store.transaction():
        store.conn.execute("DELETE FROM stops WHERE job_id = ?", (job_id,))


def load_stops(store: Store) -> dict[int, "Verdict"]:
    """The verdicts of RUNNING jobs' current attempts; rows of ended or earlier attempts are dropped."""
    from .daemon import Verdict

    out = {}
    rows = store.conn.execute(
        "SELECT s.job_id, s.state, s.reason, s.exit_code, s.kill_at, s.signum, s.begin_time, s.start_try"
        " FROM stops s JOIN jobs j ON j.id = s.job_id WHERE j.state = ? AND j.restart_count = s.attempt",
        (RUNNING,),
    ).fetchall()
    for job_id, state, reason, exit_code, kill_at, signum, begin_time, start_try in rows:
        out[job_id] = Verdict(state, reason, exit_code, kill_at, signum=signal.Signals(signum),
                              begin_time=begin_time, start_try=bool(start_try))
    if store.conn.execute("SELECT COUNT(*) FROM stops").fetchone()[0] > len(out):
        with store.transaction():
            store.conn.execute(
                "DELETE FROM stops WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = stops.job_id AND j.state = ?"
                " AND j.restart_count = stops.attempt)", (RUNNING,))
    return out


def recover(daemon: "Daemon", now: float) -> Recovery:
    """Reconcile the store with what really runs; called before the daemon's first cycle."""
    store, executor = daemon.store, daemon.executor
    report = Recovery()
    ensure_schema(store)
    daemon._stopping = load_stops(store)
    running = store.jobs(states=(RUNNING,))
    sweep = getattr(executor, "sweep", None)
    if sweep is not None:  # first, so nothing of an earlier attempt runs while ranks are launched below
        report.killed = sweep({(j.id, j.restart_count) for j in running})
    for job in running:
        if any(not a.get("pid") for a in job.allocations):
            try:
                pids = executor.reconcile(job)
            except NodeFailure as e:  # a node of the gang is gone (its ranks elsewhere were killed): as a launch failure
                store.set_node_state(e.node, "drain", str(e), now)
                store.requeue(job.id, f"recovery failed: {e}", now)
                daemon._stopping.pop(job.id, None)
                report.requeued.append(job.id)
                continue
            if pids:
                store.set_pids(job.id, pids)
                report.adopted[job.id] = sorted(pids)
        verdict = daemon._stopping.get(job.id)
        if verdict is not None:  # the first signal may never have gone out
            executor.signal(store.job(job.id), verdict.signum if now < verdict.kill_at else signal.SIGKILL)
            report.stops.append(job.id)
    daemon._node_states = _node_states(store)  # every node was swept: `sweep_returned_nodes` starts from here
    return report


def sweep_returned_nodes(daemon: "Daemon") -> list[str]:
    """Each cycle, before anything is placed: a node back in service (drained or down -> up, e.g.
    `adsched nodes resume` after it stopped answering) is swept first, since ranks of a gang
    requeued while it was cut off may still run there. Over SSH only (one host has no such gap)."""
    sweep_nodes = getattr(daemon.executor, "sweep_nodes", None)
    if sweep_nodes is None:
        return []
    states, before = _node_states(daemon.store), getattr(daemon, "_node_states", None)
    daemon._node_states = states
    back = sorted(n for n, s in (before or {}).items() if s != "up" and states.get(n, "up") == "up")
    if not back:
        return []
    return sweep_nodes(back, {(j.id, j.restart_count) for j in daemon.store.jobs(states=(RUNNING,))})


def _node_states(store: Store) -> dict[str, str]:
    """The nodes an admin or the daemon ever set (the others are up): one small query."""
    return dict(store.conn.execute("SELECT name, state FROM nodes").fetchall())
