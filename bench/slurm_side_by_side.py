"""The same slice of a real trace run twice on the Slurm mini-cluster: by Slurm alone, then by the adsched controller.

    python bench/slurm_side_by_side.py [--trace ../shared/traces/KTH-SP2-1996-2.1-cln.swf.gz] [--start 2000]
                                       [--jobs 40] [--speedup 600] [--max-run 20] [--leaf-wait 20]

Slurm alone: plugin mode (sched/backfill + topology/tree, job_submit.lua and hooks). Controller: controller mode
with `adsched slurm controller`, its TOML mini8's plus `leaf_wait = --leaf-wait` in [scheduler] (a gang that
fits now only across more leaves than it needs waits that long for fewer, as Slurm's --switches=1@time; 0: off).
The slice is scaled to mini8 (procs -> nodes x 8 GPUs, clamped to the cluster),
its submit times compressed by --speedup and its run times scaled so the longest lasts --max-run seconds (time
limits are whole minutes in Slurm: every job asks its run time rounded up to the minute). Jobs are submitted by one
script inside the controller container at their compressed times; squeue --json is polled for starts.
Prints, for each: mean and p95 wait, mean bounded slowdown (10 s bound), mean leaves per multi-node gang, makespan,
the mean handoff gap (a waiting job's start minus the last job end before it, whole seconds);
then the controller's cycle cost (median) beside sdiag's main and backfill cycle figures. Goals (not asserted):
the controller spans no more leaves and has no longer mean wait.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from adsched.configfile import load_config
from adsched.core.hostlist import expand
from adsched.sim.traces import SwfMapping, load_trace, to_workload
from adsched.standalone.store import Store
from adsched.testbed.minicluster import MiniCluster

ROOT = Path(__file__).resolve().parent.parent
MINI8 = ROOT / "tests" / "clusters" / "mini8.toml"


def workload(args, config):
    trace = load_trace(args.trace, limit=args.start + args.jobs * 3, mapping=SwfMapping(procs_as="node"))
    jobs = to_workload(trace, config, oversize="clamp").jobs[args.start:args.start + args.jobs]
    t0 = jobs[0].job.submit_time
    longest = max(j.duration for j in jobs) or 1.0
    out = []
    for j in jobs:
        run = max(1.0, j.duration * args.max_run / longest)
        out.append({"key": f"b{j.job.id}", "at": (j.job.submit_time - t0) / args.speedup, "run": round(run, 1),
                    "nodes": j.job.num_nodes, "gpus": 8 if j.job.num_nodes > 1 else j.job.gpus_per_node,
                    "minutes": max(1, math.ceil(run / 60))})
    return out


def submit_script(jobs) -> str:
    lines = ["#!/bin/bash", "t0=$(date +%s.%N)"]
    for j in jobs:
        lines.append(f"python3 -c 'import sys, time; time.sleep(max(0, float(sys.argv[1]) + {j['at']:.2f} - "
                     "time.time()))' $t0")
        # release: its quota is the whole cluster, so no job borrows (a borrower gets no reservation)
        lines.append("sbatch --parsable -p release " + shlex.join([
            f"-N{j['nodes']}", f"--gres=gpu:{j['gpus']}", "-t", str(j["minutes"]), "-J", j["key"], "-o", "/dev/null",
            "--wrap", f"sleep {j['run']}"]) + " >> /jobs/bench-ids.txt")
    return "\n".join(lines) + "\n"


def controller_toml(args, state: str) -> Path:
    """mini8.toml with the controller's own [scheduler] leaf_wait."""
    text = MINI8.read_text()
    assert text.count("[scheduler]\n") == 1
    path = Path(state) / "mini8-controller.toml"
    path.write_text(text.replace("[scheduler]\n", f"[scheduler]\nleaf_wait = {args.leaf_wait:g}\n"))
    return path


