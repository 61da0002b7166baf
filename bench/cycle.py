"""Median wall time of one scheduling cycle on the 1,024-node benchmark cluster.

    python bench/cycle.py [--pending 1000,10000] [--repeat 15] [--depth N] [--profile]

Workload: mixed shapes (1-GPU and 2/4-GPU dev jobs, 1-node 8-GPU jobs, 2-32 node gangs,
some with max-leaves 1) in all queues; the cluster is ~70% busy with running jobs of the
same mix, as in a steady state. The cluster's [scheduler] settings apply (backfill with
reservation_depth = 4, the priority weights and preemption_depth = 4: release jobs may
preempt explore and debug jobs past their min_run_time; --depth overrides the reservation
depth, --preemption-depth the preemption depth). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import statistics
import time
from pathlib import Path

from dataclasses import replace

from adsched.core.capacity import Capacity
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
        placement, _ = cap.take(picks)
        # started within its time limit, so it ends in the future (an overdue job is killed)
        running.append(RunningJob(job, -rng.uniform(0, job.time_limit), placement))
        used += job.total_gpus
    pending = tuple(make_job(rng, jid + k, float(k)) for k in range(n_pending))
    return Snapshot(pending=pending, running=tuple(running))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pending", default="1000,10000")
    ap.add_argument("--busy", type=float, default=0.7, help="fraction of GPUs already running jobs")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--depth", type=int, help="reservation depth (default: the cluster TOML's)")
    ap.add_argument("--preemption-depth", type=int, help="preemption depth (default: the cluster TOML's)")
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile of one cycle")
    args = ap.parse_args()
    config = load_config(CLUSTER)
    if args.depth is not None:
        config = replace(config, scheduler=replace(config.scheduler, reservation_depth=args.depth))
    if args.preemption_depth is not None:
        config = replace(config, scheduler=replace(config.scheduler, preemption_depth=args.preemption_depth))
    s = config.scheduler
    print(f"cluster: {len(config.nodes)} nodes, {config.total_gpus} GPUs, {len(config.leaves)} leaves; "
          f"backfill={s.backfill} reservation_depth={s.reservation_depth} "
          f"preemption_depth={getattr(s, 'preemption_depth', 0)} busy={args.busy:.0%}")
    for n in (int(x) for x in args.pending.split(",")):
        snap = make_snapshot(config, n, args.busy)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            d = schedule(snap, config, now=0.0)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times) * 1000
        print(f"pending={n:>6}  running={len(snap.running):>5}  starts={len(d.starts):>5}  "
              f"reservations={len(d.reservations)}  preemptions={len(getattr(d, 'preemptions', ()))}  "
              f"median={med:7.2f} ms  min={min(times)*1000:7.2f} ms  max={max(times)*1000:7.2f} ms")
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(schedule, snap, config, 0.0)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(12)


if __name__ == "__main__":
    main()
