"""The invariant checker is itself tested: for each invariant in sched/core/invariants.py, a
valid cycle (the core's own decisions, which pass) is broken in one way, and check() must
raise, naming that invariant. A checker turned into a no-op fails every row."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, replace
from typing import Callable

import pytest

from adsched.core import reasons
from adsched.core.invariants import InvariantError, check
from adsched.core.model import NodeAlloc, Preemption, Reservation, Start
from adsched.core.schedule import schedule
from builders import cluster, job, snapshot

NOW = 100.0
QUEUES = {
    "release": {"tier": 10, "preempts": ["explore"]},
    "explore": {"tier": 1, "preemptible": True},
    "quota": {"quota_gpus": 8, "borrow_limit_gpus": 8},
    "peruser": {"max_running_per_user": 1},
}
MIG = {"names": "m[1-2]", "gpus": 4, "mig_gpus": 2, "mig_profile": {"1g.10gb": 7}}
# n01-n02 under leaf1, n03-n04 under leaf2 (8 GPUs each); m1-m2: GPUs 0-1 whole, 2-3 MIG-split.
CLUSTER = cluster(leaves=2, nodes_per_leaf=2, gpus=8, queues=QUEUES, mig=MIG)


def whole(*nodes: str) -> tuple[NodeAlloc, ...]:
    return tuple(NodeAlloc(n, tuple(range(8))) for n in nodes)


# --- the valid cycles that get broken ---------------------------------------------------

PLAIN = snapshot(  # starts: 1 (1 node), 4 (2 nodes), 3 (MIG); 5 waits on a dependency, 6 on the user limit
    pending=[job(1), job(3).mig("1g.10gb", 2), job(4).nodes(2), job(5).gpus(1).after_ok(55),
             job(6).gpus(1).queue("peruser").user("u")],
    running=[job(900).limit(86400).running_on("n04"), job(901).queue("peruser").user("u").running_on("m2", gpus=(0,)),
             job(902).mig("1g.10gb", 2).running_on("m1", slices=((2, 0), (2, 1)))],
)
QUOTA = snapshot(pending=[job(1).queue("quota"), job(2).queue("quota"), job(3).queue("quota")])  # 3rd: beyond
ARRAY = snapshot(pending=[job(1).gpus(1).array(7, 0, throttle=1), job(2).gpus(1).array(7, 1, throttle=1)])
HELD = snapshot(pending=[job(1).held_until(NOW + 60, "retry after 60 s")])
FAILED_PARENT = snapshot(pending=[job(1).after_ok(55)], finished={55: "FAILED"})
LEAF_LIMIT = snapshot(pending=[job(1).nodes(2).max_leaves(1)])
# Backfill: n01 busy until 1000, n02-n03 until 3600, n04 free: gang 1 is reserved at 1000 on
# n01+n04; job 2 (one node, an hour) would delay it; job 3 ends before it and backfills.
BACKFILL = snapshot(
    pending=[job(1).nodes(2), job(2).limit(3600), job(3).limit(600)],
    running=[job(900).limit(900).running_on("n01")] + [job(900 + k).limit(3500).running_on(f"n0{k}") for k in (2, 3)]
    + [job(910).limit(86400).running_on(m) for m in ("m1", "m2")],
)
# Preemption: two exploratory gangs fill the whole-GPU nodes; release job 1 (2 nodes) stops one.
PREEMPT = snapshot(
    pending=[job(1).queue("release").nodes(2)],
    running=[job(11).queue("explore").limit(86400).running_on("n01", "n02", checkpoint=50.0),
             job(12).queue("explore").limit(86400).running_on("n03", "n04"),
             *[job(920 + k).limit(86400).running_on(m) for k, m in enumerate(("m1", "m2"))]],
)


@dataclass
class Mutation:
    name: str
    snap: object
    breaks: Callable  # (snapshot, decisions, config) -> (snapshot, decisions, config), on copies
    want_error: str  # a regex the InvariantError must match
    now: float | None = NOW


def start_of(d, job_id: int) -> Start:
    return next(s for s in d.starts if s.job_id == job_id)


def swap_start(d, job_id: int, **changes) -> None:
    d.starts = [replace(s, **changes) if s.job_id == job_id else s for s in d.starts]


def start_anyway(d, job_id: int, placement, borrowing: bool = False) -> None:
    """Start a job the core kept waiting (and drop its pending reason)."""
    d.pending_reasons.pop(job_id, None)
    d.starts.append(Start(job_id, placement, borrowing))


def m(fn):
    """A mutation of the decisions only."""
    def breaks(snap, d, cfg):
        fn(d)
        return snap, d, cfg
    return breaks


M2_GPU1 = (NodeAlloc("m2", (1,)),)  # the one whole GPU left in PLAIN


def long_job_instead_of_short(d) -> None:
    """Job 2 (an hour) where the core backfilled job 3 (ends before the reservation)."""
    short = start_of(d, 3)
    d.starts = [s for s in d.starts if s.job_id != 3] + [Start(2, short.placement)]
    d.pending_reasons.pop(2)
    d.pending_reasons[3] = reasons.priority(2)


def first_node_free_now(d) -> str:
    used = {a.node for s in d.starts for a in s.placement}
    return next(n for n in ("n01", "n02", "n03") if n not in used)


MUTATIONS = [
    # every pending job is started, cancelled or given a reason, and only one of those
    Mutation("a start of a job that is not pending", PLAIN,
             m(lambda d: d.starts.append(Start(77, whole("n03")))), r"started job 77 is not pending"),
    Mutation("a job started twice", PLAIN, m(lambda d: d.starts.append(start_of(d, 1))), r"job 1 started twice"),
    Mutation("a started job also given a pending reason", PLAIN,
             m(lambda d: d.pending_reasons.__setitem__(1, reasons.priority(9))), r"job 1 both started and pending"),
    Mutation("a waiting job without a reason", PLAIN, m(lambda d: d.pending_reasons.pop(5)),
             r"job 5: neither started, cancelled nor given a pending reason"),
    Mutation("a cancelled job also pending", FAILED_PARENT,
             m(lambda d: d.pending_reasons.__setitem__(1, reasons.dependency((55,)))), r"job 1: both cancelled and pending"),
    # gangs: complete, on known and available nodes, the GPUs asked for, within max leaves
    Mutation("a gang missing a rank", PLAIN,
             m(lambda d: swap_start(d, 4, placement=start_of(d, 4).placement[:1])), r"job 4: gang incomplete, 1/2"),
    Mutation("a gang with two ranks on one node", PLAIN,
             m(lambda d: swap_start(d, 4, placement=start_of(d, 4).placement[:1] * 2)), r"job 4: gang incomplete"),
    Mutation("a rank on a node the cluster does not have", PLAIN,
             m(lambda d: swap_start(d, 1, placement=whole("zz9"))), r"job 1: unknown node zz9"),
    Mutation("a rank on a drained node", PLAIN,
             lambda s, d, c: (replace(s, unavailable=frozenset({start_of(d, 1).placement[0].node})), d, c),
             r"job 1: placed on unavailable node"),
    Mutation("a rank with fewer GPUs than asked", PLAIN,
             m(lambda d: swap_start(d, 1, placement=(NodeAlloc(start_of(d, 1).placement[0].node, (0, 1)),))),
             r"job 1: 2 GPUs on n0\d, wants 8"),
    Mutation("a GPU index the node does not have", PLAIN,
             m(lambda d: swap_start(d, 1, placement=(NodeAlloc(start_of(d, 1).placement[0].node, tuple(range(1, 9))),))),
             r"job 1: GPU 8 on n0\d is not a whole GPU"),
    Mutation("a GPU a running job holds", PLAIN, m(lambda d: swap_start(d, 1, placement=whole("n04"))),
             r"job 1: GPU n04:0 used twice"),
    Mutation("two starts on one GPU", PLAIN,
             m(lambda d: swap_start(d, 1, placement=start_of(d, 4).placement[:1])), r"GPU n0\d:0 used twice"),
    Mutation("a gang across more leaves than its max", LEAF_LIMIT,
             m(lambda d: swap_start(d, 1, placement=whole("n01", "n03"))), r"job 1: spans 2 leaves > max 1"),
    # MIG: slices of the job's profile, as many as asked, never twice, never a whole GPU
    Mutation("a MIG job with one slice short", PLAIN,
             m(lambda d: swap_start(d, 3, placement=(NodeAlloc("m1", (), ((3, 0),)),))),
             r"job 3: wants 2 1g.10gb slices"),
    Mutation("a MIG slice on a whole GPU", PLAIN,
             m(lambda d: swap_start(d, 3, placement=(NodeAlloc("m1", (), ((0, 0), (3, 0))),))),
             r"job 3: m1 GPU 0 slice 0 is not a 1g.10gb slice"),
    Mutation("a MIG slice a running job holds", PLAIN,
             m(lambda d: swap_start(d, 3, placement=(NodeAlloc("m1", (), ((2, 0), (2, 5))),))),
             r"job 3: MIG slice m1:2/0 used twice"),
    Mutation("a whole-GPU job on a MIG-split GPU", PLAIN,
             m(lambda d: swap_start(d, 1, placement=(NodeAlloc("m2", tuple(range(1, 9))),))),
             r"is not a whole GPU"),
    # quotas, borrowing, per-user limits, array throttles, dependencies, begin times
    Mutation("a start beyond quota not marked borrowing", QUOTA, m(lambda d: swap_start(d, 2, borrowing=False)),
             r"job 2: queue quota at 16 > quota 8 without borrowing"),
    Mutation("a start beyond quota + borrow limit", QUOTA,
             m(lambda d: start_anyway(d, 3, whole(first_node_free_now(d)), borrowing=True)),
             r"job 3: queue quota at 24 beyond quota \+ borrowing limit"),
    Mutation("a borrowing start in a queue without a quota", PLAIN, m(lambda d: swap_start(d, 1, borrowing=True)),
             r"job 1: marked borrowing in queue explore without a quota"),
    Mutation("a start beyond the user's running limit", PLAIN, m(lambda d: start_anyway(d, 6, M2_GPU1)),
             r"job 6: user u runs 2 jobs in peruser > 1"),
    Mutation("a start beyond the array throttle", ARRAY,
             m(lambda d: start_anyway(d, 2, (NodeAlloc("n02", (0,)),))), r"job 2: array 7 runs 2 tasks > throttle 1"),
    Mutation("a start with an unfinished dependency", PLAIN, m(lambda d: start_anyway(d, 5, M2_GPU1)),
             r"job 5: started with unmet dependencies"),
    Mutation("a cancel its dependencies do not call for", PLAIN,
             m(lambda d: (d.pending_reasons.pop(6), d.cancels.__setitem__(6, reasons.dependency_never_satisfied(55, "FAILED")))),
             r"job 6: cancelled .* but its dependencies do not say so"),
    Mutation("a cancel with another reason than the dependency's", FAILED_PARENT,
             m(lambda d: d.cancels.__setitem__(1, reasons.dependency_never_satisfied(56, "FAILED"))),
             r"job 1: cancelled .* but its dependencies do not say so"),
    Mutation("a start before the job's begin time", HELD, m(lambda d: start_anyway(d, 1, whole("n01"))),
             r"job 1 started before its begin time"),
    # reservations: for waiting jobs, one each, not in the past, on GPUs free by then, never
    # overlapping another, never delayed by a start
    Mutation("two reservations for one job", BACKFILL, m(lambda d: d.reservations.append(d.reservations[0])),
             r"a job has two reservations"),
    Mutation("a reservation for a started job", BACKFILL,
             m(lambda d: d.reservations.insert(0, replace(d.reservations[0], job_id=3))),
             r"reservation for job 3, which is not a waiting job"),
    Mutation("a reservation in the past", BACKFILL,
             m(lambda d: d.reservations.__setitem__(0, replace(d.reservations[0], start_time=NOW - 1))),
             r"job 1: reservation starts in the past"),
    Mutation("a reservation on GPUs a running job still holds then", BACKFILL,
             m(lambda d: d.reservations.__setitem__(0, replace(d.reservations[0], start_time=500.0))),
             r"job 1: reserved GPUs still held by job 900 at t=500"),
    Mutation("a start that would delay a reservation", BACKFILL, m(lambda d: long_job_instead_of_short(d)),
             r"job 2 started on GPUs reserved for job 1 and would delay it"),
    Mutation("two reservations on the same GPUs at once", BACKFILL,
             m(lambda d: d.reservations.append(replace(d.reservations[0], job_id=2))),
             r"reservations of jobs \d and \d overlap"),
    # preemption: running victims, chosen once and only when allowed, the preemptor waits
    # with a reservation at now, and the victims are needed, all of them and no more
    Mutation("preemptions checked without now", PREEMPT, m(lambda d: None),
             r"preemptions are checked against `now`", now=None),
    Mutation("a victim that is not running", PREEMPT,
             m(lambda d: d.preemptions.append(Preemption(999, 1, "x"))), r"preempted job 999 is not running"),
    Mutation("a preemptor that is not waiting", PREEMPT,
             m(lambda d: d.preemptions.append(Preemption(12, 999, "x"))), r"job 999 preempts but is not a waiting job"),
    Mutation("a victim chosen twice", PREEMPT, m(lambda d: d.preemptions.append(d.preemptions[0])),
             r"job 1\d preempted twice"),
    Mutation("a victim already signalled in an earlier cycle", PREEMPT,
             lambda s, d, c: (replace(s, preempting={77: (d.preemptions[0].victim_id,)}), d, c),
             r"job 1\d was already signalled in an earlier cycle"),
    Mutation("a preemptor choosing more while its earlier victims drain", PREEMPT,
             lambda s, d, c: (replace(s, preempting={1: (23 - d.preemptions[0].victim_id,)}), d, c),
             r"job 1 chose new victims while its earlier ones still run"),
    Mutation("a victim inside its queue's min_run_time", PREEMPT,
             lambda s, d, c: (s, d, replace(c, queues={**c.queues, "explore": replace(c.queues["explore"],
                                                                                       min_run_time=3600)})),
             r"job 1\d preempted inside its exempt time"),
    Mutation("a victim in a queue the preemptor may not preempt", PREEMPT,
             lambda s, d, c: (s, d, replace(c, queues={**c.queues, "release": replace(c.queues["release"],
                                                                                       preempts=())})),
             r"job 1 \(queue release\) may not preempt job 1\d \(queue explore\)"),
    Mutation("a preemptor whose reason is not Preempting", PREEMPT,
             m(lambda d: d.pending_reasons.__setitem__(1, reasons.resources(2, 8, 0))),
             r"job 1 preempts but its pending reason does not say so"),
    Mutation("a preemptor holding no reservation at now", PREEMPT, m(lambda d: d.reservations.clear()),
             r"job 1 preempts but holds no reservation at now"),
    Mutation("a preemption although the job fits without", PREEMPT,
             lambda s, d, c: (replace(s, running=tuple(r for r in s.running
                                                       if r.job.id != 23 - d.preemptions[0].victim_id)), d, c),
             r"job 1 preempted jobs although it fit without"),
    Mutation("victims that do not free enough", PREEMPT,
             lambda s, d, c: (replace(s, pending=(replace(s.pending[0], num_nodes=3),)), d, c),
             r"job 1 does not fit even with its victims stopped"),
    Mutation("a victim more than needed", PREEMPT,
             m(lambda d: d.preemptions.append(Preemption(23 - d.preemptions[0].victim_id, 1, "x"))),
             r"job 1: victim 1\d was not needed"),
]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda mu: mu.name)
def test_the_checker_catches_a_broken_cycle(mutation: Mutation):
    good = schedule(mutation.snap, CLUSTER, NOW)
    check(mutation.snap, good, CLUSTER, now=NOW)  # the core's own cycle passes
    snap, bad, cfg = mutation.breaks(mutation.snap, copy.deepcopy(good), CLUSTER)
    with pytest.raises(InvariantError) as caught:
        check(snap, bad, cfg, now=mutation.now)
    assert re.search(mutation.want_error, str(caught.value)), str(caught.value)


def test_every_check_of_the_checker_has_a_mutation():
    """Each `raise InvariantError` line of invariants.py is the one some row's check() ends at."""
    import inspect
    import traceback

    import adsched.core.invariants as invariants

    lines, _ = inspect.getsourcelines(invariants)
    want_lines = {k for k, line in enumerate(lines, 1) if "raise InvariantError(" in line}
    hit = set()
    for mu in MUTATIONS:
        good = schedule(mu.snap, CLUSTER, NOW)
        snap, bad, cfg = mu.breaks(mu.snap, copy.deepcopy(good), CLUSTER)
        try:
            check(snap, bad, cfg, now=mu.now)
        except InvariantError as e:
            hit.add(traceback.extract_tb(e.__traceback__)[-1].lineno)
    assert want_lines - hit == set(), "checks no mutation reaches (invariants.py lines)"
