"""adsub acct/prio, adsched share and nodes drain/resume: the library on a store with a known
history (times given, no clock), the commands through CliRunner, and real processes end to end."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from adsched.cli import adsched as adsched_cli
from adsched.cli import adsub as adsub_cli
from adsched.core import fairshare
from adsched.core.model import Decisions, NodeAlloc, Start
from adsched.core.order import order_pending, priority_factors, priority_score
from adsched.standalone import accounting, nodeadmin, priority
from adsched.standalone.auth import Identity
from adsched.standalone.store import JobRequest, Store

from builders import cluster, job, with_settings
from test_config import EXAMPLES

DEMO = (EXAMPLES / "demo.toml").read_text()
WEIGHTED = DEMO.replace('age_max = "7-00:00:00"', 'age_max = "1:00:00"')  # demo's weights: 1000/2000/500/100
assert WEIGHTED != DEMO
HOUR = 3600.0


def whole(*nodes):
    return tuple(NodeAlloc(n, tuple(range(8))) for n in nodes)


@pytest.fixture
def history(tmp_path):
    """Job 1: 2 nodes, ran 1 h, requeued, ran 2 h more, completed. Job 2: failed (exit 3) after
    30 min. Job 3: cancelled while pending. Job 4: pending. Job 5: running."""
    store = Store.init(tmp_path / "s", WEIGHTED)
    sub = lambda t, **kw: store.submit(JobRequest(command=["true"], user=kw.pop("user", "ann"), **kw), t)
    cycle = lambda t, *starts: store.record_cycle(Decisions(starts=list(starts)), t, store.snapshot(t))
    a = sub(0.0, nodes=2, queue="train")
    b = sub(10.0, queue="debug", gpus=1, user="bob")
    c = sub(20.0, queue="debug", gpus=1, user="bob")
    cycle(100.0, Start(a, whole("node01", "node02")))
    cycle(200.0, Start(b, (NodeAlloc("node05", (0,)),)))
    store.cancel(c, 300.0)
    store.finish(b, "FAILED", 3, "rank 0 exited with code 3", 200.0 + HOUR / 2)
    store.requeue(a, "node failure", 100.0 + HOUR)
    cycle(2 * HOUR, Start(a, whole("node05", "node06")))
    store.finish(a, "COMPLETED", 0, "", 4 * HOUR)
    d = sub(5 * HOUR, queue="train", nodes=4, priority=2)
    e = sub(5 * HOUR, queue="debug", gpus=2, user="bob")
    cycle(5 * HOUR + 10, Start(e, (NodeAlloc("node09", (0, 1)),)))
    assert (a, b, c, d, e) == (1, 2, 3, 4, 5)
    return store


def test_acct_charges_every_run_and_reports_the_last_one(history):
    rows = {r.job_id: r for r in accounting.accounting(history)}
    assert sorted(rows) == [1, 2, 3]  # finished jobs only, by default
    a, b, c = rows[1], rows[2], rows[3]
    assert (a.state, a.exit_code, a.restarts, a.nodes, a.leaves) == ("COMPLETED", 0, 1, "node[05-06]", "leaf2")
    assert a.wait == 100.0 and a.gpus == 16
    assert a.gpu_hours == pytest.approx(16 * (1.0 + 2.0))  # 1 h before the requeue, 2 h after
    assert (b.state, b.exit_code, b.gpu_hours, b.nodes, b.wait) == ("FAILED", 3, pytest.approx(0.5), "node05", 190.0)
    assert (c.state, c.start, c.gpu_hours, c.nodes) == ("CANCELLED", None, 0.0, "")


@dataclass
class AcctFilter:
    name: str
    kwargs: dict
    want_ids: list[int]


ACCT_FILTERS = [
    AcctFilter("user", {"user": "bob"}, [2, 3]),
    AcctFilter("queue", {"queue": "train"}, [1]),
    AcctFilter("states", {"states": accounting.parse_states("F,ca")}, [2, 3]),
    AcctFilter("running too", {"states": accounting.parse_states("R")}, [5]),
    AcctFilter("ended since", {"since": HOUR}, [1]),
    AcctFilter("ended until", {"until": HOUR}, [2, 3]),
    AcctFilter("window", {"since": 1000.0, "until": 3 * HOUR}, [2]),
]


@pytest.mark.parametrize("case", ACCT_FILTERS, ids=[c.name for c in ACCT_FILTERS])
def test_acct_filters(history, case):
    assert [r.job_id for r in accounting.accounting(history, **case.kwargs)] == case.want_ids


def test_parse_time():
    now = 1_000_000.0
    assert accounting.parse_time("now", now) == now
    assert accounting.parse_time("now-2h", now) == now - 7200
    assert accounting.parse_time("now-3days", now) == now - 3 * 86400
    assert accounting.parse_time("12345", now) == 12345.0
    assert accounting.parse_time("2026-12-03T08:00", now) == time.mktime((2026, 12, 3, 8, 0, 0, 0, 0, -1))


def test_prio_terms_are_the_cores_and_its_order_is_the_cycles(history):
    rows = priority.prio(history, 5 * HOUR + 60)
    assert [r.job_id for r in rows] == [4]  # the only pending job
    config = history.config
    snap = history.snapshot(5 * HOUR + 60)
    users, queues = fairshare.factors(snap, config)
    want = priority_factors(snap.pending[0], config, 5 * HOUR + 60, users, queues)
    r = rows[0]
    assert (r.age, r.fairshare, r.size, r.priority) == (want["age"], want["fairshare"], want["size"], want["priority"])
    assert r.priority == 200 and r.size == pytest.approx(500 * 32 / 128) and r.age == pytest.approx(1000 * 60 / 3600)
    assert r.score == pytest.approx(priority_score(snap.pending[0], config, 5 * HOUR + 60, users, queues))


def test_priority_score_orders_as_order_pending():
    """prio's breakdown sums to priority_score; ranking by it is the core's order (random jobs)."""
    rng = random.Random(7)
    config = with_settings(cluster(leaves=2, nodes_per_leaf=4), weight_age=10, weight_fairshare=50,
                           weight_size=20, weight_priority=1, age_max=1000)
    queue = next(iter(config.queues))
    jobs = [job(i).nodes(rng.randint(1, 4)).queue(queue).submitted(rng.uniform(0, 2000)).user(f"u{rng.randrange(3)}")
            .priority(rng.randrange(4)).build() for i in range(1, 60)]
    users = {"u0": 0.9, "u1": 0.5, "u2": 0.25}
    order = order_pending(jobs, config, 2500.0, users, {})
    by_score = sorted(jobs, key=lambda j: (-round(priority_score(j, config, 2500.0, users, {}), 9), j.submit_time, j.id))
    assert [j.id for j in order] == [j.id for j in by_score]
    for j in jobs:
        terms = priority_factors(j, config, 2500.0, users, {})
        assert sum(terms.values()) == pytest.approx(priority_score(j, config, 2500.0, users, {}))


def test_share_rows_use_the_cores_shares_and_factors(history):
    rows = {(r.kind, r.name): r for r in priority.share(history, 5 * HOUR + 60)}
    assert {k for k in rows if k[0] == "user"} == {("user", "ann"), ("user", "bob")}
    ann, bob = rows["user", "ann"], rows["user", "bob"]
    assert ann.share == bob.share == 0.5
    assert ann.norm_usage + bob.norm_usage == pytest.approx(1.0) and ann.usage_gpu_hours > bob.usage_gpu_hours
    assert ann.factor == pytest.approx(2 ** (-ann.norm_usage / 0.5)) and ann.factor < bob.factor
    assert rows["queue", "train"].share == pytest.approx(64 / 208)


def test_drain_takes_no_new_rank_and_resume_gives_it_back(history):
    root = Identity(0, "root")
    assert nodeadmin.set_state(history, ("node[09-10]", "node11"), "drain", "bad PSU", root, 1.0) == [
        "node09", "node10", "node11"]
    assert {"node09", "node10", "node11"} <= history.snapshot(1.0).unavailable
    nodes = {n["name"]: n for n in history.nodes()}
    assert (nodes["node09"]["state"], nodes["node09"]["reason"]) == ("drain", "bad PSU")
    assert nodes["node09"]["jobs"] == [5]  # the running job stays
    events = [e["data"] for e in history.events() if e["kind"] == "node_state"]
    assert events[-1] == {"node": "node11", "state": "drain", "reason": "bad PSU", "by": "root"}
    nodeadmin.set_state(history, ("node10",), "up", "", root, 2.0)
    assert "node10" not in history.snapshot(2.0).unavailable


@dataclass
class BadCommand:
    name: str
    args: list[str]
    want: str


BAD = [
    BadCommand("acct state", ["acct", "-t", "XX"], "--states: unknown state 'XX'"),
    BadCommand("acct format", ["acct", "-o", "JobID,Colour"], "--format: unknown field 'Colour'"),
    BadCommand("acct time", ["history", "-S", "yesterday"], "--starttime: 'yesterday' is not a time"),
    BadCommand("prio jobs", ["prio", "-j", "1,x"], "--jobs: '1,x' is not a list of job ids"),
]
BAD_ADMIN = [
    BadCommand("drain unknown", ["nodes", "drain", "node99", "--reason", "x"], "no node node99 in cluster demo"),
    BadCommand("drain reason", ["nodes", "drain", "node01"], "drain needs --reason"),
    BadCommand("drain hostlist", ["nodes", "drain", "node[01-", "--reason", "x"], "node[01-"),
]


@pytest.mark.parametrize("case", BAD + BAD_ADMIN, ids=[c.name for c in BAD + BAD_ADMIN])
def test_bad_input_one_line_exit_2(history, case):
    main = adsub_cli.main if case in BAD else adsched_cli.main
    args = case.args[:1] + (case.args[1:2] if case.args[0] == "nodes" else []) + ["--state", str(history.state_dir)]
    args += case.args[2:] if case.args[0] == "nodes" else case.args[1:]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert case.want in r.output and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_commands_table_and_json(history):
    state = str(history.state_dir)
    run = lambda main, *a: CliRunner().invoke(main, [*a, "--state", state])
    r = run(adsub_cli.main, "acct", "-o", "jobid,state,exitcode,gpuhours,restarts")
    assert r.exit_code == 0, r.output
    assert [line.split() for line in r.output.splitlines()] == [
        ["JobID", "State", "ExitCode", "GPUHours", "Restarts"], ["1", "COMPLETED", "0", "48.00", "1"],
        ["2", "FAILED", "3", "0.50", "0"], ["3", "CANCELLED", "-", "0.00", "0"]]
    r = run(adsub_cli.main, "history", "--json", "-u", "bob", "-t", "F")
    assert [(j["job_id"], j["exit_code"]) for j in json.loads(r.output)] == [(2, 3)]
    r = run(adsub_cli.main, "prio", "--json")
    out = json.loads(r.output)
    assert out["weights"]["fairshare"] == 2000 and [j["job_id"] for j in out["jobs"]] == [4]
    r = run(adsub_cli.main, "prio")
    assert r.output.split()[:10] == ["RANK", "JOBID", "QUEUE", "USER", "TIER", "SCORE", "AGE", "FAIRSHARE", "SIZE",
                                     "PRIORITY"]
    r = run(adsched_cli.main, "share", "--json")
    assert {(s["kind"], s["name"]) for s in json.loads(r.output)} >= {("user", "ann"), ("queue", "train")}
    r = CliRunner().invoke(adsched_cli.main, ["nodes", "drain", "node03", "--reason", "fan", "--state", state])
    assert r.exit_code == 0 and r.output == "node03: drained (fan)\n"
    r = CliRunner().invoke(adsched_cli.main, ["nodes", "--state", state])
    assert "drain (fan)" in next(line for line in r.output.splitlines() if line.startswith("node03"))


def test_real_processes_drain_then_acct(tmp_path):
    """The installed commands: a drained node gets no rank of a job the daemon starts; acct shows it."""
    adsched_exe, adsub_exe = shutil.which("adsched"), shutil.which("adsub")
    assert adsched_exe and adsub_exe, "adsched/adsub not on PATH (see PROTOCOL)"
    state = str(tmp_path / "s")
    run = lambda *a: subprocess.run([*a, "--state", state], capture_output=True, text=True, timeout=60)
    assert run(adsched_exe, "init", "--cluster", str(EXAMPLES / "demo.toml")).returncode == 0
    r = subprocess.run([adsched_exe, "nodes", "drain", "node[01-04]", "--reason", "maintenance", "--state", state],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([adsub_exe, "submit", "--state", state, "-N", "2", "-q", "train", "--max-leaves", "1",
                        "--", "true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([adsched_exe, "run", "--until-idle", "--max-seconds", "30", "--state", state],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([adsub_exe, "acct", "--json", "--state", state], capture_output=True, text=True, timeout=60)
    rows = json.loads(r.stdout)
    assert [(j["state"], j["num_nodes"]) for j in rows] == [("COMPLETED", 2)]
    assert rows[0]["leaves"] != "leaf1" and rows[0]["gpu_hours"] > 0
    r = subprocess.run([adsched_exe, "nodes", "drain", "nodeX", "--reason", "x", "--state", state],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("prog,words,cword,want", [
    ("adsub", "adsub h", 1, {"history", "hold"}),
    ("adsub", "adsub acct --form", 2, {"--format"}),
    ("adsched", "adsched nodes ", 2, {"drain", "resume"}),
    ("adsched", "adsched sh", 1, {"share"}),
])
def test_shell_completion_of_the_installed_commands(prog, words, cword, want):
    """click's completion protocol, as bash runs it on TAB (README: eval "$(_ADSUB_COMPLETE=bash_source adsub)")."""
    exe = shutil.which(prog)
    assert exe, f"{prog} not on PATH (see PROTOCOL)"
    env = {"PATH": "/usr/bin:/bin", f"_{prog.upper()}_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(cword)}
    r = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert {line.split(",", 1)[1] for line in r.stdout.splitlines()} >= want
    r = subprocess.run([exe], env={"PATH": "/usr/bin:/bin", f"_{prog.upper()}_COMPLETE": "bash_source"},
                       capture_output=True, text=True, timeout=60)
    assert f"complete -o nosort -F _{prog}_completion {prog}" in r.stdout


def test_real_processes_prio_and_share(history):
    adsched_exe, adsub_exe = shutil.which("adsched"), shutil.which("adsub")
    assert adsched_exe and adsub_exe, "adsched/adsub not on PATH (see PROTOCOL)"
    run = lambda *a: subprocess.run([*a, "--state", str(history.state_dir)], capture_output=True, text=True,
                                    timeout=60)
    r = run(adsub_exe, "prio", "--json")
    assert r.returncode == 0 and [j["job_id"] for j in json.loads(r.stdout)["jobs"]] == [4]
    r = run(adsched_exe, "share")
    assert r.returncode == 0 and r.stdout.split()[:6] == ["KIND", "NAME", "GPU_HOURS", "NORM_USAGE", "SHARE",
                                                         "FAIRSHARE"]
    r = run(adsub_exe, "prio", "-j", "4,x")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize("main,args", [(adsub_cli.main, ["acct"]), (adsub_cli.main, ["prio"]),
                                       (adsched_cli.main, ["share"]), (adsched_cli.main, ["metrics"]),
                                       (adsched_cli.main, ["nodes", "drain", "node1", "--reason", "x"])])
def test_slurm_clusters_are_pointed_to_slurms_own_commands(tmp_path, main, args):
    state = str(tmp_path / "s")
    Store.init(state, (Path(__file__).parent / "clusters" / "mini8.toml").read_text())
    r = CliRunner().invoke(main, [*args, "--state", state])
    assert r.exit_code == 2 and "needs the standalone backend" in r.output and len(r.output.strip().splitlines()) == 1
