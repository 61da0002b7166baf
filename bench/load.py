"""Load figures for issue 13, printed (never asserted):

  1. submissions/s through `adsub submit`: sequential single calls, one bulk call (--file),
     and PROCS concurrent processes x PER jobs each (--file) against one store;
  2. one daemon cycle's latency with QUEUED jobs pending (cluster1024.toml);
  3. the daemon's RSS after THROUGH jobs have passed through it.

2 and 3 run the real Daemon and Store with an instant executor (ranks "end" the cycle after
they start, no processes), so the figures are the scheduler's and the store's, not fork's.

    python bench/load.py [--singles 20] [--bulk 5000] [--procs 100] [--per 50]
                         [--queued 10000] [--through 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources

from adsched.standalone.daemon import Daemon
from adsched.standalone.executors import RankEnd
from adsched.standalone.store import JobRequest, Store


class InstantExecutor:
    """Every rank ends (exit 0) at the first look after its launch; nothing is spawned."""

    def __init__(self):
        self.launched: set[int] = set()

    def launch(self, job, ranks=None):
        self.launched.add(job.id)
        return {}

    def ended(self, job):
        return [RankEnd(job.id, a["rank"], 0) for a in job.allocations] if job.id in self.launched else []

    def started(self, job):
        return {a["rank"] for a in job.allocations}

    def checkpoint_time(self, job):
        return None

    def signal(self, job, signum):
        pass

    def reconcile(self, job):
        return {}


def adsub(state, *args):
    return subprocess.Popen([sys.executable, "-m", "adsched.cli.adsub", "submit", "--state", state, "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (VmRSS), or its peak (VmHWM), in MB."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--singles", type=int, default=20)
    ap.add_argument("--bulk", type=int, default=5000)
    ap.add_argument("--procs", type=int, default=100)
    ap.add_argument("--per", type=int, default=50)
    ap.add_argument("--queued", type=int, default=10000)
    ap.add_argument("--through", type=int, default=100000)
    ap.add_argument("--only", choices=("submit", "cycle", "through"), help="run one part only")
    a = ap.parse_args()
    cluster = resources.files("adsched.examples").joinpath("cluster1024.toml").read_text()
    tmp = tempfile.mkdtemp(prefix="adsched-load-")

    if a.only in (None, "submit"):
        submit_rates(a, tmp, cluster)
    if a.only in (None, "cycle"):
        cycle_latency(a, tmp, cluster)
    if a.only in (None, "through"):
        rss_after(a, tmp, cluster)


def submit_rates(a, tmp: str, cluster: str) -> None:
    state = os.path.join(tmp, "submit")
    Store.init(state, cluster)
    times = []
    for _ in range(a.singles):
        t0 = time.monotonic()
        p = adsub(state, "-D", tmp, "--gpus", "1", "--", "true")
        assert p.wait() == 0, p.stderr.read()
        times.append(time.monotonic() - t0)
    print(f"adsub submit, single calls: median {statistics.median(times) * 1000:.0f} ms "
          f"-> {1 / statistics.median(times):.1f} submissions/s (sequential, {a.singles} calls)")
    spec = os.path.join(tmp, "jobs.jsonl")
    with open(spec, "w") as f:
        f.writelines(json.dumps({"command": ["true"], "gpus": 1}) + "\n" for _ in range(a.bulk))
    t0 = time.monotonic()
    p = adsub(state, "-D", tmp, "--file", spec)
    assert p.wait() == 0, p.stderr.read()
    print(f"adsub submit --file, {a.bulk} jobs in one call: {a.bulk / (time.monotonic() - t0):.0f} jobs/s")
    with open(spec, "w") as f:
        f.writelines(json.dumps({"command": ["true"], "gpus": 1}) + "\n" for _ in range(a.per))
    t0 = time.monotonic()
    procs = [adsub(state, "-D", tmp, "--file", spec) for _ in range(a.procs)]
    outs = [(p.wait(), *p.communicate()) for p in procs]
    wall = time.monotonic() - t0
    ids = [i for rc, out, _ in outs if rc == 0 for i in json.loads(out)["job_ids"]]
    locked = sum("locked" in err for _, _, err in outs)
    print(f"{a.procs} concurrent adsub --file x {a.per} jobs: {len(ids)} jobs in {wall:.1f} s "
          f"({len(ids) / wall:.0f} jobs/s); unique ids {len(set(ids))}; failed calls "
          f"{sum(rc != 0 for rc, _, _ in outs)}; 'database is locked' seen {locked} times")


def cycle_latency(a, tmp: str, cluster: str) -> None:
    state = os.path.join(tmp, "cycle")
    store = Store.init(state, cluster)
    shapes = [dict(gpus=1), dict(nodes=1), dict(nodes=2), dict(nodes=8, max_leaves=1), dict(gpus=4)]
    store.submit_many([JobRequest(["true"], **shapes[i % len(shapes)], time="1:00:00") for i in range(a.queued)],
                      time.time())
    daemon = Daemon(store, InstantExecutor())
    lat = []
    for _ in range(5):
        t0 = time.monotonic()
        daemon.cycle()
        lat.append(time.monotonic() - t0)
    print(f"daemon cycle with {a.queued} queued (mixed shapes, 1,024 nodes): first {lat[0] * 1000:.0f} ms, "
          f"median of 5 {statistics.median(lat) * 1000:.0f} ms")


def rss_after(a, tmp: str, cluster: str) -> None:
    state = os.path.join(tmp, "through")
    store = Store.init(state, cluster)
    daemon = Daemon(store, InstantExecutor())
    t0, done, rss0 = time.monotonic(), 0, rss_mb()
    batch = 10000
    while done < a.through:
        n = min(batch, a.through - done)
        store.submit_many([JobRequest(["true"], gpus=1, time="10") for _ in range(n)], time.time())
        while store.conn.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('PENDING','RUNNING')").fetchone()[0]:
            daemon.cycle()
        done += n
        if done < a.through:  # a long run shows how far it got
            print(f"  {done} jobs through: RSS {rss_mb():.0f} MB, {time.monotonic() - t0:.0f} s", flush=True)
    print(f"daemon after {done} jobs passed through (start + end each): RSS {rss_mb():.0f} MB, peak "
          f"{rss_mb('VmHWM'):.0f} MB "
          f"(bench process, was {rss0:.0f} MB before), {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
