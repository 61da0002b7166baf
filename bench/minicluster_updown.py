"""Time the Slurm mini-cluster's up and down (tests/clusters/mini8.toml by default).

    python bench/minicluster_updown.py [--runs 3] [--config tests/clusters/mini8.toml]

cold: no engine running (up starts the private engine; down stops it again), images already present;
warm: the engine keeps running between runs (down(stop_engine=False)), images present.
The one-off cost of building or loading the images is reported separately by the first run.
Prints the median of each over --runs runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from adsched.testbed.minicluster import MiniCluster

ROOT = Path(__file__).resolve().parent.parent


def one(config: Path, name: str, state: str, stop_engine: bool = True) -> tuple[float, float, float]:
    mc = MiniCluster(config, name, state_dir=state, node_timeout=120, log=lambda m: None)
    t0 = time.monotonic()
    mc.up()
    t_up = time.monotonic() - t0
    r = mc.exec(f"srun -N {len(mc.nodes)} hostname", timeout=60)
    if r.rc != 0:
        mc.down()
        sys.exit(f"srun failed: {r.stderr}")
    t0 = time.monotonic()
    mc.down(stop_engine=stop_engine)
    # The thin image is rebuilt (a few s) whenever the project's sources changed since the last up.
    image = mc.timings["image"] - mc.timings["engine"]
    return t_up, time.monotonic() - t0, image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "tests" / "clusters" / "mini8.toml")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    state = tempfile.mkdtemp(prefix="adsched-bench-")

    # First, a run that pays for the images if they are not there (reported, not in the medians).
    t0 = time.monotonic()
    one(args.config, "adsched-bench-prime", state)
    print(f"first up+down (includes any image build/load): {time.monotonic() - t0:.1f} s")

    cold = [one(args.config, "adsched-bench-cold", state) for _ in range(args.runs)]

    warm = [one(args.config, "adsched-bench-warm", state, stop_engine=False) for _ in range(args.runs)]
    MiniCluster(args.config, "adsched-bench-warm", state_dir=state).down()  # stops the engine

    nodes = len(MiniCluster(args.config, "x", state_dir=state).nodes)
    for label, runs in (("cold (engine start + up)", cold), ("warm (engine running)", warm)):
        ups, downs, images = zip(*runs)
        print(f"{label:<26} {nodes} nodes: up {statistics.median(ups):.2f} s, down {statistics.median(downs):.2f} s"
              f"  (median of {len(runs)}; up runs {', '.join(f'{u:.2f}' for u in ups)};"
              f" of which image checks/rebuilds {', '.join(f'{i:.2f}' for i in images)})")


if __name__ == "__main__":
    main()
