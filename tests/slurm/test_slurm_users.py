"""An ordinary Unix user's `adsub` on the real Slurm mini-cluster (issue 16): no daemon, a root-only store.

The user is created here with useradd, with the same uid in every container (the controller where adsub and
the Slurm clients run, and every node where slurmd starts the job as that uid), and removed after. The state
dir was created by root (MiniCluster.up -> Store.init): its store stays 0600 in a 0711 dir, and the user gets
by with the published cluster config and Slurm, which runs sbatch/squeue/scancel as them.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from adsched.standalone.store import Store
from adsched.testbed.minicluster import CONTROLLER

from test_slurm_hybrid import STATE, cancel_all, client, sbatch, until

pytestmark = pytest.mark.slurm
USER = f"adsu{os.getpid() % 100000}"
UID = 20000 + os.getpid() % 10000


@pytest.fixture
def ordinary_user(minicluster):
    members = [CONTROLLER, *minicluster.nodes]
    made = []
    try:
        for member in members:
            r = minicluster.exec(["useradd", "--no-create-home", "--uid", str(UID), "--shell", "/bin/sh", USER],
                                 member=member, timeout=30)
            assert r.rc == 0, (member, r.stderr)
            made.append(member)
        cancel_all(minicluster)
        yield minicluster
    finally:
        cancel_all(minicluster)
        for member in made:
            minicluster.exec(["userdel", "--force", USER], member=member, timeout=30)


def as_user(mc, *args, timeout=60):
    return mc.exec(["adsub", *args[:1], "--state", STATE, *args[1:]], user=USER, timeout=timeout)


def modes(mc) -> dict[str, str]:
    """Mode and owner of the state dir and what is in it (host side)."""
    out = {".": f"{stat.S_IMODE(os.stat(mc.store_dir).st_mode):o} {os.stat(mc.store_dir).st_uid}"}
    for p in sorted(mc.store_dir.iterdir()):
        if p.name.startswith("adsched.sqlite") or p.name == "cluster.toml":
            st = os.stat(p)
            out[p.name] = f"{stat.S_IMODE(st.st_mode):o} {st.st_uid}"
    return out


def test_an_ordinary_user_submits_lists_shows_explains_and_cancels_without_the_store(ordinary_user):
    mc = ordinary_user
    before = modes(mc)
    assert before["."] == "711 0" and before["adsched.sqlite"] == "600 0" and before["cluster.toml"] == "644 0", before
    r = as_user(mc, "submit", "-N", "1", "-q", "explore", "-J", "mine", "--", "sleep", "300")
    assert r.rc == 0 and r.stdout.startswith("Submitted job "), (r.stdout, r.stderr)
    mine = int(r.stdout.split()[-1])
    theirs = sbatch(mc, "-p", "explore", "--gres=gpu:8", "--wrap", "sleep 300")  # root's job
    until(lambda: {j.id: j.state for j in client(mc).jobs()}.get(mine) == "RUNNING"
          and client(mc).job(theirs).state == "RUNNING", what="both running")
    assert client(mc).job(mine).user == USER

    table = as_user(mc, "queue")
    assert table.rc == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
    assert rows[str(mine)][3] == USER and rows[str(mine)][4] == "R"
    assert rows[str(theirs)][3] == "root"  # everyone sees every job, as squeue shows them

    shown = as_user(mc, "show", str(mine), "--json")
    assert shown.rc == 0, shown.stderr
    job = json.loads(shown.stdout)
    assert (job["user"], job["state"], job["name"], job["events"]) == (USER, "RUNNING", "mine", [])

    denied = as_user(mc, "cancel", str(theirs))  # Slurm refuses; adsub says so in one line
    assert denied.rc == 1 and denied.stdout == "", (denied.stdout, denied.stderr)
    assert denied.stderr.strip().splitlines() == [
        f"Error: cancel job {theirs}: permission denied: it belongs to root, you are {USER} "
        "(Slurm lets only its owner or a Slurm operator cancel it)"], denied.stderr
    assert client(mc).job(theirs).state == "RUNNING"

    big = as_user(mc, "submit", "-N", "8", "-q", "explore", "--", "true")  # 2 of 8 nodes are busy: it waits
    assert big.rc == 0, big.stderr
    big_id = int(big.stdout.split()[-1])
    explained = as_user(mc, "explain", str(big_id))
    assert explained.rc == 0, explained.stderr
    lines = explained.stdout.splitlines()
    assert lines[0].startswith(f"Job {big_id}: queue explore, position 1 of 1"), explained.stdout
    assert lines[1].startswith("  waits: ") and "earliest estimated start" in explained.stdout, explained.stdout

    for job_id, want in ((big_id, "CANCELLED"), (mine, "CANCELLING")):
        r = as_user(mc, "cancel", str(job_id))
        assert (r.rc, r.stdout) == (0, f"job {job_id}: {want}\n"), r.stderr
    until(lambda: all(j.state not in ("RUNNING", "PENDING") for j in client(mc).jobs() if j.id in (mine, big_id)),
          what="the user's jobs cancelled")

    # Commands that need the standalone store say so (not "ask for `adsched run`").
    r = as_user(mc, "acct")
    assert r.rc == 2 and "needs the standalone backend" in r.stderr and "Traceback" not in r.stderr, r.stderr
    after = modes(mc)  # nothing opened up (the controller's -wal/-shm come and go, 0600 like the store)
    assert {k: after[k] for k in (".", "adsched.sqlite", "cluster.toml")} == \
        {k: before[k] for k in (".", "adsched.sqlite", "cluster.toml")}
    assert all(v == "600 0" for k, v in after.items() if k.startswith("adsched.sqlite")), after
    owned = [p.name for p in mc.store_dir.iterdir() if p.stat().st_uid == UID]
    assert owned == []


def test_an_ordinary_user_sees_the_cores_reason_published_in_slurm_not_the_hold(ordinary_user):
    # The core holds the user's job back for a reservation (Slurm alone would start it on the idle nodes);
    # Slurm says only JobHeldUser. The controller publishes the core's reason in the job's AdminComment, which
    # the user reads through squeue: `adsub queue`, `show` and `explain` show the core's reason.
    mc = ordinary_user
    blocker = sbatch(mc, "-p", "train", "-N4", "--gres=gpu:8", "-t", "3", "--wrap", "sleep 300")
    until(lambda: client(mc).job(blocker).state == "RUNNING", what="blocker running")
    big = sbatch(mc, "-p", "release", "-N8", "--gres=gpu:8", "-t", "10", "--wrap", "true")  # reserved at +3 min
    r = as_user(mc, "submit", "-N", "2", "-q", "explore", "-t", "10", "--", "sleep", "300")
    assert r.rc == 0, r.stderr
    mine = int(r.stdout.split()[-1])
    want = f"Reservation: would delay job {big}"

    def listed():
        r = as_user(mc, "queue", "--json")
        assert r.rc == 0, r.stderr
        return {j["id"]: j for j in json.loads(r.stdout)}

    rows = until(lambda: (q := listed()).get(mine, {}).get("reason", "").startswith(want) and q, timeout=30,
                 what="the core's reason in the user's queue")
    assert client(mc).job(mine).reason == "JobHeldUser" and client(mc).job(mine).priority == 0  # Slurm's own
    assert rows[big]["reason"] and rows[big]["reason"] != "JobHeldUser", rows[big]
    shown = as_user(mc, "show", str(mine), "--json")
    assert shown.rc == 0 and json.loads(shown.stdout)["reason"].startswith(want), shown.stdout
    # (22.05's squeue --json ignores -j: every job comes back)
    raw = next(j for j in json.loads(mc.exec(["squeue", "--json"], user=USER, timeout=30).stdout)["jobs"]
               if j["job_id"] == mine)
    assert raw["admin_comment"].strip('"').startswith(f"adsched: {want}"), raw["admin_comment"]
    # The big job's estimated start is the controller's (published), not one computed without fair-share data.
    why = as_user(mc, "explain", str(big), "--json")
    assert why.rc == 0, why.stderr
    explained = json.loads(why.stdout)
    stored = Store(mc.store_dir).conn.execute("SELECT reason, est_start FROM slurm_ctl WHERE job_id = ?",
                                              (big,)).fetchone()
    assert explained["reason"] == stored[0] and explained["estimated_start"] is not None
    assert abs(explained["estimated_start"] - stored[1]) < 60 and len(explained["estimated_nodes"]) == 8
