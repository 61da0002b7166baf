"""job_submit.lua under lupa with a fake `slurm` table: fast, same cases as the real slurmctld tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import lupa  # a test dependency: pip install .[test] (.ci/run does)

from adsched.configfile import load_config
from adsched.slurm.luarules import render_lua_rules

ROOT = Path(__file__).resolve().parent.parent
NO_VAL = 4294967294
DEMO = load_config(ROOT / "sched" / "examples" / "demo.toml")


def load_plugin(tmp_path_factory, controller=False):
    d = tmp_path_factory.mktemp("lua")
    shutil.copy(ROOT / "plugins" / "job_submit.lua", d / "job_submit.lua")
    (d / "adsched_rules.lua").write_text(render_lua_rules(DEMO, controller=controller))
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    user_log: list[str] = []
    lua.globals().slurm = lua.table_from({
        "SUCCESS": 0, "ERROR": -1, "NO_VAL": NO_VAL, "NO_VAL16": 65534, "NO_VAL64": -2,  # 0xfffffffffffffffe as a lua integer
        "log_user": lambda msg: user_log.append(msg), "log_info": lambda msg: None,
    })
    lua.execute(f'dofile("{d}/job_submit.lua")')
    submit = lua.globals().slurm_job_submit

    def run(**fields):
        user_log.clear()
        job = lua.table_from({"time_limit": NO_VAL, "min_nodes": NO_VAL, **fields})
        rc = submit(job, None, 1000)
        return rc, dict(job.items()), list(user_log)

    def modify(uid, **fields):
        user_log.clear()
        desc = lua.table_from({"priority": NO_VAL, "req_switch": NO_VAL, **fields})
        return lua.globals().slurm_job_modify(desc, None, None, uid), list(user_log)

    run.modify = modify
    return run


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    return load_plugin(tmp_path_factory)


@pytest.fixture(scope="module")
def controller_plugin(tmp_path_factory):
    return load_plugin(tmp_path_factory, controller=True)


def test_controller_mode_holds_every_job_and_makes_it_requeueable(controller_plugin):
    rc, job, log = controller_plugin(min_nodes=2, tres_per_node="gres:gpu:8", partition="train", requeue=65534,
                                     comment="adsched:max_leaves=1;wait=600")
    assert rc == 0 and log == []
    assert job["priority"] == 0 and job["requeue"] == 1
    assert "req_switch" not in job  # the core keeps it within 1 leaf; Slurm must not wait for switches
    assert job["comment"] == "adsched:queue=train;tier=5;max_leaves=1"
    rc, job, _ = controller_plugin(tres_per_node="gres:gpu:1", requeue=0)  # --no-requeue: cancelled if preempted
    assert rc == 0 and job["requeue"] == 0
    rc, job, _ = controller_plugin(min_nodes=2, tres_per_node="gres:gpu:8", req_switch=1)  # raw --switches=1
    assert rc == 0 and job["comment"].endswith("max_leaves=1")


@pytest.mark.parametrize("fields", [dict(req_nodes="node1"), dict(exc_nodes="node2")])
def test_controller_mode_refuses_node_lists(controller_plugin, fields):
    rc, _, log = controller_plugin(tres_per_node="gres:gpu:1", **fields)
    assert rc == -1 and log == ["adsched: adsched chooses the nodes: -w/--nodelist and -x/--exclude are not "
                                "accepted (drain nodes instead)"]


@pytest.mark.parametrize("uid,fields,want_rc", [
    (1000, dict(priority=4294967295), -1),  # scontrol release by the owner
    (1000, dict(req_nodes="node1"), -1),
    (1000, dict(time_limit=10), 0),
    (0, dict(priority=4294967295), 0),  # the controller (root)
    (0, dict(req_nodes="node1"), 0),
])
def test_controller_mode_only_root_releases_or_pins(controller_plugin, uid, fields, want_rc):
    rc, _ = controller_plugin.modify(uid, **fields)
    assert rc == want_rc


@pytest.mark.parametrize("mode", ["plugin", "controller"])
def test_a_gang_that_can_never_fit_its_leaves_is_refused_at_submit(plugin, controller_plugin, mode):
    run = plugin if mode == "plugin" else controller_plugin
    largest = max(len(m) for m in DEMO.leaves.values())
    rc, _, log = run(min_nodes=largest + 1, tres_per_node="gres:gpu:8", partition="train",
                     comment="adsched:max_leaves=1")
    assert rc == -1 and log == [f"adsched: {largest + 1} nodes can never fit within 1 leaf(s): the largest hold "
                                f"{largest} nodes"]
    rc, _, _ = run(min_nodes=largest, tres_per_node="gres:gpu:8", partition="train", comment="adsched:max_leaves=1")
    assert rc == 0


def test_plugin_mode_lets_owners_modify(plugin):
    assert plugin.modify(1000, priority=4294967295)[0] == 0


def test_defaults_applied(plugin):
    rc, job, log = plugin(tres_per_node="gres:gpu:8")
    assert rc == 0 and log == []
    assert job["partition"] == "explore" and job["time_limit"] == 120
    assert job["comment"] == "adsched:queue=explore;tier=1;max_leaves="


@pytest.mark.parametrize("fields,message", [
    (dict(partition="nope"), "adsched: unknown queue 'nope'"),
    (dict(partition="debug", time_limit=120), "adsched: time limit 120 min exceeds queue debug max of 60 min"),
    (dict(min_nodes=2, tres_per_node="gres:gpu:4"), "adsched: a multi-node GPU job takes whole nodes: ask --gres=gpu:8 (got gpu:4 on 2 nodes)"),
    (dict(partition="debug", min_nodes=2, tres_per_node="gres:gpu:8"), "adsched: 16 GPUs exceed queue debug limit of 8 per job"),
    (dict(min_nodes=999), "adsched: 999 nodes asked, the cluster has %d" % len(DEMO.nodes)),
    (dict(partition="train,explore"), "adsched: submit to one queue, not a list (train,explore)"),
])
def test_refused_with_one_line(plugin, fields, message):
    rc, _, log = plugin(**fields)
    assert rc == -1 and log == [message]


@pytest.mark.parametrize("tres", ["gres:gpu:8", "gres/gpu:8", "gpu:8", "gres:gpu:h100:8", "gres/gpu:h100:8"])
def test_gpu_request_forms(plugin, tres):
    rc, _, log = plugin(min_nodes=2, tres_per_node=tres)
    assert rc == 0, log


def test_topology_request_becomes_switches(plugin):
    rc, job, _ = plugin(min_nodes=3, tres_per_node="gres:gpu:8", partition="train", comment="adsched:max_leaves=1;wait=600")
    assert rc == 0 and job["req_switch"] == 1 and job["wait4switch"] == 600
    assert job["comment"] == "adsched:queue=train;tier=5;max_leaves=1"


def test_sub_node_job_is_fine(plugin):
    rc, job, _ = plugin(partition="debug", tres_per_node="gres:gpu:1", time_limit=10)
    assert rc == 0 and job["time_limit"] == 10
