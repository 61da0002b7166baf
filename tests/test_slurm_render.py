"""Rendering Slurm's configuration from the cluster TOML (pure; no Slurm, no Docker)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adsched.core.config import parse_config_text

from adsched.configfile import load_config
from adsched.core.hostlist import expand
from adsched.slurm.render import render_all, render_gres_conf, render_slurm_conf, render_topology_conf

MINI8 = Path(__file__).resolve().parent / "clusters" / "mini8.toml"


def kv(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split())


def lines_starting(text: str, key: str) -> list[dict[str, str]]:
    return [kv(line) for line in text.splitlines() if line.startswith(key + "=")]


@pytest.fixture(scope="module")
def mini8():
    return load_config(MINI8)


def test_nodes_carry_cpus_memory_and_gpus(mini8):
    nodes = lines_starting(render_slurm_conf(mini8), "NodeName")
    assert len(nodes) == 1  # identical nodes share a line
    assert expand(nodes[0]["NodeName"]) == [f"node{i}" for i in range(1, 9)]
    assert nodes[0]["CPUs"] == "16" and nodes[0]["RealMemory"] == str(64 * 1024) and nodes[0]["Gres"] == "gpu:8"


def test_one_partition_per_queue_with_tier_times_and_preemption(mini8):
    parts = {p["PartitionName"]: p for p in lines_starting(render_slurm_conf(mini8), "PartitionName")}
    assert set(parts) == set(mini8.queues)
    assert parts["release"]["PriorityTier"] == "10" and parts["release"]["PreemptMode"] == "OFF"
    assert parts["explore"]["PriorityTier"] == "1" and parts["explore"]["PreemptMode"] == "REQUEUE"
    assert parts["release"]["MaxTime"] == "2-00:00:00" and parts["release"]["DefaultTime"] == "04:00:00"
    assert parts["debug"]["MaxTime"] == "01:00:00" and parts["debug"]["DefaultTime"] == "00:30:00"
    assert [p for p, v in parts.items() if v["Default"] == "YES"] == ["explore"]
    assert all(v["Nodes"] == "ALL" and v["State"] == "UP" for v in parts.values())


def test_global_settings_the_mini_cluster_depends_on(mini8):
    conf = dict(line.split("=", 1) for line in render_slurm_conf(mini8).splitlines()
                if "=" in line and not line.startswith(("#", "NodeName", "PartitionName")))
    expected = {
        "MessageTimeout": "100", "SlurmdParameters": "config_overrides", "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none", "SelectType": "select/cons_tres", "SchedulerType": "sched/backfill",
        "TopologyPlugin": "topology/tree", "PreemptType": "preempt/partition_prio", "PreemptMode": "REQUEUE",
        "JobRequeue": "1", "GresTypes": "gpu", "ClusterName": "mini8", "MailProg": "/bin/true",
    }
    assert {k: conf.get(k) for k in expected} == expected
    assert conf["DefMemPerCPU"] == str(64 * 1024 // 16)


def test_io_parameters_are_arguments(mini8):
    addrs = {n.name: f"10.0.0.{i + 2}" for i, n in enumerate(mini8.nodes)}
    text = render_slurm_conf(mini8, controller="ctl", controller_addr="10.0.0.1", node_addrs=addrs,
                             slurmctld_port=7000, state_dir="/x/state", extra_lines=("PrologFlags=Alloc",))
    assert "SlurmctldHost=ctl(10.0.0.1)\n" in text and "SlurmctldPort=7000\n" in text
    assert "StateSaveLocation=/x/state\n" in text and "PrologFlags=Alloc\n" in text
    nodes = lines_starting(text, "NodeName")
    assert {n["NodeName"]: n["NodeAddr"] for n in nodes} == addrs
    assert "SlurmctldHost=slurmctld\n" in render_slurm_conf(mini8)  # the default: no address


def test_topology_leaves_then_spines(mini8):
    lines = render_topology_conf(mini8).splitlines()[1:]
    assert lines == ["SwitchName=leaf1 Nodes=node[1-4]", "SwitchName=leaf2 Nodes=node[5-8]",
                     "SwitchName=spine1 Switches=leaf[1-2]"]


def test_gres_lists_one_device_file_per_gpu(mini8):
    lines = render_gres_conf(mini8).splitlines()[1:]
    assert lines == ["NodeName=node[1-8] Name=gpu File=/dev/nvidia[0-7]"]
    assert render_gres_conf(mini8, gpu_device_prefix="/tmp/fake/gpu").splitlines()[1].endswith(
        "File=/tmp/fake/gpu[0-7]")


MIXED = """
[cluster]
name = "Mixed-Site"
[[nodes]]
names = "gpu[1-2]"
gpus = 4
cpus = 8
memory_gb = 32
[[nodes]]
names = "cpu1"
gpus = 0
cpus = 4
memory_gb = 8
[[nodes]]
names = "big1"
gpus = 1
cpus = 8
memory_gb = 64
[switches.l1]
nodes = "gpu[1-2]"
[switches.l2]
nodes = "cpu1,big1"
[switches.s1]
switches = "l1"
[switches.s2]
switches = "l2"
[switches.core]
switches = "s[1-2]"
[queues.forever]
tier = 3
[queues.short]
tier = 0
preemptible = true
max_time = "10"
default_time = "5"
"""


def test_mixed_nodes_queue_defaults_and_a_deeper_tree():
    cfg = parse_config_text(MIXED)
    files = render_all(cfg)
    assert set(files) == {"slurm.conf", "topology.conf", "gres.conf"}
    conf = files["slurm.conf"]
    assert "ClusterName=mixed_site\n" in conf
    nodes = {n["NodeName"]: n for n in lines_starting(conf, "NodeName")}
    assert nodes["gpu[1-2]"]["Gres"] == "gpu:4" and "Gres" not in nodes["cpu1"] and nodes["big1"]["Gres"] == "gpu:1"
    # the smallest memory per CPU (cpu1: 8 GB / 4) so that a job without --mem never takes a whole node
    assert re.search(r"^DefMemPerCPU=2048$", conf, re.M)
    parts = {p["PartitionName"]: p for p in lines_starting(conf, "PartitionName")}
    assert parts["forever"]["MaxTime"] == "UNLIMITED" and parts["forever"]["DefaultTime"] == "01:00:00"
    assert parts["short"]["MaxTime"] == "00:10:00" and parts["short"]["Default"] == "YES"  # lowest tier
    topo = files["topology.conf"].splitlines()[1:]
    assert topo[:2] == ["SwitchName=l1 Nodes=gpu[1-2]", "SwitchName=l2 Nodes=cpu1,big1"]
    assert set(topo[2:]) == {"SwitchName=s1 Switches=l1", "SwitchName=s2 Switches=l2",
                             "SwitchName=core Switches=s[1-2]"}
    assert files["gres.conf"].splitlines()[1:] == ["NodeName=gpu[1-2] Name=gpu File=/dev/nvidia[0-3]",
                                                   "NodeName=big1 Name=gpu File=/dev/nvidia0"]


def test_rendering_is_pure_and_deterministic(mini8):
    assert render_all(mini8) == render_all(load_config(MINI8))


def test_every_example_cluster_renders():
    examples = Path(__file__).resolve().parent.parent / "sched" / "examples"
    for toml in sorted(examples.glob("*.toml")):
        cfg = load_config(toml)
        files = render_all(cfg)
        named = [n for line in lines_starting(files["slurm.conf"], "NodeName") for n in expand(line["NodeName"])]
        assert sorted(named) == sorted(n.name for n in cfg.nodes), toml.name
        in_leaves = [n for line in files["topology.conf"].splitlines() if " Nodes=" in line
                     for n in expand(kv(line)["Nodes"])]
        assert sorted(in_leaves) == sorted(named), toml.name


def test_controller_mode_conf(mini8):
    from adsched.slurm.render import PluginSettings

    conf = render_slurm_conf(mini8, plugin=PluginSettings(controller=True))
    pairs = dict(line.split("=", 1) for line in conf.splitlines() if "=" in line and not line.startswith(
        ("#", "NodeName", "PartitionName")))
    assert pairs["PreemptType"] == "preempt/none" and pairs["JobSubmitPlugins"] == "lua"
    assert pairs["SchedulerParameters"] == "batch_sched_delay=0,disable_job_shrink,max_switch_wait=0"
    longest_grace = max(q.grace_period for q in mini8.queues.values())
    assert int(pairs["MinJobAge"]) > longest_grace
    assert {p["PreemptMode"] for p in lines_starting(conf, "PartitionName")} == {"OFF"}
