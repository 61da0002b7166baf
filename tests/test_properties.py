"""Property tests over random clusters and workloads: invariants and determinism every cycle."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adsched.core.capacity import Capacity
from adsched.core.invariants import check
from adsched.core.model import Job, RunningJob, Snapshot
from adsched.core.place import NoFit, find_mig, find_placement
from adsched.core.schedule import schedule
from builders import cluster, with_settings

QUEUES = {
    "hi": {"tier": 5, "quota_gpus": 24, "borrow_limit_gpus": 8, "preempt_lower_tiers": True},
    "lo": {"tier": 1, "quota_gpus": 16, "preemptible": True, "min_run_time": "5:00"},
    "cap": {"tier": 1, "quota_gpus": 8, "borrow_limit_gpus": 0, "max_running_per_user": 2, "preempts": ["open"]},
    "open": {"tier": 0, "preemptible": True},
}
MIG = {"names": "m[1-2]", "gpus": 4, "mig_gpus": 2, "mig_profile": {"1g.10gb": 4, "3g.40gb": 1}}
STATES = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"]


@st.composite
def clusters(draw):
    cfg = cluster(
        leaves=draw(st.integers(1, 4)), nodes_per_leaf=draw(st.integers(1, 4)), gpus=draw(st.sampled_from([4, 8])),
        spines=1, queues=QUEUES, scheduler={"default_queue": "open"},
        mig=MIG if draw(st.booleans()) else None,
    )
    return with_settings(
        cfg,
        backfill=draw(st.booleans()),
        topology_aware=draw(st.booleans()),
        reservation_depth=draw(st.integers(0, 3)),
        preemption_depth=draw(st.sampled_from([0, 1, 4])),
        weight_age=draw(st.sampled_from([0.0, 10.0])),
        weight_fairshare=draw(st.sampled_from([0.0, 10.0])),
        weight_size=draw(st.sampled_from([0.0, 10.0])),
        age_max=1000,
    )


_ARRAY_THROTTLE = {1: 1, 2: 3}


def random_job(rng: random.Random, job_id: int, cfg, now: float) -> Job:
    has_mig = bool(cfg.mig_slices("1g.10gb"))
    kind = rng.random()
    common = dict(id=job_id, queue=rng.choice(list(QUEUES)), time_limit=rng.choice([100, 300, 1000, 3000]),
                  submit_time=now - rng.choice([0, 50, 500, 5000]), user=rng.choice("abc"),
                  priority=rng.randrange(3))
    if has_mig and kind < 0.15:
        return Job(num_nodes=1, gpus_per_node=0, mig=rng.choice([("1g.10gb", rng.randint(1, 5)), ("3g.40gb", 1)]),
                   **common)
    job = Job(num_nodes=rng.choice([1, 1, 1, 2, 3, 4, 6]), gpus_per_node=rng.choice([1, 2, 4, 4, 8]),
              max_leaves=rng.choice([None, None, 1, 2]), **common)
    extra = {}
    if rng.random() < 0.2:
        array_id = rng.randint(1, 2)  # one throttle per array, as a submitted array has
        extra.update(array_id=array_id, array_index=job_id, array_throttle=_ARRAY_THROTTLE[array_id])
    if rng.random() < 0.2:
        extra["after_ok"] = (rng.randint(500, 510),)
    if rng.random() < 0.1:
        extra["after_any"] = (rng.randint(500, 510),)
    return replace(job, **extra)


def random_snapshot(cfg, seed: int, n_running: int, n_pending: int, now: float) -> Snapshot:
    rng = random.Random(seed)
    cap = Capacity(cfg)
    running = []
    for k in range(n_running):
        j = random_job(rng, 1000 + k, cfg, now)
        j = replace(j, after_ok=(), after_any=())
        if j.mig is not None:
            picks = find_mig(cap, *j.mig)
            if isinstance(picks, NoFit):
                continue
            placement = cap.take_mig(picks[0][0], *j.mig)
        else:
            picks = find_placement(cap, j.num_nodes, j.gpus_per_node, j.max_leaves)
            if isinstance(picks, NoFit):
                continue
            placement = cap.take(picks)
        # some overdue (ended by their limit but not yet reaped), most still inside it
        start = now - rng.uniform(0, 1.2 * j.time_limit)
        checkpoint = rng.choice([None, start + rng.uniform(0, now - start)])
        running.append(RunningJob(j, start, placement, rng.random() < 0.2, checkpoint))
    pending = tuple(random_job(rng, 1 + k, cfg, now) for k in range(n_pending))
    unavailable = frozenset(n.name for n in cfg.nodes if rng.random() < 0.1)
    finished = {500 + k: rng.choice(STATES) for k in range(11) if rng.random() < 0.6}
    usage = {u: rng.uniform(0, 100) for u in "abc" if rng.random() < 0.7}
    return Snapshot(pending=pending, running=tuple(running), unavailable=unavailable, finished=finished,
                    user_usage=usage, queue_usage={q: rng.uniform(0, 100) for q in QUEUES})


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(cfg=clusters(), seed=st.integers(0, 10**6), n_running=st.integers(0, 25), n_pending=st.integers(0, 30))
def test_every_cycle_keeps_the_invariants_and_decides_the_same_in_any_pending_order(cfg, seed, n_running, n_pending):
    now = 10_000.0
    snap = random_snapshot(cfg, seed, n_running, n_pending, now)
    first = schedule(snap, cfg, now)
    check(snap, first, cfg, now=now)
    assert schedule(snap, cfg, now) == first
    shuffled = list(snap.pending)
    random.Random(seed).shuffle(shuffled)
    assert schedule(replace(snap, pending=tuple(shuffled)), cfg, now) == first


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=clusters(), seed=st.integers(0, 10**6))
def test_invariants_hold_over_many_cycles(cfg, seed):
    """Drive 12 cycles: jobs end at their limits, new ones arrive, starts are applied."""
    rng = random.Random(seed)
    snap = random_snapshot(cfg, seed, 10, 10, 0.0)
    running, pending, finished = list(snap.running), list(snap.pending), dict(snap.finished)
    next_id = 2000
    for k in range(12):
        now = 200.0 * k
        for r in running:
            if r.end_time <= now:
                finished[r.job.id] = rng.choice(STATES)
        running = [r for r in running if r.end_time > now]
        for _ in range(rng.randint(0, 4)):
            pending.append(random_job(rng, next_id, cfg, now))
            next_id += 1
        snap = Snapshot(tuple(pending), tuple(running), snap.unavailable, finished)
        d = schedule(snap, cfg, now)
        check(snap, d, cfg, now=now)
        by_id = {j.id: j for j in pending}
        running += [RunningJob(by_id[s.job_id], now, s.placement, s.borrowing) for s in d.starts]
        finished.update({job_id: "CANCELLED" for job_id in d.cancels})
        done = {s.job_id for s in d.starts} | set(d.cancels)
        pending = [j for j in pending if j.id not in done]


NOW = 10_000.0


def _fits(cfg, snap: Snapshot, d, job: Job, stopped: list[RunningJob]) -> bool:
    """Does `job` fit on what the cycle left (starts and other reservations taken) once
    `stopped` have ended? Built here from the snapshot, not from the cycle's own Capacity."""
    cap = Capacity(cfg, snap)
    for k, s in enumerate(d.starts):
        cap.hold(-1 - k, s.placement)
    for r in d.reservations:
        if r.job_id != job.id and r.start_time < NOW + job.time_limit:
            cap.hold(r.job_id, r.placement)
    for run in stopped:
        cap.give(run.placement)
    found = find_placement(cap, job.num_nodes, job.gpus_per_node, job.max_leaves, cfg.scheduler.topology_aware)
    return not isinstance(found, NoFit)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=clusters(), seed=st.integers(0, 10**6), n_running=st.integers(10, 30), n_pending=st.integers(1, 20))
