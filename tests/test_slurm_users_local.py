"""A Slurm-mode state dir made by root, used by an ordinary user (issue 16), on this host.

The state dir's store stays root's (0600 in a 0711 dir); the user's `adsub` reads the published cluster
config and asks Slurm. Here Slurm's clients are stand-ins on PATH that print what squeue/scancel 22.05
print; the real thing is tests/slurm/test_slurm_users.py on the mini-cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile

import pytest

from adsched.standalone.store import Store

from users import adsub, unix_users

pytestmark = pytest.mark.users

SLURM_MINI = """
[cluster]
name = "mini"
backend = "slurm"

[[nodes]]
names = "node[1-2]"
gpus = 8

[switches.leaf1]
nodes = "node[1-2]"

[queues.train]
tier = 1
"""

SQUEUE_JOB = {"job_id": 5, "name": "theirs", "user_name": "root", "partition": "train", "job_state": "RUNNING",
              "state_reason": "None", "nodes": "node1", "node_count": 1, "tres_per_node": "gres:gpu:8",
              "time_limit": 60, "submit_time": 1, "start_time": 2, "end_time": 0, "comment": "", "restart_cnt": 0,
              "exit_code": 0, "priority": 1}


@pytest.fixture(scope="module")
def user():
    with unix_users(1, prefix="adsl") as made:
        yield made[0]


@pytest.fixture
def site():
    """(state dir made by root, PATH with the stand-in squeue and scancel), in a dir others may enter."""
    base = tempfile.mkdtemp(prefix="adsched-slurmuser-")
    os.chmod(base, 0o755)
    bin_dir = os.path.join(base, "bin")
    os.mkdir(bin_dir)
    scripts = {
        "squeue": f"#!/bin/sh\ncat <<'EOF'\n{json.dumps({'jobs': [SQUEUE_JOB], 'errors': []})}\nEOF\n",
        "scancel": "#!/bin/sh\necho 'scancel: error: Kill job error on job id 5: Access/permission denied' >&2\nexit 1\n",
    }
    for name, text in scripts.items():
        with open(os.path.join(bin_dir, name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(bin_dir, name), 0o755)
    state = os.path.join(base, "state")
    Store.init(state, SLURM_MINI)
    try:
        yield state, f"{bin_dir}:/usr/bin:/bin"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_root_made_slurm_state_stays_root_only_and_users_list_and_cancel_through_slurm(site, user):
    state, path = site
    assert (mode(state), mode(os.path.join(state, "adsched.sqlite")), mode(os.path.join(state, "cluster.toml"))) \
        == (0o711, 0o600, 0o644)
    listed = adsub(user, "queue", "--state", state, "--json", env={"PATH": path})
    assert listed.exit_code == 0, listed.stderr
    assert [(j["id"], j["user"], j["state"]) for j in json.loads(listed.stdout)] == [(5, "root", "RUNNING")]
    denied = adsub(user, "cancel", "--state", state, "5", env={"PATH": path})
    assert denied.exit_code == 1 and denied.stderr == (
        f"Error: cancel job 5: permission denied: it belongs to root, you are {user.name} "
        "(Slurm lets only its owner or a Slurm operator cancel it)\n"), denied.stderr
    for command in (["acct"], ["hold", "5"], ["checkpointed", "5"]):  # store commands: said, not "ask the daemon"
        refused = adsub(user, command[0], "--state", state, *command[1:], env={"PATH": path})
        assert refused.exit_code == 2 and "needs the standalone backend; cluster mini runs on Slurm" in \
            refused.stderr, (command, refused.stderr)


@pytest.mark.parametrize("change,want_stderr", [
    # Re-initialised as standalone: the Slurm config goes, its users are sent to the daemon again.
    ("standalone", "no adsched daemon is listening"),
    # A config file the store's owner did not write speaks for nobody.
    ("chown", "no adsched daemon is listening"),
])
def test_only_the_store_owners_slurm_config_sends_users_to_slurm(site, user, change, want_stderr):
    state, path = site
    public = os.path.join(state, "cluster.toml")
    if change == "standalone":
        Store.init(state, SLURM_MINI.replace('backend = "slurm"', 'backend = "standalone"'))
        assert not os.path.exists(public)
    else:
        os.chown(public, user.uid, user.gid)
    r = adsub(user, "queue", "--state", state, env={"PATH": path})
    assert r.exit_code == 1 and want_stderr in r.stderr and "Traceback" not in r.stderr, r.stderr
