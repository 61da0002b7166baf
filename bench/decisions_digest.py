"""A hash of every Decisions the core makes on a fixed set of workloads: the guard for
performance work ("same digest before and after" means not a single decision changed).

    python bench/decisions_digest.py [--quick] [--verbose]

Workloads (all seeded, all deterministic):
  - bench/cycle.py's 1,024-node snapshots at several busy levels and pending counts, with
    the cluster's settings, a deeper reservation depth and backfill off;
  - the first jobs of the KTH-SP2 replay through the simulator, every policy, every cycle;
  - random snapshots and short multi-cycle runs from tests/test_properties.py's generators
    on small clusters with every combination of backfill / topology / depths.
Prints one digest per workload group and a total; compare totals, not timings.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import adsched.sim.engine as engine  # noqa: E402
from adsched.configfile import load_config  # noqa: E402
from adsched.core.config import ALL  # noqa: E402
from adsched.core.model import Decisions, RunningJob, Snapshot  # noqa: E402
from adsched.core.schedule import schedule  # noqa: E402


def canonical(d: Decisions) -> str:
    """Decisions as text; starts, reservations and preemptions keep their order (it is
    part of the decision), the dicts are sorted (their insertion order is not)."""
    # Reasons enter as the text users see (str of a Reason), as when they were strings.
    return repr((d.starts, sorted((k, str(r)) for k, r in d.pending_reasons.items()),
                 sorted((k, str(r)) for k, r in d.cancels.items()),
                 d.reservations, d.preemptions))


class Digest:
    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.count = 0

    def add(self, d: Decisions) -> None:
        self.h.update(canonical(d).encode())
        self.count += 1

    def hex(self) -> str:
        return self.h.hexdigest()[:16]


def bench_snapshots(quick: bool) -> Digest:
    from cycle import CLUSTER, make_snapshot
    dig = Digest()
    base = load_config(CLUSTER)
    s = base.scheduler
    configs = [base, replace(base, scheduler=replace(s, reservation_depth=16)),
               replace(base, scheduler=replace(s, backfill=False)),
               replace(base, scheduler=replace(s, topology_aware=False))]
    pendings = [200, 2000] if quick else [200, 2000, 10000]
    for config, busy, n in itertools.product(configs, [0.3, 0.7, 0.97], pendings):
        snap = make_snapshot(config, n, busy, seed=7)
        dig.add(schedule(snap, config, 0.0))
    return dig


def kth_replay(quick: bool) -> Digest:
    from sim_replay import CLUSTER, KTH
    from adsched.sim.traces import load_trace, to_workload
    dig = Digest()
    config = load_config(CLUSTER)
    workload = to_workload(load_trace(KTH, limit=1500 if quick else 4000), config)
    real = engine.schedule

    def recording(snap, cfg, now, memo=None):
        d = real(snap, cfg, now, memo)
        dig.add(d)
        return d

    engine.schedule = recording
    try:
        for policy in ("fifo", "backfill-flat", "adsched"):  # conservative: in the random runs (depth all)
            res = engine.simulate(workload, config, policy)
            dig.h.update(repr((res.start, res.end, res.preemptions)).encode())
    finally:
        engine.schedule = real
    return dig


def random_runs(quick: bool) -> Digest:
    from builders import cluster, with_settings
    from test_properties import MIG, QUEUES, STATES, random_job, random_snapshot
    dig = Digest()
    n = 0
    for leaves, per_leaf, gpus, mig in [(1, 3, 4, False), (2, 4, 8, True), (4, 4, 8, False), (3, 2, 4, True)]:
        base = cluster(leaves=leaves, nodes_per_leaf=per_leaf, gpus=gpus, spines=1, queues=QUEUES,
                       scheduler={"default_queue": "open"}, mig=MIG if mig else None)
        for backfill, topo, depth, pdepth, wfs in itertools.product(
                [True, False], [True, False], [0, 1, 3, ALL], [0, 1, 4], [0.0, 10.0]):
            cfg = with_settings(base, backfill=backfill, topology_aware=topo, reservation_depth=depth,
                                preemption_depth=pdepth, weight_age=10.0, weight_fairshare=wfs,
                                weight_size=10.0, age_max=1000)
            n += 1
            for seed in range(2 if quick else 5):
                snap = random_snapshot(cfg, 1000 * n + seed, 5 + 5 * seed, 3 + 6 * seed, 10_000.0)
                dig.add(schedule(snap, cfg, 10_000.0))
            _many_cycles(cfg, 77 * n, dig, random_job, random_snapshot, STATES, cycles=4 if quick else 10)
    return dig


def _many_cycles(cfg, seed, dig, random_job, random_snapshot, STATES, cycles):
    """As test_preemptions_applied_over_many_cycles: starts applied, victims drain one cycle."""
    rng = random.Random(seed)
    snap = random_snapshot(cfg, seed, 15, 10, 0.0)
    running, pending, finished = list(snap.running), list(snap.pending), dict(snap.finished)
    preempting: dict[int, tuple[int, ...]] = {}
    next_id = 3000
    for k in range(cycles):
        now = 300.0 * k
        stopped = {v for vs in preempting.values() for v in vs}
        for r in running:
            if r.end_time <= now:
                finished[r.job.id] = rng.choice(STATES)
        requeue = [r.job for r in running if r.job.id in stopped and r.end_time > now]
        running = [r for r in running if r.end_time > now and r.job.id not in stopped]
        pending += requeue
        preempting = {}
        for _ in range(rng.randint(0, 4)):
            pending.append(random_job(rng, next_id, cfg, now))
            next_id += 1
        snap = Snapshot(tuple(pending), tuple(running), snap.unavailable, finished, preempting=preempting)
        d = schedule(snap, cfg, now)
        dig.add(d)
        by_id = {j.id: j for j in pending}
        running += [RunningJob(by_id[s.job_id], now, s.placement, s.borrowing) for s in d.starts]
        for p in d.preemptions:
            preempting[p.preemptor_id] = preempting.get(p.preemptor_id, ()) + (p.victim_id,)
        finished.update({job_id: "CANCELLED" for job_id in d.cancels})
        done = {s.job_id for s in d.starts} | set(d.cancels)
        pending = [j for j in pending if j.id not in done]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller workloads (a different digest)")
    args = ap.parse_args()
    total = hashlib.sha256()
    for name, group in [("bench snapshots", bench_snapshots), ("KTH replay", kth_replay),
                        ("random runs", random_runs)]:
        t0 = time.perf_counter()
        dig = group(args.quick)
        print(f"{name:<16} {dig.count:>6} cycles  {dig.hex()}  ({time.perf_counter() - t0:.1f} s)", flush=True)
        total.update(dig.hex().encode())
    print(f"total{' (quick)' if args.quick else ''}: {total.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
