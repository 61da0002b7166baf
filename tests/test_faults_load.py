"""Many `adsub submit` processes at once while the daemon runs (issue 13): unique ids, none
lost, and `database is locked` never reaches a user (the store's busy timeout queues writers).

The issue's full size: 100 processes submit 50 jobs each (`--file`, one transaction a
process), 5,000 jobs, all started together against a real `adsched run` that schedules and
runs them meanwhile. Bounded by a generous timeout per process (a hang fails the test); the
rate is printed, never asserted (bench/load.py has the figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from adsched.standalone.store import Store

from helpers import wait_for

PROCESSES, JOBS_EACH = 100, 50
TIMEOUT = 300  # seconds for every process to answer (15.5 s for all of them in bench/load.py)

CLUSTER = """
[cluster]
name = "load"
[[nodes]]
names = "n[1-2]"
gpus = 1
[queues.work]
tier = 1
[scheduler]
cycle_interval = 0.1
"""


def adsub(state, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "adsched.cli.adsub", "submit", "--state", str(state), "--json",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_hundred_concurrent_submitters_while_the_daemon_runs(tmp_path):
    state = tmp_path / "state"
    store = Store.init(state, CLUSTER)
    spec = tmp_path / "jobs.jsonl"
    spec.write_text("".join(json.dumps({"command": ["true"], "name": f"j{i}"}) + "\n" for i in range(JOBS_EACH)))
    daemon = subprocess.Popen([sys.executable, "-m", "adsched.cli.adsched", "run", "--state", str(state)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    procs = []
    try:
        t0 = time.monotonic()
        procs = [adsub(state, "-D", str(tmp_path), "--file", str(spec)) for _ in range(PROCESSES)]
        deadline = time.monotonic() + TIMEOUT
        results = [(p.wait(timeout=max(1.0, deadline - time.monotonic())), *p.communicate()) for p in procs]
        elapsed = time.monotonic() - t0
        during = sum(1 for j in store.jobs() if j.state != "PENDING")
        # The daemon came through the storm: alive, and scheduling (it may have had no turn
        # during it on a loaded machine, so it is given a few seconds after).
        wait_for(lambda: sum(1 for j in store.jobs() if j.state == "COMPLETED") >= 2, timeout=60,
                 what="the daemon running jobs")
        assert daemon.poll() is None, daemon.stderr.read()
    finally:
        for p in procs:  # a submitter that hung is not left behind
            if p.poll() is None:
                p.kill()
                p.wait()
        daemon.terminate()
        daemon.wait(timeout=30)

    failed = [(rc, err) for rc, _, err in results if rc != 0 or err]
    assert failed == []  # no error at all reached a user, so no "database is locked"
    ids = []
    for _, out, _ in results:
        ids += json.loads(out)["job_ids"]
    want = PROCESSES * JOBS_EACH
    assert len(ids) == len(set(ids)) == want
    assert {j.id for j in store.jobs()} == set(ids)  # none lost, none extra
    print(f"\n{len(procs)} adsub processes x {JOBS_EACH} jobs: {want} jobs in {elapsed:.1f} s "
          f"({want / elapsed:.0f} jobs/s); the daemon had started {during} of them meanwhile")
