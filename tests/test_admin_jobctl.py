"""adsub hold|release|update: the library with identities (owner, another user, an admin), the
daemon's cycle honouring a hold, the commands through CliRunner and as real processes."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest
from click.testing import CliRunner

from adsched.cli import adsub as adsub_cli
from adsched.core.schedule import schedule
from adsched.errors import InvalidRequest, PermissionDenied
from adsched.standalone import jobctl
from adsched.standalone.auth import Identity
from adsched.standalone.store import JobRequest, Store

from test_config import EXAMPLES

DEMO = (EXAMPLES / "demo.toml").read_text().replace('[cluster]\nname = "demo"', '[cluster]\nname = "demo"\nadmins = ["boss"]')
ANN, BOB, BOSS = Identity(5001, "ann"), Identity(5002, "bob"), Identity(5003, "boss")


@pytest.fixture
def store(tmp_path):
    assert 'admins = ["boss"]' in DEMO
    s = Store.init(tmp_path / "s", DEMO)
    s.submit(JobRequest(command=["true"], user="ann", queue="debug", gpus=1, time="30:00"), 1.0)
    return s


def test_a_held_job_is_not_started_and_a_released_one_is(store):
    assert jobctl.hold(store, 1, ANN, 2.0) == "HELD"
    d = schedule(store.snapshot(3.0), store.config, 3.0)
    assert d.starts == [] or all(s.job_id != 1 for s in d.starts)
    held = d.pending_reasons[1]  # the store gives a held job an endless begin time, with the hold as its cause
    assert (held.code, held.time) == ("BeginTime", math.inf) and str(held).startswith("BeginTime: JobHeldUser")
    assert jobctl.release(store, 1, ANN, 4.0) == "RELEASED"
    assert [s.job_id for s in schedule(store.snapshot(5.0), store.config, 5.0).starts] == [1]
    assert [(e["kind"], e["data"].get("by")) for e in store.events(1)][1:] == [("hold", "ann"), ("release", "ann")]


def test_an_admins_hold_is_released_by_an_admin_only(store):
    jobctl.hold(store, 1, BOSS, 2.0)
    assert store.job(1).hold == "admin"
    with pytest.raises(PermissionDenied, match="not an admin"):
        jobctl.release(store, 1, ANN, 3.0)
    assert jobctl.release(store, 1, BOSS, 4.0) == "RELEASED"


@dataclass
class Update:
    name: str
    who: Identity
    kwargs: dict
    want_changes: dict | None = None  # None: refused
    want_error: type = InvalidRequest
    want_message: str = ""
    state: dict = field(default_factory=dict)


UPDATES = [
    Update("owner lowers time", ANN, {"time_limit": "10:00"}, {"time_limit": [1800, 600]}),
    Update("owner moves queue", ANN, {"queue": "explore"}, {"queue": ["debug", "explore"]}),
    Update("owner raises time", ANN, {"time_limit": "50:00"}, None, PermissionDenied, "not an admin"),
    Update("owner sets priority", ANN, {"priority": 9}, None, PermissionDenied, "not an admin"),
    Update("admin raises time", BOSS, {"time_limit": "50:00"}, {"time_limit": [1800, 3000]}),
    Update("admin sets priority", BOSS, {"priority": 9}, {"priority": [0, 9]}),
    Update("another user", BOB, {"time_limit": "10:00"}, None, PermissionDenied, "it belongs to ann"),
    Update("unknown queue", ANN, {"queue": "nope"}, None, InvalidRequest, "unknown queue 'nope'"),
    Update("beyond max_time", BOSS, {"time_limit": "3-00:00:00"}, None, InvalidRequest, "max_time"),
    Update("bad time", ANN, {"time_limit": "soon"}, None, InvalidRequest, "--time: not a duration"),
    Update("nothing", ANN, {}, None, InvalidRequest, "nothing to update"),
]


@pytest.mark.parametrize("case", UPDATES, ids=[u.name for u in UPDATES])
def test_update(store, case):
    if case.want_changes is None:
        with pytest.raises(case.want_error, match=case.want_message):
            jobctl.update(store, 1, case.who, 2.0, **case.kwargs)
        assert store.job(1).time_limit == 1800 and store.job(1).queue == "debug" and store.job(1).priority == 0
        return
    assert jobctl.update(store, 1, case.who, 2.0, **case.kwargs) == case.want_changes
    job = store.job(1)
    assert {k: getattr(job, k) for k in case.want_changes} == {k: v[1] for k, v in case.want_changes.items()}
    assert store.events(1)[-1]["data"] == {"changes": case.want_changes, "by": case.who.name}


def test_running_job_keeps_its_queue_but_may_lower_its_time(store):
    store.record_cycle(schedule(store.snapshot(2.0), store.config, 2.0), 2.0)
    assert store.job(1).state == "RUNNING"
    with pytest.raises(InvalidRequest, match="only while pending"):
        jobctl.update(store, 1, ANN, 3.0, queue="explore")
    with pytest.raises(InvalidRequest, match="only a pending job can be held"):
        jobctl.hold(store, 1, ANN, 3.0)
    assert jobctl.update(store, 1, ANN, 3.0, time_limit="1") == {"time_limit": [1800, 60]}


@pytest.mark.parametrize("args,want", [
    (["hold", "7"], "no job 7"),
    (["release", "1"], "job 1 is not held"),
    (["update", "1", "-t", "forever"], "--time: not a duration"),
    (["update", "1", "-q", "nope"], "unknown queue 'nope'"),
])
def test_bad_input_one_line(store, args, want):
    r = CliRunner().invoke(adsub_cli.main, [args[0], "--state", str(store.state_dir), *args[1:]])
    assert r.exit_code in (1, 2) and want in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert r.exit_code == (1 if "no job" in want else 2)


def test_real_processes_hold_update_release(store):
    adsub = shutil.which("adsub")
    assert adsub, "adsub not on PATH (see PROTOCOL)"
    run = lambda *a: subprocess.run([adsub, *a, "--state", str(store.state_dir)], capture_output=True, text=True,
                                    timeout=60)
    assert run("hold", "1").stdout == "job 1: HELD\n"
    r = run("queue")
    assert "(JobHeldAdmin)" in r.stdout  # this process owns the store (an admin) and the job is ann's
    r = run("update", "1", "-t", "5", "--json")
    assert json.loads(r.stdout) == {"job_id": 1, "changes": {"time_limit": [1800, 300]}}
    assert run("release", "1", "--json").stdout.strip() == json.dumps({"1": "RELEASED"}, indent=2)
    r = run("update", "1", "-t", "x")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_the_daemon_socket_runs_them_as_the_caller(store):
    """A user who cannot write the store sends hold/release/update to the daemon (RemoteStore);
    the daemon runs them with the uid the kernel reported, so the same rules apply."""
    from adsched.standalone.server import OPERATIONS

    assert OPERATIONS["hold"](store, ANN, {"job_id": 1}, 2.0) == "HELD"
    with pytest.raises(PermissionDenied, match="it belongs to ann"):
        OPERATIONS["release"](store, BOB, {"job_id": 1}, 3.0)
    assert OPERATIONS["update"](store, ANN, {"job_id": 1, "time_limit": "20:00"}, 4.0) == {"time_limit": [1800, 1200]}
    with pytest.raises(InvalidRequest, match="priority: must be an integer"):
        OPERATIONS["update"](store, BOSS, {"job_id": 1, "priority": "high"}, 5.0)
    assert OPERATIONS["release"](store, ANN, {"job_id": 1}, 6.0) == "RELEASED"
