"""Preemption and gang start timeouts with the real daemon and real processes."""

from __future__ import annotations

import signal
import sys
import time

from adsched.standalone.daemon import Daemon
from adsched.standalone.executors.local import LocalExecutor
from adsched.standalone.store import JobRequest, Store

from helpers import py, wait_for

CLUSTER = """
[cluster]
name = "preempt"
[[nodes]]
names = "n[1-2]"
gpus = 8
[switches.leaf1]
nodes = "n[1-2]"
[queues.release]
tier = 10
preempts = ["explore"]
[queues.explore]
tier = 1
preemptible = true
grace_period = "0:03"
preempt_signal = "USR1"
min_run_time = 0
[scheduler]
cycle_interval = 0.2
"""

# A training step loop: resumes from its checkpoint, checkpoints on USR1 (within the grace
# period), then keeps "training" until killed. Writes what it saw for the test.
TRAINER = r"""
import json, os, signal, sys, time
ckpt = os.path.join(os.environ["WORKDIR"], "ckpt.json")
seen = os.path.join(os.environ["WORKDIR"], "seen.log")
restart = os.environ["ADSCHED_RESTART_COUNT"]
state = json.load(open(ckpt)) if os.path.exists(ckpt) else None
open(seen, "a").write(f"start restart={restart} checkpoint={state}\n")
if restart != "0":
    sys.exit(0)  # resumed: finish at once
def on_usr1(sig, frame):
    json.dump({"step": 42}, open(ckpt, "w"))
    open(seen, "a").write(f"got signal {sig}\n")
    os.utime(os.environ["ADSCHED_CHECKPOINT_FILE"], None) if os.path.exists(os.environ["ADSCHED_CHECKPOINT_FILE"]) else open(os.environ["ADSCHED_CHECKPOINT_FILE"], "w").close()
signal.signal(signal.SIGUSR1, on_usr1)
while True:
    time.sleep(0.1)  # ignores the signal beyond checkpointing: the daemon must kill it
"""


def test_victim_gets_its_signal_checkpoints_is_killed_requeued_and_resumes(tmp_path):
    store = Store.init(tmp_path / "state", CLUSTER)
    env = {"WORKDIR": str(tmp_path)}
    victim = store.submit(JobRequest([sys.executable, "-c", TRAINER], nodes=2, queue="explore", env=env,
                                     workdir=str(tmp_path)), time.time())
    daemon = Daemon(store, LocalExecutor(store.state_dir), kill_wait=1.0)
    daemon.cycle()
    wait_for(lambda: (tmp_path / "seen.log").exists())
    release = store.submit(JobRequest(py("pass"), nodes=2, queue="release"), time.time())

    t0 = time.monotonic()
    report = daemon.cycle()
    assert report.preempted == [victim]
    assert store.job(victim).preempted_by == release
    wait_for(lambda: "got signal" in (tmp_path / "seen.log").read_text(), timeout=10)
    assert f"got signal {int(signal.SIGUSR1)}" in (tmp_path / "seen.log").read_text()

    # Inside the grace period the victim still holds its nodes; the release job waits.
    daemon.cycle()
    assert store.job(victim).state == "RUNNING" and store.job(release).state == "PENDING"
    assert store.job(release).reason.startswith("Preempting")

    wait_for(lambda: daemon.cycle() and store.job(victim).state == "PENDING", timeout=20)
    assert time.monotonic() - t0 >= 3.0  # killed only after the grace period
    requeued = store.job(victim)
    assert requeued.restart_count == 1 and requeued.checkpoint_time is not None
    kinds = [e["kind"] for e in store.events(victim)]
    assert kinds[:3] == ["submit", "start", "preempt"] and "checkpoint" in kinds and kinds[-1] == "requeue"

    daemon.run(until_idle=True, max_seconds=60)
    assert store.job(release).state == "COMPLETED"
    assert store.job(victim).state == "COMPLETED"
    lines = (tmp_path / "seen.log").read_text().splitlines()
    assert lines[0] == "start restart=0 checkpoint=None"
    assert "start restart=1 checkpoint={'step': 42}" in lines


