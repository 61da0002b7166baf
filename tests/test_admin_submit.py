"""Bulk submit (`adsub submit --file`) and the fast listing behind `adsub queue`.

CliRunner for the command's behaviour and its bad input; real processes (the installed `adsub`)
for what a user types. Speed is printed by bench/submit.py, never asserted here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from adsched.cli import adsched as adsched_cli
from adsched.cli import adsub as adsub_cli
from adsched.jobspec import JobRequest
from adsched.standalone.store import LISTING_COLUMNS, Store

from test_config import EXAMPLES


@pytest.fixture
def state(tmp_path):
    d = tmp_path / "state"
    r = CliRunner().invoke(adsched_cli.main, ["init", "--state", str(d), "--cluster", str(EXAMPLES / "demo.toml")])
    assert r.exit_code == 0, r.output
    return str(d)


def adsub(*args):
    return CliRunner().invoke(adsub_cli.main, list(args))


def spec_file(tmp_path, *lines: str, name="jobs.jsonl") -> str:
    f = tmp_path / name
    f.write_text("\n".join(lines) + "\n")
    return str(f)


def test_submit_file_json_and_toml_lines_in_one_go(state, tmp_path):
    f = spec_file(tmp_path,
                  '{"command": ["python", "sweep.py", "--lr", "0.1"], "queue": "debug", "gpus": 1, "time": "30:00"}',
                  "# a comment, then a blank line",
                  "",
                  '{command = "python sweep.py --lr 0.2", queue = "debug", gpus = 2, name = "lr2"}',
                  '{"command": "train.sh", "nodes": 2, "queue": "train", "array": "0-2"}')
    r = adsub("submit", "--state", state, "--file", f)
    assert r.exit_code == 0, r.output
    assert r.output == "Submitted 3 jobs: 1-3\n"  # the array's id stands for its 3 tasks (1, then 3-5)
    jobs = Store(state).jobs()
    assert [(j.id, j.queue, j.num_nodes, j.gpus_per_node, j.name, j.command, j.array_id) for j in jobs] == [
        (1, "debug", 1, 1, "python", ["python", "sweep.py", "--lr", "0.1"], None),
        (2, "debug", 1, 2, "lr2", ["python", "sweep.py", "--lr", "0.2"], None),
        (3, "train", 2, 8, "train.sh", ["train.sh"], 3),
        (4, "train", 2, 8, "train.sh", ["train.sh"], 3),
        (5, "train", 2, 8, "train.sh", ["train.sh"], 3),
    ]
    assert jobs[0].time_limit == 1800


def test_submit_file_flags_apply_to_every_line_and_json_lists_ids(state, tmp_path):
    f = spec_file(tmp_path, '{"command": "a", "queue": "train"}', '{"command": "b"}')
    r = adsub("submit", "--state", state, "-q", "debug", "--gpus", "1", "--file", f, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"job_ids": [1, 2]}
    assert [(j.queue, j.gpus_per_node) for j in Store(state).jobs()] == [("debug", 1), ("debug", 1)]


@dataclass
class BadFile:
    lines: tuple[str, ...]
    want_message: str
    args: tuple[str, ...] = ()


BAD_FILES = [
    BadFile(('{"command": "a", "queue": "debug", "gpus": 1}', "not json {"), "jobs.jsonl:2: not a JSON object"),
    BadFile(('{"command": "a", "colour": "red"}',), "jobs.jsonl:1: unknown key(s) colour"),
    BadFile(('{"command": "a", "nodes": "two"}',), "jobs.jsonl:1: nodes must be an integer, got 'two'"),
    BadFile(('{"command": "a", "queue": "debug"}', '{"command": "b", "queue": "nope"}'),
            "job 2: unknown queue 'nope'"),
    BadFile(('[1, 2]',), "jobs.jsonl:1: not a JSON object or TOML inline table"),
    BadFile(("# only a comment",), "no job specs"),
    BadFile(('{"command": "a"}',), "--file takes the commands from the file", ("--", "echo")),
    BadFile(('{"command": "a"}',), "--test-only takes one job", ("--test-only",)),
]


@pytest.mark.parametrize("case", BAD_FILES, ids=[c.want_message[:30] for c in BAD_FILES])
def test_bad_spec_file_one_line_exit_2_nothing_written(state, tmp_path, case):
    f = spec_file(tmp_path, *case.lines)
    args = list(case.args)
    tail = args[args.index("--"):] if "--" in args else []
    head = [a for a in args if a not in tail]
    r = adsub("submit", "--state", state, *head, "--file", f, *tail)
    assert r.exit_code == 2, r.output
    assert case.want_message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert Store(state).jobs() == []


def test_missing_spec_file(state, tmp_path):
    r = adsub("submit", "--state", state, "--file", str(tmp_path / "none.jsonl"))
    assert r.exit_code == 2 and "cannot read" in r.output and len(r.output.strip().splitlines()) == 1


def test_submit_many_is_one_transaction_with_dependencies(state):
    store = Store(state)
    first = store.submit(JobRequest(command=["a"], queue="debug", gpus=1), 0.0)
    ids = store.submit_many([JobRequest(command=["b"], queue="debug", gpus=1, dependency=f"afterok:{first}"),
                             JobRequest(command=["c"], queue="debug", gpus=1)], 1.0)
    assert ids == [2, 3]
    assert store.job(2).after_ok == [1]
    assert [e["kind"] for e in store.events() if e["job_id"] in (2, 3)] == ["submit", "submit"]


def test_listing_has_the_same_jobs_and_values_as_jobs(state, tmp_path):
    f = spec_file(tmp_path, '{"command": "a", "queue": "debug", "gpus": 1}',
                  '{"command": "b", "queue": "train", "nodes": 2, "array": "0-1"}',
                  '{"command": "c", "queue": "debug", "gpus": 2}')
    assert adsub("submit", "--state", state, "--file", f).exit_code == 0
    store = Store(state)
    store.cancel(4, 5.0)
    for filters in ({}, {"states": ("PENDING",)}, {"queue": "train"}, {"user": "nobody"}):
        want = [tuple(getattr(j, c) for c in LISTING_COLUMNS) for j in store.jobs(**filters)]
        assert [tuple(row) for row in store.listing(**filters)] == want, filters


def test_real_processes_bulk_then_queue(state, tmp_path):
    adsub_exe = shutil.which("adsub")
    assert adsub_exe, "adsub not on PATH (see PROTOCOL: export PATH=$PWD/.venv/bin:$PATH)"
    lines = [json.dumps({"command": ["true", str(i)], "queue": "debug", "gpus": 1}) for i in range(200)]
    f = spec_file(tmp_path, *lines)
    r = subprocess.run([adsub_exe, "submit", "--state", state, "--file", f], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout == "Submitted 200 jobs: 1-200\n", r.stderr
    r = subprocess.run([adsub_exe, "queue", "--state", state], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 201
    bad = spec_file(tmp_path, '{"command": "x", "gpus": "lots"}', name="bad.jsonl")
    r = subprocess.run([adsub_exe, "submit", "--state", state, "--file", bad], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_partition_is_another_name_for_queue(state):
    assert adsub("submit", "--state", state, "-p", "debug", "--gpus", "1", "--", "true").exit_code == 0
    assert adsub("submit", "--state", state, "--partition", "train", "--", "true").exit_code == 0
    r = adsub("queue", "--state", state, "-p", "debug")
    assert [line.split()[1] for line in r.output.splitlines()[1:]] == ["debug"]


def test_queue_states_filter_like_squeue_t(state):
    for q in ("debug", "train"):
        assert adsub("submit", "--state", state, "-q", q, "--gpus", "1", "--", "true").exit_code == 0
    assert adsub("cancel", "--state", state, "1").exit_code == 0
    r = adsub("queue", "--state", state, "-t", "CA", "--json")
    assert [j["id"] for j in json.loads(r.output)] == [1]
    r = adsub("queue", "--state", state, "-t", "pending")
    assert [line.split()[0] for line in r.output.splitlines()[1:]] == ["2"]
    r = adsub("queue", "--state", state, "-t", "XX")
    assert r.exit_code == 2 and "unknown state 'XX'" in r.output and len(r.output.strip().splitlines()) == 1
