"""End to end: the real daemon (`adsched run`) runs real processes through every ending."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from adsched.standalone.daemon import Daemon
from adsched.standalone.executors.local import LocalExecutor
from adsched.standalone.auth import current_identity
from adsched.standalone.store import JobRequest, Store

from helpers import py, wait_for

ME = current_identity().name  # `adsched run` runs each job as its owner, who must have an account

SMALL = """
[cluster]
name = "small"
[[nodes]]
names = "n[1-4]"
gpus = 8
[switches.leaf1]
nodes = "n[1-2]"
[switches.leaf2]
nodes = "n[3-4]"
[switches.spine]
switches = "leaf[1-2]"
[queues.work]
tier = 1
default_time = "10:00"
[scheduler]
cycle_interval = 0.2
"""


@pytest.fixture
def store(tmp_path):
    return Store.init(tmp_path, SMALL)


def daemon_proc(state_dir, *extra):
    return subprocess.Popen([sys.executable, "-m", "adsched.cli.adsched", "run", "--state", str(state_dir), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_completed_with_launcher_env(store, tmp_path):
    out = tmp_path / "env"
    out.mkdir()
    code = (f"import os, json; e=os.environ; json.dump({{k: e[k] for k in e if k.startswith(('ADSCHED', 'NODE_RANK',"
            f"'NNODES', 'WORLD_SIZE', 'MASTER', 'CUDA', 'LOCAL'))}}, open('{out}/' + e['NODE_RANK'], 'w'))")
    job_id = store.submit(JobRequest(py(code), nodes=2, gpus_per_node=4, workdir=str(tmp_path), user=ME), time.time())
    p = daemon_proc(store.state_dir, "--until-idle", "--max-seconds", "60")
    assert p.wait(timeout=90) == 0, p.stderr.read()
    job = store.job(job_id)
    assert (job.state, job.exit_code) == ("COMPLETED", 0)
    envs = [json.load(open(out / str(r))) for r in range(2)]
    assert [e["NODE_RANK"] for e in envs] == ["0", "1"]
    for e in envs:
        assert e["NNODES"] == "2" and e["WORLD_SIZE"] == "8" and e["LOCAL_WORLD_SIZE"] == "4"
        assert e["CUDA_VISIBLE_DEVICES"] == "0,1,2,3" and e["MASTER_ADDR"] == "127.0.0.1"
        assert e["ADSCHED_JOB_ID"] == str(job_id) and e["ADSCHED_NODELIST"] == job.nodelist
    assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"]
    assert (store.state_dir / "jobs" / str(job_id) / "rank-0.out").exists()


def test_one_failed_rank_fails_the_gang_and_stops_the_others(store, tmp_path):
    code = "import os, sys, time\nif os.environ['NODE_RANK'] == '1': sys.exit(3)\ntime.sleep(60)"
    job_id = store.submit(JobRequest(py(code), nodes=2), time.time())
    t0 = time.monotonic()
    Daemon(store, LocalExecutor(store.state_dir), kill_wait=2.0).run(until_idle=True, max_seconds=45)
    job = store.job(job_id)
    assert job.state == "FAILED" and job.exit_code == 3
    assert job.reason.startswith("rank 1 on ") and "exited with code 3" in job.reason
    assert time.monotonic() - t0 < 30  # rank 0 was stopped, not waited for


def test_cancel_a_running_gang_stops_every_rank(store, tmp_path):
    job_id = store.submit(JobRequest(py("import time; time.sleep(120)"), nodes=4, user=ME), time.time())
    p = daemon_proc(store.state_dir)
    try:
        wait_for(lambda: store.job(job_id).state == "RUNNING" and all(a["pid"] for a in store.job(job_id).allocations))
        pids = [a["pid"] for a in store.job(job_id).allocations]
        assert len(pids) == 4
        assert store.cancel(job_id, time.time()) == "CANCELLING"
        wait_for(lambda: store.job(job_id).state == "CANCELLED", timeout=30)
        for pid in pids:  # the wrapper and its command are gone
            wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z")
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_time_limit(tmp_path):
    store = Store.init(tmp_path, SMALL)
    job_id = store.submit(JobRequest(py("import time; time.sleep(60)"), time="0:02"), time.time())
    Daemon(store, LocalExecutor(store.state_dir), kill_wait=1.0).run(until_idle=True, max_seconds=40)
    job = store.job(job_id)
    assert job.state == "TIMEOUT" and job.reason == "time limit reached"


def test_gang_waits_for_a_fourth_node_then_starts_whole(store):
    blocker = store.submit(JobRequest(py("import time; time.sleep(1.5)"), nodes=1), time.time())
    gang = store.submit(JobRequest(py("pass"), nodes=4), time.time())
    d = Daemon(store, LocalExecutor(store.state_dir))
    d.cycle()
    assert store.job(blocker).state == "RUNNING"
    assert store.job(gang).reason == "Resources: needs 4 nodes with 8 free GPUs; 3 available"
    d.run(until_idle=True, max_seconds=30)
    starts = [e for e in store.events(gang) if e["kind"] == "start"]
    assert len(starts) == 1 and len(starts[0]["data"]["nodes"]) == 4  # all ranks in one cycle
    assert store.job(gang).state == "COMPLETED"


def test_second_daemon_is_refused(store):
    p = daemon_proc(store.state_dir)
    try:
        wait_for(lambda: (store.state_dir / "daemon.lock").exists())
        time.sleep(0.5)
        r = subprocess.run([sys.executable, "-m", "adsched.cli.adsched", "run", "--once", "--state",
                            str(store.state_dir)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "another adsched daemon is running" in r.stderr
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_demo_command_runs_the_mixed_workload(tmp_path):
    r = subprocess.run([sys.executable, "-m", "adsched.cli.adsched", "demo", "--state", str(tmp_path / "d"),
                        "--json"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    jobs = json.loads(r.stdout)
    assert len(jobs) >= 10 and {j["state"] for j in jobs} == {"COMPLETED"}
    gang = next(j for j in jobs if j["num_nodes"] == 4)
    assert len({a["node"] for a in gang["allocations"]}) == 4


def test_afterok_chain_runs_in_order_and_a_failed_parent_cancels_its_child(store, tmp_path):
    log = tmp_path / "order.log"
    step = lambda name: py(f"open({str(log)!r}, 'a').write({name!r} + '\\n')")  # noqa: E731
    prep = store.submit(JobRequest(step("prep"), name="prep"), time.time())
    train = store.submit(JobRequest(step("train"), nodes=2, dependency=f"afterok:{prep}"), time.time())
    evaluate = store.submit(JobRequest(step("eval"), dependency=f"afterok:{train}"), time.time())
    bad = store.submit(JobRequest(py("import sys; sys.exit(1)")), time.time())
    orphan = store.submit(JobRequest(step("never"), dependency=f"afterok:{bad}"), time.time())
    Daemon(store, LocalExecutor(store.state_dir)).run(until_idle=True, max_seconds=60)
    assert log.read_text().split() == ["prep", "train", "train", "eval"]  # train has 2 ranks
    assert [store.job(j).state for j in (prep, train, evaluate, bad)] == ["COMPLETED"] * 3 + ["FAILED"]
    o = store.job(orphan)
    assert o.state == "CANCELLED" and o.reason == f"DependencyNeverSatisfied: job {bad} FAILED"


def test_array_throttle_with_real_processes(store, tmp_path):
    array = store.submit(JobRequest(py("import time; time.sleep(0.3)"), gpus=1, array="0-11%3"), time.time())
    d = Daemon(store, LocalExecutor(store.state_dir))
    peak = 0
    end = time.monotonic() + 60
    while time.monotonic() < end:
        d.cycle()
        running = [j for j in store.jobs(states=("RUNNING",)) if j.array_id == array]
        peak = max(peak, len(running))
        if not store.jobs(states=("PENDING", "RUNNING")):
            break
        time.sleep(0.1)
    assert peak == 3
    assert [j.state for j in store.jobs()] == ["COMPLETED"] * 12


def test_fair_share_usage_survives_a_daemon_restart(store):
    job_id = store.submit(JobRequest(py("import time; time.sleep(1.2)"), nodes=2), time.time())
    Daemon(store, LocalExecutor(store.state_dir)).run(until_idle=True, max_seconds=30)
    assert store.job(job_id).state == "COMPLETED"
    reopened = Store(store.state_dir)  # a new process would see the same
    snap = reopened.snapshot(time.time())  # nothing runs: the saved usage, decayed by a few seconds
    users, queues = snap.user_usage, snap.queue_usage
    gpu_hours = users[store.job(job_id).user]
    assert 16 * 1.0 / 3600 < gpu_hours < 16 * 5.0 / 3600  # 16 GPUs for ~1-2 s
    assert queues["work"] == pytest.approx(gpu_hours)


def test_relative_state_dir(tmp_path, monkeypatch):
    """`adsched demo` defaults to ./demo-state: ranks run elsewhere, so paths must not be relative."""
    monkeypatch.chdir(tmp_path)
    Store.init("rel-state", SMALL)
    store = Store("rel-state")
    workdir = tmp_path / "work"
    workdir.mkdir()
    job_id = store.submit(JobRequest(py("print('ok')"), nodes=2, workdir=str(workdir)), time.time())
    Daemon(store, LocalExecutor("rel-state")).run(until_idle=True, max_seconds=30)
    assert store.job(job_id).state == "COMPLETED"
    assert (tmp_path / "rel-state" / "jobs" / str(job_id) / "rank-1.out").read_text() == "ok\n"
