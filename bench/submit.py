"""Wall time of the commands users type most, as real processes (like timing sbatch/squeue).

    python bench/submit.py [--cluster PATH] [--repeat 11] [--queue-jobs 10000] [--bulk-jobs 10000] [--sbatch]

Prints, each as the median over --repeat runs of the whole process (fork, exec, imports, work):
  - `python -c pass` with the same interpreter: the floor every Python command pays here;
  - one `adsub submit -q debug --gpus 1 -- true` into a store;
  - `adsub queue` with --queue-jobs pending jobs in the store;
  - `adsub submit --file F` of --bulk-jobs job specs (JSON lines) into a fresh store, as jobs/s.
With --sbatch, also Slurm's `sbatch -p debug --gres=gpu:1 --wrap true` (the same job), timed the same way
by Python inside the controller container of a Slurm mini-cluster (adsched.testbed, mini8.toml) brought up
for this run and taken down after it: docker exec's own overhead is not in the figure.
The adsub timed is the script pip installed for this interpreter (sysconfig's scripts directory;
else the one on PATH): a version manager's shim in front of it is not adsub's cost. Figures are printed,
never asserted: this machine is shared, so runs vary; the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "sched" / "examples"
DEMO = EXAMPLES / "demo.toml"
MINI8 = EXAMPLES / "mini8.toml"

# Run by python3 in the mini-cluster's controller container: wall() there, for sbatch (one warm-up run first).
SBATCH_TIMER = """
import json, subprocess, sys, time
cmd, repeat, times = sys.argv[2:], int(sys.argv[1]), []
for i in range(repeat + 1):
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if i:
        times.append(time.perf_counter() - t0)
    if done.returncode != 0:
        sys.exit(" ".join(cmd) + " failed: " + done.stderr.strip())
