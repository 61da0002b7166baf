"""Conservative backfill on the availability profile (core/profile.py): reservations occupy only
[start, start + time limit), so a later job may be promised the gap before an earlier one;
reservation_depth may be "all". Checked against a brute-force reference scheduler."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adsched.core.capacity import Capacity
from adsched.core.config import ALL
from adsched.core.invariants import check
from adsched.core.model import Job, NodeAlloc, RunningJob, Snapshot
from adsched.core.order import order_pending
from adsched.core.place import NoFit, find_placement
from adsched.core.profile import Profile
from adsched.core.schedule import schedule
from builders import Case, cluster, job, run_case, with_settings

CLUSTER = cluster(leaves=4, nodes_per_leaf=4, gpus=8)  # n01-n16, leaf1..leaf4 of 4 nodes
ALL_DEPTH = with_settings(CLUSTER, reservation_depth=ALL)
DEPTH2 = with_settings(CLUSTER, reservation_depth=2)


def busy(job_id: int, *nodes: str, ends: int = 3600):
    return job(job_id).limit(ends).running_on(*nodes)


# n01 ends at 1000; n02-n13 at 3600; n14-n16 free.
ALMOST_FULL = [busy(900, "n01", ends=1000)] + [busy(900 + i, f"n{i:02d}") for i in range(2, 14)]
GANG16 = ["n01", "n02", "n03", "n04", "n05", "n06", "n07", "n08", "n09", "n10", "n11", "n12", "n13", "n14",
          "n15", "n16"]

CASES = [
    Case(
        "a later job is promised the gap before an earlier reservation begins",
        pending=[job(1).nodes(16), job(2).nodes(4).limit(2000)],  # 2 fits [1000, 3000) before 1 at 3600
        running=ALMOST_FULL,
        config=DEPTH2,
        want_reservations={1: (3600.0, GANG16), 2: (1000.0, ["n01", "n14", "n15", "n16"])},
    ),
    Case(
        "a gap too short for the job: it goes after the earlier reservation",
        pending=[job(1).nodes(16), job(2).nodes(4).limit(2700)],  # [1000, 3700) would delay 1
        running=ALMOST_FULL,
        config=DEPTH2,
        want_reservations={1: (3600.0, GANG16), 2: (7200.0, ["n01", "n02", "n03", "n04"])},
    ),
    Case(
        "a job that exactly fills the gap ends as the reservation starts",
        pending=[job(1).nodes(16), job(2).nodes(4).limit(2600)],  # [1000, 3600)
        running=ALMOST_FULL,
        config=DEPTH2,
        want_reservations={1: (3600.0, GANG16), 2: (1000.0, ["n01", "n14", "n15", "n16"])},
    ),
    Case(
        "depth all: every blocked job is reserved, each in the first place it fits",
        pending=[job(1).nodes(16), job(2).nodes(4).limit(2000), job(3).nodes(2).limit(500),
                 job(4).nodes(12).limit(600)],
        running=ALMOST_FULL,
        config=ALL_DEPTH,
        want_starts={3: ["n14", "n15"]},  # ends at 600, before 2 takes n14, n15 at 1000
        want_reservations={1: (3600.0, GANG16), 2: (1000.0, ["n01", "n14", "n15", "n16"]),
                           4: (7200.0, GANG16[:12])},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_conservative_backfill(case: Case):
    run_case(case, CLUSTER)


# --- the profile alone ----------------------------------------------------------------------

def _running(cfg, spec):
    """spec: (node names, GPUs, start, time limit) -> RunningJob."""
    out = []
    for k, (nodes, gpus, start, limit) in enumerate(spec):
        j = Job(id=500 + k, queue="explore", num_nodes=len(nodes), gpus_per_node=len(gpus), time_limit=limit,
                submit_time=0.0)
        out.append(RunningJob(j, start, tuple(NodeAlloc(n, tuple(gpus)) for n in nodes)))
    return tuple(out)


ALL4 = [0, 1, 2, 3]


@pytest.mark.parametrize("name, running, taken, ask, want_start, want_nodes, want_gpus", [
    ("idle cluster: now, on one leaf", [], [], (2, 4, None, 100), 0.0, ["n1", "n2"], (0, 1, 2, 3)),
    ("enough GPUs free at every moment, but not the same ones: the run waits for two that stay free",
     [(["n1"], [0, 1], -10, 110), (["n2", "n3", "n4"], ALL4, -10, 1010)], [(["n1"], (2, 3), 100.0, 300.0)],
     (1, 2, None, 200), 100.0, ["n1"], (0, 1)),
    ("a reservation later on leaves the gap before it",
     [(["n1", "n2"], ALL4, -10, 110), (["n3", "n4"], ALL4, -10, 1010)], [(["n1", "n2"], ALL4, 300.0, 400.0)],
     (2, 4, 1, 200), 100.0, ["n1", "n2"], (0, 1, 2, 3)),
    ("... but not when the run would reach into it",
     [(["n1", "n2"], ALL4, -10, 110), (["n3", "n4"], ALL4, -10, 1010)], [(["n1", "n2"], ALL4, 300.0, 400.0)],
     (2, 4, 1, 201), 400.0, ["n1", "n2"], (0, 1, 2, 3)),
    ("a leaf limit waits for one leaf to hold the gang",
     [(["n1"], ALL4, -10, 60), (["n3"], ALL4, -10, 500)], [],
     (2, 4, 1, 50), 50.0, ["n1", "n2"], (0, 1, 2, 3)),
])
def test_profile_earliest(name, running, taken, ask, want_start, want_nodes, want_gpus):
    cfg = cluster(leaves=2, nodes_per_leaf=2, gpus=4)  # n1, n2 | n3, n4 (names from builders)
    names = [n.name for n in cfg.nodes]
    rename = {f"n{k + 1}": names[k] for k in range(len(names))}
    spec = [([rename[n] for n in nodes], gpus, start, limit) for nodes, gpus, start, limit in running]
    snap = Snapshot(pending=(), running=_running(cfg, spec))
    profile = Profile(Capacity(cfg, snap), 0.0, snap.running)
    for nodes, gpus, start, end in taken:
        profile.occupy_placement(tuple(NodeAlloc(rename[n], tuple(gpus)) for n in nodes), start, end)
    found = profile.earliest(*ask, topology_aware=True)
    assert found is not None
    start, placement = found
    assert start == want_start
    assert [a.node for a in placement] == [rename[n] for n in want_nodes]
    assert all(a.gpus == want_gpus for a in placement)


# --- properties: random small clusters, every blocked job reserved ----------------------------

QUEUE = {"open": {"tier": 0}}


def _config(leaves, per_leaf, gpus, depth, topo):
    cfg = cluster(leaves=leaves, nodes_per_leaf=per_leaf, gpus=gpus, spines=1, queues=QUEUE,
                  scheduler={"default_queue": "open"})
    return with_settings(cfg, reservation_depth=depth, topology_aware=topo, preemption_depth=0)


def _workload(cfg, seed: int, n_running: int, n_pending: int, now: float, down: bool = True) -> Snapshot:
    rng = random.Random(seed)
    gpus = cfg.nodes[0].gpus
    cap = Capacity(cfg)
    running = []
    for k in range(n_running):
        j = Job(id=1000 + k, queue="open", num_nodes=rng.choice([1, 1, 2, 3]),
                gpus_per_node=rng.choice([g for g in (1, 2, 4, 8) if g <= gpus]),
                time_limit=rng.choice([100, 300, 1000, 3000]), submit_time=0.0)
        picks = find_placement(cap, j.num_nodes, j.gpus_per_node)
        if isinstance(picks, NoFit):
            continue
        placement = cap.take(picks)
        running.append(RunningJob(j, now - rng.uniform(0, 1.1 * j.time_limit), placement))
    pending = tuple(
        Job(id=1 + k, queue="open", num_nodes=rng.choice([1, 1, 2, 3, len(cfg.nodes)]),
            gpus_per_node=rng.choice([g for g in (1, 2, 4, 8) if g <= gpus]),
            time_limit=rng.choice([100, 250, 300, 1000, 3000]), submit_time=now - rng.choice([0, 50, 500]),
            priority=rng.randrange(3), max_leaves=rng.choice([None, None, 1, 2]))
        for k in range(n_pending))
    unavailable = frozenset(n.name for n in cfg.nodes if down and rng.random() < 0.1)
    return Snapshot(pending=pending, running=tuple(running), unavailable=unavailable)


def reference(snap: Snapshot, cfg, now: float) -> dict[int, tuple[float, tuple]]:
    """Brute-force conservative backfill: in priority order, each job at the first time t (now
    or when something ends) where find_placement places it on the GPUs free all through
    [t, t + time limit), rebuilding the whole cluster state for every t tried. At now a job
    first tries to start, on GPUs nothing holds (a job past its time limit still does, until
    it is reaped), then to be reserved (that job's GPUs are promised from now on). Returns job
    id -> (start, placement) for every job that ever fits."""
    spans: list[tuple[float, float, tuple]] = [(now, max(now, r.end_time), r.placement) for r in snap.running]
    overdue = [r.placement for r in snap.running if r.end_time <= now]
    out = {}
    for j in order_pending(snap.pending, cfg, now):
        times = sorted({end for _, end, _ in spans if end > now})
        for k, t in enumerate([now, now] + times):  # now twice: to start, then to be reserved
            busy = [RunningJob(j, 0.0, placement) for start, end, placement in spans
                    if start < t + j.time_limit and end > t]
            if k == 0:
                busy += [RunningJob(j, 0.0, placement) for placement in overdue]
            cap = Capacity(cfg, Snapshot(pending=(), running=tuple(busy), unavailable=snap.unavailable))
            picks = find_placement(cap, j.num_nodes, j.gpus_per_node, j.max_leaves, cfg.scheduler.topology_aware)
            if not isinstance(picks, NoFit):
                placement = cap.peek(picks)
                out[j.id] = (t, placement)
                spans.append((t, t + j.time_limit, placement))
                break
    return out


def _gpu_spans(snap: Snapshot, d, now: float):
    """(start, end, node, GPU, owner) of everything the cycle leaves running or promised."""
    limit = {j.id: j.time_limit for j in snap.pending}
    out = [(now, max(now, r.end_time), a.node, g, f"running {r.job.id}") for r in snap.running
           for a in r.placement for g in a.gpus]
    out += [(now, now + limit[s.job_id], a.node, g, f"start {s.job_id}") for s in d.starts
            for a in s.placement for g in a.gpus]
    out += [(r.start_time, r.start_time + limit[r.job_id], a.node, g, f"reservation {r.job_id}")
            for r in d.reservations for a in r.placement for g in a.gpus]
    return out


def _overlaps(spans) -> list[str]:
    by_gpu: dict[tuple[str, int], list] = {}
    for start, end, node, g, owner in spans:
        by_gpu.setdefault((node, g), []).append((start, end, owner))
    bad = []
    for gpu, items in by_gpu.items():
        items.sort()
        for (s1, e1, o1), (s2, e2, o2) in zip(items, items[1:]):
            if s2 < e1:
                bad.append(f"{gpu}: {o1} [{s1:g}, {e1:g}) and {o2} [{s2:g}, {e2:g})")
    return bad


PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
small = dict(leaves=st.integers(1, 3), per_leaf=st.integers(1, 4), gpus=st.sampled_from([4, 8]),
             topo=st.booleans(), seed=st.integers(0, 10**6), n_running=st.integers(0, 12),
             n_pending=st.integers(1, 24))


@PROPS
@given(depth=st.sampled_from([ALL, 1, 3, 9, 40]), **small)
def test_nothing_overlaps_and_no_start_delays_a_reservation(leaves, per_leaf, gpus, topo, seed, n_running,
                                                           n_pending, depth):
    """Every GPU-second is promised once: running jobs, starts and reservations never overlap on a
    GPU (so no start delays a reservation's start and no two reservations share a GPU), and the
    invariant checker agrees."""
    cfg = _config(leaves, per_leaf, gpus, depth, topo)
    snap = _workload(cfg, seed, n_running, n_pending, 5000.0)
    d = schedule(snap, cfg, 5000.0)
    check(snap, d, cfg, now=5000.0)
    assert _overlaps(_gpu_spans(snap, d, 5000.0)) == []
    if depth == ALL:  # conservative: every job that can ever fit starts or is reserved
        placed = {s.job_id for s in d.starts} | {r.job_id for r in d.reservations}
        empty = Capacity(cfg, Snapshot(pending=(), unavailable=snap.unavailable))
        fits = {j.id for j in snap.pending if not isinstance(
            find_placement(empty, j.num_nodes, j.gpus_per_node, j.max_leaves, topo), NoFit)}
        assert fits == placed


@PROPS
@given(**small)
def test_depth_all_starts_every_job_no_later_than_a_brute_force_reference(leaves, per_leaf, gpus, topo, seed,
                                                                         n_running, n_pending):
    cfg = _config(leaves, per_leaf, gpus, ALL, topo)
    now = 5000.0
    snap = _workload(cfg, seed, n_running, n_pending, now)
    d = schedule(snap, cfg, now)
    got = {s.job_id: (now, s.placement) for s in d.starts}
    got.update({r.job_id: (r.start_time, r.placement) for r in d.reservations})
    want = reference(snap, cfg, now)
    assert set(got) == set(want)
    for job_id, (start, placement) in want.items():
        assert got[job_id][0] <= start, f"job {job_id}: {got[job_id][0]:g} later than the reference's {start:g}"
    # The same rules at the same times: the very same decisions.
    assert got == want


@PROPS
@given(depth=st.sampled_from([ALL, 2, 12]), shuffle=st.randoms(use_true_random=False), **small)
def test_decisions_do_not_depend_on_input_order(leaves, per_leaf, gpus, topo, seed, n_running, n_pending, depth,
                                               shuffle):
    cfg = _config(leaves, per_leaf, gpus, depth, topo)
    snap = _workload(cfg, seed, n_running, n_pending, 5000.0)
    pending, running = list(snap.pending), list(snap.running)
    shuffle.shuffle(pending)
    shuffle.shuffle(running)
    mixed = Snapshot(pending=tuple(pending), running=tuple(running), unavailable=snap.unavailable)
    a, b = schedule(snap, cfg, 5000.0), schedule(mixed, cfg, 5000.0)
    assert (a.starts, a.reservations, a.pending_reasons) == (b.starts, b.reservations, b.pending_reasons)
