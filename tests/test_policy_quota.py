"""Queue quotas with borrowing, and the priority score (age, fair share, size, own priority)."""

from __future__ import annotations

import pytest

from adsched.core.fairshare import accrue, decay, factor
from adsched.core.model import RunningJob
from builders import Case, cluster, job, run_case, run_cycle, snapshot, with_settings

QUOTAS = {
    "a": {"tier": 1, "quota_gpus": 16, "borrow_limit_gpus": 8},
    "b": {"tier": 1, "quota_gpus": 16},  # borrows without limit
    "c": {"tier": 1, "quota_gpus": 8, "borrow_limit_gpus": 0},
    "free": {"tier": 0},  # no quota at all
}
CLUSTER = cluster(leaves=4, nodes_per_leaf=4, gpus=8, queues=QUOTAS, scheduler={"default_queue": "a"})


def running(queue: str, job_id: int, *nodes: str):
    return job(job_id).queue(queue).running_on(*nodes)


FULL_BUT_ONE = [running("free", 900 + i, f"n{i:02d}") for i in range(1, 16)]  # only n16 free

CASES = [
    Case("within quota: starts, not borrowing",
         pending=[job(1).queue("a").nodes(2)],
         want_starts={1: None}),
    Case("beyond quota within the borrowing limit: starts, marked borrowing",
         pending=[job(1).queue("a")],
         running=[running("a", 900, "n01", "n02")],
         want_starts={1: None}, want_borrowing={1}),
    Case("beyond quota + borrowing limit: waits with QuotaExceeded",
         pending=[job(1).queue("a")],
         running=[running("a", 900, "n01", "n02", "n03")],
         want_pending={1: ("QuotaExceeded", {"have": 24.0, "limit": 24, "need": 8})}),
    Case("borrow limit 0: never beyond quota",
         pending=[job(1).queue("c").gpus(1)],
         running=[running("c", 900, "n01")],
         want_pending={1: "QuotaExceeded"}),
    Case("no borrowing limit: borrows as far as idle GPUs go",
         pending=[job(1).queue("b").nodes(8)],
         running=[running("b", 900, "n01", "n02")],
         want_starts={1: None}, want_borrowing={1}),
    Case("idle GPUs go to a queue under its quota before a borrower, whatever the order",
         pending=[job(1).queue("a").priority(5), job(2).queue("b")],
         running=FULL_BUT_ONE[:-2] + [running("a", 990, "n14", "n15")],
         want_starts={2: ["n16"]},
         want_pending={1: "Resources"}),
    Case("a borrower still takes what within-quota jobs leave idle",
         pending=[job(1).queue("a"), job(2).queue("b").gpus(4)],
         running=FULL_BUT_ONE[:-3] + [running("a", 990, "n13", "n14")],
         want_starts={1: None, 2: None}, want_borrowing={1}),
    Case("a preemptor's GPUs count against its queue's quota for every later job of the cycle",
         pending=[job(1).queue("a").nodes(2), job(2).queue("a").gpus(1)],
         running=FULL_BUT_ONE, preempting={1: (901, 902)},
         want_pending={1: "Preempting"}, want_reservations={1: (100.0, ["n01", "n02"])},
         want_starts={2: ["n16"]}, want_borrowing={2}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_quota(case: Case):
    run_case(case, CLUSTER)


def first_started(config, pending, run=(), **snap):
    """Which job gets the one free node (n16)."""
    d = run_cycle(config, snapshot(pending, list(run) or FULL_BUT_ONE, **snap), now=10_000.0)
    return [s.job_id for s in d.starts]


def test_fair_share_puts_the_light_user_first():
    pend = [job(1).queue("free").user("heavy"), job(2).queue("free").user("light")]
    usage = {"heavy": 500.0, "light": 10.0}
    assert first_started(CLUSTER, pend, user_usage=usage) == [1]  # default weights: FIFO
    fair = with_settings(CLUSTER, weight_fairshare=1000.0)
    assert first_started(fair, pend, user_usage=usage) == [2]


def test_queue_fair_share_favours_the_queue_below_its_share():
    pend = [job(1).queue("a"), job(2).queue("b")]
    fair = with_settings(CLUSTER, weight_fairshare=1000.0)
    assert first_started(fair, pend, queue_usage={"a": 900.0, "b": 100.0}) == [2]
    assert first_started(fair, pend, queue_usage={"a": 100.0, "b": 900.0}) == [1]


def test_age_outweighs_own_priority_once_it_has_waited_long():
    pend = [job(1).queue("free").priority(1).submitted(9_900.0), job(2).queue("free").submitted(0.0)]
    assert first_started(CLUSTER, pend) == [1]
    aged = with_settings(CLUSTER, weight_age=10.0, age_max=10_000)
    assert first_started(aged, pend) == [2]


def test_size_weight_favours_the_big_gang():
    free = [r for r in FULL_BUT_ONE if r.placement[0].node not in ("n15", "n14")]
    pend = [job(1).queue("free"), job(2).queue("free").nodes(3)]
    assert first_started(CLUSTER, pend, run=free) == [1]
    assert first_started(with_settings(CLUSTER, weight_size=100.0), pend, run=free) == [2]


def test_tier_still_comes_before_any_score():
    pend = [job(1).queue("free").priority(100), job(2).queue("a").submitted(50.0)]
    assert first_started(with_settings(CLUSTER, weight_age=1e6), pend) == [2]


def test_decay_halves_usage_every_half_life():
    assert decay({"u": 8.0}, 2 * 3600, 3600) == {"u": 2.0}
    assert decay({"u": 8.0}, 0, 3600) == {"u": 8.0}


def test_accrue_adds_gpu_hours_since_the_last_update_then_decays():
    r = RunningJob(job(1).nodes(2).user("u").build(), start_time=0.0, placement=())  # 16 GPUs
    after = accrue({"u": 4.0, "v": 2.0}, [r], since=1800.0, now=3600.0, half_life=1800.0)
    assert after == {"u": 2.0 + 8.0, "v": 1.0}
    by_queue = accrue({}, [r], since=0.0, now=3600.0, half_life=1e9, key=lambda r: r.job.queue)
    assert by_queue == pytest.approx({"explore": 16.0})


def test_fair_share_factor_is_one_half_at_exactly_the_share():
    assert factor({"a": 5.0, "b": 5.0}, "a", share=0.5) == 0.5
    assert factor({}, "a", share=0.5) == 1.0
    assert factor({"a": 10.0}, "b", share=0.5) == 1.0
