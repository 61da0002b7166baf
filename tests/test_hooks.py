"""Slurm hooks run as Slurm runs them: a process with SLURM_* env, exit status as the verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adsched.standalone.store import Store

from test_gpu_health import eight_gpu_node, set_text

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "sched" / "examples" / "demo.toml"


@pytest.fixture
def hooks(tmp_path):
    store = tmp_path / "store"
    Store.init(store, CLUSTER.read_text())
    xml = tmp_path / "nvsmi.xml"
    xml.write_text(eight_gpu_node())
    conf = tmp_path / "hooks.toml"
    conf.write_text(f'cluster = "{CLUSTER}"\nstore = "{store}"\nnvidia_smi_xml = "{xml}"\n'
                    f'hints_dir = "{tmp_path / "hints"}"\n')
    return tmp_path, conf, xml, store


def run_hook(kind, conf, **env):
    full = {"PATH": os.environ["PATH"], **env}
    return subprocess.run([sys.executable, "-m", "adsched.cli.adsched", "hook", kind, "--config", str(conf)],
                          env=full, capture_output=True, text=True, timeout=60)


def test_prolog_healthy_node_writes_topology_hints(hooks):
    tmp, conf, _, _ = hooks
    r = run_hook("prolog", conf, SLURM_JOB_ID="42", SLURMD_NODENAME="node05", SLURM_NODELIST="node[05,01-02]")
    assert r.returncode == 0, r.stderr
    hints = json.loads((tmp / "hints" / "job-42.json").read_text())
    assert hints["leaf_of"] == {"node05": "leaf2", "node01": "leaf1", "node02": "leaf1"}
    assert hints["rank_order"] == ["node01", "node02", "node05"] and hints["leaves"] == ["leaf1", "leaf2"]


def test_prolog_uncorrectable_ecc_fails_closed(hooks):
    _, conf, xml, _ = hooks
    xml.write_text(eight_gpu_node(set_text("ecc_errors/volatile/dram_uncorrectable", "4")))
    r = run_hook("prolog", conf, SLURM_JOB_ID="7", SLURMD_NODENAME="node01", SLURM_NODELIST="node01")
    assert r.returncode == 1
    assert "node01: GPU health check failed: GPU 3 (00000000:13:00.0): 4 uncorrectable ECC" in r.stderr


def fake_scontrol(tmp, rc=0):
    """An scontrol on PATH that records its arguments, one per line (the real one: tests/slurm/)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp / "scontrol.args"}\n'
                      f'[ {rc} = 0 ] || echo "slurm_update error: Invalid node name specified" >&2\nexit {rc}\n')
    script.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


@pytest.mark.parametrize("node,rc,want_args,want_in_stderr", [
    # The real reason, as one line, on the node that ran the prolog (issue 16).
    ("node01", 0, ["update", "NodeName=node01", "State=DRAIN",
                   "Reason=Prolog error (job 7): node01: GPU health check failed: GPU 3 (00000000:13:00.0): 4 uncorrectable "
                   "ECC error(s) since driver load"], "GPU health check failed"),
    ("node01", 1, ["update", "NodeName=node01", "State=DRAIN"], "node not drained by the prolog: slurm_update error"),
    ("evil", 0, None, "is not a node of cluster"),  # a name the cluster does not have is never sent to Slurm
])
def test_failed_prolog_drains_its_node_with_the_real_reason(hooks, node, rc, want_args, want_in_stderr):
    tmp, conf, xml, store = hooks
    xml.write_text(eight_gpu_node(set_text("ecc_errors/volatile/dram_uncorrectable", "4")))
    r = run_hook("prolog", conf, SLURM_JOB_ID="7", SLURMD_NODENAME=node, SLURM_NODELIST="node01",
                 PATH=fake_scontrol(tmp, rc))
    assert r.returncode == 1 and want_in_stderr in r.stderr, r.stderr
    sent = (tmp / "scontrol.args").read_text().splitlines() if (tmp / "scontrol.args").exists() else None
    if want_args is None:
        assert sent is None
    else:
        assert sent[:len(want_args)] == want_args, sent
    failed = [e["data"] for e in Store(store).events(7) if e["kind"] == "prolog_failed"]
    assert failed and failed[0]["node"] == node


@pytest.mark.parametrize("env,msg", [
    (dict(SLURM_JOB_ID="7; rm -rf /", SLURMD_NODENAME="node01", SLURM_NODELIST="node01"), "not a job id"),
    (dict(SLURM_JOB_ID="7", SLURMD_NODENAME="evil", SLURM_NODELIST="node01"), "is not a node of cluster"),
    (dict(SLURM_JOB_ID="7", SLURMD_NODENAME="node01", SLURM_NODELIST="node[01-"), "SLURM_NODELIST"),
])
def test_prolog_distrusts_its_env(hooks, env, msg):
    _, conf, _, _ = hooks
    r = run_hook("prolog", conf, **env)
    assert r.returncode == 1 and msg in r.stderr


def test_prolog_slurmctld_checks_max_leaves_and_records(hooks):
    _, conf, _, store = hooks
    ok = run_hook("prolog-slurmctld", conf, SLURM_JOB_ID="9", SLURM_JOB_NODELIST="node[01-03]",
                  SLURM_JOB_COMMENT="adsched:queue=train;tier=5;max_leaves=1")
    assert ok.returncode == 0, ok.stderr
    bad = run_hook("prolog-slurmctld", conf, SLURM_JOB_ID="10", SLURM_JOB_NODELIST="node[04-05]",
                   SLURM_JOB_COMMENT="adsched:queue=train;tier=5;max_leaves=1")
    assert bad.returncode == 1 and "spans 2 leaves ['leaf1', 'leaf2'] > max_leaves 1" in bad.stderr
    end = run_hook("epilog", conf, SLURM_JOB_ID="9", SLURMD_NODENAME="node01")
    assert end.returncode == 0
    events = [(e["job_id"], e["kind"]) for e in Store(store).events() if e["kind"].startswith("slurm")]
    assert events == [(9, "slurm_start"), (9, "slurm_end")]


def test_epilog_with_a_broken_store_still_succeeds(hooks, tmp_path):
    _, conf, _, _ = hooks
    conf.write_text(conf.read_text().replace(f'store = "{tmp_path / "store"}"', f'store = "{tmp_path / "nowhere"}"'))
    r = run_hook("epilog", conf, SLURM_JOB_ID="9", SLURMD_NODENAME="node01")
    assert r.returncode == 0 and "event not recorded" in r.stderr
