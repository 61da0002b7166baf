"""kill -9 of the daemon, again and again, under a busy mixed workload (issue 13).

The daemon (tests/faults_driver.py) is killed at seeded random crash points: after a
committed transaction, between the ranks of a launch, after a signal. Meanwhile the test
submits gangs, arrays, failing and overrunning jobs, preemptible jobs and their
preemptors, and cancels some. Every rank takes an exclusive lock on its own
(job, attempt, rank) file and probes the files of the job's other attempts: a rank running
beside another copy of itself, or beside any rank of another attempt of its job, writes
DUP. At the end: no DUP, every job ended exactly once in the state it had to, none lost.
"""

from __future__ import annotations

import collections
import os
import random
import sys
import time
from pathlib import Path

from adsched.errors import InvalidRequest
from adsched.standalone.store import FINAL_STATES, JobRequest, Store

from crashstorm import Storm, wrong_endings
from helpers import wait_for
from test_e2e_local import ME  # `adsched run` as root runs each job as its owner

CRASHES = int(os.environ.get("ADSCHED_TEST_CRASHES", "200"))
# The crash phase stops at CRASHES crashes or after this long (a loaded 2-core CI machine);
# the number reached is printed, and at least MIN_CRASHES must happen.
CRASH_SECONDS = float(os.environ.get("ADSCHED_TEST_CRASH_SECONDS", "90"))
MIN_CRASHES = 50
SEED = int(os.environ.get("ADSCHED_TEST_SEED", "13"))

CLUSTER = """
[cluster]
name = "faults"
[[nodes]]
names = "n[1-4]"
gpus = 2
[switches.leaf1]
nodes = "n[1-2]"
[switches.leaf2]
nodes = "n[3-4]"
[switches.spine]
switches = "leaf[1-2]"
[queues.high]
tier = 10
preempts = ["low", "mid"]
[queues.mid]
tier = 5
preemptible = true
grace_period = "0:01"
[queues.low]
tier = 1
preemptible = true
grace_period = "0:01"
min_run_time = 0
[scheduler]
default_queue = "mid"
cycle_interval = 0.02
"""

# PLAN: ok:SECS (every rank sleeps, exits 0), fail:SECS (rank 1 exits 3, the others sleep
# on), hang (sleeps past its time limit), stubborn:SECS (ok, but ignores SIGTERM/SIGUSR1).
RANK = r"""
import fcntl, glob, os, signal, sys, time
e = os.environ
job, attempt, rank = e["ADSCHED_JOB_ID"], e["ADSCHED_RESTART_COUNT"], e["NODE_RANK"]
locks = e["LOCKDIR"]
log = open(e["RANKLOG"], "a")
def note(what):
    log.write(f"{what} {job} {attempt} {rank} {os.getpid()} {time.time():.3f}\n")
    log.flush()
mine = os.path.join(locks, f"{job}.{attempt}.{rank}")
fd = os.open(mine, os.O_CREAT | os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    note("DUP-same-rank")
    sys.exit(99)
for other in glob.glob(os.path.join(locks, f"{job}.*.*")):
    if os.path.basename(other).split(".")[1] == attempt:
        continue  # this attempt's other ranks run beside it by design
    ofd = os.open(other, os.O_RDONLY)
    try:
        fcntl.flock(ofd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        note("DUP-other-attempt " + os.path.basename(other))
    finally:
        os.close(ofd)
note("start")
kind, _, secs = e["PLAN"].partition(":")
if kind == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
if kind == "fail" and rank == "1":
    time.sleep(float(secs))
    note("end")
    sys.exit(3)
time.sleep(60 if kind in ("hang", "fail") else float(secs))
note("end")
"""


