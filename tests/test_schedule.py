"""Table-driven tests of the pure core: which jobs start where, and why the rest wait."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from adsched.core.invariants import check
from adsched.core.schedule import schedule
from builders import assert_reason, cluster, job, snapshot

CLUSTER = cluster(leaves=4, nodes_per_leaf=4, gpus=8)
LEAF = {n.name: n.leaf for n in CLUSTER.nodes}


def busy(job_id: int, *nodes: str, gpus=None):
    return job(job_id).running_on(*nodes, gpus=gpus)


@dataclass
class Case:
    name: str
    pending: list
    running: list = field(default_factory=list)
    unavailable: tuple = ()
    want_starts: dict = field(default_factory=dict)  # job id -> node names (None: any nodes)
    want_pending: dict = field(default_factory=dict)  # job id -> code, or (code, {field: value})
    want_leaves: dict = field(default_factory=dict)  # job id -> number of distinct leaves


# Three of the four leaves partly used, leaf3 wholly free.
PARTLY_USED = [busy(900, "n01"), busy(901, "n05", gpus=(0, 1)), busy(902, "n13", "n14")]

CASES = [
    Case(
        "gang with only 3 free nodes waits and names the shortfall",
        pending=[job(1).nodes(4).gpus(8)],
        running=[busy(900 + i, f"n{i:02d}") for i in range(1, 14)],
        want_pending={1: ("Resources", {"need": 4, "have": 3})},
    ),
    Case(
        "gang starts whole when the 4th node is free",
        pending=[job(1).nodes(4).gpus(8)],
        running=[busy(900 + i, f"n{i:02d}") for i in range(1, 13)],
        want_starts={1: ["n13", "n14", "n15", "n16"]},
    ),
    Case(
        "4-node gang lands on the one wholly free leaf",
        pending=[job(1).nodes(4).gpus(8)],
        running=PARTLY_USED,
        want_starts={1: ["n09", "n10", "n11", "n12"]},
    ),
    Case(
        "1-GPU job packs onto a partly used node, not an idle one",
        pending=[job(1).gpus(1)],
        running=PARTLY_USED,
        want_starts={1: ["n05"]},
    ),
    Case(
        "3-node gang takes the tightest leaf that fits (best fit)",
        pending=[job(1).nodes(3).gpus(8)],
        running=[busy(900, "n01"), busy(901, "n13", "n14")],  # leaf1: 3 free, leaf4: 2 free
        want_starts={1: ["n02", "n03", "n04"]},
    ),
    Case(
        "gang larger than any leaf spans the fewest leaves",
        pending=[job(1).nodes(6).gpus(8)],
        want_leaves={1: 2},
    ),
    Case(
        "max leaves 1 waits with a topology reason when no leaf has room",
        pending=[job(1).nodes(4).gpus(8).max_leaves(1)],
        running=[busy(900, "n01"), busy(901, "n05"), busy(902, "n09"), busy(903, "n13")],
        want_pending={1: ("Topology", {"need": 4, "limit": 1, "leaf": "leaf1", "have": 3})},
    ),
    Case(
        "higher tier first even when submitted later",
        pending=[job(1).nodes(2).gpus(8), job(2).nodes(2).gpus(8).queue("release")],
        running=[busy(900 + i, f"n{i:02d}") for i in range(1, 15)],
        want_starts={2: ["n15", "n16"]},
        want_pending={1: "Resources"},
    ),
    Case(
        "a drained node is never used",
        pending=[job(1).nodes(4).gpus(8).max_leaves(1)],
        running=[busy(900, "n05"), busy(901, "n09"), busy(902, "n13")],
        unavailable=("n01",),
        want_pending={1: "Topology"},
    ),
    Case(
        "unknown queue is reported, not crashed on",
        pending=[job(1).queue("nope")],
        want_pending={1: "InvalidQueue"},
    ),
    Case(
        "queue GPU limit per job",
        pending=[job(1).nodes(2).gpus(8).queue("debug")],
        want_pending={1: "QueueLimit"},
    ),
    Case(
        "a gang larger than any max_leaves leaves can hold never runs: said so, not Topology",
        pending=[job(1).nodes(5).gpus(8).max_leaves(1), job(2).nodes(9).gpus(8).max_leaves(2)],
        want_pending={1: ("InvalidRequest", {"need": 5, "limit": 4}), 2: ("InvalidRequest", {"need": 9, "limit": 8})},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_schedule(case: Case):
    snap = snapshot(case.pending, case.running, case.unavailable)
    decisions = schedule(snap, CLUSTER, now=100.0)
    check(snap, decisions, CLUSTER, now=100.0)
    starts = {s.job_id: [a.node for a in s.placement] for s in decisions.starts}
    for job_id, nodes in case.want_starts.items():
        assert job_id in starts, f"job {job_id} did not start: {decisions.pending_reasons.get(job_id)}"
        assert starts[job_id] == nodes
    for job_id, leaves in case.want_leaves.items():
        assert len({LEAF[n] for n in starts[job_id]}) == leaves
    for job_id, want in case.want_pending.items():
        assert job_id not in starts
        assert_reason(decisions.pending_reasons[job_id], want)
    assert set(starts) == set(case.want_starts) | set(case.want_leaves)


def test_gang_starts_in_the_cycle_a_fourth_node_frees():
    gang = job(1).nodes(4).gpus(8)
    running = [busy(900 + i, f"n{i:02d}") for i in range(1, 14)]
    first = schedule(snapshot([gang], running), CLUSTER, now=0)
    assert first.starts == [] and (first.pending_reasons[1].code, first.pending_reasons[1].have) == ("Resources", 3)
    second = schedule(snapshot([gang], running[1:]), CLUSTER, now=1)  # n01 finished
    assert [len(s.placement) for s in second.starts] == [4]


def test_spine_locality_before_leaf_count():
    # Two spines of two leaves each; a 6-node gang should stay under one spine.
    cfg = cluster(leaves=4, nodes_per_leaf=4, spines=2)
    running = [job(900).running_on("n01"), job(901).running_on("n02")]  # leaf1 has 2 free
    d = schedule(snapshot([job(1).nodes(6)], running), cfg, now=0)
    nodes = [a.node for a in d.starts[0].placement]
    spine = {n.name: cfg.parents[n.leaf] for n in cfg.nodes}
    assert len({spine[n] for n in nodes}) == 1


def test_same_snapshot_same_decisions():
    pend = [job(i).nodes(1 + i % 3).gpus(8 if i % 2 else 2) for i in range(1, 30)]
    snap = snapshot(pend, PARTLY_USED)
    assert schedule(snap, CLUSTER, 0) == schedule(snap, CLUSTER, 0)


def test_rank_order_is_grouped_by_leaf():
    d = schedule(snapshot([job(1).nodes(6)], [busy(900, "n01")]), CLUSTER, now=0)
    leaves = [LEAF[a.node] for a in d.starts[0].placement]
    assert leaves == sorted(leaves)


def test_without_backfill_the_first_blocked_job_blocks_the_rest():
    from dataclasses import replace

    fifo = replace(CLUSTER, scheduler=replace(CLUSTER.scheduler, backfill=False))
    running = [busy(900 + i, f"n{i:02d}") for i in range(1, 14)]
    pend = [job(1).nodes(4), job(2).gpus(1)]
    assert [s.job_id for s in schedule(snapshot(pend, running), CLUSTER, 0).starts] == [2]
    d = schedule(snapshot(pend, running), fifo, 0)
    assert d.starts == [] and (d.pending_reasons[2].code, d.pending_reasons[2].job) == ("Priority", 1)


def test_without_topology_awareness_first_fit_by_node_order():
    from dataclasses import replace

    flat = replace(CLUSTER, scheduler=replace(CLUSTER.scheduler, topology_aware=False))
    running = [busy(900, "n01"), busy(901, "n05")]
    d = schedule(snapshot([job(1).nodes(4)], running), flat, 0)
    assert [a.node for a in d.starts[0].placement] == ["n02", "n03", "n04", "n06"]
