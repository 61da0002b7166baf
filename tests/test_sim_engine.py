"""The discrete-event engine: event batching, the real core at every cycle, determinism, metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import cluster

from adsched.configfile import load_config
from adsched.core.model import Job, Preemption
from adsched.sim import engine, metrics
from adsched.sim.engine import POLICIES, policy_config, simulate
from adsched.sim.traces import SimJob, load_trace, to_workload
from shared_data import KTH, OPENB_NODES, OPENB_PODS, TRACES, requires  # noqa: F401

KTH100 = Path(__file__).resolve().parents[1] / "sched" / "examples" / "kth100.toml"
needs_kth = requires(KTH)


def sj(job_id, submit, duration, nodes=1, gpus=8, limit=None, wait=None):
    job = Job(id=job_id, queue="explore", num_nodes=nodes, gpus_per_node=gpus,
              time_limit=limit or int(duration) or 1, submit_time=float(submit))
    return SimJob(job, float(duration), wait)


def test_gang_waits_for_capacity_and_events_batch_into_one_cycle():
    cfg = cluster(leaves=1, nodes_per_leaf=2)  # 2 nodes x 8 GPUs
    jobs = [sj(1, 0, 100, nodes=2), sj(2, 10, 50), sj(3, 10, 30)]
    res = simulate(jobs, cfg, "adsched", check_invariants=True)
    assert res.start == [0.0, 100.0, 100.0]
    assert res.end == [100.0, 150.0, 130.0]
    # cycles at t=0 (job 1), t=10 (2 and 3 submitted together: one cycle), t=100 (1 ends, 2 and 3 start);
    # the ends at 130 and 150 leave nothing pending, so no cycle runs then.
    assert res.cycles == 3
    assert [t for t, _ in res.busy] == [0.0, 10.0, 100.0, 130.0, 150.0]
    assert [b for _, b in res.busy] == [16, 16, 16, 8, 0]


def test_cycles_happen_only_at_event_times():
    cfg = cluster(leaves=2, nodes_per_leaf=2)
    jobs = [sj(k, submit=7 * k, duration=25 + 13 * (k % 5), nodes=1 + k % 3) for k in range(1, 40)]
    calls = []
    real = engine.schedule

    def spy(snapshot, config, now, memo=None):
        calls.append(now)
        return real(snapshot, config, now, memo)

    engine.schedule = spy
    try:
        res = simulate(jobs, cfg, "adsched")
    finally:
        engine.schedule = real
    events = {s.job.submit_time for s in jobs} | {e for e in res.end if e is not None}
    assert calls and set(calls) <= events
    assert len(calls) == len(set(calls))  # one cycle per instant (no zero-length jobs here)
    assert all(e == st + s.duration for s, st, e in zip(res.jobs, res.start, res.end))


def test_policies_are_core_toggles():
    cfg = cluster()
    for name, toggles in POLICIES.items():
        pc = policy_config(cfg, name)
        assert {k: getattr(pc.scheduler, k) for k in toggles} == toggles
        assert pc.nodes == cfg.nodes and pc.queues == cfg.queues
    with pytest.raises(ValueError, match="unknown policy"):
        policy_config(cfg, "sjf")


def test_fifo_blocks_behind_the_first_waiting_job_and_backfill_does_not():
    cfg = cluster(leaves=1, nodes_per_leaf=2)
    # 1 holds a node till 100; 2 wants both nodes; 3 is small and short: it can run beside 1 now,
    # and ends (t=25) before 2 could start (t=100), so backfill starts it at once; FIFO makes it wait.
    jobs = [sj(1, 0, 100), sj(2, 5, 50, nodes=2), sj(3, 6, 19, limit=20)]
    fifo = simulate(jobs, cfg, "fifo", check_invariants=True)
    flat = simulate(jobs, cfg, "backfill-flat", check_invariants=True)
    assert fifo.start == [0.0, 100.0, 150.0]
    assert flat.start == [0.0, 100.0, 6.0]


def test_metrics_by_hand():
    cfg = cluster(leaves=2, nodes_per_leaf=2)  # 4 nodes, 32 GPUs, 2 per leaf
    jobs = [sj(1, 0, 100, nodes=4, wait=5), sj(2, 0, 5, nodes=1, wait=0), sj(3, 50, 200, nodes=2, wait=70)]
    res = simulate(jobs, cfg, "adsched")
    m = metrics.summarize(res)
    waits = sorted(st - s.job.submit_time for s, st in zip(res.jobs, res.start))
    assert res.start == [0.0, 100.0, 100.0]  # by id at equal submit: 1 (whole cluster) first
    assert waits == [0.0, 50.0, 100.0]
    assert m["wait_mean"] == pytest.approx(50.0) and m["wait_p50"] == 50.0
    assert m["wait_p95"] == pytest.approx(95.0)
    # bsld: job1 (0+100)/100 = 1; job2 (100+5)/max(5,10) = 10.5; job3 (50+200)/200 = 1.25
    assert m["bsld_mean"] == pytest.approx((1 + 10.5 + 1.25) / 3)
    assert m["makespan"] == 300.0
    assert m["utilization"] == pytest.approx((32 * 100 + 8 * 5 + 16 * 200) / (32 * 300))
    assert m["gangs"] == {"gangs": 2, "at_lower_bound": 1.0, "mean_leaves": 1.5, "mean_extra_leaves": 0.0}
    assert m["vs_trace"]["trace_wait_mean"] == pytest.approx(25.0)
    prod = metrics.trace_summary(res.jobs, cfg.total_gpus)
    assert prod["wait_mean"] == pytest.approx(25.0) and prod["makespan"] == 320.0
    times, util = metrics.utilization_timeline(res, 100.0)
    assert times == [0.0, 100.0, 200.0]
    assert util == pytest.approx([1.0, (16 * 100 + 8 * 5) / 3200, 0.5])


def test_flat_first_fit_spans_more_leaves_than_topology_aware():
    cfg = cluster(leaves=2, nodes_per_leaf=2)
    # 1 takes n01 for a while; 2 is a 2-node gang: first fit takes n02+n03 (2 leaves), adsched takes leaf2
    jobs = [sj(1, 0, 100), sj(2, 1, 10, nodes=2)]
    flat = metrics.gang_leaves(simulate(jobs, cfg, "backfill-flat"))
    full = metrics.gang_leaves(simulate(jobs, cfg, "adsched"))
    assert flat["mean_leaves"] == 2.0 and flat["at_lower_bound"] == 0.0
    assert full["mean_leaves"] == 1.0 and full["at_lower_bound"] == 1.0


def test_cancels_and_preemptions_from_the_core_are_applied():
    cfg = cluster(leaves=1, nodes_per_leaf=2)  # 2 nodes; queue explore: grace_period 60 s
    grace = cfg.queues["explore"].grace_period
    jobs = [sj(1, 0, 100), sj(2, 10, 100), sj(3, 20, 100), sj(4, 30, 10), sj(5, 50, 5)]
    real = engine.schedule
    seen = {}

    def later_core(snapshot, config, now, memo=None):  # the real core, plus a cancel and a preemption at t=30
        seen[now] = dict(snapshot.preempting)
        d = real(snapshot, config, now, memo)
        d.starts = [s for s in d.starts if s.job_id != 3]
        d.pending_reasons.pop(3, None)
        if any(j.id == 3 for j in snapshot.pending):
            d.cancels = {3: "Dependency: never satisfied"}
        if now == 30:
            d.preemptions = [Preemption(victim_id=1, preemptor_id=4, reason="test")]
        return d

    engine.schedule = later_core
    try:
        res = simulate(jobs, cfg, "adsched")
    finally:
        engine.schedule = real
    assert res.cancelled == {3: "Dependency: never satisfied"} and res.start[2] is None
    assert seen[50] == {4: (1,)}  # job 1 drains during its grace period, the core is told
    assert res.preemptions == 1
    # job 1 stops at 30 + grace and is requeued whole (its end at 100 is void); being oldest it
    # restarts at once on its own node; 4 gets n02 when job 2 ends at 110, then 5.
    assert res.start[0] == 30 + grace and res.end[0] == 30 + grace + 100
    assert (res.start[3], res.start[4]) == (110.0, 120.0)
    # At the kill the claim stays (the preemptor 4 has not started): the core still sees it...
    assert seen[30 + grace] == {4: (1,)}
    # ...until the victim started again (here, at once), which ends the record.
    assert seen[110.0] == {}
    m = metrics.summarize(res)
    assert (m["preemptions"], m["cancelled"], m["never_started"], m["jobs"]) == (1, 1, 0, 4)


@needs_kth
def test_invariants_hold_at_every_cycle_of_a_real_slice():
    cfg = load_config(KTH100)
    w = to_workload(load_trace(KTH, limit=2000), cfg)
    res = simulate(w, cfg, "adsched", check_invariants=True)  # raises InvariantError on any cycle
    assert res.cycles > 2000 and all(s is not None for s in res.start)
    assert metrics.gang_leaves(res)["gangs"] > 500


@needs_kth
def test_replay_is_deterministic():
    cfg = load_config(KTH100)
    w = to_workload(load_trace(KTH, limit=400), cfg)
    for policy in POLICIES:
        a = metrics.summarize(simulate(w, cfg, policy))
        b = metrics.summarize(simulate(to_workload(load_trace(KTH, limit=400), cfg), cfg, policy))
        for m in (a, b):
            for key in ("wall_seconds", "schedule_seconds", "check_seconds"):
                m.pop(key)
        assert a == b


def test_a_borrowing_start_is_reclaimed_in_the_simulator_as_in_the_daemon():
    # Queue "b" borrows queue "a"'s idle node; when an "a" job comes, the core reclaims the
    # borrowed GPUs. The simulator must keep Start.borrowing on the running job, or no reclaim
    # ever happens in `adsched sim` while the daemon (which stores it) reclaims.
    queues = {"a": {"quota_gpus": 8, "grace_period": "0:05"},
              "b": {"quota_gpus": 8, "borrow_limit_gpus": 8, "grace_period": "0:05"}}
    cfg = cluster(leaves=1, nodes_per_leaf=2, queues=queues, scheduler={"default_queue": "a"})
    borrower = SimJob(Job(id=1, queue="b", num_nodes=2, gpus_per_node=8, time_limit=1000, submit_time=0.0),
                      1000.0, None)
    owner = SimJob(Job(id=2, queue="a", num_nodes=1, gpus_per_node=8, time_limit=100, submit_time=10.0),
                   100.0, None)
    res = simulate([borrower, owner], cfg, check_invariants=True)
    want_preemptions, want_owner_start = 1, 15.0  # reclaimed at t=10, the borrower killed after its grace
    assert (res.preemptions, res.start[1]) == (want_preemptions, want_owner_start)
