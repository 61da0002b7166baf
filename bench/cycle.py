"""Median wall time of one scheduling cycle on the 1,024-node benchmark cluster.

    python bench/cycle.py [--pending 1000,10000] [--repeat 15] [--depth 1,4,100,1000,all]
                          [--cold] [--memory] [--profile]

Workload: mixed shapes (1-GPU and 2/4-GPU dev jobs, 1-node 8-GPU jobs, 2-32 node gangs,
some with max-leaves 1) in all queues; the cluster is ~70% busy with running jobs of the
same mix, as in a steady state. The cluster's [scheduler] settings apply (backfill with
reservation_depth = 4, the priority weights and preemption_depth = 4: release jobs may
preempt explore and debug jobs past their min_run_time; --depth sweeps reservation depths,
"all" being conservative backfill; --preemption-depth overrides the preemption depth).
Cycles share one Memo, as a daemon's do (--cold adds cycles without one). Each line prints the
cost per reservation; with depths 100 and 1000 in the sweep, their ratio (linear cost: the
per-reservation ratio near 1). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import resource
import statistics
import time
import tracemalloc
from pathlib import Path

from dataclasses import replace

from adsched.core.capacity import Capacity
from adsched.core.config import ALL
from adsched.core.memo import Memo
from adsched.configfile import load_config
from adsched.core.model import Job, RunningJob, Snapshot
from adsched.core.place import NoFit, find_placement
from adsched.core.schedule import schedule

CLUSTER = Path(__file__).resolve().parent.parent / "sched" / "examples" / "cluster1024.toml"
SHAPES = [  # (nodes, gpus per node, max leaves, weight)
    (1, 1, None, 30), (1, 2, None, 10), (1, 4, None, 10), (1, 8, None, 20),
    (2, 8, 1, 8), (4, 8, 1, 8), (8, 8, None, 6), (16, 8, None, 5), (32, 8, None, 3),
]
QUEUES = ["release", "train", "explore", "debug"]


def make_job(rng: random.Random, job_id: int, t: float) -> Job:
    n, g, ml, _ = rng.choices(SHAPES, weights=[s[3] for s in SHAPES])[0]
    q = "debug" if n * g <= 8 and rng.random() < 0.3 else rng.choice(QUEUES[:3])
    return Job(id=job_id, queue=q, num_nodes=n, gpus_per_node=g, time_limit=rng.choice([1800, 3600, 14400]),
               submit_time=t, user=f"u{rng.randrange(40)}", priority=rng.randrange(3), max_leaves=ml)


def make_snapshot(config, n_pending: int, busy: float, seed: int = 1) -> Snapshot:
    rng = random.Random(seed)
    cap = Capacity(config)
    running, jid = [], 1
    target = busy * config.total_gpus
    used = 0
    while used < target:
        job = make_job(rng, jid, 0.0)
        picks = find_placement(cap, job.num_nodes, job.gpus_per_node, job.max_leaves)
        jid += 1
        if isinstance(picks, NoFit):
            continue
        placement = cap.take(picks)
        # started within its time limit, so it ends in the future (an overdue job is killed)
        running.append(RunningJob(job, -rng.uniform(0, job.time_limit), placement))
        used += job.total_gpus
    pending = tuple(make_job(rng, jid + k, float(k)) for k in range(n_pending))
    return Snapshot(pending=pending, running=tuple(running))


def _depth(text: str):
    return ALL if text == "all" else int(text)


def measure(config, snap, repeat: int, memo: Memo | None):
    """Median, min and max seconds of `repeat` cycles, and the last Decisions. With a Memo the
    cycles share it (warm, as in the daemon); without, each one starts cold."""
    times, d = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        d = schedule(snap, config, 0.0, memo)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times), d


def peak_mb(config, snap) -> float:
    """Peak Python memory of one cold cycle (tracemalloc), beyond what the snapshot holds."""
    tracemalloc.start()
    schedule(snap, config, 0.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pending", default="1000,10000")
    ap.add_argument("--busy", type=float, default=0.7, help="fraction of GPUs already running jobs")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--depth", help="reservation depths to sweep, e.g. 1,4,100,1000,all (default: the TOML's)")
    ap.add_argument("--preemption-depth", type=int, help="preemption depth (default: the cluster TOML's)")
    ap.add_argument("--cold", action="store_true", help="also time cycles without a Memo (each one cold)")
    ap.add_argument("--memory", action="store_true", help="also print the peak memory of one cycle")
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile of one cycle")
    args = ap.parse_args()
    base = load_config(CLUSTER)
    if args.preemption_depth is not None:
        base = replace(base, scheduler=replace(base.scheduler, preemption_depth=args.preemption_depth))
    depths = [_depth(x) for x in args.depth.split(",")] if args.depth else [base.scheduler.reservation_depth]
    s = base.scheduler
    print(f"cluster: {len(base.nodes)} nodes, {base.total_gpus} GPUs, {len(base.leaves)} leaves; "
          f"backfill={s.backfill} preemption_depth={s.preemption_depth} busy={args.busy:.0%}; "
          f"medians of {args.repeat} cycles, warm Memo (as a daemon runs)")
    for n in (int(x) for x in args.pending.split(",")):
        snap = make_snapshot(base, n, args.busy)
        per_res: dict = {}
        for depth in depths:
            config = replace(base, scheduler=replace(base.scheduler, reservation_depth=depth))
            med, lo, hi, d = measure(config, snap, args.repeat, Memo())
            shown = "all" if depth == ALL else depth
            r = len(d.reservations)
            line = (f"pending={n:>6} depth={shown!s:>5}  running={len(snap.running):>5}  starts={len(d.starts):>5}  "
                    f"reservations={r:>5}  preemptions={len(d.preemptions)}  "
                    f"median={med * 1000:8.2f} ms  min={lo * 1000:8.2f}  max={hi * 1000:8.2f}")
            if r:
                per_res[depth] = (med, r)
                line += f"  per reservation={med / r * 1e6:7.1f} us"
            if args.cold:
                line += f"  cold median={measure(config, snap, max(3, args.repeat // 3), None)[0] * 1000:8.2f} ms"
            if args.memory:
                line += f"  peak={peak_mb(config, snap):6.1f} MB"
            print(line, flush=True)
            if args.profile:
                prof = cProfile.Profile()
                prof.runcall(schedule, snap, config, 0.0)
                pstats.Stats(prof).sort_stats("cumulative").print_stats(12)
        if 100 in per_res and 1000 in per_res:
            (m100, r100), (m1000, r1000) = per_res[100], per_res[1000]
            print(f"pending={n:>6} depth 1000 / depth 100: cycle {m1000 / m100:.2f}x for {r1000 / r100:.2f}x the "
                  f"reservations; per reservation {(m1000 / r1000) / (m100 / r100):.2f}x")
    print(f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
