"""The dockerized Slurm 22.05 mini-cluster itself: nodes, topology, GPUs, failure reporting, CLI, teardown."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from adsched.core.hostlist import expand
from adsched.testbed.minicluster import MiniCluster, MiniClusterError

pytestmark = pytest.mark.slurm


def run(mc, cmd, timeout=30):
    r = mc.exec(cmd, timeout=timeout)
    assert r.rc == 0, f"{cmd!r} -> rc {r.rc}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


def test_srun_on_every_node_prints_its_name(minicluster):
    names = run(minicluster, "srun -N 8 hostname").split()
    assert len(names) == 8
    assert sorted(names) == sorted(minicluster.nodes)


def test_switches_one_keeps_a_job_inside_one_leaf(minicluster):
    """Controller mode: --switches=1 becomes the job's max_leaves=1 (job_submit.lua), which the core honours."""
    mc = minicluster
    deadline = time.monotonic() + 60
    while run(mc, "squeue -h -o %i").strip():  # the previous tests' jobs gone (completing ones hold nodes)
        assert time.monotonic() < deadline, "jobs of earlier tests still there"
        time.sleep(0.5)
    # Three whole nodes: the core keeps them in one leaf (fewest leaves), which then has one free node.
    jobid = run(mc, "sbatch --parsable -N 3 --gres=gpu:8 --wrap 'sleep 120'").strip()
    try:
        deadline = time.monotonic() + 30
        while (out := run(mc, f"squeue -h -j {jobid} -o '%T %N'").split())[0] != "RUNNING":
            assert time.monotonic() < deadline, "the job holding the nodes never started"
            time.sleep(0.2)
        held = expand(out[1])
        assert len({mc.leaf_of(n) for n in held}) == 1
        # A spanning pair (the blocker's leaf's last node + one more) would fit too; max_leaves=1 forbids it.
        names = run(mc, "srun -N 2 --gres=gpu:8 --switches=1@0:20 hostname", timeout=60).split()
    finally:
        mc.exec(f"scancel {jobid}", timeout=10)
    assert len(set(names)) == 2
    leaves = {mc.leaf_of(n) for n in names}
    assert len(leaves) == 1 and mc.leaf_of(held[0]) not in leaves, f"{names} span leaves {leaves}"


def test_eight_gpus_on_a_node(minicluster):
    out = run(minicluster, "srun -N 1 --gres=gpu:8 bash -c 'echo $CUDA_VISIBLE_DEVICES; ls /dev/nvidia*'")
    visible, *devices = out.split()
    assert len(visible.split(",")) == 8
    assert len(set(visible.split(","))) == 8
    assert len(devices) == 8


def test_jobs_run_as_the_non_root_test_user(minicluster):
    r = minicluster.exec("srun -N 2 bash -c 'echo $(id -un) $SLURM_JOB_USER'", timeout=30, user="tester")
    assert r.rc == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["tester tester", "tester tester"]


def test_job_output_lands_in_the_shared_dir(minicluster):
    mc = minicluster
    jobid = run(mc, "sbatch --parsable -N1 -o out-%j.txt --wrap 'echo hello from $SLURMD_NODENAME'").strip()
    deadline = time.monotonic() + 30
    out = mc.jobs_dir / f"out-{jobid}.txt"
    while not (out.exists() and out.read_text().strip()):
        assert time.monotonic() < deadline, f"no output from job {jobid}"
        time.sleep(0.2)
    word, _, node = out.read_text().strip().rpartition(" ")
    assert word == "hello from" and node in mc.nodes


def test_a_node_that_never_registers_is_named_in_a_bounded_time(minicluster, tmp_path):
    """A separate 2-node cluster whose node b2 never starts slurmd (so it never registers)."""
    toml = tmp_path / "two.toml"
    toml.write_text('[cluster]\nname = "two"\n[[nodes]]\nnames = "b[1-2]"\ngpus = 1\ncpus = 2\nmemory_gb = 2\n'
                    '[queues.q]\ntier = 1\n')

    class Broken(MiniCluster):
        def command(self, member):
            if member == "b2":
                return ["bash", "-c", "echo 'b2: slurmd left out on purpose by the test' >&2; exec sleep infinity"]
            return super().command(member)

    mc = Broken(toml, f"{minicluster.name}-broken", state_dir=tmp_path / "state", node_timeout=6,
                engine=minicluster.engine)
    t0 = time.monotonic()
    with pytest.raises(MiniClusterError) as err:
        mc.up()
    elapsed = time.monotonic() - t0
    msg = str(err.value)
    assert elapsed < 45, f"took {elapsed:.0f} s"
    assert "b2 not idle after 6 s" in msg
    assert "b1" not in msg.splitlines()[0]
    assert "slurmd left out on purpose" in msg  # the last lines of b2's log
    assert mc.leftovers() == []  # up() tore down what it had created
    assert not (tmp_path / "state" / f"{mc.name}.json").exists()


def _cli(*args, timeout=60):
    code = "from adsched.cli.minicluster import minicluster; minicluster()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd="/")


def test_cli_works_from_another_process(minicluster):
    where = ["--name", minicluster.name, "--state-dir", str(minicluster.state_dir)]
    r = _cli("status", "--json", *where)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["nodes"] == {n: "idle" for n in minicluster.nodes}
    assert info["containers"]["slurmctld"] == "running"
    r = _cli("exec", *where, "--", "srun", "-N", "2", "hostname")
    assert r.returncode == 0, r.stderr
    assert len(set(r.stdout.split())) == 2
    r = _cli("exec", *where, "--timeout", "1", "--", "sleep", "10")
    assert r.returncode == 124 and "timed out" in r.stderr


def test_cli_errors_are_one_clear_line(tmp_path):
    r = _cli("status", "--name", "nope", "--state-dir", str(tmp_path))
    assert r.returncode == 1
    assert "no mini-cluster 'nope' is up" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("down", "--state-dir", str(tmp_path))
    assert r.returncode == 1 and "no mini-cluster is up" in r.stderr and "Traceback" not in r.stderr

