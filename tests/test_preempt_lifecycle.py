"""Preemption over cycles, its settings, explain() for both sides, and the config keys."""

from __future__ import annotations

import pytest

from adsched.core.config import ConfigError, parse_config_text
from adsched.core.explain import explain
from adsched.core.model import Preemption
from adsched.core.schedule import schedule
from builders import cluster, job, run_cycle, snapshot, with_settings
from test_preempt import CLUSTER, LEAF, NOW, gang, prod, release

# leaf1 holds two explore gangs; everything else is prod (not preemptible)
RUNNING = [gang(11, "explore", "n01", "n02"), gang(12, "explore", "n03", "n04")] + prod(900, *LEAF[2], *LEAF[3],
                                                                                     *LEAF[4])


def test_preempt_drain_then_start_on_the_freed_leaf():
    pend = [release(1, 4), job(2).queue("explore").gpus(1)]
    first = run_cycle(CLUSTER, snapshot(pend, RUNNING), NOW)
    assert first.preemptions == [Preemption(11, 1, "preempted by job 1 (queue release)"),
                                 Preemption(12, 1, "preempted by job 1 (queue release)")]
    assert first.starts == [] and (first.pending_reasons[1].code, first.pending_reasons[1].jobs) == ("Preempting", (11, 12))
    # next cycle: both still draining; nothing new is chosen, the place stays held
    draining = snapshot(pend, RUNNING, preempting={1: (11, 12)})
    second = run_cycle(CLUSTER, draining, NOW + 2)
    assert second.preemptions == [] and second.starts == []
    assert (second.pending_reasons[1].code, second.pending_reasons[1].jobs) == ("Preempting", (11, 12))
    # the daemon has requeued both victims: job 1 starts on leaf1, they wait
    requeued = [r.job for r in RUNNING[:2]]
    third = run_cycle(CLUSTER, snapshot(pend + requeued, RUNNING[2:], preempting={1: (11, 12)}), NOW + 130)
    assert [(s.job_id, [a.node for a in s.placement]) for s in third.starts] == [(1, LEAF[1])]
    assert third.preemptions == []


def test_preemption_depth_bounds_the_searches_and_zero_turns_it_off():
    pend = [release(1, 2), release(2, 2)]
    assert {p.preemptor_id for p in run_cycle(CLUSTER, snapshot(pend, RUNNING), NOW).preemptions} == {1, 2}
    one = with_settings(CLUSTER, preemption_depth=1)
    assert {p.preemptor_id for p in run_cycle(one, snapshot(pend, RUNNING), NOW).preemptions} == {1}
    off = with_settings(CLUSTER, preemption_depth=0)
    d = run_cycle(off, snapshot(pend, RUNNING), NOW)
    assert d.preemptions == [] and d.pending_reasons[1].code == "Resources"


def test_the_same_snapshot_preempts_the_same_victims():
    pend = [release(1, 4), release(2, 1)]
    assert schedule(snapshot(pend, RUNNING), CLUSTER, NOW) == schedule(snapshot(pend[::-1], RUNNING), CLUSTER, NOW)


def test_explain_names_the_victims_and_tells_a_victim_who_preempts_it():
    snap = snapshot([release(1, 4)], RUNNING)
    e = explain(snap, CLUSTER, NOW, job_id=1)
    assert (e.constraint, e.preempting, e.waiting_for) == ("Preempting", (11, 12), 11)
    assert (e.estimated_start, e.estimated_nodes) == (NOW, tuple(LEAF[1]))
    v = explain(snap, CLUSTER, NOW, job_id=12)
    assert (v.state, v.preempted_by, v.constraint) == ("preempted", 1, "Preempted")
    assert "by job 1 (queue release)" in v.reason
    later = explain(snapshot([release(1, 4)], RUNNING, preempting={1: (11, 12)}), CLUSTER, NOW + 2, job_id=11)
    assert (later.state, later.preempted_by) == ("preempted", 1)
    assert explain(snap, CLUSTER, NOW, job_id=900).state == "running"


BASE = """
[[nodes]]
names = "n[1-4]"
[queues.release]
tier = 10
[queues.explore]
tier = 1
preemptible = true
[queues.debug]
tier = 0
preemptible = true
[queues.prod]
tier = 1
"""


