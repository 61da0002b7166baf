"""Capacity's shortcuts against the plain mutations they stand for: WhatIf and fitting_counts
must count exactly what give/release would leave, apply must place on that same state, and
discarding a trial must restore the Capacity exactly (counters included)."""

from __future__ import annotations

import random

import pytest

from adsched.core.capacity import Capacity, WhatIf, _counters
from adsched.core.place import NoFit, find_placement
from adsched.core.model import NodeAlloc
from builders import cluster, job, snapshot
from test_properties import MIG, QUEUES, random_snapshot


def state(cap: Capacity) -> tuple:
    return (list(cap.busy), list(cap.held), list(cap.free_mask), list(cap.free), list(cap.at_least),
            [list(r) for r in cap.leaf_at_least], {i: dict(o) for i, o in cap.holds.items() if o})


def assert_counters_consistent(cap: Capacity) -> None:
    assert (cap.at_least, cap.leaf_at_least) == _counters(cap.free, cap.up, cap.leaf_of, len(cap.leaf_names),
                                                          cap.max_gpus)


def holding_capacity(seed: int):
    """A busy Capacity with a few reservations holding GPUs (some nodes held twice)."""
    rng = random.Random(seed)
    cfg = cluster(leaves=rng.randint(1, 4), nodes_per_leaf=rng.randint(1, 5), gpus=rng.choice([4, 8]), spines=1,
                  queues=QUEUES, scheduler={"default_queue": "open"}, mig=MIG if rng.random() < 0.3 else None)
    snap = random_snapshot(cfg, seed, rng.randint(0, 20), 0, 10_000.0)
    cap = Capacity(cfg, snap)
    owners = []
    for owner in range(1, rng.randint(1, 5)):
        picks = find_placement(cap, rng.randint(1, 3), rng.choice([1, 2, 4]))
        if isinstance(picks, NoFit):
            continue
        cap.hold(owner, cap.peek(picks))  # other GPUs of a held node may be held too: two owners
        owners.append(owner)
    return rng, cfg, snap, cap, owners


@pytest.mark.parametrize("seed", range(120))
def test_what_if_counts_and_places_as_the_mutations_would(seed):
    rng, cfg, snap, cap, owners = holding_capacity(seed)
    assert_counters_consistent(cap)
    before = state(cap)
    gpus = rng.choice([1, 2, 4, 8, 9])
    lifted = [o for o in owners if rng.random() < 0.6]
    ended = [r.placement for r in snap.running if rng.random() < 0.4 and r.job.mig is None]

    what_if = WhatIf(cap, gpus)
    what_if.lift(lifted)
    for placement in ended:
        what_if.give(placement)
    assert state(cap) == before  # counting changed nothing

    with cap.trial():
        for o in lifted:
            cap.release(o)
        for p in ended:
            cap.give(p)
        expected = (cap.at_least[gpus] if gpus <= cap.max_gpus else 0,
                    [row[gpus] if gpus <= cap.max_gpus else 0 for row in cap.leaf_at_least])
        mutated = state(cap)[:6]
        placed = find_placement(cap, 2, min(gpus, cap.max_gpus or 1))
    assert state(cap) == before
    assert (what_if.have, what_if.counts) == expected

    with cap.trial():
        what_if.apply()
        assert state(cap)[:6] == mutated
        assert_counters_consistent(cap)
        assert find_placement(cap, 2, min(gpus, cap.max_gpus or 1)) == placed
    assert state(cap) == before
    if not ended:
        assert cap.fitting_counts(gpus, lifted) == expected


@pytest.mark.parametrize("seed", range(60))
def test_take_give_hold_release_discard_exactly(seed):
    rng, cfg, snap, cap, owners = holding_capacity(seed)
    before = state(cap)
    with cap.trial():
        for k in range(6):
            op = rng.random()
            if op < 0.3:
                picks = find_placement(cap, rng.randint(1, 4), rng.choice([1, 2, 4]))
                if not isinstance(picks, NoFit):
                    placement = cap.peek(picks)
                    assert cap.take(picks) == placement
            elif op < 0.5 and snap.running:
                cap.give(rng.choice(snap.running).placement)
            elif op < 0.75 and owners:
                cap.release(rng.choice(owners))
            else:
                picks = find_placement(cap, 1, 1)
                if not isinstance(picks, NoFit):
                    cap.hold(100 + k, cap.peek(picks))
            assert_counters_consistent(cap)
    assert state(cap) == before


@pytest.mark.parametrize("seed", range(120))
def test_find_placement_on_a_what_if_places_as_on_the_applied_capacity(seed):
    rng, cfg, snap, cap, owners = holding_capacity(seed)
    before = state(cap)
    gpus = rng.choice([1, 2, 4, 8])
    what_if = WhatIf(cap, gpus)
    what_if.lift([o for o in owners if rng.random() < 0.6])
    for r in snap.running:
        if rng.random() < 0.4 and r.job.mig is None:
            what_if.give(r.placement)
    for num_nodes, max_leaves, topology_aware in [(1, None, True), (2, None, True), (3, 1, True), (4, 2, True),
                                                  (2, None, False), (3, 1, False)]:
        with cap.trial():
            what_if.apply()
            picks = find_placement(cap, num_nodes, gpus, max_leaves, topology_aware)
            expected = (picks, None if isinstance(picks, NoFit) else cap.peek(picks))
        found = find_placement(cap, num_nodes, gpus, max_leaves, topology_aware, what_if=what_if)
        assert (found, None if isinstance(found, NoFit) else what_if.peek(found)) == expected
        verdict = find_placement(cap, num_nodes, gpus, max_leaves, topology_aware, what_if=what_if, pick=False)
        assert verdict == (picks if isinstance(picks, NoFit) else True)
        assert state(cap) == before



# n01 and n02 run A and B on GPUs 0-1; reservation 7 holds n02's GPUs 2-3. A 2-node x 2-GPU
# gang is placed on the what-if (n01 GPUs 2-3, n02 GPUs 4-5), then it changes before the peek.
PEEK_AFTER_CHANGES = [  # (name, jobs ending, holds lifted, want GPUs per node)
    ("nothing changes", [], [], {"n01": (2, 3), "n02": (4, 5)}),
    ("A ends", ["A"], [], {"n01": (0, 1), "n02": (4, 5)}),
    ("the hold is lifted", [], [7], {"n01": (2, 3), "n02": (2, 3)}),
    ("both end, the hold lifted", ["A", "B"], [7], {"n01": (0, 1), "n02": (0, 1)}),
]


@pytest.mark.parametrize("name, ending, lifted, want_gpus", PEEK_AFTER_CHANGES, ids=[c[0] for c in PEEK_AFTER_CHANGES])
def test_a_what_if_peeks_the_gpus_free_when_it_peeks(name, ending, lifted, want_gpus):
    """WhatIf.peek reuses the free masks find_placement read, only until the what-if changes."""
    cfg = cluster(leaves=1, nodes_per_leaf=2, gpus=8)
    running = {"A": job(1).gpus(2).running_on("n01"), "B": job(2).gpus(2).running_on("n02")}
    cap = Capacity(cfg, snapshot(running=running.values()))
    cap.hold(7, (NodeAlloc("n02", (2, 3)),))
    what_if = WhatIf(cap, 2)
    picks = find_placement(cap, 2, 2, what_if=what_if)
    for name in ending:
        what_if.give(running[name].placement)
    if lifted:
        what_if.lift(lifted)
    assert {a.node: a.gpus for a in what_if.peek(picks)} == want_gpus
