"""kill -9 of a daemon whose ranks run over SSH (issue 13): recovery reconciles the nodes too.

Three real sshd nodes on 127.0.0.2-4 (tests/test_faults_node.py). The daemon
(tests/faults_driver.py with the SSH executor) is killed again and again: at its crash
points (after the start's intent is committed, with a rank's launch sent to its node and
its pid not yet read, after each rank's launch, after pids are recorded, after a signal)
and, in a third of its lives, from outside at a random moment. Meanwhile the test
submits gangs of 1-3 nodes, some of which fail (the gang rule stops the others), and
cancels a few. Every rank takes an exclusive lock on its (job, attempt, rank) file and
logs start and end with its pid (the RANK script of test_faults_crash.py); a rank running
beside another copy of itself writes DUP.

At the end: no DUP, each rank of each job started exactly once (nothing here requeues a
job), every job ended once in the state it had to, and no rank wrapper is left on the nodes.
"""

from __future__ import annotations

import collections
import os
import random
import sys
import time
from dataclasses import asdict

import pytest

from adsched.errors import InvalidRequest
from adsched.standalone.executors.local import _rank_wrappers
from adsched.standalone.store import FINAL_STATES, JobRequest, Store

from crashstorm import Storm, wrong_endings
from helpers import wait_for
from test_faults_crash import RANK
from test_faults_node import HOSTS, nodes  # noqa: F401 - the fixture: three sshd nodes

pytestmark = pytest.mark.ssh

CRASHES = int(os.environ.get("ADSCHED_TEST_SSH_CRASHES", "30"))
CRASH_SECONDS = float(os.environ.get("ADSCHED_TEST_SSH_CRASH_SECONDS", "75"))  # stop there on a slow machine
MIN_CRASHES = 10
SEED = int(os.environ.get("ADSCHED_TEST_SEED", "13"))

CLUSTER = """
[cluster]
name = "sshcrash"
[[nodes]]
names = "n[1-3]"
addresses = "127.0.0.[2-4]"
gpus = 2
[queues.work]
tier = 1
[scheduler]
cycle_interval = 0.05
[standalone]
executor = "ssh"
"""


def test_daemon_killed_while_ranks_run_over_ssh_runs_each_rank_once(tmp_path, nodes):  # noqa: F811
    _, settings = nodes
    state = tmp_path / "state"
    store = Store.init(state, CLUSTER)
    rank_py, locks = tmp_path / "rank.py", tmp_path / "locks"
    rank_py.write_text(RANK)
    locks.mkdir()
    env = {"LOCKDIR": str(locks), "RANKLOG": str(tmp_path / "ranks.log")}
    rng = random.Random(SEED)
    natural: dict[int, str] = {}
    cancelled: dict[int, str] = {}

    def submit(plan: str, want: str, **kw) -> None:
        req = JobRequest([sys.executable, "-S", str(rank_py)], env={**env, "PLAN": plan}, user="root",
                         workdir=str(tmp_path), **kw)
        natural[store.submit(req, time.time())] = want

    storm = Storm(tmp_path, state, SEED, CRASHES, ssh={"addresses": HOSTS, "settings": asdict(settings)})

    def step() -> None:
        if len(store.jobs(states=("PENDING", "RUNNING"))) < 4:
            submit(f"ok:{rng.uniform(0.3, 1.5):.2f}", "COMPLETED", nodes=rng.choice([2, 3]), gpus_per_node=2)
            submit(f"ok:{rng.uniform(0.3, 1.0):.2f}", "COMPLETED", gpus=1)
            if rng.random() < 0.3:
                submit("fail:0.5", "FAILED", nodes=2, gpus_per_node=2)
        active = [j.id for j in store.jobs(states=("PENDING", "RUNNING"))]
        if active and rng.random() < 0.03:
            j = rng.choice(active)
            try:
                cancelled[j] = store.cancel(j, time.time())
            except InvalidRequest:  # it ended meanwhile
                pass

    storm.run(step, CRASHES, CRASH_SECONDS, MIN_CRASHES)
    got = storm.report(store)
    starts = collections.Counter((x[1], x[3]) for x in got.log if x[0] == "start")  # (job, rank), any attempt
    print("\nover SSH: " + got.summary(sum(starts.values())))

    assert got.dups == []
    assert set(got.jobs) == set(natural), "a job was lost or appeared from nowhere"
    points = got.points
    assert points["launch-sent"] > 0 and points["launch"] > 0 and points["commit"] > 0 and points["timer"] > 0
    assert [k for k, n in starts.items() if n > 1] == []  # each rank of each job ran once
    assert all(j.restart_count == 0 for j in got.jobs.values())  # no node was lost: nothing had to run again
    ends = {(x[1], x[3]) for x in got.log if x[0] == "end"}
    assert wrong_endings(store, got.jobs, natural, cancelled, lambda j, r: (str(j.id), str(r)) in ends) == []
    never_once = [j.id for j in got.jobs.values() if j.state == "COMPLETED"
                  and sorted(r for (job, r) in starts if job == str(j.id)) != [str(r) for r in range(j.num_nodes)]]
    assert never_once == [], "COMPLETED without each rank started once"
    assert all(j.state in FINAL_STATES for j in got.jobs.values())
    # The nodes are this host's loopback addresses: nothing of this state dir is left running on them.
    wait_for(lambda: not [rc for rc in _rank_wrappers() if rc.startswith(str(state))], timeout=10,
             what="no rank wrapper left")