print(json.dumps(times))
"""
SBATCH = ["sbatch", "-p", "debug", "--gres=gpu:1", "--wrap", "true"]  # as `adsub submit -q debug --gpus 1 -- true`


CPU = []  # (command, CPU seconds) of every run: user + system time of the child


def wall(cmd: list[str], env: dict, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        CPU.append((cmd[1] if len(cmd) > 1 else cmd[0],
                    after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime))
        if done.returncode != 0:
            sys.exit(f"{' '.join(cmd[:3])} failed: {done.stderr.strip()}")
    return times


def console_script(name: str) -> str:
    """The command as pip installed it for this interpreter (sysconfig's scripts directory), else
    the one on PATH. A version manager's shim on PATH (pyenv's is a bash script that runs
    `pyenv exec`, ~60 ms here) is not part of adsub: time the script it would end up running."""
    installed = Path(sysconfig.get_path("scripts")) / name
    found = str(installed) if installed.is_file() else shutil.which(name)
    if not found:
        sys.exit(f"{name} not installed for {sys.executable} nor on PATH (pip install . first)")
    on_path = shutil.which(name)
    if on_path and Path(on_path).resolve() != Path(found).resolve():
        print(f"note: {name} on PATH is {on_path}; timing the installed script {found}", file=sys.stderr)
    return found


def cpu_since(mark: int) -> float:
    return statistics.median(c for _, c in CPU[mark:])


def init_state(adsched: str, cluster: Path, env: dict) -> str:
    state = tempfile.mkdtemp(prefix="adsched-bench-")
    subprocess.run([adsched, "init", "--cluster", str(cluster), "--state", state], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return state


def spec_file(path: str, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"command": ["true", str(i)], "queue": "debug", "gpus": 1 + i % 2,
                                "time": "10:00", "name": f"bench{i}"}) + "\n")


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def sbatch_wall(repeat: int) -> tuple[list[float], str]:
    """sbatch's wall times in a mini-cluster brought up (and always taken down) here; and the load meanwhile."""
    from adsched.testbed.minicluster import MiniCluster

    state = tempfile.mkdtemp(prefix="adsched-bench-mc-")
    cluster = MiniCluster(MINI8, f"adsched-bench-{os.getpid()}", state_dir=state, node_timeout=180)
    try:
        cluster.up()
        print(f"mini-cluster {cluster.name} up in {cluster.timings['up']:.1f} s", file=sys.stderr)
        seen = load()
        r = cluster.exec(["python3", "-c", SBATCH_TIMER, str(repeat), *SBATCH], timeout=60 + 10 * repeat)
        if r.rc != 0:
            sys.exit(f"sbatch timing in the mini-cluster failed (rc {r.rc}): {(r.stderr or r.stdout).strip()}")
        return json.loads(r.stdout), seen
    finally:
        cluster.down()
        left = cluster.leftovers()
        if left:
            print(f"warning: the mini-cluster left {left}", file=sys.stderr)
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cluster", type=Path, default=DEMO)
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--queue-jobs", type=int, default=10_000)
    ap.add_argument("--bulk-jobs", type=int, default=10_000)
    ap.add_argument("--sbatch", action="store_true",
                    help="Also time sbatch in a Slurm mini-cluster brought up for this run (needs the test bed).")
    args = ap.parse_args()
    adsub, adsched = console_script("adsub"), console_script("adsched")
    env = dict(os.environ)
    env.pop("ADSCHED_STATE", None)
    # As after `pip install` (which compiles bytecode): let the children cache theirs, and warm it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    work = tempfile.mkdtemp(prefix="adsched-bench-specs-")
    states = []
    sbatch, sbatch_load = sbatch_wall(args.repeat) if args.sbatch else (None, "")
    try:
        loads = {"floor": load()}
        floor = wall([sys.executable, "-c", "pass"], env, args.repeat)
        cpu = {"floor": cpu_since(0)}

        state = init_state(adsched, args.cluster, env)
        states.append(state)
        one = [adsub, "submit", "--state", state, "-q", "debug", "--gpus", "1", "--", "true"]
        wall(one, env, 1)  # warm the bytecode cache
        mark, loads["submit"] = len(CPU), load()
        submit = wall(one, env, args.repeat)
        cpu["submit"] = cpu_since(mark)

        specs = os.path.join(work, "jobs.jsonl")
        spec_file(specs, args.queue_jobs)
        state = init_state(adsched, args.cluster, env)
        states.append(state)
        wall([adsub, "submit", "--state", state, "--file", specs], env, 1)
        mark = len(CPU)
        queue = wall([adsub, "queue", "--state", state], env, args.repeat)
        cpu["queue"] = cpu_since(mark)

        spec_file(specs, args.bulk_jobs)
        bulk, mark = [], len(CPU)
        for _ in range(max(3, args.repeat // 3)):
            state = init_state(adsched, args.cluster, env)
            states.append(state)
            bulk += wall([adsub, "submit", "--state", state, "--file", specs], env, 1)
        cpu["bulk"] = cpu_since(mark)
    finally:
        for d in states + [work]:
            shutil.rmtree(d, ignore_errors=True)

    med = statistics.median
    print(f"cluster {args.cluster.name}; whole-process wall time, median of {args.repeat} runs (min), "
          "and the median CPU time (user + system)")
    print(f"  ({loads['floor']} at the start, {loads['submit']} before the submits, {load()} at the end)")
    print(f"  python -c pass (the floor)           {med(floor) * 1e3:7.1f} ms (min {min(floor) * 1e3:6.1f})"
          f"  cpu {cpu['floor'] * 1e3:6.1f} ms")
    print(f"  adsub submit, one job                {med(submit) * 1e3:7.1f} ms (min {min(submit) * 1e3:6.1f})"
          f"  cpu {cpu['submit'] * 1e3:6.1f} ms   goal <= 100 ms")
    print(f"  adsub queue, {args.queue_jobs:,} pending           {med(queue) * 1e3:7.1f} ms (min {min(queue) * 1e3:6.1f})"
          f"  cpu {cpu['queue'] * 1e3:6.1f} ms   goal <= 300 ms")
    print(f"  adsub submit --file, {args.bulk_jobs:,} jobs   {med(bulk) * 1e3:7.1f} ms (min {min(bulk) * 1e3:6.1f})"
          f"  cpu {cpu['bulk'] * 1e3:6.1f} ms")
    print(f"    = {args.bulk_jobs / med(bulk):,.0f} jobs/s (best {args.bulk_jobs / min(bulk):,.0f}; "
          f"{args.bulk_jobs / cpu['bulk']:,.0f} per CPU second)   goal >= 5,000 jobs/s")
    if sbatch:
        print(f"  sbatch, one job, in the mini-cluster  {med(sbatch) * 1e3:7.1f} ms (min {min(sbatch) * 1e3:6.1f})"
              f"  ({sbatch_load}; {' '.join(SBATCH)})")

if __name__ == "__main__":
    main()
