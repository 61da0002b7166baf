"""Preemption: which running gangs a blocked job stops, and that it stops no more than needed."""

from __future__ import annotations

import pytest

from adsched.core.model import RunningJob
from builders import Case, cluster, job, run_case

QUEUES = {
    "release": {"tier": 10, "preempt_lower_tiers": True},
    "train": {"tier": 5, "quota_gpus": 32},  # preempts nothing, but reclaims borrowed GPUs
    "explore": {"tier": 1, "preemptible": True, "min_run_time": "10:00", "grace_period": "2:00",
                "preempt_signal": "USR1"},
    "scratch": {"tier": 0, "preemptible": True},
    "prod": {"tier": 1, "quota_gpus": 16},  # not preemptible
}
CLUSTER = cluster(leaves=4, nodes_per_leaf=4, gpus=8, queues=QUEUES, scheduler={"default_queue": "explore"})
NOW = 5000.0
LEAF = {l: [f"n{4 * (l - 1) + k:02d}" for k in range(1, 5)] for l in range(1, 5)}


def gang(job_id: int, queue: str, *nodes: str, start: float = 0.0, priority: int = 0, **kw) -> RunningJob:
    return job(job_id).queue(queue).priority(priority).limit(86400).running_on(*nodes, start=start, **kw)


def prod(first_id: int, *nodes: str) -> list[RunningJob]:
    """One non-preemptible 1-node job per node."""
    return [gang(first_id + k, "prod", n) for k, n in enumerate(nodes)]


def release(job_id: int, nodes: int, max_leaves: int | None = None):
    b = job(job_id).queue("release").nodes(nodes)
    return b.max_leaves(max_leaves) if max_leaves else b


