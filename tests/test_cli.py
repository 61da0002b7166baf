"""CLI tests through click's CliRunner: thin commands, clear one-line errors, --json."""

import json
import time

import pytest
from click.testing import CliRunner

from adsched.cli import adsched as adsched_cli
from adsched.cli import adsub as adsub_cli
from adsched.standalone.store import Store

from test_config import EXAMPLES


@pytest.fixture
def state(tmp_path):
    d = tmp_path / "state"
    r = CliRunner().invoke(adsched_cli.main, ["init", "--state", str(d), "--cluster", str(EXAMPLES / "demo.toml")])
    assert r.exit_code == 0, r.output
    assert "16 nodes, 128 GPUs, 4 leaves" in r.output
    return str(d)


def sub(state, *args):
    return CliRunner().invoke(adsub_cli.main, ["submit", "--state", state, *args])


def test_submit_queue_show_cancel(state):
    r = sub(state, "-N", "4", "-q", "train", "-J", "gpt", "-t", "1:00:00", "--max-leaves", "1", "--", "echo", "hi")
    assert r.exit_code == 0 and r.output == "Submitted job 1\n"
    r = sub(state, "--gpus", "2", "--json", "--", "sleep", "1")
    assert json.loads(r.output) == {"job_id": 2}

    r = CliRunner().invoke(adsub_cli.main, ["queue", "--state", state])
    lines = r.output.splitlines()
    assert lines[0].split() == ["JOBID", "QUEUE", "NAME", "USER", "ST", "TIME", "NODES", "GPUS", "NODELIST(REASON)"]
    assert lines[1].split()[:8] == ["1", "train", "gpt", lines[1].split()[3], "PD", "0:00", "4", "32"]

    r = CliRunner().invoke(adsub_cli.main, ["queue", "--state", state, "--json"])
    jobs = json.loads(r.output)
    assert [(j["id"], j["num_nodes"], j["gpus_per_node"], j["max_leaves"]) for j in jobs] == [(1, 4, 8, 1), (2, 1, 2, None)]

    r = CliRunner().invoke(adsub_cli.main, ["show", "--state", state, "1"])
    assert "State: PENDING" in r.output and "Command: echo hi" in r.output and "submit" in r.output

    r = CliRunner().invoke(adsub_cli.main, ["cancel", "--state", state, "1"])
    assert r.exit_code == 0 and "job 1: CANCELLED" in r.output
    r = CliRunner().invoke(adsub_cli.main, ["queue", "--state", state, "-a", "--json"])
    assert [j["state"] for j in json.loads(r.output)] == ["CANCELLED", "PENDING"]


def test_job_file(state, tmp_path):
    f = tmp_path / "job.toml"
    f.write_text('command = "python train.py --lr 3e-4"\nnodes = 2\nqueue = "train"\nname = "from-file"\n')
    r = sub(state, "-N", "3", "--", str(f))
    assert r.exit_code == 0, r.output
    job = Store(state).job(1)
    assert (job.name, job.num_nodes, job.command) == ("from-file", 3, ["python", "train.py", "--lr", "3e-4"])


@pytest.mark.parametrize("args,msg", [
    (["-q", "nope", "--", "true"], "unknown queue 'nope'"),
    (["-N", "20", "--", "true"], "needs 20 nodes with 8 GPUs; the cluster has 16"),
    (["--gpus", "0", "--", "true"], "--gpus must be >= 1"),
    (["--gpus-per-node", "-1", "--", "true"], "--gpus-per-node must be >= 1"),
    ([], "no command given"),
    (["-t", "forever", "--", "true"], "--time: not a duration"),
    (["-N", "13", "-q", "train", "--", "true"], "queue train may use at most 96 (quota 64 + borrow limit 32)"),
    (["-N", "13", "-q", "train", "--test-only", "--", "true"], "queue train may use at most 96"),
    (["-N", "5", "--max-leaves", "1", "--", "true"], "within 1 leaf; the largest leaf has 4"),
    (["-N", "5", "--max-leaves", "1", "--test-only", "--", "true"], "within 1 leaf; the largest leaf has 4"),
])
def test_bad_input_one_line_exit_2_nothing_written(state, args, msg):
    r = sub(state, *args)
    assert r.exit_code == 2
    assert msg in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert Store(state).jobs() == []


