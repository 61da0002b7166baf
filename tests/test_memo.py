"""The shell owns what cycles remember (core/memo.py): warm or cold, the decisions are the same,
and schedule() leaves no state anywhere else (not on the config, not in the core's modules)."""

from __future__ import annotations

import random
import sys

import pytest

import adsched.core  # noqa: F401  (the package whose modules are inspected)
from adsched.core.memo import Memo
from adsched.core.schedule import schedule
from adsched.sim import engine
from adsched.sim.traces import SimJob
from builders import cluster, with_settings
from test_properties import QUEUES, random_job


def _workload(cfg, seed: int, n: int) -> list[SimJob]:
    rng = random.Random(seed)
    jobs = []
    for k in range(n):
        j = random_job(rng, k + 1, cfg, 60.0 * k)
        j = j.__class__(**{**{f: getattr(j, f) for f in j.__slots__}, "after_ok": (), "after_any": ()})
        jobs.append(SimJob(j, rng.uniform(0.2, 1.0) * j.time_limit, None))
    return jobs


def _canonical(d) -> str:
    return repr((d.starts, sorted(d.pending_reasons.items()), sorted(d.cancels.items()), d.reservations,
                 d.preemptions))


@pytest.mark.parametrize("seed, depth, want_cycles_at_least", [(1, 1, 40), (2, 3, 40), (3, 0, 40)])
def test_a_warm_memo_decides_as_a_cold_one_every_cycle(seed, depth, want_cycles_at_least):
    """A whole replay through the engine (running placements kept from cycle to cycle, as the
    id-keyed answers of the memo need): each cycle is decided with the replay's warm Memo and
    again cold (no memo) and with a second Memo of its own; all three must agree."""
    cfg = with_settings(cluster(leaves=3, nodes_per_leaf=3, gpus=8, spines=1, queues=QUEUES,
                                scheduler={"default_queue": "open"}), reservation_depth=depth)
    other = Memo()
    real = engine.schedule
    compared = []

    def both(snap, config, now, memo=None):
        assert memo is not None, "the simulator passes its own Memo"
        warm = real(snap, config, now, memo)
        cold = real(snap, config, now)
        again = real(snap, config, now, other)
        compared.append((_canonical(warm), _canonical(cold), _canonical(again)))
        return warm

    engine.schedule = both
    try:
        engine.simulate(_workload(cfg, seed, 120), cfg)
    finally:
        engine.schedule = real
    assert len(compared) >= want_cycles_at_least
    for k, (warm, cold, again) in enumerate(compared):
        assert warm == cold, f"cycle {k}: warm memo differs from cold"
        assert again == cold, f"cycle {k}: a second memo differs from cold"


def _core_state() -> dict[str, int]:
    """Sizes of every mutable container at module level in the core."""
    sizes = {}
    for name, mod in list(sys.modules.items()):
        if name.startswith("adsched.core.") and mod is not None:
            for attr, value in vars(mod).items():
                if isinstance(value, (dict, list, set)):
                    sizes[f"{name}.{attr}"] = len(value)
                elif hasattr(value, "cache_info"):  # functools.lru_cache / cache
                    sizes[f"{name}.{attr}"] = value.cache_info().currsize
    return sizes


def test_schedule_keeps_nothing_outside_the_memo():
    from test_properties import random_snapshot
    cfg = with_settings(cluster(leaves=2, nodes_per_leaf=4, gpus=8, spines=1, queues=QUEUES,
                                scheduler={"default_queue": "open"}), reservation_depth=2)
    snap = random_snapshot(cfg, 5, 10, 12, 10_000.0)
    config_attrs, modules = set(vars(cfg)), _core_state()
    memo = Memo()
    schedule(snap, cfg, 10_000.0)
    schedule(snap, cfg, 10_000.0, memo)
    assert set(vars(cfg)) == config_attrs  # nothing stashed on the config
    assert _core_state() == modules  # no module-level cache grew
    assert memo._layouts  # ... while the memo did remember (this test could see it)