def _started_gang(tmp_path, settings, ranks_launched: int):
    """A 3-node gang whose start is recorded (the intent) and `ranks_launched` ranks of it launched over
    SSH, their pids never recorded: what a daemon killed inside its launch leaves behind."""
    from adsched.core.schedule import schedule
    from adsched.standalone.executors.ssh import SSHExecutor

    state = tmp_path / "state"
    store = Store.init(state, CLUSTER)
    job_id = store.submit(JobRequest([sys.executable, "-c", "import time; time.sleep(60)"], nodes=3,
                                     gpus_per_node=2, user="root", workdir=str(tmp_path)), time.time())
    [job] = store.record_cycle(schedule(store.snapshot(time.time()), store.config, time.time()), time.time())
    executor = SSHExecutor(state, HOSTS, settings)
    pids = executor.launch(job, list(range(ranks_launched)))
    executor.close()
    return store, job_id, pids


def _restarted(store: Store, settings):
    from adsched.standalone import recovery
    from adsched.standalone.daemon import Daemon
    from adsched.standalone.executors.ssh import SSHExecutor

    daemon = Daemon(Store(store.state_dir), SSHExecutor(store.state_dir, HOSTS, settings), kill_wait=1.0)
    return daemon, recovery.recover(daemon, time.time())


