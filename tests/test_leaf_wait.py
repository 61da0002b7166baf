"""scheduler.leaf_wait (Slurm's --switches=count@max-time): a gang that fits now only across more
leaves than it needs waits, up to leaf_wait seconds after it became eligible, for fewer."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adsched.core.config import ConfigError, parse_config_text
from adsched.core.explain import explain
from adsched.core.invariants import check
from adsched.core.model import Job
from adsched.core.schedule import eligible_since, schedule
from adsched.sim.engine import simulate
from adsched.sim.traces import SimJob
from builders import Case, cluster, job, run_case, run_cycle, snapshot, with_settings
from test_config import GOOD
from test_properties import clusters, random_snapshot

# n01-n04 under leaf1, n05-n08 under leaf2 (the mini-cluster's shape).
CLUSTER = cluster(leaves=2, nodes_per_leaf=4, gpus=8)
WAIT300 = with_settings(CLUSTER, leaf_wait=300.0)
WAIT300_FIFO = with_settings(WAIT300, backfill=False)


def busy(job_id: int, *nodes: str, ends: int = 3600):
    """Running since t=0 on whole nodes until its time limit `ends`."""
    return job(job_id).limit(ends).running_on(*nodes)


# leaf1 half busy until 200, leaf2 half busy until 3600: a 4-node gang fits now only across both
# leaves (n03, n04, n07, n08), and in leaf1 alone from t=200.
LEAF1_FREES_AT_200 = [busy(900, "n01", "n02", ends=200), busy(901, "n05", "n06")]
ACROSS = ["n03", "n04", "n07", "n08"]
LEAF1 = ["n01", "n02", "n03", "n04"]

CASES = [
    Case(
        "a gang that fits now only across leaves waits, reserved on the leaf about to free",
        pending=[job(1).nodes(4).limit(1000).submitted(50)],
        running=LEAF1_FREES_AT_200,
        config=WAIT300,
        want_pending={1: ("LeafWait", {"need": 1, "have": 2, "time": 350.0})},
        want_reservations={1: (200.0, LEAF1)},
    ),
    Case(
        "leaf_wait = 0 (the default): it starts at once across both leaves, as before",
        pending=[job(1).nodes(4).limit(1000).submitted(50)],
        running=LEAF1_FREES_AT_200,
        config=CLUSTER,
        want_starts={1: ACROSS},
    ),
    Case(
        "once it has waited leaf_wait since it was submitted, it starts across leaves",
        pending=[job(1).nodes(4).limit(1000).submitted(50)],
        running=[busy(900, "n01", "n02", ends=1000), busy(901, "n05", "n06")],
        config=WAIT300,
        now=350.0,
        want_starts={1: ACROSS},
    ),
    Case(
        "the wait counts from when it became eligible: a begin time after its submit time",
        pending=[job(1).nodes(4).limit(1000).submitted(0).held_until(250)],
        running=[busy(900, "n01", "n02", ends=1000), busy(901, "n05", "n06")],
        config=WAIT300,
        now=400.0,
        want_pending={1: ("LeafWait", {"time": 550.0})},
        want_reservations={1: (1000.0, LEAF1)},
    ),
    Case(
        "a gang that fits one leaf now starts there: nothing to wait for",
        pending=[job(1).nodes(4).limit(1000).submitted(50)],
        running=[busy(901, "n05", "n06")],
        config=WAIT300,
        want_starts={1: LEAF1},
    ),
    Case(
        "a gang that needs two leaves anyway starts across two at once",
        pending=[job(1).nodes(6).limit(1000).submitted(50)],
        running=[busy(901, "n05", "n06")],
        config=WAIT300,
        want_starts={1: ["n01", "n02", "n03", "n04", "n07", "n08"]},
    ),
    Case(
        "later jobs backfill around the waiting gang: a short one on its leaf, a long one elsewhere",
        pending=[job(1).nodes(4).limit(1000).submitted(50), job(2).limit(90).submitted(60),
                 job(3).limit(3600).submitted(70), job(4).limit(3600).submitted(80),
                 job(5).limit(3600).submitted(90)],
        running=LEAF1_FREES_AT_200,
        config=WAIT300,
        want_starts={2: ["n03"], 3: ["n07"], 4: ["n08"]},
        want_pending={1: "LeafWait", 5: ("Reservation", {"job": 1, "time": 200.0})},
        want_reservations={1: (200.0, LEAF1)},
    ),
    Case(
        "a waiting gang preempts no one: it fits without (release may preempt explore)",
        pending=[job(1).nodes(4).limit(1000).submitted(50).queue("release")],
        running=[busy(900, "n01", "n02", ends=200), busy(901, "n05", "n06")],
        config=WAIT300,
        want_pending={1: "LeafWait"},
        want_reservations={1: (200.0, LEAF1)},
    ),
    Case(
        "strict FIFO: the waiting gang blocks the jobs behind it",
        pending=[job(1).nodes(4).limit(1000).submitted(50), job(2).limit(90).submitted(60)],
        running=LEAF1_FREES_AT_200,
        config=WAIT300_FIFO,
        want_pending={1: "LeafWait", 2: ("Priority", {"job": 1})},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_leaf_wait(case: Case):
    run_case(case, CLUSTER)


def test_the_waiting_gang_starts_on_the_leaf_once_it_frees():
    """Two cycles: at t=100 it waits (reserved on leaf1 from 200); at t=200 leaf1's job ended."""
    gang = job(1).nodes(4).limit(1000).submitted(50).build()
    first = run_cycle(WAIT300, snapshot([gang], LEAF1_FREES_AT_200), 100.0)
    assert (first.starts, first.pending_reasons[1].code) == ([], "LeafWait")
    second = run_cycle(WAIT300, snapshot([gang], LEAF1_FREES_AT_200[1:]), 200.0)
    assert [(s.job_id, [a.node for a in s.placement]) for s in second.starts] == [(1, LEAF1)]


