"""Slurm hybrid on the real Slurm 22.05 mini-cluster: job_submit.lua, the hooks, adsub on Slurm.

The cluster runs in controller mode (tests/slurm/conftest.py): where a test needs jobs kept off some nodes it
drains them (users may not pick nodes: adsched does). Every test leaves the shared cluster as it found it: its
jobs cancelled, its nodes resumed.
"""

from __future__ import annotations

import json
import time

import pytest

from adsched.slurm.client import SlurmClient
from adsched.standalone.store import Store

from helpers import wait_for
from test_gpu_health import eight_gpu_node, set_text

pytestmark = pytest.mark.slurm
STATE = "/jobs/adsched-state"


def client(mc) -> SlurmClient:
    def runner(argv, stdin, timeout):
        assert stdin is None, "scripts go through adsub inside the cluster"
        try:
            r = mc.exec(argv, timeout=timeout)
        except ValueError:  # docker-py misreads a multiplexed frame under heavy load ("97 is not a valid stream")
            if argv[0] not in ("squeue", "sinfo"):  # only a read is safe to send again
                raise
            r = mc.exec(argv, timeout=timeout)
        return r.rc, r.stdout, r.stderr

    return SlurmClient(runner)


def adsub(mc, *args, timeout=60):
    return mc.exec(["adsub", *args[:1], "--state", STATE, *args[1:]], timeout=timeout)


def until(pred, timeout=60.0, what="condition"):
    return wait_for(pred, timeout=timeout, step=0.5, what=what)


def sbatch(mc, *args) -> int:
    r = mc.exec(["sbatch", "--parsable", *args], timeout=30)
    assert r.rc == 0, r.stderr
    return int(r.stdout.strip().split(";")[0])


def drain(mc, nodes, reason="test"):
    r = mc.exec(["scontrol", "update", f"nodename={','.join(nodes)}", "state=drain", f"reason={reason}"], timeout=30)
    assert r.rc == 0, r.stderr


def resume_all(mc):
    mc.exec("scontrol update nodename=node[1-8] state=resume 2>/dev/null; true", timeout=30)
    until(lambda: all("drain" not in n.state and n.state != "down" for n in client(mc).nodes()), what="nodes resumed")


def cancel_all(mc):
    mc.exec("scancel --full $(squeue -h -o %i) 2>/dev/null; true", timeout=30)
    until(lambda: not client(mc).jobs() or all(j.state not in ("RUNNING", "PENDING", "COMPLETING")
                                               for j in client(mc).jobs()), what="jobs gone")


@pytest.fixture
def slurm(minicluster):
    cancel_all(minicluster)
    yield minicluster
    cancel_all(minicluster)


@pytest.mark.parametrize("args,message", [
    (["-p", "nope"], "adsched: unknown queue 'nope'"),
    (["-p", "debug", "-t", "120"], "adsched: time limit 120 min exceeds queue debug max of 60 min"),
    (["-N", "2", "--gres=gpu:4"], "adsched: a multi-node GPU job takes whole nodes: ask --gres=gpu:8"),
    (["-p", "debug", "-N", "2", "--gres=gpu:8"], "adsched: 16 GPUs exceed queue debug limit of 8 per job"),
    (["-N", "5", "--gres=gpu:8", "--comment=adsched:max_leaves=1"],  # issue 16: never fits, so refused at submit
     "adsched: 5 nodes can never fit within 1 leaf(s): the largest hold 4 nodes"),
])
def test_job_submit_lua_rejects_at_the_prompt(slurm, args, message):
    r = slurm.exec(["sbatch", *args, "--wrap", "true"], timeout=30)
    assert r.rc == 1
    assert f"sbatch: error: {message}" in r.stderr


def test_job_submit_lua_applies_queue_defaults(slurm):
    job_id = sbatch(slurm, "--hold", "--wrap", "true")  # no partition, no time limit
    job = client(slurm).job(job_id)
    assert job.partition == "explore" and job.time_limit == 2 * 3600
    assert job.comment == "adsched:queue=explore;tier=1;max_leaves="


def test_adsub_on_slurm_max_leaves_1_waits_for_a_leaf_then_runs_inside_it(slurm):
    # Leaf1 and leaf2 each have 2 nodes up: 4 in all, but no leaf has 3.
    drain(slurm, ["node1", "node2", "node5", "node6"])
    try:
        r = adsub(slurm, "submit", "-N", "3", "-q", "train", "--max-leaves", "1", "-J", "gang3", "--json",
                  "--", "sleep", "2")
        assert r.rc == 0, r.stderr
        gang = json.loads(r.stdout)["job_id"]
        # The core's reason reaches adsub queue (not Slurm's JobHeldUser).
        mine = until(lambda: (m := next(j for j in json.loads(adsub(slurm, "queue", "--json").stdout)
                                        if j["id"] == gang)) and m["reason"].startswith("Topology") and m,
                     what="the core's pending reason")
        assert mine["state"] == "PENDING" and mine["max_leaves"] == 1 and mine["num_nodes"] == 3
        assert mine["reason"] == "Topology: needs 3 nodes within 1 leaf; best leaf leaf1 has 2 free", mine["reason"]
        slurm.exec(["scontrol", "update", "nodename=node5", "state=resume"], timeout=30)  # leaf2 now has 3
        job = until(lambda: (j := client(slurm).job(gang)) and j.state in ("RUNNING", "COMPLETED") and j,
                    what="gang started")
    finally:
        resume_all(slurm)
    assert sorted(job.nodes) == ["node5", "node7", "node8"]
    assert {slurm.leaf_of(n) for n in job.nodes} == {"leaf2"}
    starts = until(lambda: [e for e in Store(slurm.store_dir).events(gang) if e["kind"] == "slurm_start"],
                   what="start event")
    assert starts[0]["data"]["leaves"] == ["leaf2"]


