"""Several real Unix users share one standalone cluster run by a root daemon (issue 12).

Users are created with useradd and removed after (tests/users.py); the daemon is a real
`adsched run` process; each user's `adsub` reaches it over the state dir's Unix socket, and the
daemon learns their uid from the kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from adsched.standalone.daemon import Daemon
from adsched.standalone.executors.local import LocalExecutor
from adsched.standalone.executors.runas import Account, JobRefused, run_as
from adsched.standalone.executors.ssh import SSHExecutor
from adsched.standalone.remote import socket_path
from adsched.standalone.server import SocketServer
from adsched.standalone.store import JobRequest, Store

from helpers import wait_for
from test_e2e_local import SMALL
from test_ssh_executor import sshd  # noqa: F401  (a real sshd on loopback, with its host key known)
from users import adsub, as_user, unix_users

pytestmark = pytest.mark.users


@pytest.fixture(scope="module")
def users():
    with unix_users(2) as made:
        yield made


def _shared_dir() -> str:
    """A state dir other users can reach (pytest's tmp_path is root's alone)."""
    base = tempfile.mkdtemp(prefix="adsched-sec-")
    os.chmod(base, 0o755)
    return base


@pytest.fixture(scope="module")
def cluster(users):
    """A root daemon (`adsched run`) on a fresh state dir; yields the state dir."""
    base = _shared_dir()
    state = os.path.join(base, "state")
    Store.init(state, SMALL)
    daemon = subprocess.Popen([sys.executable, "-m", "adsched.cli.adsched", "run", "--state", state],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(socket_path(state)) or daemon.poll() is not None, 20, what="daemon socket")
        assert daemon.poll() is None, daemon.communicate()
        yield state
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)
        shutil.rmtree(base, ignore_errors=True)


def _ended(state: str, job_id: int):
    job = Store(state).job(job_id)
    return job if job.state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") else None


def _submit(user, state, *cmd, env=None) -> int:
    r = adsub(user, "submit", "--state", state, "--json", "-D", user.home, "--", *cmd, env=env)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return json.loads(r.stdout)["job_id"]


def test_each_job_runs_as_its_owner_and_user_spoofing_changes_nothing(cluster, users):
    alice, bob = users
    probe = ["sh", "-c", 'id -u; id -g; id -G; echo "$HOME"; pwd']
    # Each claims to be the other (and root) through the environment: nothing changes.
    jobs = {alice: _submit(alice, cluster, *probe, env={"USER": bob.name, "LOGNAME": "root"}),
            bob: _submit(bob, cluster, *probe, env={"USER": alice.name, "LOGNAME": alice.name})}
    for user, job_id in jobs.items():
        job = wait_for(lambda: _ended(cluster, job_id), 30, what=f"job {job_id} ending")
        assert (job.state, job.user) == ("COMPLETED", user.name), job.reason
        out = os.path.join(cluster, "jobs", str(job_id), "rank-0.out")
        uid, gid, groups, home, cwd = open(out).read().split("\n")[:5]
        assert (int(uid), int(gid), tuple(sorted(map(int, groups.split()))), home, cwd) == \
            (user.uid, user.gid, user.groups, user.home, user.home)
        st = os.stat(out)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.uid, 0o600)  # the output is the owner's

    # Everyone sees every job (as squeue shows all), under its real owner.
    r = adsub(alice, "queue", "--state", cluster, "-a")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 3, r.stderr  # the table, through the daemon
    r = adsub(alice, "queue", "--state", cluster, "-a", "--json")
    assert r.exit_code == 0, r.stderr
    assert {j["id"]: j["user"] for j in json.loads(r.stdout)}.items() >= {jobs[alice]: alice.name, jobs[bob]: bob.name}.items()
    r = adsub(alice, "queue", "--state", cluster, "--start", "--json")  # the core's estimates, from the daemon
    assert r.exit_code == 0 and all("estimated_start" in j for j in json.loads(r.stdout)), r.stderr
    # ... but not the other's output.
    bobs_out = os.path.join(cluster, "jobs", str(jobs[bob]), "rank-0.out")
    r = as_user(alice, lambda: open(bobs_out).read() and 0)
    assert r.exit_code == 71 and "PermissionError" in r.stderr
    # ... nor the values of the other's env (they may hold secrets); the owner sees them.
    job_file = os.path.join(os.path.dirname(cluster), "secret.toml")
    with open(job_file, "w") as f:
        f.write(f'command = "true"\nworkdir = "{bob.home}"\nenv = {{TOKEN = "s3cret"}}\n')
    os.chmod(job_file, 0o644)
    r = adsub(bob, "submit", "--state", cluster, "--json", job_file)
    assert r.exit_code == 0, r.stderr
    env_job = json.loads(r.stdout)["job_id"]
    r = adsub(alice, "show", "--state", cluster, "--json", str(env_job))
    assert json.loads(r.stdout)["env"] == {"TOKEN": "(hidden)"}
    r = adsub(bob, "show", "--state", cluster, "--json", str(env_job))
    assert json.loads(r.stdout)["env"] == {"TOKEN": "s3cret"}


def test_only_the_owner_cancels(cluster, users):
    alice, bob = users
    job_id = _submit(bob, cluster, "sleep", "60")
    wait_for(lambda: Store(cluster).job(job_id).state == "RUNNING", 20, what="bob's job running")

    r = adsub(alice, "cancel", "--state", cluster, str(job_id))
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr == (f"Error: cancel job {job_id}: permission denied: it belongs to {bob.name}, you are "
                        f"{alice.name} (only its owner or an admin may cancel it)\n")
    store = Store(cluster)
    assert store.job(job_id).state == "RUNNING" and not store.job(job_id).cancel_requested
    denied = [e for e in store.events(job_id) if e["kind"] == "denied"]
    assert [e["data"] for e in denied] == [{"action": "cancel", "by": alice.name, "uid": alice.uid}]
    # USER= spoofing does not make alice bob.
    r = adsub(alice, "cancel", "--state", cluster, str(job_id), env={"USER": bob.name, "LOGNAME": bob.name})
    assert r.exit_code == 1 and "permission denied" in r.stderr

    r = adsub(bob, "cancel", "--state", cluster, str(job_id))
    assert (r.exit_code, r.stdout) == (0, f"job {job_id}: CANCELLING\n"), r.stderr
    job = wait_for(lambda: _ended(cluster, job_id), 20, what="cancel")
    assert job.state == "CANCELLED"


def test_the_store_is_the_daemons_alone(cluster, users):
    alice, _ = users
    assert stat.S_IMODE(os.stat(cluster).st_mode) == 0o711
    for name in os.listdir(cluster):
        if name.startswith(Store.DB_NAME):
            assert stat.S_IMODE(os.stat(os.path.join(cluster, name)).st_mode) == 0o600, name
    db = os.path.join(cluster, Store.DB_NAME)
    r = as_user(alice, lambda: open(db, "r+b") and 0)  # no forged write is possible
    assert r.exit_code == 71 and "PermissionError" in r.stderr
    r = as_user(alice, lambda: os.listdir(cluster) and 0)  # nor a listing of who ran what
    assert r.exit_code == 71 and "PermissionError" in r.stderr


def test_a_daemon_that_is_not_root_takes_only_its_own_users_jobs(users, tmp_path):
    alice, bob = users
    base = _shared_dir()
    try:
        state = os.path.join(base, "state")
        Store.init(state, SMALL)
        server = SocketServer(state, run_uid=bob.uid)  # as a daemon started by bob would
        server.start()
        try:
            r = adsub(alice, "submit", "--state", state, "--", "true")
            assert r.exit_code == 1 and r.stderr == (
                f"Error: submit: permission denied: this adsched daemon runs as {bob.name}, not root, so it runs "
                f"only {bob.name}'s jobs (ask an admin to run `adsched run` as root)\n")
            r = adsub(bob, "submit", "--state", state, "--", "true")
            assert (r.exit_code, r.stdout) == (0, "Submitted job 1\n"), r.stderr
        finally:
            server.close()
        store = Store(state)
        assert [j.user for j in store.jobs()] == [bob.name]
        assert [e["data"]["by"] for e in store.events() if e["kind"] == "denied"] == [alice.name]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _job(user: str):
    return type("J", (), {"id": 7, "user": user})()


RUN_AS_CASES = [
    dict(name="library mode: the daemon's user", user="root", owner_mode=False, daemon_uid=0, want="daemon"),
    dict(name="root daemon, root's job", user="root", owner_mode=True, daemon_uid=0, want="daemon"),
    dict(name="root daemon, a user's job", user="ALICE", owner_mode=True, daemon_uid=0, want="ALICE"),
    dict(name="user daemon, its own job", user="ALICE", owner_mode=True, daemon_uid="ALICE", want="daemon"),
    dict(name="user daemon, another's job", user="BOB", owner_mode=True, daemon_uid="ALICE",
         want="belongs to BOB; this daemon runs as ALICE, not root, and runs only ALICE's jobs"),
    dict(name="no such user", user="nosuchuser-adst", owner_mode=True, daemon_uid=0,
         want="belongs to 'nosuchuser-adst', who has no account on this host"),
]


@pytest.mark.parametrize("case", RUN_AS_CASES, ids=lambda c: c["name"])
def test_run_as(case, users):
    names = {"ALICE": users[0], "BOB": users[1]}

    def real(text):
        for key, u in names.items():
            text = text.replace(key, u.name)
        return text

    daemon_uid = names[case["daemon_uid"]].uid if isinstance(case["daemon_uid"], str) else case["daemon_uid"]
    job = _job(real(case["user"]))
    if case["want"] == "daemon":
        assert run_as(job, case["owner_mode"], daemon_uid) is None
    elif case["want"] in names:
        u = names[case["want"]]
        assert run_as(job, case["owner_mode"], daemon_uid) == Account(u.name, u.uid, u.gid, u.home, "/bin/sh")
    else:
        with pytest.raises(JobRefused) as e:
            run_as(job, case["owner_mode"], daemon_uid)
        assert str(e.value) == f"job 7 {real(case['want'])}"


def test_a_job_whose_owner_has_no_account_fails_without_running(tmp_path):
    store = Store.init(tmp_path, SMALL)
    marker = tmp_path / "ran"
    job_id = store.submit(JobRequest(["touch", str(marker)], user="nosuchuser-adst"), time.time())
    report = Daemon(store, LocalExecutor(tmp_path, owner_mode=True)).cycle()
    job = store.job(job_id)
    assert report.ended == {job_id: "FAILED"} and job.state == "FAILED"
    assert job.reason == f"job {job_id} belongs to 'nosuchuser-adst', who has no account on this host"
    assert not marker.exists() and all(n["state"] == "up" for n in store.nodes())  # no node is blamed


def test_over_ssh_each_job_runs_as_its_owner(users, sshd):
    """A root login on the node switches to the job's owner there (rankwrap --as); the owner's env
    reaches the rank through a file, never a shell line."""
    alice, _ = users
    base = _shared_dir()
    try:
        state = os.path.join(base, "state")
        store = Store.init(state, SMALL)
        ex = SSHExecutor(state, {n.name: "127.0.0.1" for n in store.config.nodes}, sshd, owner_mode=True)
        canary = os.path.join(base, "canary")
        hostile = f"$(touch {canary}); `touch {canary}`; ' \" \n;touch {canary}"
        probe = ["sh", "-c", 'id -u; id -G; echo "$HOME"; pwd; printf "%s|" "$HOSTILE" "$1"', "sh", hostile]
        job_id = store.submit(JobRequest(probe, user=alice.name, workdir=alice.home, env={"HOSTILE": hostile}),
                              time.time())
        Daemon(store, ex).run(until_idle=True, max_seconds=60)
        ex.close()
        job = store.job(job_id)
        jobdir = os.path.join(state, "jobs", str(job_id))
        assert job.state == "COMPLETED", (job.reason, {f: open(os.path.join(jobdir, f), errors="replace").read()
                                                       for f in os.listdir(jobdir)})
        out_path = os.path.join(state, "jobs", str(job_id), "rank-0.out")
        uid, groups, home, cwd, rest = open(out_path).read().split("\n", 4)
        assert (int(uid), tuple(sorted(map(int, groups.split()))), home, cwd) == \
            (alice.uid, alice.groups, alice.home, alice.home)
        assert rest == f"{hostile}|{hostile}|"  # the env value and the argument arrived as data
        assert not os.path.exists(canary)
        assert os.stat(out_path).st_uid == alice.uid
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_daemon_started_by_a_user_says_it_runs_only_their_jobs(users):
    from adsched.cli import adsched as adsched_cli

    _, bob = users
    base = _shared_dir()
    try:
        state = os.path.join(base, "state")
        os.makedirs(state)
        os.chown(state, bob.uid, bob.gid)

        def bobs_daemon():
            Store.init(state, SMALL)
            adsched_cli.main(["run", "--state", state, "--once"], prog_name="adsched")

        r = as_user(bob, bobs_daemon)
        assert r.exit_code == 0, r.stderr
        assert r.stderr == (f"adsched: the daemon runs as {bob.name} (uid {bob.uid}), not root: it runs only "
                            f"{bob.name}'s jobs and refuses other users' submissions\n")
        assert os.stat(os.path.join(state, Store.DB_NAME)).st_uid == bob.uid
    finally:
        shutil.rmtree(base, ignore_errors=True)