def run_one(args, controller: bool, jobs) -> dict:
    state = tempfile.mkdtemp(prefix="adsched-bench-")
    toml = controller_toml(args, state) if controller else MINI8
    mc = MiniCluster(toml, f"adsched-bench-{'ctl' if controller else 'slurm'}", state_dir=state, node_timeout=120,
                     controller_mode=controller, log=lambda m: None)
    mc.up()
    try:
        if controller:
            mc.controller_pid = mc.start_controller("--interval", "0.5")
        (mc.jobs_dir / "bench-submit.sh").write_text(submit_script(jobs))
        mc.exec("setsid nohup bash /jobs/bench-submit.sh > /jobs/bench-submit.log 2>&1 < /dev/null &", timeout=30)
        submitted, seen = {}, {}
        leaf_waited = set()  # jobs seen held with the core's LeafWait (published in their AdminComment)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            r = mc.exec(["squeue", "--all", "--json"], timeout=30)
            for j in json.loads(r.stdout).get("jobs", []):
                if not j["name"].startswith("b"):
                    continue
                submitted[j["name"]] = j["submit_time"]
                if "LeafWait" in str(j.get("admin_comment") or ""):
                    leaf_waited.add(j["name"])
                if j["job_state"] in ("RUNNING", "COMPLETING", "COMPLETED") and j["name"] not in seen:
                    seen[j["name"]] = (j["start_time"], expand(j["nodes"]))
            if len(seen) == len(jobs):
                break
            time.sleep(1)
        ended = {}  # job name -> its end time, for the handoff gaps (squeue keeps ended jobs for MinJobAge)
        for j in json.loads(mc.exec(["squeue", "--all", "--json"], timeout=30).stdout).get("jobs", []):
            if j["name"] in seen and j.get("end_time") and j["job_state"] in ("COMPLETED", "COMPLETING"):
                ended[j["name"]] = j["end_time"]
        status = mc.exec(["adsched", "slurm", "status", "--state", "/jobs/adsched-state", "--json"], timeout=30)
        sdiag = mc.exec(["sdiag"], timeout=30).stdout
        decided = {}  # job name -> when the controller decided its start (its first 'start' event)
        if controller:
            names = {j["job_id"]: j["name"] for j in json.loads(mc.exec(["squeue", "--all", "--json"],
                                                                        timeout=30).stdout).get("jobs", [])}
            for e in Store(mc.store_dir).events():
                if e["kind"] == "start" and names.get(e["job_id"]) and names[e["job_id"]] not in decided:
                    decided[names[e["job_id"]]] = e["time"]
    finally:
        mc.down()
    return {"submitted": submitted, "seen": seen, "status": json.loads(status.stdout) if controller else {},
            "sdiag": sdiag, "config": mc.config, "decided": decided, "leaf_waited": leaf_waited, "ended": ended}


def handoff_gaps(res) -> list[float]:
    """For each job that waited: seconds from the last end before its start to its start (whole seconds, as
    squeue gives them): the time its scheduler took to hand it the nodes a job ending had freed."""
    ends = sorted(res["ended"].values())
    gaps = []
    for key, (start, _) in res["seen"].items():
        before = [e for e in ends if e <= start]
        if start > res["submitted"][key] and before:
            gaps.append(start - before[-1])
    return gaps


def metrics(res, jobs) -> dict:
    run = {j["key"]: j["run"] for j in jobs}
    nodes = {j["key"]: j["nodes"] for j in jobs}
    waits, slow, leaves = [], [], []
    for key, (start, where) in res["seen"].items():
        wait = max(0.0, start - res["submitted"][key])
        waits.append(wait)
        slow.append(max(1.0, (wait + run[key]) / max(run[key], 10.0)))
        if nodes[key] > 1:
            leaves.append(len({res["config"].node(n).leaf for n in where}))
    starts = [s for s, _ in res["seen"].values()]
    # The controller's own latency: its start decision -> Slurm's start time (whole seconds in squeue).
    lag = [res["seen"][k][0] - t for k, t in res["decided"].items() if k in res["seen"]]
    return {"jobs started": f"{len(res['seen'])}/{len(jobs)}",
            "mean wait s": statistics.mean(waits) if waits else float("nan"),
            "p95 wait s": sorted(waits)[int(0.95 * (len(waits) - 1))] if waits else float("nan"),
            "mean bounded slowdown": statistics.mean(slow) if slow else float("nan"),
            "leaves per gang": statistics.mean(leaves) if leaves else float("nan"),
            "gangs": len(leaves),
            "gangs seen in LeafWait": len(res["leaf_waited"]),
            "last start s": (max(starts) - min(res["submitted"].values())) if starts else float("nan"),
            "decision->start s": statistics.median(lag) if lag else "-",
            "end->next start s (mean)": statistics.mean(gaps) if (gaps := handoff_gaps(res)) else "-"}