def test_no_preemption_stops_a_job_that_was_not_needed(cfg, seed, n_running, n_pending):
    cfg = with_settings(cfg, preemption_depth=4)
    snap = random_snapshot(cfg, seed, n_running, n_pending, NOW)
    d = schedule(snap, cfg, NOW)
    check(snap, d, cfg, now=NOW)
    running = {r.job.id: r for r in snap.running}
    pending = {j.id: j for j in snap.pending}
    by_preemptor: dict[int, list[RunningJob]] = {}
    for p in d.preemptions:
        by_preemptor.setdefault(p.preemptor_id, []).append(running[p.victim_id])
    for preemptor, victims in by_preemptor.items():
        job = pending[preemptor]
        assert not _fits(cfg, snap, d, job, [])
        assert _fits(cfg, snap, d, job, victims)
        for v in victims:
            assert not _fits(cfg, snap, d, job, [r for r in victims if r is not v]), f"victim {v.job.id} unneeded"
        assert all(NOW - v.start_time >= cfg.queues[v.job.queue].min_run_time for v in victims)


def test_the_random_workloads_do_preempt():
    """The property above is not vacuous: its workloads preempt, and with a choice of victims."""
    cfg = with_settings(cluster(leaves=2, nodes_per_leaf=4, gpus=8, spines=1, queues=QUEUES,
                                scheduler={"default_queue": "open"}), preemption_depth=4)
    counts = [len(schedule(s, cfg, NOW).preemptions)
              for s in (random_snapshot(cfg, seed, 25, 15, NOW) for seed in range(40))]
    assert sum(1 for c in counts if c) >= 5 and max(counts) >= 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=clusters(), seed=st.integers(0, 10**6))
