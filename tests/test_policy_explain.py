"""explain(): position, the blocking constraint, and the earliest estimated start with where."""

from __future__ import annotations

import pytest

from adsched.core.explain import explain
from adsched.core.schedule import schedule
from builders import cluster, job, snapshot, with_settings

CLUSTER = cluster(leaves=4, nodes_per_leaf=4, gpus=8)


def busy(job_id: int, *nodes: str, ends: int = 3600):
    return job(job_id).limit(ends).running_on(*nodes)


ALMOST_FULL = [busy(900, "n01", ends=1000)] + [busy(900 + i, f"n{i:02d}") for i in range(2, 14)]
# One node busy in each leaf: every leaf has 3 free nodes; leaf3's busy node ends first.
ONE_PER_LEAF = [busy(901, "n01"), busy(902, "n05"), busy(903, "n09", ends=500), busy(904, "n13")]


def test_a_job_that_starts_now_says_so_with_its_place():
    e = explain(snapshot([job(1), job(2)]), CLUSTER, 100.0, job_id=2)
    assert (e.state, e.position, e.queue_length, e.constraint) == ("starts", 2, 2, None)
    assert e.estimated_start == 100.0 and len(e.estimated_nodes) == 1


def test_topology_names_the_best_leaf_and_when_the_gang_fits_in_one():
    e = explain(snapshot([job(1).nodes(4).max_leaves(1)], ONE_PER_LEAF), CLUSTER, 100.0, job_id=1)
    assert e.constraint == "Topology"
    assert "needs 4 nodes within 1 leaf; best leaf leaf1 has 3 free" in e.reason
    assert (e.estimated_start, e.estimated_nodes) == (500.0, ("n09", "n10", "n11", "n12"))


def test_reservation_held_for_another_job_is_named_and_the_estimate_comes_after_it():
    pend = [job(1).nodes(4), job(2).limit(3600)]
    e = explain(snapshot(pend, ALMOST_FULL), CLUSTER, 100.0, job_id=2)
    assert (e.constraint, e.waiting_for) == ("Reservation", 1)
    assert e.estimated_start is not None and e.estimated_start >= 1000.0
    assert e.position == 2


def test_beyond_the_reservation_depth_explain_still_estimates():
    pend = [job(1).nodes(4), job(2).nodes(4)]
    snap = snapshot(pend, ALMOST_FULL)
    assert [r.job_id for r in schedule(snap, CLUSTER, 100.0).reservations] == [1]  # depth 1
    e = explain(snap, CLUSTER, 100.0, job_id=2)
    assert e.constraint == "Resources"
    # at 3600 every running job has ended; job 1's nodes stay held, so job 2 goes elsewhere
    assert e.estimated_start == 3600.0
    assert len(e.estimated_nodes) == 4 and not {"n01", "n14", "n15", "n16"} & set(e.estimated_nodes)


def test_dependency_gives_no_time_estimate():
    e = explain(snapshot([job(2).after_ok(12)]), CLUSTER, 100.0, job_id=2)
    assert (e.state, e.constraint, e.waiting_for, e.estimated_start) == ("pending", "Dependency", 12, None)


def test_failed_dependency_explains_the_cancel():
    e = explain(snapshot([job(2).after_ok(12)], finished={12: "FAILED"}), CLUSTER, 100.0, job_id=2)
    assert (e.state, e.constraint, e.reason) == ("cancelled", "DependencyNeverSatisfied",
                                                 "DependencyNeverSatisfied: job 12 FAILED")


def test_quota_is_the_constraint_when_the_queue_is_full():
    cfg = cluster(queues={"q": {"quota_gpus": 8, "borrow_limit_gpus": 0}}, scheduler={"default_queue": "q"})
    e = explain(snapshot([job(1).queue("q")], [job(900).queue("q").running_on("n01")]), cfg, 100.0, job_id=1)
    assert e.constraint == "QuotaExceeded" and e.estimated_start is None


def test_test_only_estimates_a_job_not_yet_submitted():
    gang = job(50).nodes(4).build()
    e = explain(snapshot([], ALMOST_FULL), CLUSTER, 100.0, job=gang)
    assert (e.state, e.estimated_start, e.estimated_nodes) == ("pending", 1000.0, ("n01", "n14", "n15", "n16"))
    now = explain(snapshot([], ALMOST_FULL), CLUSTER, 100.0, job=job(51).nodes(3).build())
    assert (now.state, now.estimated_start) == ("starts", 100.0)


def test_strict_fifo_explains_the_head_of_the_line_too():
    fifo = with_settings(CLUSTER, backfill=False)
    e = explain(snapshot([job(1).nodes(4)], ALMOST_FULL), fifo, 100.0, job_id=1)
    assert e.estimated_start == 1000.0
    behind = explain(snapshot([job(1).nodes(4), job(2)], ALMOST_FULL), fifo, 100.0, job_id=2)
    assert (behind.constraint, behind.waiting_for) == ("Priority", 1)


def test_unknown_job():
    with pytest.raises(KeyError):
        explain(snapshot([job(1)]), CLUSTER, 0.0, job_id=7)
