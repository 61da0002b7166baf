"""Authorization like Slurm's, and identity from the OS (issue 12): library and CLI level.

The same checks with real Unix users, over the daemon's socket, are in test_security_users.py.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from adsched.cli import adsub as adsub_cli
from adsched.errors import PermissionDenied
from adsched.standalone.auth import Identity, current_identity
from adsched.standalone.store import JobRequest, Store

from test_e2e_local import SMALL

ADMINS = SMALL.replace('name = "small"', 'name = "small"\nadmins = ["carol"]')


@pytest.fixture
def store(tmp_path):
    return Store.init(tmp_path / "state", ADMINS)


CANCEL_CASES = [
    # (who, want_state or None when refused)
    dict(who=Identity(5001, "alice"), want="CANCELLED"),  # the owner
    dict(who=Identity(5002, "bob"), want=None),  # another user
    dict(who=Identity(5003, "carol"), want="CANCELLED"),  # an admin named in the TOML
    dict(who=Identity(0, "root"), want="CANCELLED"),  # root
    dict(who=Identity(5004, "alicex"), want=None),  # a prefix of the owner's name is not the owner
]


@pytest.mark.parametrize("case", CANCEL_CASES, ids=lambda c: c["who"].name)
def test_only_owner_admin_or_root_may_cancel(store, case):
    if current_identity().uid in (c["who"].uid for c in CANCEL_CASES if c["want"] is None):
        pytest.fail("the test's uids collide with the caller's")  # the store owner is an admin
    job_id = store.submit(JobRequest(["true"], user="alice"), 1.0)
    if case["want"] is None:
        with pytest.raises(PermissionDenied) as e:
            store.cancel(job_id, 2.0, by=case["who"])
        assert str(e.value) == (f"cancel job {job_id}: permission denied: it belongs to alice, you are "
                                f"{case['who'].name} (only its owner or an admin may cancel it)")
        assert store.job(job_id).state == "PENDING"
        assert store.events(job_id)[-1]["kind"] == "denied"
        assert store.events(job_id)[-1]["data"] == {"action": "cancel", "by": case["who"].name,
                                                    "uid": case["who"].uid}
    else:
        assert store.cancel(job_id, 2.0, by=case["who"]) == case["want"]
        assert [e["kind"] for e in store.events(job_id)] == ["submit", "cancel"]


def test_admins_must_be_a_list_of_names(tmp_path):
    from adsched.core.config import ConfigError

    with pytest.raises(ConfigError, match="cluster.admins: must be a list of user names"):
        Store.init(tmp_path, SMALL.replace('name = "small"', 'name = "small"\nadmins = "carol"'))


def test_user_and_logname_do_not_change_who_submits(store):
    me = current_identity().name
    runner = CliRunner()
    r = runner.invoke(adsub_cli.main, ["submit", "--state", str(store.state_dir), "--json", "--", "true"],
                      env={"USER": "mallory", "LOGNAME": "mallory"})
    assert r.exit_code == 0, r.output
    job_id = json.loads(r.output)["job_id"]
    assert store.job(job_id).user == me != "mallory"
    r = runner.invoke(adsub_cli.main, ["queue", "--state", str(store.state_dir), "-u", "mallory", "--json"],
                      env={"USER": "mallory"})
    assert json.loads(r.output) == []
