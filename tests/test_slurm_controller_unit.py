"""The Slurm controller against a small in-process Slurm (squeue/sinfo JSON, scontrol, scancel): its intents,
reconciliation and crash safety, fast. The real-Slurm scenarios are in tests/slurm/test_slurm_controller.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from adsched.core.hostlist import compress, expand
from adsched.slurm.client import SlurmClient
from adsched.slurm.controller import Controller, CycleReport, controller_status
from adsched.standalone.store import Store

MINI8 = Path(__file__).resolve().parent / "clusters" / "mini8.toml"


class Killed(Exception):
    """The controller was killed (kill -9) just before sending a command."""


class FakeSlurm:
    """What the controller sees of Slurm 22.05: squeue/sinfo JSON, and the commands it sends."""

    def __init__(self):
        self.jobs: dict[int, dict] = {}
        self.nodes = {f"node{i}": {"name": f"node{i}", "state": "idle", "state_flags": [], "gres": "gpu:8",
                                   "gres_used": "gpu:0", "reason": ""} for i in range(1, 9)}
        self.sent: list[list[str]] = []
        self.kill_before: str | None = None  # raise Killed before the first command starting with this
        self.autostart = True  # a released job starts on its pinned nodes at the next tick
        self.next_id = 1

    def submit(self, nodes=1, gpus=8, partition="train", minutes=60, user="alice", requeue=True,
               array: str | None = None) -> int:
        job_id, self.next_id = self.next_id, self.next_id + 1
        if array:  # one pending record for every task, as squeue --json shows it on 22.05
            tasks, _, throttle = array.partition("%")
            extra = {"array_job_id": job_id, "array_task_id": None, "array_task_string": array,
                     "array_max_tasks": int(throttle or 0), "tasks": [int(i) for i in tasks.split(",")]}
        else:
            extra = {}
        self.jobs[job_id] = {**extra,
            "job_id": job_id, "name": f"j{job_id}", "user_name": user, "partition": partition, "job_state": "PENDING",
            "state_reason": "JobHeldUser", "nodes": "", "node_count": nodes, "tres_per_node": f"gres:gpu:{gpus}",
            "time_limit": minutes, "submit_time": 1000 + job_id, "start_time": 0, "end_time": 0,
            "comment": f"adsched:queue={partition};tier=1;max_leaves=", "restart_cnt": 0, "exit_code": 0,
            "priority": 0, "dependency": "", "requeue": requeue, "batch_flag": True, "eligible_time": 0,
            "required_nodes": "",
        }
        return job_id

    def tick(self, now: float = 2000) -> None:
        """Slurm's scheduler: a released (priority > 0) pending job starts on exactly its required nodes."""
        for j in self.jobs.values():
            if self.autostart and j["job_state"] == "PENDING" and j["priority"] > 0 and j["required_nodes"]:
                j.update(job_state="RUNNING", nodes=j["required_nodes"], start_time=now, state_reason="None")

    def _task(self, ref: str) -> dict | None:
        """The record of array task "A_I" once it has one of its own."""
        if "_" not in ref:
            return None
        array_id, index = map(int, ref.split("_"))
        return next((j for j in self.jobs.values() if j.get("array_job_id") == array_id
                     and j.get("array_task_id") == index), None)

    def run(self, argv, stdin, timeout):
        if self.kill_before and " ".join(argv).startswith(self.kill_before):
            self.kill_before = None
            raise Killed(" ".join(argv))
        if argv[0] == "squeue":
            return 0, json.dumps({"jobs": list(self.jobs.values()), "errors": []}), ""
        if argv[0] == "sinfo":
            return 0, json.dumps({"nodes": list(self.nodes.values()), "errors": []}), ""
        self.sent.append(list(argv))
        if argv[:2] == ["scontrol", "update"]:
            fields = dict(a.split("=", 1) for a in argv[2:])
            if "_" in fields["JobId"] and not self._task(fields["JobId"]):
                # a task still in its array's pending record: split off with a job id of its own
                array_id, index = map(int, fields["JobId"].split("_"))
                meta = self.jobs[array_id]
                meta["tasks"].remove(index)
                throttle = meta["array_max_tasks"]
                meta["array_task_string"] = ",".join(map(str, meta["tasks"])) + (f"%{throttle}" if throttle else "")
                new_id, self.next_id = self.next_id, self.next_id + 1
                self.jobs[new_id] = {**meta, "job_id": new_id, "array_task_id": index, "array_task_string": ""}
                fields["JobId"] = str(new_id)
            j = self._task(fields["JobId"]) or self.jobs[int(fields["JobId"])]
            if "NumNodes" in fields and j.get("array_job_id"):
                return 1, "", "scontrol: error: Job resizing not supported for job arrays"  # as 22.05 says
            if j["job_state"] != "PENDING":
                return 1, "", "scontrol: Job is no longer pending execution"
            j["required_nodes"] = compress(fields["ReqNodeList"].split(","))
            return 0, "", ""
        j = self._task(argv[-1]) or self.jobs[int(argv[-1])]
        if argv[:2] == ["scontrol", "release"]:
            j["priority"] = 1000
        elif argv[:2] == ["scontrol", "hold"]:
            j["priority"] = 0
        elif argv[:2] == ["scontrol", "requeuehold"]:
            j.update(job_state="PENDING", nodes="", restart_cnt=j["restart_cnt"] + 1, priority=0)
        elif argv[0] == "scancel" and len(argv) == 2:
            j.update(job_state="CANCELLED", nodes="")
        return 0, "", ""


