"""The session-wide Slurm mini-cluster (tests/clusters/mini8.toml: node[1-8], 2 leaves x 4 nodes x 8 GPUs).

    @pytest.mark.slurm
    def test_something(minicluster):
        r = minicluster.exec("srun -N2 hostname", timeout=30)   # runs in the controller container
        assert r.rc == 0, r.stderr

`minicluster` is an adsched.testbed.minicluster.MiniCluster: .nodes, .leaf_of(node), .exec(cmd, timeout=, user=),
.jobs_dir (host side of /jobs, shared by every container and the default working dir), .logs(), .config.
The cluster runs in controller mode: job_submit.lua holds every job and `adsched slurm controller` (a real process
in the controller container, `minicluster.controller_pid`) decides what starts where; tests may kill and restart it.
No skipping: when the engine or the image cannot be had the fixture fails, loudly. Its teardown checks
that nothing labelled is left behind and that the host's forwarding/firewall settings did not change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adsched.testbed.minicluster import MiniCluster, host_network_state

from test_gpu_health import eight_gpu_node

MINI8 = Path(__file__).resolve().parent.parent / "clusters" / "mini8.toml"


@pytest.fixture(scope="session")
def minicluster(tmp_path_factory):
    before = host_network_state()
    # Every node's prolog checks "its" GPUs: the real H200 nvidia-smi -q -x output cloned to 8 GPUs.
    mc = MiniCluster(MINI8, f"adsched-test-{os.getpid()}", state_dir=tmp_path_factory.mktemp("minicluster"),
                     node_timeout=90, nvidia_smi_xml=eight_gpu_node(), controller_mode=True)
    mc.up()  # MiniClusterError (no engine, no image, a node that never registers) fails the tests loudly
    try:
        mc.controller_pid = mc.start_controller("--interval", "0.5")
        yield mc
    finally:
        print(mc.controller_log()[-3000:])  # shown with -s or on a failure's captured output
        mc.down()
    left = mc.leftovers()
    assert not left, f"mini-cluster teardown left {left}"
    assert host_network_state() == before, "the host's forwarding/iptables settings changed"
