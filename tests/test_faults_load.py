"""Many `adsub submit` processes at once while the daemon runs (issue 13): unique ids, none
lost, and `database is locked` never reaches a user (the store's busy timeout queues writers).

24 processes submit 50 jobs each in one call (`--file`, one transaction) and 16 more submit
one job each, all started together against a daemon that schedules and runs them. The
issue's full size (100 processes x 50 jobs) takes over a minute of this 2-core machine, so
it is bench/load.py's, with the single-call figures (printed, not asserted).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from adsched.standalone.store import Store

from helpers import wait_for

BULK_PROCESSES, JOBS_EACH, SINGLE_PROCESSES = 24, 50, 16

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
    try:
        t0 = time.monotonic()
        procs = [adsub(state, "-D", str(tmp_path), "--file", str(spec)) for _ in range(BULK_PROCESSES)]
        procs += [adsub(state, "-D", str(tmp_path), "--", "true") for _ in range(SINGLE_PROCESSES)]
        results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
        elapsed = time.monotonic() - t0
        during = sum(1 for j in store.jobs() if j.state != "PENDING")
        # The daemon came through the storm: alive, and scheduling (it may have had no turn
        # during it on a loaded machine, so it is given a few seconds after).
        wait_for(lambda: sum(1 for j in store.jobs() if j.state == "COMPLETED") >= 2, timeout=60,
                 what="the daemon running jobs")
        assert daemon.poll() is None, daemon.stderr.read()
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)

    failed = [(rc, err) for rc, _, err in results if rc != 0 or err]
    assert failed == []  # in particular no "database is locked"
    ids = []
    for _, out, _ in results:
        answer = json.loads(out)
        ids += answer["job_ids"] if "job_ids" in answer else [answer["job_id"]]
    want = BULK_PROCESSES * JOBS_EACH + SINGLE_PROCESSES
    assert len(ids) == len(set(ids)) == want
    assert {j.id for j in store.jobs()} == set(ids)  # none lost, none extra
    print(f"\n{len(procs)} adsub processes, {want} jobs in {elapsed:.1f} s ({want / elapsed:.0f} jobs/s); "
          f"the daemon had started {during} of them meanwhile")
