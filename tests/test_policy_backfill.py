"""Backfill with reservations: the top blocked jobs get a place and a time no later job delays."""

from __future__ import annotations

import pytest

from adsched.core.model import RunningJob
from builders import Case, cluster, job, run_case, run_cycle, snapshot, with_settings

CLUSTER = cluster(leaves=4, nodes_per_leaf=4, gpus=8)  # n01-n16, leaf1..leaf4 of 4 nodes
DEPTH2 = with_settings(CLUSTER, reservation_depth=2)
GREEDY = with_settings(CLUSTER, reservation_depth=0)
FIFO = with_settings(CLUSTER, backfill=False)


def busy(job_id: int, *nodes: str, ends: int = 3600):
    """Running since t=0 on whole nodes until its time limit `ends`."""
    return job(job_id).limit(ends).running_on(*nodes)


# n01 ends at 1000; n02-n13 at 3600; n14-n16 free.
ALMOST_FULL = [busy(900, "n01", ends=1000)] + [busy(900 + i, f"n{i:02d}") for i in range(2, 14)]
# leaf1-leaf3 busy until 3600 (n05 until 1000), leaf4 free.
LEAF4_FREE = [busy(900 + i, f"n{i:02d}", ends=1000 if i == 5 else 3600) for i in range(1, 13)]

CASES = [
    Case(
        "blocked gang is reserved at the first time enough nodes end, on the nodes free then",
        pending=[job(1).nodes(4)],
        running=ALMOST_FULL,
        want_pending={1: ("Resources", {"need": 4, "have": 3})},
        want_reservations={1: (1000.0, ["n01", "n14", "n15", "n16"])},
    ),
    Case(
        "a short job backfills onto reserved nodes when it ends before the reservation",
        pending=[job(1).nodes(4), job(2).limit(800)],  # ends at 900 <= 1000
        running=ALMOST_FULL,
        want_starts={2: None},
        want_reservations={1: (1000.0, ["n01", "n14", "n15", "n16"])},
    ),
    Case(
        "a long job may not take reserved nodes: it names the reservation it would delay",
        pending=[job(1).nodes(4), job(2).limit(3600)],
        running=ALMOST_FULL,
        want_pending={2: ("Reservation", {"job": 1, "time": 1000.0})},
        want_reservations={1: (1000.0, ["n01", "n14", "n15", "n16"])},
    ),
    Case(
        "a long job may start on nodes the reservation does not use",
        pending=[job(1).nodes(6), job(2).limit(7200)],
        running=LEAF4_FREE,
        want_starts={2: ["n13"]},
        want_reservations={1: (3600.0, ["n01", "n02", "n03", "n04", "n05", "n06"])},
    ),
    Case(
        "depth 1: only the first blocked job is reserved; the second just waits",
        pending=[job(1).nodes(4), job(2).nodes(4)],
        running=ALMOST_FULL,
        want_pending={2: "Resources"},
        want_reservations={1: (1000.0, ["n01", "n14", "n15", "n16"])},
    ),
    Case(
        "depth 2: the second gang is reserved after the first one's time limit",
        pending=[job(1).nodes(4).limit(600), job(2).nodes(4)],
        running=ALMOST_FULL,
        config=DEPTH2,
        want_reservations={1: (1000.0, ["n01", "n14", "n15", "n16"]),
                           2: (1600.0, ["n01", "n14", "n15", "n16"])},
    ),
    Case(
        "depth 0: plain greedy backfill, no reservation, the long job starts",
        pending=[job(1).nodes(4), job(2).limit(3600)],
        running=ALMOST_FULL,
        config=GREEDY,
        want_starts={2: None},
    ),
    Case(
        "backfill off: strict FIFO, no reservation, the next job waits behind",
        pending=[job(1).nodes(4), job(2).limit(60)],
        running=ALMOST_FULL,
        config=FIFO,
        want_pending={2: ("Priority", {"job": 1})},
    ),
    Case(
        "a job already past its time limit counts as ending now",
        pending=[job(1).nodes(4)],
        running=[busy(900, "n01", ends=50)] + [busy(900 + i, f"n{i:02d}") for i in range(2, 14)],
        want_reservations={1: (100.0, ["n01", "n14", "n15", "n16"])},
    ),
    Case(
        # Job 2's own blocking is explained before its reservation exists; job 3's must see it:
        # lifting job 1's hold frees n04 only, lifting job 2's too frees n03 as well.
        "the reservation named is one made after an earlier job's reason",
        config=with_settings(cluster(leaves=2, nodes_per_leaf=4, gpus=8), reservation_depth=2),
        pending=[job(1).nodes(4).limit(1000), job(2).nodes(3).limit(5000), job(3).nodes(2).limit(5000)],
        running=[job(100).limit(1000).running_on("n01", "n02", start=100.0),
                 job(101).limit(100_000).running_on("n05", "n06", "n07", "n08")],
        want_reservations={1: (1100.0, ["n01", "n02", "n03", "n04"]), 2: (2100.0, ["n01", "n02", "n03"])},
        want_pending={1: "Resources", 2: "Resources", 3: ("Reservation", {"job": 2, "time": 2100.0})},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_backfill(case: Case):
    run_case(case, CLUSTER)


def drive(config, cycles: int, gang_at: int = 3):
    """A 16-node gang in a steady stream of 1-node jobs on the 16-node cluster.

    Every 300 s: jobs at their time limit end, three 1-node jobs arrive (limits 300..1500 s,
    so every end falls on a cycle), the cycle runs and its starts are applied. Returns the
    time the gang started (None: never) and its first reservation time.
    """
    gang_id, next_id = 10_000, 1
    running: list[RunningJob] = []
    pending = []
    first_res = started = None
    for k in range(cycles):
        now = 300.0 * k
        running = [r for r in running if r.end_time > now]
        for _ in range(3):
            pending.append(job(next_id).limit(300 * (1 + next_id % 5)).submitted(now).build())
            next_id += 1
        if k == gang_at:
            pending.append(job(gang_id).nodes(16).limit(1200).submitted(now).build())
        d = run_cycle(config, snapshot(pending, running), now)
        by_id = {j.id: j for j in pending}
        for s in d.starts:
            running.append(RunningJob(by_id[s.job_id], now, s.placement))
        pending = [j for j in pending if j.id not in {s.job_id for s in d.starts}]
        res = {r.job_id: r.start_time for r in d.reservations}
        if gang_id in res and first_res is None:
            first_res = res[gang_id]
        if any(s.job_id == gang_id for s in d.starts):
            started = now
            break
    return started, first_res


def test_big_gang_never_starves_under_small_jobs():
    started, first_res = drive(CLUSTER, cycles=40)
    assert first_res is not None
    assert started is not None and started <= first_res


def test_without_reservations_the_same_stream_starves_the_gang():
    started, _ = drive(GREEDY, cycles=40)
    assert started is None  # the contrast that makes the test above mean something


def test_small_jobs_keep_running_while_the_gang_waits():
    """Backfill is not idleness: short jobs that end before the reservation still start."""
    pend = [job(1).nodes(4)] + [job(10 + i).limit(600) for i in range(3)]
    d = run_cycle(CLUSTER, snapshot(pend, ALMOST_FULL), 100.0)
    assert sorted(s.job_id for s in d.starts) == [10, 11, 12]
    assert [r.job_id for r in d.reservations] == [1]