@pytest.fixture
def slurm():
    return FakeSlurm()


@pytest.fixture
def state(tmp_path):
    Store.init(tmp_path, MINI8.read_text())
    return tmp_path


class Clock:
    def __init__(self, t=2000.0):
        self.t = t

    def __call__(self):
        return self.t


def controller(state, slurm, clock=None, **kw) -> Controller:
    return Controller(Store(state), SlurmClient(slurm.run), clock=clock or Clock(), **kw)


def kinds(state, job_id):
    return [e["kind"] for e in Store(state).events(job_id)]


def test_a_start_pins_exactly_the_cores_nodes_then_releases(slurm, state):
    job = slurm.submit(nodes=2)
    report = controller(state, slurm).cycle()
    assert report.started == [job]
    pin, release = slurm.sent
    assert pin[:4] == ["scontrol", "update", f"JobId={job}", "NumNodes=2-2"]
    chosen = expand(pin[4].split("=", 1)[1])
    assert sorted(expand(pin[5].split("=", 1)[1]) + chosen) == sorted(slurm.nodes)  # every other node excluded
    assert release == ["scontrol", "release", str(job)]
    slurm.tick()
    controller(state, slurm).cycle()
    assert expand(slurm.jobs[job]["nodes"]) == chosen and kinds(state, job) == ["start"]


@pytest.mark.parametrize("kill_before", ["scontrol update", "scontrol release"])
def test_killed_between_intent_and_release_the_next_controller_finishes_the_start_once(slurm, state, kill_before):
    job = slurm.submit(nodes=4)
    slurm.kill_before = kill_before
    with pytest.raises(Killed):
        controller(state, slurm).cycle()
    assert slurm.jobs[job]["priority"] == 0  # not released yet
    controller(state, slurm).run(once=True)  # a new process: carries on the recorded start first
    slurm.tick()
    controller(state, slurm).cycle()
    assert slurm.jobs[job]["job_state"] == "RUNNING" and kinds(state, job) == ["start"]
    assert sum(c[:2] == ["scontrol", "release"] for c in slurm.sent) == 1