class Workload:
    """Submits and cancels through the store (as adsub does) and remembers what each job must end as."""

    def __init__(self, store: Store, tmp: Path, rng: random.Random):
        self.store, self.rng = store, rng
        self.rank_py = tmp / "rank.py"
        self.rank_py.write_text(RANK)
        self.env = {"LOCKDIR": str(tmp / "locks"), "RANKLOG": str(tmp / "ranks.log")}
        (tmp / "locks").mkdir()
        self.natural: dict[int, str] = {}  # job -> the state it ends in unless cancelled
        self.cancelled: dict[int, str] = {}  # job -> what cancel answered (CANCELLED / CANCELLING)

    def submit(self, plan: str, natural: str, **kw) -> list[int]:
        req = JobRequest([sys.executable, "-S", str(self.rank_py)], env={**self.env, "PLAN": plan}, user=ME, **kw)
        first = self.store.submit(req, time.time())
        ids = self.store.jobs_in_array(first) if kw.get("array") else [first]
        for j in ids:
            self.natural[j] = natural
        return ids

    def wave(self) -> None:
        r = self.rng
        self.submit(f"ok:{r.uniform(0.2, 0.8):.2f}", "COMPLETED", nodes=r.choice([1, 2, 3]))
        self.submit(f"ok:{r.uniform(0.2, 0.4):.2f}", "COMPLETED", gpus=1, array=f"0-{r.randint(1, 3)}%2")
        if r.random() < 0.3:
            self.submit("fail:0.3", "FAILED", nodes=2)
        if r.random() < 0.2:
            self.submit("hang", "TIMEOUT", gpus=1, time="0:02")
        if r.random() < 0.7:
            self.submit(f"stubborn:{r.uniform(1.0, 2.0):.2f}", "COMPLETED", nodes=r.choice([2, 3]), queue="low")

    def preempt(self) -> None:
        """A high-tier gang while jobs run: the core preempts some of them."""
        if len(self.store.jobs(states=("RUNNING",))) >= 2 and self.rng.random() < 0.15:
            self.submit("ok:0.3", "COMPLETED", nodes=self.rng.choice([2, 3]), queue="high")

    def cancel_some(self) -> None:
        active = [j.id for j in self.store.jobs(states=("PENDING", "RUNNING"))]
        for j in self.rng.sample(active, min(len(active), int(self.rng.random() < 0.08))):
            try:
                self.cancelled[j] = self.store.cancel(j, time.time())
            except InvalidRequest:  # it ended meanwhile
                pass


def test_daemon_killed_at_random_points_loses_nothing_and_runs_nothing_twice(tmp_path):
    state = tmp_path / "state"
    store = Store.init(state, CLUSTER)
    work = Workload(store, tmp_path, random.Random(SEED))
    storm = Storm(tmp_path, state, SEED, CRASHES)

    def step() -> None:
        if len(store.jobs(states=("PENDING", "RUNNING"))) < 8:
            work.wave()
        work.preempt()
        work.cancel_some()

    storm.run(step, CRASHES, CRASH_SECONDS, MIN_CRASHES)
    got = storm.report(store)
    log = got.log
    starts = collections.Counter((x[1], x[2], x[3]) for x in log if x[0] == "start")
    print("\n" + got.summary(sum(starts.values())))

    assert got.dups == []
    assert set(got.jobs) == set(work.natural), "a job was lost or appeared from nowhere"
    assert got.points["launch"] > 0 and got.points["commit"] > 0 and got.points["signal"] > 0
    assert [k for k, n in starts.items() if n > 1] == []  # no rank of one attempt started twice
    ends = {(x[1], x[2], x[3]) for x in log if x[0] == "end"}  # every rank of a COMPLETED job's last attempt
    assert wrong_endings(store, got.jobs, work.natural, work.cancelled,
                         lambda j, r: (str(j.id), str(j.restart_count), str(r)) in ends) == []
    assert all(j.state in FINAL_STATES for j in got.jobs.values())
    # Nothing of this state dir is left running.
    wait_for(lambda: not _live_wrappers(state), timeout=10, what="no rank wrapper left")


def _live_wrappers(state: Path) -> list[int]:
    from adsched.standalone.executors.local import _rank_wrappers

    return [pid for rc, pid in _rank_wrappers().items() if rc.startswith(str(state))]