def test_bad_job_file(state, tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("nodes = [")
    r = sub(state, "--", str(f))
    assert r.exit_code == 2 and "malformed TOML" in r.output and Store(state).jobs() == []


def test_config_check(tmp_path):
    r = CliRunner().invoke(adsched_cli.main, ["config", "check", str(EXAMPLES / "su128.toml"), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["gpus"] == 1024
    bad = tmp_path / "bad.toml"
    bad.write_text('[[nodes]]\nnames = "n1"\n[queues.a]\nquota_gpus = -1\n[queues.b]\ntier = "x"\n')
    r = CliRunner().invoke(adsched_cli.main, ["config", "check", str(bad)])
    assert r.exit_code == 2
    assert "queues.a.quota_gpus: must be >= 0" in r.output and "queues.b.tier: must be an integer" in r.output
    bad.write_text("[[nodes]\n")
    r = CliRunner().invoke(adsched_cli.main, ["config", "check", str(bad)])
    assert r.exit_code == 2 and "malformed TOML" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(adsched_cli.main, ["init", "--state", str(tmp_path / "s"), "--cluster", str(bad)])
    assert r.exit_code == 2 and not (tmp_path / "s" / "adsched.sqlite").exists()


def test_config_warnings_are_shown_not_silent(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text('[[nodes]]\nnames = "n[1-2]"\n[queues.a]\nquota_gpus = 64\n')
    want = "warning: queues.a.quota_gpus: 64 is more than the cluster's 16 GPUs"
    r = CliRunner().invoke(adsched_cli.main, ["config", "check", str(big)])
    assert r.exit_code == 0 and want in r.output
    r = CliRunner().invoke(adsched_cli.main, ["config", "check", str(big), "--json"])
    assert json.loads(r.stdout)["warnings"] == [want.removeprefix("warning: ") + " (the queue can never borrow)"]
    r = CliRunner().invoke(adsched_cli.main, ["init", "--state", str(tmp_path / "s"), "--cluster", str(big)])
    assert r.exit_code == 0 and want in r.output


def test_nodes_and_missing_state(state, tmp_path):
    r = CliRunner().invoke(adsched_cli.main, ["nodes", "--state", state, "--json"])
    nodes = json.loads(r.output)
    assert len(nodes) == 16 and nodes[0]["leaf"] == "leaf1" and nodes[0]["gpus_used"] == 0
    r = CliRunner().invoke(adsub_cli.main, ["queue", "--state", str(tmp_path / "none")])
    assert r.exit_code == 1 and "adsched init" in r.output and "Traceback" not in r.output


def test_help_texts():
    for group, cmds in ((adsub_cli.main, ["submit", "queue", "show", "cancel"]),
                        (adsched_cli.main, ["init", "run", "config", "nodes", "demo"])):
        r = CliRunner().invoke(group, ["--help"])
        assert r.exit_code == 0 and all(c in r.output for c in cmds)


def test_array_dependency_mig_signal(state):
    r = sub(state, "-a", "0-9%3", "-q", "debug", "--gpus", "1", "-t", "5", "--", "true")
    assert r.exit_code == 0 and r.output == "Submitted job array 1\n"
    store = Store(state)
    tasks = store.jobs()
    assert [t.array_index for t in tasks] == list(range(10)) and {t.array_id for t in tasks} == {1}
    assert {t.array_throttle for t in tasks} == {3} and tasks[4].env["ADSCHED_ARRAY_TASK_ID"] == "4"
    r = sub(state, "-d", "afterok:1,afterany:3", "--signal", "USR1@120", "--no-requeue", "--", "true")
    assert r.exit_code == 0, r.output
    job = store.job(11)
    assert job.after_ok == list(range(1, 11)) and job.after_any == [3]  # an array id means all its tasks
    assert (job.signal, job.no_requeue) == ("USR1@120", True)


@pytest.mark.parametrize("args,msg", [
    (["-a", "5-1", "--", "true"], "--array: range '5-1' is empty"),
    (["-a", "0-3%0", "--", "true"], "--array: the %N throttle must be >= 1"),
    (["-d", "afterok:999", "--", "true"], "--dependency: no job 999"),
    (["-d", "before:1", "--", "true"], "--dependency: 'before' is not supported"),
    (["--gpus", "1g.10gb:1", "--", "true"], "1g.10gb MIG slices on one node; the most any node has is 0"),
    (["--gpus", "lots", "--", "true"], "--gpus: 'lots' is neither a GPU count nor a MIG profile"),
    (["--signal", "KILL@5", "--", "true"], "--signal: 'KILL' is not one of"),
])
def test_bad_policy_input(state, args, msg):
    r = sub(state, *args)
    assert r.exit_code == 2 and msg in r.output and Store(state).jobs() == []


def test_explain_and_test_only(state):
    r = sub(state, "--test-only", "-N", "4", "--max-leaves", "1", "--", "true")
    assert r.exit_code == 0 and "starts in the next cycle on node[01-04] (leaf1)" in r.output
    assert Store(state).jobs() == []
    sub(state, "-N", "2", "--", "true")
    sub(state, "-d", "afterok:1", "--", "true")
    r = CliRunner().invoke(adsub_cli.main, ["explain", "--state", state, "2", "--json"])
    e = json.loads(r.output)
    assert (e["constraint"], e["waiting_for"], e["estimated_start"]) == ("Dependency", 1, None)
    r = CliRunner().invoke(adsub_cli.main, ["explain", "--state", state, "1"])
    assert "position 1 of 2" in r.output and "starts in the next cycle" in r.output
    r = CliRunner().invoke(adsub_cli.main, ["explain", "--state", state, "99"])
    assert r.exit_code == 1 and "no job 99" in r.output


def test_checkpointed_needs_a_running_job(state):
    sub(state, "--", "true")
    r = CliRunner().invoke(adsub_cli.main, ["checkpointed", "--state", state, "1"])
    assert r.exit_code == 2 and "job 1 is not running" in r.output


def test_queue_start_shows_the_cores_estimated_starts(state):
    """`adsub queue --start` (squeue --start): a gang blocked behind a running job expects to start when that
    job's time limit runs out; a job waiting on a dependency has no estimate."""
    from adsched.core.schedule import schedule

    sub(state, "-N", "12", "-q", "explore", "-t", "1:00:00", "--", "true")
    store, t0 = Store(state), time.time()
    store.record_cycle(schedule(store.snapshot(t0), store.config, t0), t0)  # job 1 runs from t0
    sub(state, "-N", "8", "-q", "train", "-t", "2:00:00", "--", "true")  # 4 nodes free: waits for job 1
    sub(state, "-N", "1", "-q", "train", "-d", "afterok:2", "--", "true")
    r = CliRunner().invoke(adsub_cli.main, ["queue", "--state", state, "--start", "--json"])
    assert r.exit_code == 0, r.output
    want = {2: t0 + 3600, 3: None}  # job 1 is running: not listed
    assert {j["id"]: j["estimated_start"] for j in json.loads(r.output)} == want
    r = CliRunner().invoke(adsub_cli.main, ["queue", "--state", state, "--start"])
    header, *rows = r.output.splitlines()
    assert header.split() == ["JOBID", "QUEUE", "NAME", "USER", "ST", "START_TIME", "NODES", "GPUS", "REASON"]
    cells = {row.split()[0]: row.split()[5] for row in rows}
    assert cells["3"] == "N/A" and cells["2"].count("T") == 1 and cells["2"][:4].isdigit()
