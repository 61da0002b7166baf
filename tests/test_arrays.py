"""Job arrays the way Slurm users know them: `cancel 123` is the whole array, `123_4`, `123_*`,
`123_[0-9]` name tasks, and `queue` folds an array's pending tasks into one `123_[2-9%3]` line."""

import json

import pytest
from click.testing import CliRunner

from adsched.cli import adsched as adsched_cli
from adsched.cli import adsub as adsub_cli
from adsched.core.model import Decisions, NodeAlloc, Start
from adsched.jobrefs import index_ranges, parse_job_ref
from adsched.standalone.store import Store

from test_config import EXAMPLES


@pytest.fixture
def state(tmp_path):
    """Array 1 (tasks 0-9, at most 3 at once; 1_0 and 1_1 running), job 11, array 12 (tasks 0-2)."""
    d = str(tmp_path / "state")
    assert CliRunner().invoke(adsched_cli.main, ["init", "--state", d, "--cluster", str(EXAMPLES / "demo.toml")]
                              ).exit_code == 0
    for args in (["-a", "0-9%3", "--gpus", "1"], ["-N", "2"], ["-a", "0-2", "--gpus", "1"]):
        r = CliRunner().invoke(adsub_cli.main, ["submit", "--state", d, *args, "--", "true"])
        assert r.exit_code == 0, r.output
    store = Store(d)
    store.record_cycle(Decisions(starts=[Start(1, (NodeAlloc("node01", (0,)),)),
                                         Start(2, (NodeAlloc("node01", (1,)),)),
                                         Start(11, (NodeAlloc("node03", tuple(range(8))),
                                                    NodeAlloc("node04", tuple(range(8)))))]), 5.0)
    return d


def adsub(state, *args):
    return CliRunner().invoke(adsub_cli.main, [args[0], "--state", state, *args[1:]])


CANCELLED, CANCELLING = "CANCELLED", "CANCELLING"


@pytest.mark.parametrize("refs,want_results", [
    (["1"], {"1_0": CANCELLING, "1_1": CANCELLING, **{f"1_{i}": CANCELLED for i in range(2, 10)}}),
    (["1_*"], {"1_0": CANCELLING, "1_1": CANCELLING, **{f"1_{i}": CANCELLED for i in range(2, 10)}}),
    (["1_[0,3-4]"], {"1_0": CANCELLING, "1_3": CANCELLED, "1_4": CANCELLED}),
    (["1_0"], {"1_0": CANCELLING}),  # task 0 only, named as such
    (["11", "12_2"], {"11": CANCELLING, "12_2": CANCELLED}),
    (["13"], {"12_1": CANCELLED}),  # a task's own id is that task alone
])
def test_cancel_names_arrays_and_tasks(state, refs, want_results):
    r = adsub(state, "cancel", "--json", *refs)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == want_results
    store = Store(state)
    touched = {j.id for j in store.jobs() if j.state == CANCELLED or j.cancel_requested}
    want_ids = {j.id for j in store.jobs() if f"{j.array_id}_{j.array_index}" in want_results
                or str(j.id) in want_results and j.array_id is None}
    assert touched == want_ids


@pytest.mark.parametrize("refs,want_exit,want_message", [
    (["11_*"], 2, "job 11 is not a job array"),
    (["1_x"], 2, "'1_x' is not a job id"),
    (["1_[5-2]"], 2, "bad task range '5-2'"),
    (["1_[20]"], 1, "no pending or running task in 1_[20]"),
    (["99"], 1, "no job 99"),
    (["1_2", "nope"], 2, "'nope' is not a job id"),  # nothing cancelled: every reference is checked first
])
def test_bad_references_are_one_line_and_cancel_nothing(state, refs, want_exit, want_message):
    r = adsub(state, "cancel", *refs)
    lines = r.output.strip().splitlines()
    assert (r.exit_code, len(lines)) == (want_exit, 1) and lines[0].startswith("Error: ") and want_message in lines[0]
    assert [j.id for j in Store(state).jobs() if j.state == CANCELLED or j.cancel_requested] == []


def test_queue_folds_pending_tasks_and_compresses_node_lists(state):
    r = adsub(state, "queue")
    assert r.exit_code == 0, r.output
    rows = [line.split()[0:1] + line.split()[4:5] + line.split()[-1:] for line in r.output.splitlines()[1:]]
    assert rows == [["1_0", "R", "node01"], ["1_1", "R", "node01"], ["1_[2-9%3]", "PD", "(None)"],
                    ["11", "R", "node[03-04]"], ["12_[0-2]", "PD", "(None)"]]
    r = adsub(state, "queue", "--json")  # JSON keeps one record per task
    assert len(json.loads(r.output)) == 14


@pytest.mark.parametrize("text,want", [
    ("12", (12, None)), ("12_4", (12, (4,))), ("12_*", (12, None)), ("12_[0-3,7]", (12, (0, 1, 2, 3, 7))),
])
def test_parse_job_ref(text, want):
    ref = parse_job_ref(text)
    assert (ref.job_id, ref.tasks) == want


def test_index_ranges():
    assert index_ranges([7, 0, 1, 2, 5, 8]) == "0-2,5,7-8" and index_ranges([3]) == "3"


def test_records_without_a_task_index_keep_their_own_id():
    """Slurm lists the not yet started rest of an array as one record without a task index."""
    from adsched.jobrefs import group_arrays
    from adsched.standalone.store import JobRecord

    def rec(job_id, index, state="PENDING"):
        return JobRecord(id=job_id, name="x", user="u", queue="q", num_nodes=1, gpus_per_node=1, time_limit=60,
                         priority=0, max_leaves=None, command=["true"], workdir="/", env={}, state=state, reason="",
                         submit_time=0.0, start_time=None, end_time=None, exit_code=None, nodelist="",
                         restart_count=0, cancel_requested=False, array_id=40, array_index=index)

    rows = group_arrays([rec(41, 0, "RUNNING"), rec(40, None), rec(42, 2), rec(43, 3)])
    assert [label for label, _, _ in rows] == ["40_0", "40", "40_[2-3]"]


@pytest.mark.parametrize("command,ref,want_exit,want", [
    ("show", "1_3", 0, "JobId: 4"),
    ("show", "12_2", 0, "JobId: 14"),
    ("show", "11", 0, "JobId: 11"),
    ("explain", "1_4", 0, "Job 5: queue explore"),
    ("show", "1_[2-3]", 2, "1_[2-3] names 2 tasks; name one: 1_N"),
    ("show", "1_*", 2, "1_* names every task of array 1"),
    ("show", "1_42", 1, "no job 1_42"),
])
def test_show_and_explain_take_one_task(state, command, ref, want_exit, want):
    r = adsub(state, command, ref)
    assert (r.exit_code, want in r.output) == (want_exit, True), r.output