def test_a_job_released_by_someone_else_is_held_again_and_reported(slurm, state):
    blocker = slurm.submit(nodes=8)
    ctl = controller(state, slurm)
    ctl.cycle()
    slurm.tick()
    other = slurm.submit(nodes=1)
    slurm.jobs[other]["priority"] = 500  # the owner ran `scontrol release`
    report = ctl.cycle()
    assert report.rehold == [other] and slurm.jobs[other]["priority"] == 0
    assert "mismatch" in kinds(state, other) and blocker not in report.rehold
    problems = controller_status(state)["problems"]
    assert problems[0]["job_id"] == other and "without a release" in problems[0]["what"]


def test_a_released_job_that_does_not_start_is_held_again_and_redecided(slurm, state):
    slurm.autostart = False  # e.g. its nodes are still completing another job
    job = slurm.submit(nodes=1)
    clock = Clock()
    ctl = controller(state, slurm, clock, release_timeout=30)
    assert ctl.cycle().started == [job]
    clock.t += 10
    assert ctl.cycle().rehold == []
    clock.t += 25
    report = ctl.cycle()
    assert report.rehold == [job] and "release_timeout" in kinds(state, job)
    assert report.started == [job]  # decided anew in the same cycle: pinned and released again
    assert sum(c[:2] == ["scontrol", "release"] for c in slurm.sent) == 2


def test_running_elsewhere_and_vanished_jobs_are_mismatches(slurm, state):
    a, b = slurm.submit(nodes=1), slurm.submit(nodes=1)
    ctl = controller(state, slurm)
    ctl.cycle()
    slurm.tick()
    slurm.jobs[a]["nodes"] = "node8" if slurm.jobs[a]["nodes"] != "node8" else "node7"
    del slurm.jobs[b]
    report = ctl.cycle()
    assert any("the core chose" in m for m in report.mismatches)
    assert any("vanished" in m for m in report.mismatches)
    assert kinds(state, a).count("mismatch") == 1 and kinds(state, b).count("mismatch") == 1
    assert ctl.cycle().mismatches == []  # each reported once


def test_preemption_signals_waits_the_grace_then_requeues_held_and_the_preemptor_starts(slurm, state):
    clock = Clock()
    ctl = controller(state, slurm, clock)
    victim = slurm.submit(nodes=8, partition="explore")
    ctl.cycle()
    slurm.tick()
    ctl.cycle()
    boss = slurm.submit(nodes=2, partition="release")
    clock.t += 5
    report = ctl.cycle()
    assert report.preempted == [victim]
    assert ["scancel", "--signal=TERM", "--full", str(victim)] in slurm.sent
    clock.t += 2  # within explore's 5 s grace period: still running, the preemptor waits
    assert ctl.cycle().requeued == [] and slurm.jobs[boss]["priority"] == 0
    clock.t += 4
    assert ctl.cycle().requeued == [victim]
    assert slurm.sent[-2:] == [["scontrol", "requeuehold", str(victim)], ["scontrol", "hold", str(victim)]]
    assert slurm.jobs[victim]["restart_cnt"] == 1
    report = ctl.cycle()
    assert report.started == [boss]
    slurm.tick()
    assert set(expand(slurm.jobs[boss]["nodes"])) <= set(slurm.nodes)


def test_a_job_that_may_not_be_requeued_is_cancelled_when_preempted(slurm, state):
    clock = Clock()
    ctl = controller(state, slurm, clock)
    victim = slurm.submit(nodes=8, partition="explore", requeue=False)
    ctl.cycle()
    slurm.tick()
    slurm.submit(nodes=8, partition="release")
    ctl.cycle()
    clock.t += 6
    assert ctl.cycle().cancelled == [victim]
    assert slurm.jobs[victim]["job_state"] == "CANCELLED"