def test_adsub_on_slurm_queue_show_cancel_and_bad_input(slurm):
    r = adsub(slurm, "submit", "-N", "2", "-q", "explore", "--", "sleep", "300")
    assert r.rc == 0 and r.stdout.startswith("Submitted job "), r.stderr
    job_id = int(r.stdout.split()[-1])
    until(lambda: client(slurm).job(job_id).state == "RUNNING", what="running")
    table = adsub(slurm, "queue").stdout.splitlines()
    assert table[0].split() == ["JOBID", "QUEUE", "NAME", "USER", "ST", "TIME", "NODES", "GPUS", "NODELIST(REASON)"]
    row = next(line.split() for line in table[1:] if line.split()[0] == str(job_id))
    assert row[1] == "explore" and row[4] == "R" and row[6:8] == ["2", "16"]
    shown = json.loads(adsub(slurm, "show", str(job_id), "--json").stdout)
    kinds = [e["kind"] for e in shown["events"]]
    assert shown["state"] == "RUNNING" and kinds[0] == "start" and "slurm_start" in kinds, kinds
    r = adsub(slurm, "cancel", str(job_id))
    assert r.rc == 0 and f"job {job_id}: CANCELLING" in r.stdout
    until(lambda: client(slurm).job(job_id) is None or client(slurm).job(job_id).state == "CANCELLED",
          what="cancelled")
    never = adsub(slurm, "submit", "-N", "5", "--max-leaves", "1", "--", "true")  # refused before sbatch
    assert never.rc == 2 and "within 1 leaf" in never.stderr and "Traceback" not in never.stderr, never.stderr
    bad = adsub(slurm, "submit", "-q", "nope", "--", "true")
    assert bad.rc == 2 and "unknown queue 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_prolog_fails_closed_on_uncorrectable_ecc_drains_the_node_with_the_real_reason(slurm):
    """Plain hybrid mode (no controller): the prolog itself drains its node with the real reason before it
    exits 1, and slurmctld keeps it (it drains "Prolog error" only a node not drained yet)."""
    xml = slurm.node_dir("node4") / "nvidia-smi.xml"
    xml.write_text(eight_gpu_node(set_text("ecc_errors/volatile/dram_uncorrectable", "3")))
    drain(slurm, [n for n in slurm.nodes if n != "node4"])  # only node4 can run it
    slurm.signal_controller(slurm.controller_pid, "KILL")  # nobody copies a reason from the store now
    try:
        job_id = sbatch(slurm, "--gres=gpu:8", "--wrap", "true")
        r = slurm.exec(["scontrol", "release", str(job_id)], timeout=30)  # held by job_submit.lua: Slurm decides
        assert r.rc == 0, r.stderr
        node = until(lambda: next((n for n in client(slurm).nodes() if n.name == "node4" and "drain" in n.state), None),
                     what="node4 drained")
        want = f"Prolog error (job {job_id}): node4: GPU health check failed: GPU 3 (00000000:"
        assert node.reason.startswith(want) and "3 uncorrectable ECC error(s)" in node.reason, node.reason
        shown = slurm.exec(["scontrol", "show", "node", "node4"], timeout=30).stdout
        assert f"Reason={want}" in shown, shown
        job = until(lambda: (j := client(slurm).job(job_id)) and j.restart_count >= 1 and j.state == "PENDING" and j,
                    what="job requeued")
        assert job.priority == 0  # requeued held: it waits for a release (documented)
        # ... and adsub show lists the failure (the hook recorded it in the store; root reads it).
        shown = json.loads(adsub(slurm, "show", str(job_id), "--json").stdout)
        failed = [e for e in shown["events"] if e["kind"] == "prolog_failed"]
        assert failed and "3 uncorrectable ECC error(s)" in failed[0]["data"]["reason"], shown["events"]
        assert failed[0]["data"]["node"] == "node4"
        text = adsub(slurm, "show", str(job_id)).stdout
        assert "prolog_failed" in text and "GPU health check failed: GPU 3" in text, text
        # Anyone (here `nobody`, who cannot read the store) sees why, from Slurm alone: the job's state and the
        # node reason that names it.
        public = slurm.exec(["adsub", "show", "--state", STATE, str(job_id)], user="nobody", timeout=60)
        reason = next(line for line in public.stdout.splitlines() if line.strip().startswith("Reason:"))
        assert reason.split(": ", 1)[1].startswith("launch failed requeued held: node4: GPU health check failed: "
                                                   "GPU 3"), public.stdout + public.stderr
        log = slurm.logs(tail=200)["node4"]  # slurmd logs the failing prolog's output
        assert "prolog failed: rc:1 output:adsched prolog: node4: GPU health check failed: GPU 3" in log
        assert "3 uncorrectable ECC error(s) since driver load" in log
        assert "node not drained by the prolog" not in log
    finally:
        xml.write_text(eight_gpu_node())
        slurm.controller_pid = slurm.start_controller("--interval", "0.5")
        resume_all(slurm)


def test_hooks_record_start_and_end_in_the_store(slurm):
    job_id = sbatch(slurm, "-N", "2", "--gres=gpu:8", "--wrap", "true")
    events = until(lambda: (ev := [e for e in Store(slurm.store_dir).events(job_id) if e["kind"].startswith("slurm_")])
                   and sum(e["kind"] == "slurm_end" for e in ev) == 2 and ev, what="end events")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "slurm_start" and kinds.count("slurm_end") == 2
    assert sorted(e["data"]["node"] for e in events if e["kind"] == "slurm_end") == sorted(events[0]["data"]["nodes"])
