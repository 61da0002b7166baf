"""The embedded default in one call: a demo cluster, a mixed workload, the daemon until all end."""

from __future__ import annotations

import shutil
import sys
import time
from importlib import resources
from pathlib import Path

from .daemon import Daemon
from adsched.standalone.executors.local import LocalExecutor
from .store import JobRecord, JobRequest, Store

# More than the 16 nodes hold at once: an 8-node gang waits for two leaves to free.
# A 4-node training gang, a 2-node gang with max-leaves 1, whole-node and sub-node dev jobs.
WORKLOAD = [
    dict(name="train-gpt", nodes=4, queue="train", seconds=3),
    dict(name="finetune", nodes=2, queue="explore", max_leaves=1, seconds=2),
    dict(name="eval", nodes=1, queue="explore", seconds=1),
    *[dict(name=f"dev-{i}", gpus=g, queue="debug", seconds=1) for i, g in enumerate([1, 1, 2, 4, 1, 2])],
    dict(name="release-check", nodes=2, queue="release", seconds=2),
    dict(name="pretrain", nodes=8, queue="train", max_leaves=2, seconds=2),  # waits: the cluster is full
]


def example_config(name: str) -> str:
    return resources.files("adsched.examples").joinpath(f"{name}.toml").read_text()


def rank_script(seconds: float) -> list[str]:
    code = (
        "import os, time; e = os.environ; "
        "print(f\"job {e['ADSCHED_JOB_ID']} rank {e['NODE_RANK']}/{e['NNODES']} on {e['ADSCHED_NODENAME']} "
        f"gpus {{e['CUDA_VISIBLE_DEVICES']}}\"); time.sleep({seconds})"
    )
    return [sys.executable, "-c", code]


def run_demo(state_dir: str | Path, fresh: bool = True, on_cycle=None) -> list[JobRecord]:
    state_dir = Path(state_dir)
    if fresh and (state_dir / Store.DB_NAME).exists():
        shutil.rmtree(state_dir)
    store = Store.init(state_dir, example_config("demo"))
    now = time.time()
    for spec in WORKLOAD:
        spec = dict(spec)
        seconds = spec.pop("seconds")
        store.submit(JobRequest(command=rank_script(seconds), user="demo", workdir=str(state_dir), **spec), now)
    Daemon(store, LocalExecutor(state_dir), kill_wait=2.0).run(until_idle=True, max_seconds=120, on_cycle=on_cycle)
    return store.jobs()