def test_preempts_resolved_from_tiers_and_lists():
    c = parse_config_text(BASE.replace("tier = 10\n", 'tier = 10\npreempt_lower_tiers = true\n')
                          .replace("[queues.prod]\n", '[queues.prod]\npreempts = ["debug"]\n'))
    assert c.queues["release"].preempts == ("debug", "explore")  # prod is not preemptible
    assert c.queues["prod"].preempts == ("debug",)
    assert c.queues["explore"].preempts == ()
    q = c.queues["explore"]
    assert (q.min_run_time, q.grace_period, q.preempt_signal, c.scheduler.preemption_depth) == (0, 60, "TERM", 4)


def test_victim_settings_parse_as_durations_and_signal_names():
    c = parse_config_text(BASE.replace("tier = 1\npreemptible = true\n", 'tier = 1\npreemptible = true\n'
                                       'min_run_time = "10:00"\ngrace_period = "2:00"\npreempt_signal = "SIGUSR1"\n')
                          + "[scheduler]\npreemption_depth = 2\n")
    q = c.queues["explore"]
    assert (q.min_run_time, q.grace_period, q.preempt_signal, c.scheduler.preemption_depth) == (600, 120, "USR1", 2)


@pytest.mark.parametrize("patch,want", [
    ('[queues.x]\npreempts = ["prod"]\n', "queues.x.preempts: queue prod is not preemptible"),
    ('[queues.x]\npreempts = ["nope"]\n', "queues.x.preempts: unknown queue 'nope'"),
    ('[queues.x]\npreempts = "explore"\n', "queues.x.preempts: must be a list of queue names"),
    ('[queues.x]\npreemptible = true\npreempts = ["x"]\n', "queues.x.preempts: queue x cannot preempt itself"),
    ('[queues.x]\npreempt_lower_tiers = 1\n', "queues.x.preempt_lower_tiers: must be true or false"),
    ('[queues.x]\nmin_run_time = "soon"\n', "queues.x.min_run_time: not a duration"),
    ('[queues.x]\ngrace_period = -1\n', "queues.x.grace_period: negative duration"),
    ('[queues.x]\npreempt_signal = "KILL"\n', "queues.x.preempt_signal: must be one of TERM, USR1, USR2, INT, HUP"),
    ('[scheduler]\npreemption_depth = -1\n', "scheduler.preemption_depth: must be >= 0"),
])
def test_preemption_keys_are_validated_with_key_paths(patch, want):
    with pytest.raises(ConfigError) as e:
        parse_config_text(BASE + patch)
    assert any(want in err for err in e.value.errors), e.value.errors


def test_a_draining_preemptor_keeps_its_quota_from_later_jobs_of_its_queue():
    queues = {"rel": {"tier": 10, "quota_gpus": 16, "borrow_limit_gpus": 0, "preempts": ["explore"]},
              "explore": {"tier": 1, "preemptible": True}, "prod": {"tier": 1}}
    cfg = cluster(leaves=4, nodes_per_leaf=4, gpus=8, queues=queues, scheduler={"default_queue": "explore"})
    victim = job(11).queue("explore").limit(86400).running_on("n01", "n02")
    others = [job(900 + k).queue("prod").limit(86400).running_on(f"n{k:02d}") for k in range(3, 16)]
    others.append(job(916).queue("prod").limit(86400).running_on("n16", gpus=tuple(range(7))))  # 1 GPU free
    preemptor = job(1).queue("rel").nodes(2)
    later = job(2).queue("rel").gpus(1).priority(5)  # ordered first, and it would fit on n16 now
    d = run_cycle(cfg, snapshot([preemptor, later], [victim, *others], preempting={1: (11,)}), NOW)
    assert d.starts == []
    quota = d.pending_reasons[2]
    assert (quota.code, quota.have, quota.need) == ("QuotaExceeded", 16, 1)  # the preemptor's 16 are committed
    assert (d.pending_reasons[1].code, d.pending_reasons[1].jobs) == ("Preempting", (11,))
    # the victim is gone: the preemptor starts on the place it freed
    d = run_cycle(cfg, snapshot([preemptor, later, victim.job], others, preempting={1: (11,)}), NOW + 60)
    assert [(s.job_id, [a.node for a in s.placement]) for s in d.starts] == [(1, ["n01", "n02"])]
