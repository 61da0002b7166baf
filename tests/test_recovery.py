"""Recovery on daemon start (sched/standalone/recovery.py), one crash window at a time.

A "crash" here drops the Daemon and its executor (all the memory a kill -9 takes) while
the ranks, real processes, run on; a new Daemon on a reopened Store then recovers. The
kill -9 storm itself is tests/test_faults_crash.py.
"""

from __future__ import annotations

import os
import time

import pytest

from adsched.core.schedule import schedule
from adsched.standalone import recovery
from adsched.standalone.daemon import Daemon
from adsched.standalone.executors.local import LocalExecutor, _rank_wrappers
from adsched.standalone.store import JobRequest, Store

from helpers import py, wait_for
from test_e2e_preempt import CLUSTER as PREEMPT_CLUSTER

SMALL = """
[cluster]
name = "recovery"
[[nodes]]
names = "n[1-3]"
gpus = 8
[queues.work]
tier = 1
[scheduler]
cycle_interval = 0.05
"""


def restarted(store: Store, **kw) -> Daemon:
    """A new daemon on the same state, after its own recovery (as `run` does first)."""
    daemon = Daemon(Store(store.state_dir), LocalExecutor(store.state_dir), **kw)
    recovery.recover(daemon, time.time())
    return daemon


def run_until(daemon: Daemon, pred, timeout: float = 30.0):
    return wait_for(lambda: daemon.cycle() and pred(), timeout=timeout, step=0.05)


@pytest.mark.parametrize("launched_before_crash", [0, 1, 3])
def test_crash_inside_a_launch_adopts_the_launched_ranks_and_launches_the_rest_once(tmp_path,
                                                                                    launched_before_crash):
    store = Store.init(tmp_path / "state", SMALL)
    log = tmp_path / "starts.log"
    code = f"import os, time; open({str(log)!r}, 'a').write(os.environ['NODE_RANK'] + '\\n'); time.sleep(0.5)"
    job_id = store.submit(JobRequest(py(code), nodes=3), time.time())
    snap = store.snapshot(time.time())
    [job] = store.record_cycle(schedule(snap, store.config, time.time()), time.time())  # the intent
    LocalExecutor(store.state_dir).launch(job, list(range(launched_before_crash)))  # ... crash: no pids recorded
    assert all(a["pid"] is None for a in store.job(job_id).allocations)

    daemon = restarted(store)
    pids = [a["pid"] for a in store.job(job_id).allocations]
    assert all(pids)
    run_until(daemon, lambda: store.job(job_id).state == "COMPLETED")
    assert sorted(log.read_text().split()) == ["0", "1", "2"]  # each rank ran exactly once


def test_timeout_kill_cut_by_a_crash_still_ends_timeout_not_failed(tmp_path):
    store = Store.init(tmp_path / "state", SMALL)
    job_id = store.submit(JobRequest(py("import time; time.sleep(60)"), nodes=2, time="0:01"), time.time())
    daemon = Daemon(store, LocalExecutor(store.state_dir), kill_wait=1.0)
    run_until(daemon, lambda: daemon._stopping)  # SIGTERM sent for the time limit ... crash
    ranks = [a["pid"] for a in store.job(job_id).allocations]
    wait_for(lambda: all(not os.path.exists(f"/proc/{p}") or _zombie(p) for p in ranks))  # died of SIGTERM
    daemon = restarted(store, kill_wait=1.0)
    run_until(daemon, lambda: store.job(job_id).state != "RUNNING")
    job = store.job(job_id)
    assert (job.state, job.reason) == ("TIMEOUT", "time limit reached")


def test_grace_period_and_pending_kill_survive_a_restart(tmp_path):
    store = Store.init(tmp_path / "state", PREEMPT_CLUSTER.replace('grace_period = "0:03"', 'grace_period = "0:04"'))
    stubborn = py("import signal, time; signal.signal(signal.SIGUSR1, signal.SIG_IGN); time.sleep(120)")
    victim = store.submit(JobRequest(stubborn, nodes=2, queue="explore"), time.time())
    daemon = Daemon(store, LocalExecutor(store.state_dir), kill_wait=1.0)
    run_until(daemon, lambda: store.job(victim).state == "RUNNING")
    wait_for(lambda: daemon.executor.started(store.job(victim)) == {0, 1})
    time.sleep(0.5)  # the ranks are past installing their handler
    store.submit(JobRequest(py("pass"), nodes=2, queue="release"), time.time())
    run_until(daemon, lambda: victim in daemon._stopping)
    kill_at = daemon._stopping[victim].kill_at
    del daemon  # crash in the grace period

    daemon = restarted(store, kill_wait=1.0)
    assert daemon._stopping[victim].kill_at == kill_at  # the deadline, not a fresh grace period
    run_until(daemon, lambda: store.job(victim).state == "PENDING")
    assert kill_at <= time.time() < kill_at + 3  # killed when the first daemon would have
    assert store.events(victim)[-1]["data"]["reason"].startswith("preempted by job")
    assert store.conn.execute("SELECT COUNT(*) FROM stops").fetchone()[0] == 0


def test_an_orphan_of_an_earlier_attempt_is_killed_before_anything_runs(tmp_path):
    store = Store.init(tmp_path / "state", SMALL)
    job_id = store.submit(JobRequest(py("import time; time.sleep(60)"), nodes=1), time.time())
    daemon = Daemon(store, LocalExecutor(store.state_dir))
    daemon.cycle()
    [orphan] = [a["pid"] for a in store.job(job_id).allocations]
    # The store forgot the rank (say a requeue recorded while its node was cut off).
    store.requeue(job_id, "node lost", time.time())
    assert store.job(job_id).state == "PENDING" and not _zombie(orphan)

    restarted(store)
    wait_for(lambda: not os.path.exists(f"/proc/{orphan}") or _zombie(orphan), timeout=5)
    assert not [rc for rc in _rank_wrappers() if rc.startswith(str(store.state_dir))]


def test_a_cancel_during_a_preemption_stop_wins_over_the_requeue(tmp_path):
    store = Store.init(tmp_path / "state", SMALL)
    job_id = store.submit(JobRequest(py("pass")), time.time())
    Daemon(store, LocalExecutor(store.state_dir)).cycle()
    assert store.cancel(job_id, time.time()) == "CANCELLING"
    store.requeue(job_id, "preempted by job 9", time.time())  # the daemon decided before it saw the cancel
    job = store.job(job_id)
    assert (job.state, job.reason) == ("CANCELLED", "cancelled by user")
    assert [e["kind"] for e in store.events(job_id)][-1] == "end"


def _zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True

