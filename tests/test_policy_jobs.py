"""Dependencies, job arrays and per-user running limits."""

from __future__ import annotations

import pytest

from adsched.core.model import RunningJob
from builders import QUEUES, Case, cluster, job, run_case, run_cycle, snapshot

CLUSTER = cluster(leaves=4, nodes_per_leaf=4, gpus=8)
PER_USER = cluster(queues={**QUEUES, "shared": {"max_running_per_user": 2}})

CASES = [
    Case(
        "a job held by the start backoff waits with reason BeginTime naming the cause; later jobs go",
        pending=[job(1).nodes(16).held_until(160.0, "ranks [3] not running; retry after 60 s"), job(2).nodes(16)],
        want_starts={2: None},
        want_pending={1: ("BeginTime", {"time": 160.0, "message": "ranks [3] not running; retry after 60 s"})},
    ),
    Case(
        "a job held even in strict FIFO says BeginTime, and blocks nobody",
        pending=[job(1).held_until(101.0), job(2)],
        config=cluster(scheduler={"backfill": False}),
        want_starts={2: None},
        want_pending={1: ("BeginTime", {"time": 101.0})},
    ),
    Case(
        "a job whose begin time has come starts",
        pending=[job(1).nodes(16).held_until(100.0, "retry after 60 s")],
        want_starts={1: None},
    ),
    Case(
        "afterok on a job that has not finished: waits with reason Dependency",
        pending=[job(2).after_ok(12)],
        want_pending={2: ("Dependency", {"job": 12, "jobs": (12,)})},
    ),
    Case(
        "afterok on a COMPLETED job: runs",
        pending=[job(2).after_ok(12)],
        finished={12: "COMPLETED"},
        want_starts={2: None},
    ),
    Case(
        "afterok on a FAILED job: cancelled with the reason",
        pending=[job(2).after_ok(12)],
        finished={12: "FAILED"},
        want_cancels={2: ("DependencyNeverSatisfied", {"job": 12})},
    ),
    Case(
        "afterok on several: one cancelled parent cancels even while another still runs",
        pending=[job(2).after_ok(11, 12)],
        finished={12: "CANCELLED"},
        want_cancels={2: ("DependencyNeverSatisfied", {"job": 12})},
    ),
    Case(
        "afterany runs after a FAILED parent",
        pending=[job(2).after_any(12)],
        finished={12: "FAILED"},
        want_starts={2: None},
    ),
    Case(
        "afterany waits for a parent not yet finished",
        pending=[job(2).after_any(12, 13)],
        finished={12: "TIMEOUT"},
        want_pending={2: ("Dependency", {"jobs": (13,)})},
    ),
    Case(
        "array throttle counts running tasks: 2 of %3 running, one more starts",
        pending=[job(10 + i).gpus(1).array(7, i, throttle=3) for i in range(3)],
        running=[job(20 + i).gpus(1).array(7, 10 + i, throttle=3).running_on("n01", gpus=(i,)) for i in range(2)],
        want_starts={10: None},
        want_pending={11: ("JobArrayTaskLimit", {"job": 7, "have": 3, "limit": 3}),
                      12: "JobArrayTaskLimit"},
    ),
    Case(
        "per-user running limit in a queue, other users unaffected",
        pending=[job(1).gpus(1).queue("shared").user("a"), job(2).gpus(1).queue("shared").user("a"),
                 job(3).gpus(1).queue("shared").user("b")],
        running=[job(9).gpus(1).queue("shared").user("a").running_on("n01", gpus=(0,))],
        config=PER_USER,
        want_starts={1: None, 3: None},
        want_pending={2: ("UserLimit", {"have": 2, "limit": 2})},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_jobs(case: Case):
    run_case(case, CLUSTER)


def drive(config, pending, cycles: int, fail: frozenset = frozenset()):
    """Run cycles every 300 s: jobs end at their time limit (COMPLETED, or FAILED if in `fail`).

    Yields (now, running jobs, decisions) after each cycle's starts are applied."""
    running: list[RunningJob] = []
    finished: dict[int, str] = {}
    for k in range(cycles):
        now = 300.0 * k
        for r in running:
            if r.end_time <= now:
                finished[r.job.id] = "FAILED" if r.job.id in fail else "COMPLETED"
        running = [r for r in running if r.end_time > now]
        d = run_cycle(config, snapshot(pending, running, finished=finished), now)
        by_id = {j.id: j for j in pending}
        running += [RunningJob(by_id[s.job_id], now, s.placement) for s in d.starts]
        for job_id in d.cancels:
            finished[job_id] = "CANCELLED"
        gone = {s.job_id for s in d.starts} | set(d.cancels)
        pending = [j for j in pending if j.id not in gone]
        yield now, running, d


def test_array_of_1000_tasks_throttled_to_50_never_runs_more():
    tasks = [job(1 + i).gpus(1).limit(300 * (1 + i % 4)).array(1, i, throttle=50).build() for i in range(1000)]
    most, started = 0, 0
    for _, running, d in drive(CLUSTER, tasks, cycles=80):
        most = max(most, sum(1 for r in running if r.job.array_id == 1))
        started += len(d.starts)
    assert most == 50  # the cluster has 128 free GPUs: only the throttle holds tasks back
    assert started == 1000


def test_afterok_chain_runs_in_order():
    chain = [job(1).limit(600).build()] + [job(i).limit(600).after_ok(i - 1).build() for i in range(2, 6)]
    starts = {}
    for now, _, d in drive(CLUSTER, chain, cycles=20):
        starts.update({s.job_id: now for s in d.starts})
    assert list(starts) == [1, 2, 3, 4, 5]
    assert all(starts[i + 1] >= starts[i] + 600 for i in range(1, 5))  # each after the previous ended


def test_failed_parent_cancels_child_and_grandchild():
    chain = [job(1).limit(300).build(), job(2).after_ok(1).build(), job(3).after_ok(2).build()]
    cancels = {}
    for _, _, d in drive(CLUSTER, chain, cycles=5, fail=frozenset({1})):
        cancels.update(d.cancels)
    want_cancels = {2: ("DependencyNeverSatisfied", 1), 3: ("DependencyNeverSatisfied", 2)}  # code, parent
    assert {k: (r.code, r.job) for k, r in cancels.items()} == want_cancels
