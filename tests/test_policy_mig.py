"""MIG slices: placed only on MIG-split GPUs, never twice; split GPUs never go whole. And the new TOML keys."""

from __future__ import annotations

import pytest

from adsched.core.config import ConfigError, parse_config
from adsched.core.schedule import validate_job
from builders import QUEUES, Case, cluster, job, run_case

MIG = {"names": "m[1-2]", "gpus": 4, "mig_gpus": 2, "mig_profile": {"1g.10gb": 7}}
CLUSTER = cluster(leaves=1, nodes_per_leaf=2, gpus=8, mig=MIG)  # n01-n02 whole; m1-m2: GPUs 0-1 whole, 2-3 split
ALL_SLICES_M1 = tuple((g, k) for g in (2, 3) for k in range(7))

CASES = [
    Case("a MIG job gets slices of its profile on a split GPU, no whole GPU",
         pending=[job(1).mig("1g.10gb", 2)],
         want_starts={1: ["m1"]}),
    Case("a whole-GPU job never gets a split GPU: 3 GPUs do not fit on m1 or m2",
         pending=[job(1).gpus(3)],
         running=[job(900).running_on("n01", "n02")],
         want_pending={1: ("Resources", {"need": 1, "have": 0})},
         want_reservations={1: (3600.0, ["n01"])}),
    Case("a 2-GPU job may use the unsplit GPUs of a MIG node",
         pending=[job(1).gpus(2)],
         running=[job(900).running_on("n01", "n02")],
         want_starts={1: ["m1"]}),
    Case("slices in use are not given twice: the next MIG job goes to m2",
         pending=[job(1).mig("1g.10gb", 1)],
         running=[job(900).mig("1g.10gb", 14).running_on("m1", slices=ALL_SLICES_M1)],
         want_starts={1: ["m2"]}),
    Case("MIG jobs pack onto the node with the fewest free slices",
         pending=[job(1).mig("1g.10gb", 3)],
         running=[job(900).mig("1g.10gb", 2).running_on("m2", slices=((2, 0), (2, 1)))],
         want_starts={1: ["m2"]}),
    Case("no node has that many free slices: waits",
         pending=[job(1).mig("1g.10gb", 5)],
         running=[job(900 + i).mig("1g.10gb", 10).running_on(n, slices=ALL_SLICES_M1[:10])
                  for i, n in enumerate(("m1", "m2"))],
         want_pending={1: ("Resources", {"need": 5, "have": 0})}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_mig(case: Case):
    run_case(case, CLUSTER)


def test_mig_slices_are_named_by_gpu_and_slice():
    d = run_case(Case("", pending=[job(1).mig("1g.10gb", 8)], want_starts={1: ["m1"]}), CLUSTER)
    (alloc,) = d.starts[0].placement
    assert alloc.gpus == () and alloc.slices == tuple((2, k) for k in range(7)) + ((3, 0),)


@pytest.mark.parametrize("mig, want_most", [
    (("2g.20gb", 1), 0),
    (("1g.10gb", 15), 14),
])
def test_impossible_mig_requests_are_invalid(mig, want_most):
    j = job(1).mig(*mig).build()
    reason = validate_job(j, CLUSTER)
    assert (reason.code, reason.need, reason.limit) == ("InvalidRequest", mig[1], want_most)


def test_mig_job_must_not_ask_for_whole_gpus():
    from dataclasses import replace

    j = replace(job(1).mig("1g.10gb", 1).build(), gpus_per_node=1)
    assert validate_job(j, CLUSTER).code == "InvalidRequest"


BASE = {"nodes": [{"names": "n[1-2]", "gpus": 8}], "queues": {"q": {}}}


@pytest.mark.parametrize("patch, error", [
    ({"nodes": [{"names": "n[1-2]", "gpus": 8, "mig_gpus": 9, "mig_profile": {"1g.10gb": 7}}]},
     "nodes[0].mig_gpus: must be <= gpus (8)"),
    ({"nodes": [{"names": "n[1-2]", "gpus": 8, "mig_gpus": 1}]}, "nodes[0].mig_profile: required"),
    ({"nodes": [{"names": "n[1-2]", "gpus": 8, "mig_gpus": 1, "mig_profile": {"big": 1}}]},
     "nodes[0].mig_profile.big: not a MIG profile"),
    ({"nodes": [{"names": "n[1-2]", "gpus": 8, "mig_gpus": 1, "mig_profile": {"3g.40gb": 3}}]},
     "nodes[0].mig_profile: uses 9 of a GPU's 7 compute slices"),
    ({"queues": {"q": {"borrow_limit_gpus": 4}}}, "queues.q.borrow_limit_gpus: needs quota_gpus"),
    ({"queues": {"q": {"max_running_per_user": 0}}}, "queues.q.max_running_per_user: must be >= 1"),
    ({"scheduler": {"reservation_depth": -1}}, "scheduler.reservation_depth: must be >= 0"),
    ({"scheduler": {"weight_age": "lots"}}, "scheduler.weight_age: must be a number >= 0"),
    ({"scheduler": {"fairshare_half_life": "soon"}}, "scheduler.fairshare_half_life: not a duration"),
])
def test_new_config_keys_are_validated_with_their_key_path(patch, error):
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, **patch})
    assert any(err.startswith(error) for err in e.value.errors), e.value.errors


def test_new_config_keys_parse():
    cfg = parse_config({
        "nodes": [{"names": "n[1-2]", "gpus": 8, "mig_gpus": 2, "mig_profile": {"1g.10gb": 7}}],
        "queues": {"q": {"quota_gpus": 8, "borrow_limit_gpus": 4, "max_running_per_user": 3}},
        "scheduler": {"reservation_depth": 4, "weight_age": 100, "weight_fairshare": 1000,
                      "weight_size": 10, "weight_priority": 1, "age_max": "2-00:00:00",
                      "fairshare_half_life": "7-00:00:00"},
    })
    node, q, s = cfg.nodes[0], cfg.queues["q"], cfg.scheduler
    assert (node.mig_gpus, node.mig_profile, node.whole_gpus) == (2, (("1g.10gb", 7),), 6)
    assert (q.borrow_limit_gpus, q.max_running_per_user) == (4, 3)
    assert (s.reservation_depth, s.weight_fairshare, s.age_max, s.fairshare_half_life) == (4, 1000.0, 172800, 604800)
    assert cfg.max_gpus_per_node == 6 and cfg.mig_slices("1g.10gb") == 14


def test_existing_configs_keep_their_old_behaviour():
    cfg = cluster(queues=QUEUES)
    s = cfg.scheduler
    assert s.backfill and s.topology_aware and s.reservation_depth == 1
    assert (s.weight_age, s.weight_fairshare, s.weight_size, s.weight_priority) == (0, 0, 0, 1)
    assert all(q.borrow_limit_gpus is None and q.max_running_per_user is None for q in cfg.queues.values())


def test_demo_mig_example_places_slices_on_its_mig_nodes():
    from pathlib import Path

    from adsched.configfile import load_config
    from builders import run_cycle, snapshot

    cfg = load_config(Path(__file__).resolve().parents[1] / "sched" / "examples" / "demo_mig.toml")
    d = run_cycle(cfg, snapshot([job(1).mig("1g.10gb", 3), job(2).queue("release").nodes(8)]), 0.0)
    where = {s.job_id: {a.node for a in s.placement} for s in d.starts}
    assert where[1] <= {"mig01", "mig02"} and not where[2] & {"mig01", "mig02"}  # 8-GPU ranks avoid them