def _gone(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_an_orphan_of_an_earlier_attempt_is_killed_on_every_ssh_node(tmp_path, nodes):  # noqa: F811
    _, settings = nodes
    store, job_id, pids = _started_gang(tmp_path, settings, 3)
    store.requeue(job_id, "node lost", time.time())  # the store forgot its ranks (say a node was cut off)
    daemon, report = _restarted(store, settings)
    # Killed through the nodes' sshd (the three nodes share this host's /proc: each node asked finds all three)
    assert sorted({k.split(":", 1)[1].rsplit("/", 1)[1] for k in report.killed}) == \
        ["rank-0.0.rc", "rank-1.0.rc", "rank-2.0.rc"], report
    assert all(k.split(":", 1)[0] in HOSTS for k in report.killed)
    wait_for(lambda: all(_gone(p) for p in pids.values()), timeout=10, what="the orphans killed")
    assert store.job(job_id).state == "PENDING"
    daemon.executor.close()


def test_a_gang_cut_in_its_launch_with_a_node_gone_is_requeued_whole(tmp_path, nodes):  # noqa: F811
    made, settings = nodes
    store, job_id, pids = _started_gang(tmp_path, settings, 1)  # rank 0 runs, ranks 1 and 2 never launched
    lost = next(a["node"] for a in store.job(job_id).allocations if a["rank"] == 2)
    made[lost].die()
    daemon, report = _restarted(store, settings)
    assert report.requeued == [job_id] and report.adopted == {}
    wait_for(lambda: _gone(pids[0]), timeout=10, what="rank 0 killed")
    job = store.job(job_id)
    assert (job.state, job.restart_count) == ("PENDING", 1) and job.reason.startswith("recovery failed: ")
    node = next(n for n in store.nodes() if n["name"] == lost)
    assert node["state"].startswith("drain"), node
    daemon.executor.close()


# A rank that holds its (job, attempt, rank) lock and reports any rank of another attempt of its job
# still holding one; attempt 0 runs long, later attempts end at once.
PARTITION_RANK = r"""
import fcntl, glob, os, time
e = os.environ
job, attempt, rank = e["ADSCHED_JOB_ID"], e["ADSCHED_RESTART_COUNT"], e["NODE_RANK"]
fd = os.open(os.path.join(e["LOCKDIR"], f"{job}.{attempt}.{rank}"), os.O_CREAT | os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
for other in glob.glob(os.path.join(e["LOCKDIR"], f"{job}.*.*")):
    if other.split(".")[-2] != attempt:
        ofd = os.open(other, os.O_RDONLY)
        try:
            fcntl.flock(ofd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            open(e["RANKLOG"], "a").write(f"DUP {job} {attempt} {rank} beside {os.path.basename(other)}\n")
        os.close(ofd)
open(e["RANKLOG"], "a").write(f"start {job} {attempt} {rank} {os.getpid()}\n")
time.sleep(60 if attempt == "0" else 0.2)
"""


def test_a_cut_off_node_resumed_has_its_orphaned_rank_killed_before_the_gang_runs_again(tmp_path, nodes):  # noqa: F811
    from adsched.standalone.daemon import Daemon
    from adsched.standalone.executors.ssh import SSHExecutor

    made, settings = nodes
    state, log, locks = tmp_path / "state", tmp_path / "ranks.log", tmp_path / "locks"
    locks.mkdir()
    store = Store.init(state, CLUSTER)
    job_id = store.submit(JobRequest([sys.executable, "-c", PARTITION_RANK], nodes=3, gpus_per_node=2,
                                     env={"LOCKDIR": str(locks), "RANKLOG": str(log)}, user="root",
                                     workdir=str(tmp_path)), time.time())
    daemon = Daemon(store, SSHExecutor(state, HOSTS, settings), kill_wait=1.0)
    wait_for(lambda: daemon.cycle() and log.exists() and len(log.read_text().splitlines()) == 3, timeout=60,
             what="three ranks running")
    n2_rank = next(a["rank"] for a in store.job(job_id).allocations if a["node"] == "n2")
    orphan = next(int(pid) for _, _, _, r, pid in (line.split() for line in log.read_text().splitlines())
                  if r == str(n2_rank))
    made["n2"].die()  # cut off: its sshd and sessions go, its rank (a session of its own) runs on
    wait_for(lambda: daemon.cycle() and store.job(job_id).state == "PENDING", timeout=60, what="the gang requeued")
    assert not _gone(orphan)  # nothing could reach it

    made["n2"].start()
    store.set_node_state("n2", "up", "", time.time())  # as `adsched nodes resume n2`
    wait_for(lambda: daemon.cycle() and store.job(job_id).state == "COMPLETED", timeout=60, what="the gang completed")
    assert _gone(orphan)
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [x for x in lines if x[0] == "DUP"] == []  # attempt 1 never ran beside the orphan of attempt 0
    assert sorted((x[2], x[3]) for x in lines if x[0] == "start") == [
        ("0", "0"), ("0", "1"), ("0", "2"), ("1", "0"), ("1", "1"), ("1", "2")]
    daemon.executor.close()