def sdiag_figures(text: str) -> str:
    out, section = [], ""
    for line in text.splitlines():
        if line.startswith("Main schedule"):
            section = "main"
        elif line.startswith("Backfilling"):
            section = "backfill"
        s = line.strip()
        if section and (s.startswith("Mean cycle") or s.startswith("Max cycle") or s.startswith("Total cycles")):
            out.append(f"{section} {s}")
    return "; ".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trace", default=str(ROOT.parent / "shared" / "traces" / "KTH-SP2-1996-2.1-cln.swf.gz"))
    p.add_argument("--start", type=int, default=2000, help="first job of the slice (index in the trace)")
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--speedup", type=float, default=600.0)
    p.add_argument("--max-run", type=float, default=20.0, help="seconds the slice's longest job runs")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--per-job", action="store_true", help="also print each job's wait and nodes on both sides")
    p.add_argument("--leaf-wait", type=float, default=20.0,
                   help="the controller's [scheduler] leaf_wait in seconds (0: off); Slurm alone is as configured")
    args = p.parse_args()
    config = load_config(MINI8)
    jobs = workload(args, config)
    span = max(j["at"] for j in jobs)
    print(f"slice: {len(jobs)} jobs of {Path(args.trace).name} from #{args.start}, submitted over {span:.0f} s, "
          f"{sum(j['nodes'] > 1 for j in jobs)} multi-node gangs")
    print(f"controller: leaf_wait = {args.leaf_wait:g} s" + (" (off)" if not args.leaf_wait else "")
          + "; Slurm alone: no --switches (topology/tree's best fit, no wait)")
    results = {}
    for controller in (False, True):
        t0 = time.monotonic()
        res = run_one(args, controller, jobs)
        results["adsched controller" if controller else "Slurm alone"] = (metrics(res, jobs), res)
        print(f"  {'controller' if controller else 'Slurm alone'}: {time.monotonic() - t0:.0f} s wall", file=sys.stderr)
    names = list(results)
    print(f"{'':24}" + "".join(f"{n:>20}" for n in names))
    for key in results[names[0]][0]:
        cells = [results[n][0][key] for n in names]
        print(f"{key:24}" + "".join(f"{c:>20.2f}" if isinstance(c, float) else f"{c!s:>20}" for c in cells))
    st = results["adsched controller"][1]["status"]
    print(f"controller cycle cost: median {st.get('cycle_cost_median_ms')} ms over {st.get('cycles_measured')} cycles"
          f" (schedule() {st.get('decide_median_ms')} ms)")
    for n in names:
        print(f"sdiag ({n}): {sdiag_figures(results[n][1]['sdiag'])}")
    if args.per_job:
        print_per_job(jobs, [results[n][1] for n in names])


def print_per_job(jobs, sides) -> None:
    """One line a job in submit order: its size, then on each side its wait and the nodes it ran on."""
    print(f"{'job':>8} {'at s':>6} {'nodes':>5} {'run s':>5} | {'Slurm wait':>10} {'nodes':<14} | "
          f"{'ctl wait':>8} {'nodes':<14}")
    for j in jobs:
        cells = []
        for res in sides:
            if j["key"] in res["seen"]:
                start, where = res["seen"][j["key"]]
                cells.append(f"{start - res['submitted'][j['key']]:>{10 if not cells else 8}} "
                             f"{','.join(n.removeprefix('node') for n in where):<14}")
            else:
                cells.append(f"{'-':>{10 if not cells else 8}} {'':<14}")
        print(f"{j['key']:>8} {j['at']:>6.1f} {j['nodes']:>5} {j['run']:>5} | {cells[0]} | {cells[1]}")


if __name__ == "__main__":
    main()