def test_no_requeue_victim_is_cancelled(tmp_path):
    store = Store.init(tmp_path / "state", CLUSTER)
    victim = store.submit(JobRequest(py("import time; time.sleep(60)"), nodes=2, queue="explore",
                                     no_requeue=True, signal="TERM@1"), time.time())
    daemon = Daemon(store, LocalExecutor(store.state_dir))
    daemon.cycle()
    store.submit(JobRequest(py("pass"), nodes=1, queue="release"), time.time())
    daemon.run(until_idle=True, max_seconds=40)
    v = store.job(victim)
    assert v.state == "CANCELLED" and v.reason.startswith("preempted by job")


class NeverStarts(LocalExecutor):
    """Rank 1 of every gang never comes up (a wedged node), so the start timeout must act."""

    def started(self, job):
        return super().started(job) - {1}


def test_gang_start_timeout_requeues_with_backoff_then_gives_up(tmp_path):
    store = Store.init(tmp_path / "state", CLUSTER)
    job_id = store.submit(JobRequest(py("import time; time.sleep(60)"), nodes=2), time.time())
    clock = [time.time()]
    daemon = Daemon(store, NeverStarts(store.state_dir), clock=lambda: clock[0], kill_wait=0.5,
                    start_timeout=1.0, start_tries=2, start_backoff=10.0)
    daemon.cycle()
    assert store.job(job_id).state == "RUNNING"
    wait_for(lambda: daemon.executor.started(store.job(job_id)) == {0})  # rank 0 is up, rank 1 never
    clock[0] += 1.5
    wait_for(lambda: daemon.cycle() and store.job(job_id).state == "PENDING", timeout=20)
    job = store.job(job_id)
    assert job.start_tries == 1 and job.begin_time == clock[0] + 10.0
    assert "ranks [1] not running 1 s after the gang started; retry after 10 s" in job.reason
    daemon.cycle()
    assert store.job(job_id).state == "PENDING"  # held by the backoff
    clock[0] += 10.5
    daemon.cycle()
    assert store.job(job_id).state == "RUNNING"
    clock[0] += 1.5
    wait_for(lambda: daemon.cycle() and store.job(job_id).state == "FAILED", timeout=20)
    assert "(2 tries)" in store.job(job_id).reason


def test_explain_tells_the_victim_who_and_the_preemptor_whom(tmp_path):
    import json

    from click.testing import CliRunner

    from adsched.cli.adsub import main as adsub

    state = tmp_path / "state"
    store = Store.init(state, CLUSTER.replace('grace_period = "0:03"', 'grace_period = "1:00"'))
    victim = store.submit(JobRequest(py("import signal, time; signal.signal(signal.SIGUSR1, lambda *a: None); "
                                        "time.sleep(120)"), nodes=2, queue="explore"), time.time())
    daemon = Daemon(store, LocalExecutor(state), kill_wait=1.0)
    daemon.cycle()
    release = store.submit(JobRequest(py("pass"), nodes=2, queue="release"), time.time())
    assert daemon.cycle().preempted == [victim]
    try:
        r = CliRunner().invoke(adsub, ["explain", "--state", str(state), str(victim)])
        assert r.exit_code == 0 and f"Job {victim}: running, being preempted by job {release}" in r.output
        r = CliRunner().invoke(adsub, ["explain", "--state", str(state), str(release), "--json"])
        e = json.loads(r.output)
        assert e["constraint"] == "Preempting" and e["reason"] == f"Preempting: waiting for job {victim} to stop"
    finally:
        store.cancel(victim, time.time())
    t0 = time.monotonic()  # the cancel overrides the 60 s grace period: TERM now, KILL after kill_wait
    wait_for(lambda: daemon.cycle() and store.job(victim).state == "CANCELLED", timeout=20)
    assert time.monotonic() - t0 < 15