CASES = [
    Case("a release gang stops the two exploratory gangs on one leaf, not two on different leaves",
         pending=[release(1, 4)],
         # leaf2 and leaf3 each hold a younger explore gang (less work lost) next to prod jobs
         running=[gang(11, "explore", "n01", "n02"), gang(12, "explore", "n03", "n04"),
                  gang(13, "explore", "n05", "n06", start=3000), gang(14, "explore", "n09", "n10", start=3000)]
         + prod(900, "n07", "n08", "n11", "n12", *LEAF[4]),
         want_preemptions={11: 1, 12: 1},
         want_pending={1: ("Preempting", {"jobs": (11, 12)})},
         want_reservations={1: (NOW, LEAF[1])}),
    Case("no preemption when a placement without it exists, even a scattered one",
         pending=[release(1, 4)],
         running=[gang(11, "explore", "n01", "n02", "n03")] + prod(900, "n05", "n06", "n07", "n09", "n10",
                                                                  "n11", "n13", "n14", "n15"),
         want_starts={1: ["n04", "n08", "n12", "n16"]}),
    Case("a job inside its exempt time (min_run_time) is never chosen",
         pending=[release(1, 4, max_leaves=1)],
         running=[gang(11, "explore", *LEAF[1], start=NOW - 300), gang(12, "explore", *LEAF[2], start=1000)]
         + prod(900, *LEAF[3], *LEAF[4]),
         want_preemptions={12: 1},
         want_pending={1: ("Preempting", {"jobs": (12,)})},
         want_reservations={1: (NOW, LEAF[2])}),
    Case("when every candidate is inside its exempt time, the job just waits",
         pending=[release(1, 4, max_leaves=1)],
         running=[gang(11, "explore", *LEAF[1], start=NOW - 599)] + prod(900, *LEAF[2], *LEAF[3], *LEAF[4]),
         want_pending={1: "Resources"},
         want_reservations={1: (86400.0, LEAF[2])}),
    Case("a non-preemptible queue is never touched",
         pending=[release(1, 1)],
         running=prod(900, *LEAF[1], *LEAF[2], *LEAF[3], *LEAF[4]),
         want_pending={1: "Resources"},
         want_reservations={1: (86400.0, ["n01"])}),
    Case("the lowest priority victim first, even if it lost more work",
         pending=[release(1, 4, max_leaves=1)],
         running=[gang(11, "explore", *LEAF[1], start=4000, priority=2), gang(12, "explore", *LEAF[2], priority=0)]
         + prod(900, *LEAF[3], *LEAF[4]),
         want_preemptions={12: 1},
         want_pending={1: "Preempting"},
         want_reservations={1: (NOW, LEAF[2])}),
    Case("a lower queue tier is a lower victim priority than the job's own priority",
         pending=[release(1, 4, max_leaves=1)],
         running=[gang(11, "explore", *LEAF[1], start=4000), gang(12, "scratch", *LEAF[2], priority=9)]
         + prod(900, *LEAF[3], *LEAF[4]),
         want_preemptions={12: 1},
         want_pending={1: "Preempting"},
         want_reservations={1: (NOW, LEAF[2])}),
    Case("least work lost breaks the tie: the gang that checkpointed recently goes",
         pending=[release(1, 4, max_leaves=1)],
         # 11 ran longer but checkpointed 10 s ago; 12 never checkpointed
         running=[gang(11, "explore", *LEAF[1], checkpoint=NOW - 10), gang(12, "explore", *LEAF[2], start=1000)]
         + prod(900, *LEAF[3], *LEAF[4]),
         want_preemptions={11: 1},
         want_pending={1: ("Preempting", {"jobs": (11,)})},
         want_reservations={1: (NOW, LEAF[1])}),
    Case("only the victims needed: one of two 1-node jobs is enough for a 1-node job",
         pending=[release(1, 1)],
         running=[gang(11, "explore", "n01", start=1000), gang(12, "explore", "n02")]
         + prod(900, "n03", "n04", *LEAF[2], *LEAF[3], *LEAF[4]),
         want_preemptions={11: 1},
         want_pending={1: "Preempting"},
         want_reservations={1: (NOW, ["n01"])}),
    Case("borrowed GPUs are reclaimed by a queue under its quota that may not preempt otherwise",
         pending=[job(1).queue("train").nodes(2)],
         running=[gang(11, "prod", "n01", "n02", borrowing=True), gang(12, "prod", "n03", "n04")]
         + prod(900, *LEAF[2], *LEAF[3], *LEAF[4]),
         want_preemptions={11: 1},
         want_pending={1: ("Preempting", {"jobs": (11,)})},
         want_reservations={1: (NOW, ["n01", "n02"])}),
    Case("a queue without a quota does not reclaim borrowed GPUs of a non-preemptible queue",
         pending=[release(1, 2)],
         running=[gang(11, "prod", "n01", "n02", borrowing=True)] + prod(900, "n03", "n04", *LEAF[2], *LEAF[3],
                                                                          *LEAF[4]),
         want_pending={1: "Resources"},
         want_reservations={1: (86400.0, ["n01", "n02"])}),
    Case("a queue beyond its quota reclaims nothing",
         pending=[job(1).queue("train").nodes(2)],
         running=[gang(11, "prod", "n01", "n02", borrowing=True), gang(12, "train", *LEAF[2])]
         + prod(900, "n03", "n04", *LEAF[3], *LEAF[4]),
         want_pending={1: "Resources"}),
    Case("a preemptor whose victims are draining waits, holds their place and chooses nothing new",
         pending=[release(1, 4)],
         running=[gang(11, "explore", "n01", "n02"), gang(12, "explore", "n03", "n04"),
                  gang(13, "explore", *LEAF[2])] + prod(900, *LEAF[3], *LEAF[4]),
         preempting={1: (11, 12)},
         want_pending={1: ("Preempting", {"jobs": (11, 12)})},
         want_reservations={1: (NOW, LEAF[1])}),
    Case("signalled victims are chosen by no one else; a half-drained victim set still holds its place",
         pending=[release(1, 4), release(2, 4), job(3).gpus(1)],
         # 11 has stopped (n01, n02 free), 12 still drains; 13 on leaf2 is fair game for job 2
         running=[gang(12, "explore", "n03", "n04"), gang(13, "explore", *LEAF[2])] + prod(900, *LEAF[3], *LEAF[4]),
         preempting={1: (11, 12)},
         want_preemptions={13: 2},
         want_pending={1: ("Preempting", {"jobs": (12,)}), 2: ("Preempting", {"jobs": (13,)}),
                       3: ("Reservation", {"job": 1})},  # n01, n02 are free but held
         # job 3's own reservation: on n01 once job 1 has run its time limit there
         want_reservations={1: (NOW, LEAF[1]), 2: (NOW, LEAF[2]), 3: (NOW + 3600, ["n01"])}),
]
for c in CASES:
    c.now = NOW


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_preemption(case: Case):
    run_case(case, CLUSTER)
