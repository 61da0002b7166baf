"""Wall time of a full KTH-SP2 replay (27,992 jobs) through the core, and simulated jobs per second.

    python bench/sim_replay.py [--policy adsched] [--repeat 3] [--limit N] [--check] [--profile]
                               [--jobs N] [--cluster TOML]

With --jobs N the trace is repeated back to back until N jobs (copy k submits k trace spans
later, ids shifted past the previous copy's): the size check of issue 11 is
`--jobs 240000 --cluster bench/kth144.toml --repeat 1` (a 144-node x 8 GPU machine).

The trace is read from $ADSCHED_TRACES or <repo>/../shared/traces/. Loading and fitting the trace
are timed apart from the replay. The replay time is split into the core (`schedule()`), the
invariants checker (with --check) and the simulator itself. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time
from pathlib import Path

from dataclasses import replace

from adsched.configfile import load_config
from adsched.sim import metrics
from adsched.sim.engine import POLICIES, simulate
from adsched.sim.traces import SimJob, Workload, load_trace, to_workload

ROOT = Path(__file__).resolve().parent.parent
TRACES = Path(os.environ.get("ADSCHED_TRACES", ROOT.parent / "shared" / "traces"))
KTH = TRACES / "KTH-SP2-1996-2.1-cln.swf.gz"
CLUSTER = ROOT / "sched" / "examples" / "kth100.toml"


def repeat_workload(workload: Workload, n_jobs: int) -> Workload:
    """The first `n_jobs` of the workload repeated back to back: copy k arrives k spans later
    (a span: first to last submit plus the mean gap between submits), its ids (and the
    dependencies among them) shifted by k times (the largest id + 1)."""
    jobs = workload.jobs
    if not jobs:
        return workload
    first, last = jobs[0].job.submit_time, jobs[-1].job.submit_time
    span = (last - first) * len(jobs) / max(1, len(jobs) - 1) or 1.0
    stride = max(s.job.id for s in jobs) + 1
    out: list[SimJob] = []
    copy = 0
    while len(out) < n_jobs:
        dt, di = copy * span, copy * stride
        for s in jobs[:n_jobs - len(out)]:
            j = s.job
            out.append(replace(s, job=replace(j, id=j.id + di, submit_time=j.submit_time + dt,
                                              after_ok=tuple(d + di for d in j.after_ok),
                                              after_any=tuple(d + di for d in j.after_any))))
        copy += 1
    return Workload(jobs=out, dropped=workload.dropped, clamped=workload.clamped, trace=workload.trace)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, default=KTH)
    ap.add_argument("--cluster", type=Path, default=CLUSTER)
    ap.add_argument("--policy", default="adsched", help=f"comma-separated: {', '.join(POLICIES)}")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="first N jobs only")
    ap.add_argument("--check", action="store_true", help="run invariants.check at every cycle")
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile of one replay")
    ap.add_argument("--jobs", type=int, default=None, help="repeat the trace back to back up to N jobs")
    args = ap.parse_args()

    t0 = time.perf_counter()
    trace = load_trace(args.trace, limit=args.limit)
    t1 = time.perf_counter()
    config = load_config(args.cluster)
    workload = to_workload(trace, config)
    once = len(workload.jobs)
    if args.jobs is not None:
        workload = repeat_workload(workload, args.jobs)
    t2 = time.perf_counter()
    n = len(workload.jobs)
    copies = f" ({n / once:.2f} copies of its {once:,})" if args.jobs is not None and once else ""
    print(f"trace {args.trace.name}: {n:,} jobs{copies}; load {t1 - t0:.2f} s, fit to {config.name} "
          f"({len(config.nodes)} nodes x {config.max_gpus_per_node} GPUs) {t2 - t1:.2f} s")
    for policy in args.policy.split(","):
        walls, core, checks, last = [], [], [], None
        for _ in range(args.repeat):
            res = simulate(workload, config, policy, check_invariants=args.check)
            walls.append(res.wall_seconds)
            core.append(res.schedule_seconds)
            checks.append(res.check_seconds)
            last = res
        wall = statistics.median(walls)
        c, k = statistics.median(core), statistics.median(checks)
        m = metrics.summarize(last)
        print(f"{policy:<14} replay median {wall:7.2f} s (min {min(walls):.2f}, max {max(walls):.2f}, "
              f"{args.repeat} runs)  {n / wall:8.0f} jobs/s  {last.cycles:,} cycles  "
              f"{wall / last.cycles * 1e6:6.0f} us/cycle")
        print(f"{'':<14} core schedule() {c:.2f} s ({c / wall:.0%}), invariants {k:.2f} s ({k / wall:.0%}), "
              f"simulator {wall - c - k:.2f} s ({(wall - c - k) / wall:.0%});  wait mean "
              f"{metrics.human_seconds(m['wait_mean'])}, util {m['utilization']:.1%}")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            simulate(workload, config, policy, check_invariants=args.check)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
