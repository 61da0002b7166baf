"""A node that dies mid-run (issue 13): its sshd and everything it started are killed while a
3-node gang runs. The daemon drains the node, stops the gang's other ranks and requeues the
gang whole; after `adsched nodes resume` (and its sshd back) the gang runs again and completes.

Each node is a real OpenSSH sshd on its own loopback address (127.0.0.2-4), one port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from adsched.standalone.daemon import Daemon
from adsched.standalone.executors.ssh import SSHExecutor, SSHSettings
from adsched.standalone.store import JobRequest, Store

from helpers import wait_for
from test_ssh_executor import SSHD

pytestmark = pytest.mark.ssh
HOSTS = {"n1": "127.0.0.2", "n2": "127.0.0.3", "n3": "127.0.0.4"}

CLUSTER = """
[cluster]
name = "nodes"
[[nodes]]
names = "n[1-3]"
addresses = "127.0.0.[2-4]"
gpus = 8
[queues.work]
tier = 1
[standalone]
executor = "ssh"
"""

# A rank: writes "pid rank restart" to the log; the first run sleeps, a requeued one ends at once.
RANK = ("import os, time; e = os.environ; open(e['LOG'], 'a').write(f\"{os.getpid()} {e['NODE_RANK']} "
        "{e['ADSCHED_RESTART_COUNT']}\\n\"); time.sleep(60 if e['ADSCHED_RESTART_COUNT'] == '0' else 0)")


class Node:
    """One sshd on its own address: the node's SSH, which the test can kill and bring back."""

    def __init__(self, d, address: str, port: int):
        self.address, self.port, self.d = address, port, d
        self.config = d / f"sshd_{address}"
        self.config.write_text(
            f"Port {port}\nListenAddress {address}\nHostKey {d}/host_key\nPidFile {d}/sshd_{address}.pid\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
            f"SetEnv PATH={os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin\n")
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_for(lambda: _connects(self.address, self.port), timeout=10, step=0.05, what=f"sshd on {self.address}")

    def die(self) -> None:
        """The machine goes: its sshd and every session it serves (each a process of its own session)."""
        for pid in [self.proc.pid, *_descendants(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


def _descendants(root: int) -> list[int]:
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent[int(entry)] = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [], [root]
    while frontier:
        kids = [pid for pid, ppid in parent.items() if ppid in frontier]
        found += kids
        frontier = kids
    return found


def _connects(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def nodes(tmp_path):
    if not os.path.exists(SSHD):
        pytest.fail("OpenSSH sshd is not installed (apt-get install openssh-server; .ci/run does this)")
    d = tmp_path / "ssh"
    d.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    os.makedirs("/run/sshd", exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = " ".join((d / "host_key.pub").read_text().split()[:2])
    (d / "known_hosts").write_text("".join(f"[{a}]:{port} {key}\n" for a in HOSTS.values()))
    made = {name: Node(d, a, port) for name, a in HOSTS.items()}
    for n in made.values():
        n.start()
    settings = SSHSettings(user="root", port=port, key_file=str(d / "client_key"), python=sys.executable,
                           known_hosts=str(d / "known_hosts"), connect_timeout=3)
    yield made, settings
    for n in made.values():
        if n.proc and n.proc.poll() is None:
            n.die()


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_dead_node_is_drained_its_gang_requeued_whole_and_resume_brings_it_back(tmp_path, nodes):
    made, settings = nodes
    state, log = tmp_path / "state", tmp_path / "ranks.log"
    store = Store.init(state, CLUSTER)
    job_id = store.submit(JobRequest([sys.executable, "-c", RANK], nodes=3, env={"LOG": str(log)}, user="root",
                                     workdir=str(tmp_path)), time.time())
    daemon = Daemon(store, SSHExecutor(state, HOSTS, settings), kill_wait=1.0)
    wait_for(lambda: daemon.cycle() and log.exists() and len(log.read_text().splitlines()) == 3, timeout=60,
             what="three ranks running")
    ranks = {int(r): int(pid) for pid, r, _ in (line.split() for line in log.read_text().splitlines())}
    n2_rank = next(a["rank"] for a in store.job(job_id).allocations if a["node"] == "n2")
    # n2 dies. Its rank was started through its sshd (setsid: a session of its own), so it goes separately.
    made["n2"].die()
    os.kill(ranks[n2_rank], signal.SIGKILL)

    wait_for(lambda: daemon.cycle() and store.job(job_id).state == "PENDING", timeout=60, what="the gang requeued")
    n2 = next(n for n in store.nodes() if n["name"] == "n2")
    assert n2["state"].startswith("drain") and "not responding" in n2["reason"], n2
    assert store.events(job_id)[-1]["data"]["reason"] == "node n2 stopped responding"
    assert not [r for r, pid in ranks.items() if _alive(pid)]  # the other ranks were stopped
    daemon.cycle()
    assert store.job(job_id).state == "PENDING"  # a 3-node gang has 2 nodes left: it waits

    made["n2"].start()  # the machine is back; an admin returns it to service
    r = subprocess.run([sys.executable, "-m", "adsched.cli.adsched", "nodes", "resume", "n2", "--state", str(state)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: daemon.cycle() and store.job(job_id).state == "COMPLETED", timeout=60, what="the gang completed")
    second = [line.split() for line in log.read_text().splitlines()[3:]]
    assert sorted((rank, restart) for _, rank, restart in second) == [("0", "1"), ("1", "1"), ("2", "1")]
    daemon.executor.close()