def test_two_gangs_of_one_request_decide_each_by_its_own_wait():
    """Same request, different waits: the second must not reuse the first one's LeafWait. Without
    reservations (depth 0) nothing else tells the cycle that the outcome is not the request's."""
    greedy = with_settings(WAIT300, reservation_depth=0)
    recent = job(1).nodes(4).limit(1000).submitted(90).priority(1)  # ordered first: higher priority
    old = job(2).nodes(4).limit(1000).submitted(-500)  # waited 600 s > leaf_wait
    d = run_cycle(greedy, snapshot([recent, old], LEAF1_FREES_AT_200), 100.0)
    assert d.pending_reasons[1].code == "LeafWait"
    assert [(s.job_id, [a.node for a in s.placement]) for s in d.starts] == [(2, ACROSS)]


def test_explain_shows_the_leaf_wait_and_where_it_will_start():
    snap = snapshot([job(1).nodes(4).limit(1000).submitted(50)], LEAF1_FREES_AT_200)
    e = explain(snap, WAIT300, 100.0, 1)
    assert (e.constraint, e.estimated_start, e.estimated_nodes) == ("LeafWait", 200.0, tuple(LEAF1))
    assert "waits for 1 leaf until t=350" in e.reason


@pytest.mark.parametrize("value, want_seconds", [("30", 30.0), ("2.5", 2.5), ('"5:00"', 300.0), ("0", 0.0)])
def test_leaf_wait_is_seconds_or_a_duration(value, want_seconds):
    assert parse_config_text(GOOD + f"[scheduler]\nleaf_wait = {value}\n").scheduler.leaf_wait == want_seconds


def test_leaf_wait_defaults_to_zero():
    assert parse_config_text(GOOD).scheduler.leaf_wait == 0.0


