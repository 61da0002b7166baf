"""The shell owns what cycles remember (core/memo.py): warm or cold, the decisions are the same,
and schedule() leaves no state anywhere else (not on the config, not in the core's modules)."""

from __future__ import annotations

import random
import sys
from dataclasses import replace

import pytest

import adsched.core  # noqa: F401  (the package whose modules are inspected)
from adsched.core.memo import Memo
from adsched.core.schedule import schedule
from adsched.sim import engine
from adsched.sim.traces import SimJob
from builders import cluster, job, snapshot, with_settings
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


def _running(job_id: int, *nodes: str, gpus: int = 8):
    return job(job_id).gpus(gpus).running_on(*nodes, start=0.0)


# One Memo through cycles whose running sets differ by a job or two, as a daemon's do: ended,
# started, back again (the same object, as the shells keep it) or restarted elsewhere (the same
# id on other GPUs), and a node going down and coming back. The 4-node gang is blocked every
# time; its reason counts the nodes free in this snapshot, so an answer remembered from another
# snapshot (busy GPUs, free counts, a "not enough nodes" reason) shows.
A, B, C = _running(11, "n01"), _running(12, "n02"), _running(13, "n01", "n02", "n03")
A_ELSEWHERE, HALF = _running(11, "n04"), _running(14, "n03", gpus=4)
A_TOO = _running(15, "n01")  # on A's GPUs: a snapshot no shell should make, decided all the same
MEMO_SEQUENCE = [  # (running, down nodes, want free nodes for the gang)
    ((A,), (), 3), ((A, B), (), 2), ((B,), (), 3), ((A, B), (), 2), ((C,), (), 1), ((A,), (), 3),
    ((A_ELSEWHERE,), (), 3), ((A_ELSEWHERE, B, HALF), (), 1), ((B, HALF), ("n04",), 1), ((B, HALF), (), 2),
    ((A, B), (), 2), ((A,), ("n02",), 2), ((A,), (), 3), ((A, A_TOO), (), 3), ((A_TOO,), (), 3), ((B,), (), 3),
]


def test_a_warm_memo_counts_each_snapshots_own_free_nodes():
    cfg = cluster(leaves=2, nodes_per_leaf=2, gpus=8, spines=1)
    gang, small = job(1).nodes(4).build(), job(2).gpus(4).limit(60).build()
    memo = Memo()
    for k, (running, down, want_have) in enumerate(MEMO_SEQUENCE):
        snap = snapshot(pending=[gang, small], running=running, unavailable=down)
        warm, cold = schedule(snap, cfg, 100.0 + k, memo), schedule(snap, cfg, 100.0 + k)
        assert _canonical(warm) == _canonical(cold), f"cycle {k}"
        assert warm.pending_reasons[1].have == want_have, f"cycle {k}: {warm.pending_reasons[1]}"


@pytest.mark.parametrize("new_objects_every", [1, 2, 3, 0])
def test_a_warm_memo_follows_shells_that_make_new_placements(new_objects_every):
    """Twelve running jobs, one ending and one starting a cycle; every k-th cycle the shell
    makes every placement anew (as the store does when it reads them back), 0: never."""
    cfg = cluster(leaves=4, nodes_per_leaf=4, gpus=8, spines=2)
    gang = job(1).nodes(6).build()
    memo = Memo()
    running = {k: _running(100 + k, f"n{k + 1:02d}") for k in range(12)}
    for k in range(12):
        node = (k + 12) % 16  # the next job starts on a free node
        del running[k]
        running[k + 12] = _running(112 + k, f"n{node + 1:02d}")
        if new_objects_every and k % new_objects_every == 0:
            running = {key: replace(r, placement=tuple(replace(a) for a in r.placement)) for key, r in running.items()}
        snap = snapshot(pending=[gang], running=running.values())
        warm, cold = schedule(snap, cfg, 100.0 + k, memo), schedule(snap, cfg, 100.0 + k)
        assert _canonical(warm) == _canonical(cold), f"cycle {k}"
        assert warm.pending_reasons[1].have == 4, f"cycle {k}: {warm.pending_reasons[1]}"