def test_preemptions_applied_over_many_cycles_keep_the_invariants(cfg, seed):
    """Like the multi-cycle test, with the daemon's part played: victims drain for one cycle
    (Snapshot.preempting), then are requeued whole. No victim is chosen twice, and a preemptor
    whose victims drain chooses no new ones."""
    rng = random.Random(seed)
    snap = random_snapshot(cfg, seed, 15, 10, 0.0)
    running, pending = list(snap.running), list(snap.pending)
    preempting: dict[int, tuple[int, ...]] = {}
    signalled_at: dict[int, int] = {}  # victim -> cycle it was chosen in
    next_id = 3000
    for k in range(10):
        now = 300.0 * k
        running = [r for r in running if r.end_time > now]
        # victims chosen two cycles ago have stopped: back to pending, whole
        stopped = {v for v, at in signalled_at.items() if at <= k - 2}
        pending += [r.job for r in running if r.job.id in stopped]
        running = [r for r in running if r.job.id not in stopped]
        live = {r.job.id for r in running}
        preempting = {p: vs for p, vs in preempting.items() if any(v in live for v in vs)}
        for _ in range(rng.randint(0, 3)):
            pending.append(random_job(rng, next_id, cfg, now))
            next_id += 1
        pending = [replace(j, after_ok=(), after_any=()) for j in pending]
        snap = Snapshot(tuple(pending), tuple(running), snap.unavailable, {}, preempting=dict(preempting))
        d = schedule(snap, cfg, now)
        check(snap, d, cfg, now=now)
        assert schedule(snap, cfg, now) == d
        for p in d.preemptions:
            assert p.victim_id not in signalled_at and p.preemptor_id not in snap.preempting
            signalled_at[p.victim_id] = k
            preempting[p.preemptor_id] = preempting.get(p.preemptor_id, ()) + (p.victim_id,)
        for p, vs in snap.preempting.items():
            if p not in {s.job_id for s in d.starts}:
                assert d.pending_reasons[p].code == "Preempting"
        by_id = {j.id: j for j in pending}
        running += [RunningJob(by_id[s.job_id], now, s.placement, s.borrowing) for s in d.starts]
        done = {s.job_id for s in d.starts} | set(d.cancels)
        pending = [j for j in pending if j.id not in done]
        preempting = {p: vs for p, vs in preempting.items() if p not in done}


@FAST
@given(cfg=clusters(), seed=st.integers(0, 10**6), now=st.sampled_from([0.0, 500.0, 10**7]))
def test_order_is_the_documented_key_tuple(cfg, seed, now):
    """order_pending (stable sorts on number lists) equals one sort on the key tuples."""
    from adsched.core.fairshare import factors, gpu_equiv
    from adsched.core.order import order_pending

    snap = random_snapshot(cfg, seed, 0, 60, 1000.0)
    s = cfg.scheduler
    users, queues = factors(snap, cfg)
    total = sum(n.whole_gpus for n in cfg.nodes) or 1

    def key(j: Job):
        waited = now - j.submit_time
        score = (s.weight_priority * j.priority
                 + (s.weight_age if waited >= s.age_max else max(0.0, waited) * (s.weight_age / s.age_max))
                 + s.weight_fairshare * users.get(j.user, 1.0) * queues.get(j.queue, 1.0)
                 + (j.num_nodes * j.gpus_per_node if j.mig is None else gpu_equiv(j)) * (s.weight_size / total))
        return (-cfg.queues[j.queue].tier, -score, j.submit_time, j.id)

    shuffled = list(snap.pending)
    random.Random(seed).shuffle(shuffled)
    assert order_pending(shuffled, cfg, now, users, queues) == sorted(snap.pending, key=key)


@FAST
@given(cfg=clusters(), seed=st.integers(0, 10**6), n_running=st.integers(0, 30))
def test_the_verdict_alone_agrees_with_placing(cfg, seed, n_running):
    """find_placement without picks (pick=False) says what placing would: True, or the same
    NoFit; from a Fitting of the same counters it says the same, or None (cannot tell)."""
    from adsched.core.capacity import Fitting

    snap = random_snapshot(cfg, seed, n_running, 0, 0.0)
    cap = Capacity(cfg, snap)
    topo = cfg.scheduler.topology_aware
    for n in (1, 2, 3, 4, 6, 9):
        for g in (1, 4, 8):
            counters = Fitting(cap.at_least[g] if g <= cap.max_gpus else 0,
                               [row[g] if g <= cap.max_gpus else 0 for row in cap.leaf_at_least])
            for ml in (None, 1, 2):
                placed = find_placement(cap, n, g, ml, topo)
                want = placed if isinstance(placed, NoFit) else True
                assert find_placement(cap, n, g, ml, topo, pick=False) == want
                assert find_placement(cap, n, g, ml, topo, what_if=counters, pick=False) in (want, None)