def test_a_job_with_a_future_begin_time_reaches_the_core_which_holds_it_until_then(slurm, state):
    # sbatch --begin (or Slurm's backoff after its own requeue): the job is in the snapshot with
    # Job.begin_time; the core gives it a BeginTime reason, then starts it once the time has come.
    job = slurm.submit(nodes=1)
    slurm.jobs[job]["eligible_time"] = 2100
    clock = Clock(2000.0)
    ctl = controller(state, slurm, clock)
    snap = ctl.snapshot(ctl.read(), ctl.table.rows(), clock.t)
    assert [(j.id, j.begin_time) for j in snap.pending] == [(job, 2100.0)]
    assert ctl.cycle().started == []
    reason = Store(state).conn.execute("SELECT reason FROM slurm_ctl WHERE job_id = ?", (job,)).fetchone()[0]
    assert reason.startswith("BeginTime: not eligible before"), reason
    clock.t = 2100.0
    assert ctl.cycle().started == [job]


@pytest.mark.parametrize("name,completing,pending,hook_event,want_at_most", [
    ("a job's epilog recorded its end: wake at once", 0, 1, True, 1.0),
    ("a job is completing while others wait: follow it closely", 1, 1, False, 1.0),
    ("nothing happens: the whole interval", 0, 1, False, None),
])
def test_between_cycles_the_controller_wakes_when_a_job_ends(slurm, state, name, completing, pending, hook_event,
                                                             want_at_most):
    ctl = controller(state, slurm)
    report = CycleReport(2000.0, pending=pending, completing=completing)
    if hook_event:  # what `adsched hook epilog` does on a node (another process, the same store)
        threading.Timer(0.2, lambda: Store(state).add_event(1, "slurm_end", {"node": "node1"}, 2001.0)).start()
    t0 = time.monotonic()
    ctl._wait(2.0, report)
    took = time.monotonic() - t0
    if want_at_most is None:
        assert took >= 1.9, name
    else:
        assert took <= want_at_most, name


def test_an_unsplit_array_reaches_the_core_task_by_task_and_each_start_splits_one_task_off(slurm, state):
    # squeue --json on 22.05 shows a pending array as one record (array_task_id null, array_task_string
    # "0,1,2,3%2"); the core gets 4 tasks, starts 2 (the throttle), each pinned as "A_I" then released.
    array = slurm.submit(nodes=1, gpus=8, array="0,1,2,3%2")
    ctl = controller(state, slurm)
    view = ctl.read()
    snap = ctl.snapshot(view, ctl.table.rows(), 2000.0)
    assert sorted((j.array_id, j.array_index, j.array_throttle) for j in snap.pending) == \
        [(array, i, 2) for i in range(4)]
    report = ctl.cycle()
    assert len(report.started) == 2 and array not in report.started
    pins = [c for c in slurm.sent if c[:2] == ["scontrol", "update"]]
    assert [c[2] for c in pins[:2]] == [f"JobId={array}_0", f"JobId={array}_1"]  # the splits, by task
    assert not any(c[3].startswith("NumNodes") for c in pins)  # 22.05 refuses it for an array's task
    assert [c for c in slurm.sent if c[1] == "release"] == [["scontrol", "release", f"{array}_{i}"] for i in (0, 1)]
    started = {i: slurm.jobs[i] for i in report.started}
    assert sorted(j["array_task_id"] for j in started.values()) == [0, 1]
    assert all(j["priority"] > 0 and j["required_nodes"] for j in started.values())
    assert slurm.jobs[array]["array_task_string"] == "2,3%2" and slurm.jobs[array]["priority"] == 0
    slurm.tick()
    assert ctl.cycle().started == []  # two tasks run: the throttle holds the others
    reason = Store(state).conn.execute("SELECT reason FROM slurm_ctl WHERE job_id = ?", (array,)).fetchone()[0]
    assert reason == f"JobArrayTaskLimit: array {array} has 2 of at most 2 tasks running", reason
    first = min(report.started)
    slurm.jobs[first].update(job_state="COMPLETED", nodes="")
    again = ctl.cycle()
    assert len(again.started) == 1 and slurm.jobs[again.started[0]]["array_task_id"] == 2
    assert [e for e in Store(state).events() if e["kind"] == "mismatch"] == []
