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


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    d = tmp_path_factory.mktemp("lua")
    shutil.copy(ROOT / "plugins" / "job_submit.lua", d / "job_submit.lua")
    (d / "adsched_rules.lua").write_text(render_lua_rules(DEMO))
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

    return run


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