@pytest.mark.parametrize("value, want", [
    ("-1", "scheduler.leaf_wait: must be a number of seconds >= 0"),
    ("true", "scheduler.leaf_wait: must be a number of seconds >= 0"),
    ('"soon"', "scheduler.leaf_wait: not a duration"),
])
def test_bad_leaf_wait_is_one_clear_error(value, want):
    with pytest.raises(ConfigError) as e:
        parse_config_text(GOOD + f"[scheduler]\nleaf_wait = {value}\n")
    assert [err for err in e.value.errors if "leaf_wait" in err] and any(want in err for err in e.value.errors), \
        e.value.errors


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=clusters(), seed=st.integers(0, 10**6), n_running=st.integers(0, 25), n_pending=st.integers(1, 30),
       wait=st.sampled_from([30.0, 100.0, 1000.0]))
def test_never_waits_past_leaf_wait(cfg, seed, n_running, n_pending, wait):
    """Every cycle keeps the invariants; a LeafWait job became eligible less than leaf_wait ago;
    and once every job has waited leaf_wait, the decisions are those of leaf_wait = 0."""
    now = 10_000.0
    snap = random_snapshot(cfg, seed, n_running, n_pending, now)
    waiting = with_settings(cfg, leaf_wait=wait)
    d = schedule(snap, waiting, now)
    check(snap, d, waiting, now=now)
    jobs = {j.id: j for j in snap.pending}
    for job_id, reason in d.pending_reasons.items():
        if reason.code == "LeafWait":
            assert now - eligible_since(jobs[job_id]) < wait
            assert reason.time == eligible_since(jobs[job_id]) + wait
    waited = replace(snap, pending=tuple(replace(j, submit_time=min(j.submit_time, now - wait))
                                         for j in snap.pending))
    assert schedule(waited, waiting, now) == schedule(waited, cfg, now)


def test_the_random_workloads_do_leaf_wait():
    """The property above means something only if LeafWait happens: random busy nodes on 3
    leaves of 4, a 4-node gang submitted just now; it must wait in some of them."""
    cfg = with_settings(cluster(leaves=3, nodes_per_leaf=4, gpus=8), leaf_wait=1000.0)
    seen = 0
    for seed in range(40):
        rng = random.Random(seed)
        nodes = [f"n{i:02d}" for i in range(1, 13)]
        rng.shuffle(nodes)
        taken = [busy(800 + k, node, ends=rng.choice([300, 3000])) for k, node in enumerate(nodes[:rng.randint(2, 7)])]
        d = run_cycle(cfg, snapshot([job(1).nodes(4).submitted(99)], taken), 100.0)
        seen += 1 in d.pending_reasons and d.pending_reasons[1].code == "LeafWait"
    assert seen >= 5


@pytest.mark.parametrize("leaf_wait, want_start, want_leaves", [
    (0.0, 10.0, 2),  # off: at once, across both leaves
    (50.0, 60.0, 2),  # its wait ends at 60 with no job ending or arriving then: the replay wakes for it
    (2000.0, 1000.0, 1),  # leaf1 frees at 1000, inside the wait: it starts there
])
def test_the_replay_decides_a_leaf_wait_when_it_ends(leaf_wait, want_start, want_leaves):
    def sim_job(job_id, submit, nodes, duration):
        return SimJob(Job(id=job_id, queue="explore", num_nodes=nodes, gpus_per_node=8, time_limit=duration,
                          submit_time=submit), float(duration), None)

    cfg = with_settings(CLUSTER, leaf_wait=leaf_wait)
    # 3 nodes busy in each leaf until 1000 (leaf1 first), then a 2-node gang: n04 + n08 free now
    jobs = [sim_job(1, 0.0, 3, 1000), sim_job(2, 0.0, 3, 1200), sim_job(3, 10.0, 2, 100)]
    res = simulate(jobs, cfg, check_invariants=True)
    assert (res.start[2], res.leaves[2]) == (want_start, want_leaves)
