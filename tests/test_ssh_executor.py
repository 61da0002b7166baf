"""The SSH executor against a real OpenSSH sshd on loopback (installed by .ci/run)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace

import paramiko
import pytest

from adsched.standalone.daemon import Daemon
from adsched.standalone.executors.ssh import SSHExecutor, SSHSettings
from adsched.standalone.store import JobRequest, Store

from helpers import py
from test_e2e_local import SMALL

SSHD = "/usr/sbin/sshd"
pytestmark = pytest.mark.ssh


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not os.path.exists(SSHD):
        pytest.fail("OpenSSH sshd is not installed (apt-get install openssh-server; .ci/run does this)")
    d = tmp_path_factory.mktemp("sshd")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client_key")], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    os.chmod(d / "authorized_keys", 0o600)
    os.makedirs("/run/sshd", exist_ok=True)
    port = _free_port()
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n"
        f"SetEnv PATH={os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin\n"
    )
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=open(d / "sshd.log", "w"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()}")
    # The node's host key, as an admin would record it (host keys are verified by default).
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text().split()[0]} "
                                   f"{(d / 'host_key.pub').read_text().split()[1]}\n")
    yield SSHSettings(user=os.environ.get("USER", "root") if os.getuid() else "root", port=port,
                      key_file=str(d / "client_key"), python=sys.executable, known_hosts=str(d / "known_hosts"))
    proc.terminate()
    proc.wait(timeout=10)


def make(tmp_path, sshd):
    store = Store.init(tmp_path, SMALL)
    addresses = {n.name: "127.0.0.1" for n in store.config.nodes}
    return store, SSHExecutor(tmp_path, addresses, sshd)


def test_gang_runs_over_ssh(tmp_path, sshd):
    store, ex = make(tmp_path, sshd)
    code = "import os; print(os.environ['NODE_RANK'], os.environ['CUDA_VISIBLE_DEVICES'], os.environ['MASTER_ADDR'])"
    job_id = store.submit(JobRequest(py(code), nodes=2, gpus_per_node=2, workdir=str(tmp_path)), time.time())
    Daemon(store, ex).run(until_idle=True, max_seconds=60)
    job = store.job(job_id)
    assert (job.state, job.exit_code) == ("COMPLETED", 0), job.reason
    outs = sorted((tmp_path / "jobs" / str(job_id) / f"rank-{r}.out").read_text().strip() for r in range(2))
    assert outs == ["0 0,1 127.0.0.1", "1 0,1 127.0.0.1"]
    ex.close()


def test_commands_with_input_make_no_stdin_file_whose_finalizer_can_hang_the_connection(tmp_path, sshd, monkeypatch):
    # paramiko's ChannelStdinFile takes the channel lock when finalized; the garbage collector may run that on
    # the transport thread while it holds the lock (paramiko issue 2685): the connection then hangs for good.
    # A launch sends the rank's environment on stdin, and must still get there without such a file.
    made = []
    real_init = paramiko.ChannelStdinFile.__init__
    monkeypatch.setattr(paramiko.ChannelStdinFile, "__init__",
                        lambda self, *a, **kw: (made.append(1), real_init(self, *a, **kw))[1])
    store, ex = make(tmp_path, sshd)
    code = "import os; print(os.environ['NODE_RANK'], os.environ['MASTER_ADDR'])"
    job_id = store.submit(JobRequest(py(code), nodes=2, gpus_per_node=1, workdir=str(tmp_path)), time.time())
    Daemon(store, ex).run(until_idle=True, max_seconds=60)
    ex.close()
    assert (store.job(job_id).state, made) == ("COMPLETED", [])
    outs = sorted((tmp_path / "jobs" / str(job_id) / f"rank-{r}.out").read_text().strip() for r in range(2))
    assert outs == ["0 127.0.0.1", "1 127.0.0.1"]


def test_failed_rank_over_ssh_stops_the_gang(tmp_path, sshd):
    store, ex = make(tmp_path, sshd)
    code = "import os, sys, time\nif os.environ['NODE_RANK'] == '0': sys.exit(7)\ntime.sleep(60)"
    job_id = store.submit(JobRequest(py(code), nodes=3), time.time())
    t0 = time.monotonic()
    Daemon(store, ex, kill_wait=2).run(until_idle=True, max_seconds=45)
    job = store.job(job_id)
    assert (job.state, job.exit_code) == ("FAILED", 7) and time.monotonic() - t0 < 30
    ex.close()


def test_a_missing_workdir_on_the_node_fails_the_rank_with_a_clear_line(tmp_path, sshd):
    store, ex = make(tmp_path, sshd)
    job_id = store.submit(JobRequest(["true"], workdir="/nonexistent-adsched"), time.time())
    Daemon(store, ex, kill_wait=2).run(until_idle=True, max_seconds=45)
    job = store.job(job_id)
    assert (job.state, job.exit_code) == ("FAILED", 1), job.reason
    err = (tmp_path / "jobs" / str(job_id) / "rank-0.err").read_text()
    assert err == "adsched: cannot enter working directory '/nonexistent-adsched': No such file or directory\n"
    ex.close()


def test_unreachable_node_is_drained_and_the_job_requeued(tmp_path, sshd):
    store = Store.init(tmp_path, SMALL)
    ex = SSHExecutor(tmp_path, {n.name: "127.0.0.1" for n in store.config.nodes},
                     SSHSettings(port=_free_port(), key_file=sshd.key_file, connect_timeout=2))
    job_id = store.submit(JobRequest(py("pass")), time.time())
    report = Daemon(store, ex).cycle()
    assert report.started == []
    job = store.job(job_id)
    assert job.state == "PENDING" and job.restart_count == 1 and job.reason.startswith("launch failed: ssh to node")
    drained = [n for n in store.nodes() if n["state"] == "drain"]
    assert len(drained) == 1 and "127.0.0.1" in drained[0]["reason"]
    assert [e["kind"] for e in store.events(job_id)] == ["submit", "start", "requeue"]


def test_an_unknown_host_key_is_refused_and_the_node_not_used(tmp_path, sshd):
    store = Store.init(tmp_path, SMALL)
    strict = replace(sshd, known_hosts=None)  # the system's and the user's known_hosts do not hold it
    ex = SSHExecutor(tmp_path, {n.name: "127.0.0.1" for n in store.config.nodes}, strict)
    job_id = store.submit(JobRequest(py("pass")), time.time())
    assert Daemon(store, ex).cycle().started == []
    job = store.job(job_id)
    assert job.state == "PENDING" and job.restart_count == 1
    drained = [n for n in store.nodes() if n["state"] == "drain"]
    assert len(drained) == 1 and f"[127.0.0.1]:{sshd.port}" in drained[0]["reason"]
    assert "is not in /etc/ssh/ssh_known_hosts or " in drained[0]["reason"]
    assert drained[0]["reason"].endswith("refused (add it, e.g. ssh-keyscan, or pass --ssh-accept-new-host-keys)")
    assert not (tmp_path / "jobs").exists()  # nothing ran there
    ex.close()


def test_accepting_new_host_keys_needs_the_flag(tmp_path, sshd):
    store, _ = make(tmp_path, sshd)
    ex = SSHExecutor(tmp_path, {n.name: "127.0.0.1" for n in store.config.nodes},
                     replace(sshd, known_hosts=None, accept_new_host_keys=True))
    job_id = store.submit(JobRequest(py("pass"), workdir=str(tmp_path)), time.time())
    Daemon(store, ex).run(until_idle=True, max_seconds=60)
    assert store.job(job_id).state == "COMPLETED", [n["reason"] for n in store.nodes()]
    ex.close()
