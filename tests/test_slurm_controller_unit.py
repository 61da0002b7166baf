"""The Slurm controller against a small in-process Slurm (squeue/sinfo JSON, scontrol, scancel): its intents,
reconciliation and crash safety, fast. The real-Slurm scenarios are in tests/slurm/test_slurm_controller.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from adsched.backend import SlurmBackend
from adsched.core.hostlist import compress, expand
from adsched.slurm.client import SlurmClient, SlurmJob
from adsched.slurm.controller import Controller, CycleReport, controller_status
from adsched.slurm.published import Published
from adsched.slurm.published import reasons as published_reasons
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
        self.batches: list[list[str]] = []  # scontrol's stdin lines, one list per `scontrol` run (published reasons)
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
            "required_nodes": "", "admin_comment": "",
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

    def _script(self, stdin: str):
        lines = stdin.splitlines()
        self.batches.append(lines)
        errors = []
        for line in lines:
            fields = dict(a.split("=", 1) for a in line.split(" ", 3)[1:3])
            job_id = int(fields["JobId"])
            if job_id not in self.jobs:
                errors.append(f" Invalid job id specified for job {job_id}")
                continue
            self.jobs[job_id]["admin_comment"] = line.split("AdminComment=", 1)[1]
        return (1 if errors else 0), "scontrol: " * (len(lines) + 1), "\n".join(errors)

    def run(self, argv, stdin, timeout):
        if self.kill_before and " ".join(argv).startswith(self.kill_before):
            self.kill_before = None
            raise Killed(" ".join(argv))
        if argv[0] == "squeue":
            return 0, json.dumps({"jobs": list(self.jobs.values()), "errors": []}), ""
        if argv[0] == "sinfo":
            return 0, json.dumps({"nodes": list(self.nodes.values()), "errors": []}), ""
        if argv == ["scontrol"]:  # commands on stdin, one a line; 22.05 keeps a quoted value's quotes
            return self._script(stdin)
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
                if meta["tasks"]:
                    new_id, self.next_id = self.next_id, self.next_id + 1
                else:  # the last task takes over the array's record and id, as in Slurm
                    new_id = array_id
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


@pytest.mark.parametrize("ended_ago, victim, want_started", [
    (1, False, True),  # its epilogs run: the next job is pinned on its nodes now (Slurm starts it when they end)
    (29, False, True),
    (31, False, False),  # completing longer than a release may take (30 s): a hung epilog, its nodes stay busy
    (1, True, False),  # a preemption's victim being requeued: its nodes go to the preemptor, as the preemption says
])
def test_a_completing_job_hands_its_nodes_to_the_next_job(slurm, state, ended_ago, victim, want_started):
    clock = Clock()
    ctl = controller(state, slurm, clock, release_timeout=30)
    first = slurm.submit(nodes=8, partition="explore" if victim else "train")
    ctl.cycle()
    slurm.tick()
    ctl.cycle()
    if victim:
        with ctl.store.transaction():  # requeued held by a preemption (job 99's)
            ctl.store.conn.execute("UPDATE slurm_ctl SET phase = 'held', preempted_by = 99 WHERE job_id = ?",
                                   (first,))
    slurm.jobs[first].update(job_state="COMPLETING", end_time=clock.t - ended_ago)
    second = slurm.submit(nodes=8)
    report = ctl.cycle()
    assert (report.started == [second]) == want_started
    if want_started:
        assert slurm.jobs[second]["required_nodes"] == "node[1-8]" and slurm.jobs[second]["priority"] > 0
    else:
        assert slurm.jobs[second]["priority"] == 0 and slurm.jobs[second]["required_nodes"] == ""


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


# --- a dependency on a whole array (afterok:A shows in squeue as "afterok:A_*(unfulfilled)") --------------------

def _array_task_ids(array_id, indexes):
    from adsched.slurm.controller import task_id

    return tuple(task_id(array_id, i) for i in indexes)


@pytest.mark.parametrize("name,dependency,split,ended,forgotten,want_after_ok,want_after_any,want_finished", [
    ("an unsplit array: each of its tasks", "afterok:{A}_*(unfulfilled)", {}, {}, (),
     "tasks 0 1 2", "", {}),
    ("task 0 split off and running, 1-2 still in the record", "afterok:{A}_*(unfulfilled)", {0: "RUNNING"}, {}, (),
     "split 0, tasks 1 2", "", {}),
    ("every task ended, one failed: the core sees each task's final state", "afterok:{A}_*(unfulfilled)",
     {0: "COMPLETED", 1: "FAILED", 2: "COMPLETED"}, {}, (), "split 0 1 2", "",
     {0: "COMPLETED", 1: "FAILED", 2: "COMPLETED"}),
    ("a task squeue forgot (MinJobAge) still counts, from the store", "afterany:{A}_*(unfulfilled)",
     {0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}, {}, (1,), "", "split 0 1 2",
     {0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}),
    ("one task by its index", "afterany:{A}_1(unfulfilled)", {1: "RUNNING"}, {}, (), "", "split 1", {}),
    ("Slurm's own verdict: the array failed", "afterok:{A}_*(failed)", {}, {}, (),
     "tasks 0 1 2, array", "", {"array": "FAILED"}),
    ("a plain job, as before", "afterok:{P}(unfulfilled)", {}, {}, (), "plain", "", {}),
])
def test_a_dependency_on_a_whole_array_reaches_the_core_as_its_tasks(slurm, state, name, dependency, split, ended,
                                                                     forgotten, want_after_ok, want_after_any,
                                                                     want_finished):
    plain = slurm.submit(nodes=1)
    array = slurm.submit(nodes=1, array="0,1,2")
    split_ids = {}
    for index, job_state in split.items():  # tasks Slurm split off the record (started, maybe ended)
        meta = slurm.jobs[array]
        meta["tasks"].remove(index)
        meta["array_task_string"] = ",".join(map(str, meta["tasks"]))
        split_ids[index], slurm.next_id = slurm.next_id, slurm.next_id + 1
        slurm.jobs[split_ids[index]] = {**meta, "job_id": split_ids[index], "array_task_id": index,
                                        "array_task_string": "", "job_state": job_state, "priority": 1000,
                                        "nodes": f"node{index + 1}"}
    if not slurm.jobs[array]["tasks"]:
        del slurm.jobs[array]  # every task split off (Slurm reuses the record's id for the last one; not needed here)
    child = slurm.submit(nodes=1)
    slurm.jobs[child]["dependency"] = dependency.format(A=array, P=plain)
    ctl = controller(state, slurm)
    if forgotten:  # seen ended once (recorded in the store), then gone from squeue
        ctl._reconcile(ctl.read(), ctl.table.rows(), 2000.0, CycleReport(2000.0))
        for index in forgotten:
            del slurm.jobs[split_ids[index]]
    snap = ctl.snapshot(ctl.read(), ctl.table.rows(), None)
    job = next(j for j in snap.pending if j.id == child)

    def ids(text):
        out = []
        for part in text.replace(",", " ").split():
            if part in ("tasks", "split"):
                kind = part
            elif part == "array":
                out.append(array)
            elif part == "plain":
                out.append(plain)
            elif kind == "tasks":
                out += _array_task_ids(array, [int(part)])
            else:
                out.append(split_ids[int(part)])
        return tuple(out)

    assert job.after_ok == ids(want_after_ok), name
    assert job.after_any == ids(want_after_any), name
    names = {"array": array, **{i: split_ids.get(i) for i in range(3)}}
    assert snap.finished == {names[k]: v for k, v in want_finished.items()}, name


def _finish(slurm, job_id, job_state):
    slurm.jobs[job_id].update(job_state=job_state, nodes="", exit_code=0 if job_state == "COMPLETED" else 1)


@pytest.mark.parametrize("name,task_states,want_child", [
    ("every task completed: then the dependent starts", ["COMPLETED"] * 3, "started"),
    ("one task failed: the dependent is cancelled, never started", ["COMPLETED", "FAILED", "COMPLETED"],
     "cancelled"),
])
def test_afterok_on_a_whole_array_waits_for_every_task(slurm, state, name, task_states, want_child):
    array = slurm.submit(nodes=1, array="0,1,2")
    child = slurm.submit(nodes=1)
    slurm.jobs[child]["dependency"] = f"afterok:{array}_*(unfulfilled)"
    ctl = controller(state, slurm)
    report = ctl.cycle()
    # The task that took over the array's record (and id A) ends first: the others still run.
    tasks = sorted(report.started, key=lambda i: (i != array, i))
    assert len(tasks) == 3 and child not in report.started and tasks[0] == array, name
    slurm.tick()
    outcome = []  # what became of the dependent after each task ended, one task at a time
    for task, job_state in zip(tasks, task_states):
        _finish(slurm, task, job_state)
        report = ctl.cycle()
        outcome.append("started" if child in report.started else "cancelled" if child in report.cancelled else "")
        assert report.mismatches == [], name
    if want_child == "started":
        assert outcome == ["", "", "started"], name
    else:  # the core cancels as soon as one parent failed (the others need not end first)
        failed = task_states.index("FAILED")
        assert outcome == [""] * failed + ["cancelled"] + [""] * (2 - failed), name
        assert "start" not in kinds(state, child)
        assert Store(state).events(child)[-1]["data"]["reason"] == \
            f"DependencyNeverSatisfied: job {tasks[failed]} FAILED", name


def test_a_reason_names_an_unsplit_task_as_slurm_does():
    from adsched.slurm.controller import shown_text, task_id

    assert shown_text(f"Dependency: waiting for jobs 7, {task_id(12, 3)}") == "Dependency: waiting for jobs 7, 12_3"


# --- the core's reasons published in Slurm (AdminComment) for users who cannot read the store -------------------

@pytest.mark.parametrize("name,published,want_text", [
    ("a reason alone", Published("Priority: waiting behind job 7"), "adsched: Priority: waiting behind job 7"),
    ("with an estimated start and nodes", Published("Reservation: would delay job 12", 1733220000.7,
                                                    ("node1", "node2", "node3")),
     "adsched est=1733220000 on=node[1-3]: Reservation: would delay job 12"),
    ("a double quote or newline would break scontrol's line", Published('Resources: "x"\nnext'),
     "adsched: Resources: 'x' next"),
])
def test_published_text_round_trips_as_scontrol_leaves_it(name, published, want_text):
    from adsched.slurm.published import decode, encode

    text = encode(published)
    assert text == want_text, name
    for stored in (text, f'"{text}"'):  # scontrol's stdin parser keeps the quotes (22.05); argv does not
        back = decode(stored)
        assert (back.reason, back.est_nodes) == (text.split(": ", 1)[1], published.est_nodes), name
        assert back.est_start == (None if published.est_start is None else int(published.est_start)), name


@pytest.mark.parametrize("name,wanted,in_slurm,sent,want_sent", [
    ("new reason: sent", Published("Resources: x"), "", None, True),
    ("the same reason shown: nothing sent", Published("Resources: x"), '"adsched: Resources: x"', None, False),
    ("another reason: sent", Published("Priority: y"), '"adsched: Resources: x"', None, True),
    ("estimated start 59 s later: not worth an update", Published("R: z", 1059.0), '"adsched est=1000: R: z"', None,
     False),
    ("estimated start 60 s later: sent", Published("R: z", 1060.0), '"adsched est=1000: R: z"', None, True),
    ("other estimated nodes: sent", Published("R: z", 1000.0, ("node2",)), '"adsched est=1000 on=node1: R: z"', None,
     True),
    ("an admin's own AdminComment: never overwritten", Published("Resources: x"), "ticket 4711", None, False),
    ("squeue gives no such field: the store's record stands for it", Published("Resources: x"), None,
     "adsched: Resources: x", False),
    ("no such field and nothing recorded: sent", Published("Resources: x"), None, None, True),
])
def test_a_reason_is_sent_only_when_it_changes(name, wanted, in_slurm, sent, want_sent):
    from adsched.slurm.published import updates

    shown = {} if in_slurm is None else {5: in_slurm}
    out = updates({5: wanted}, shown, {} if sent is None else {5: sent})
    assert (5 in out) == want_sent, name


def test_held_jobs_get_the_cores_reason_in_slurm_once_and_one_scontrol_for_all(slurm, state):
    clock = Clock()
    ctl = controller(state, slurm, clock)
    blocker = slurm.submit(nodes=8, minutes=10)
    ctl.cycle()
    slurm.tick()
    waiting = [slurm.submit(nodes=2) for _ in range(3)]
    noted = slurm.submit(nodes=1)
    slurm.jobs[noted]["admin_comment"] = "ticket 4711"  # an admin's own note
    slurm.jobs[noted]["comment"] = "my own --comment"
    ctl.cycle()
    assert len(slurm.batches) == 1 and len(slurm.batches[0]) == 3  # one scontrol, one line per held job
    stored = dict(Store(state).conn.execute("SELECT job_id, reason FROM slurm_ctl WHERE reason != ''").fetchall())
    seen = published_reasons([SlurmJob.from_json(j) for j in slurm.jobs.values()])
    assert {i: seen[i][0] for i in waiting} == {i: stored[i] for i in waiting}
    assert all(seen[i][0].startswith("Resources: ") for i in waiting), seen
    assert slurm.jobs[noted]["admin_comment"] == "ticket 4711" and slurm.jobs[noted]["comment"] == "my own --comment"
    assert noted not in seen and blocker not in seen
    clock.t += 5
    ctl.cycle()
    assert len(slurm.batches) == 1  # nothing changed: nothing sent
    _finish(slurm, blocker, "COMPLETED")
    report = ctl.cycle()
    assert set(report.started) == set(waiting) | {noted}
    seen = published_reasons([SlurmJob.from_json(j) for j in slurm.jobs.values()])
    assert seen == {}  # released: Slurm's own reason is the true one now, the old AdminComment is ignored
    assert Store(state).conn.execute("SELECT COUNT(*) FROM slurm_published").fetchone()[0] == 3
    slurm.tick()
    ctl.cycle()
    assert Store(state).conn.execute("SELECT COUNT(*) FROM slurm_published").fetchone()[0] == 0  # forgotten


def test_a_user_without_the_store_sees_the_cores_reason_not_slurms_hold(slurm, state):
    ctl = controller(state, slurm)
    blocker = slurm.submit(nodes=8, minutes=10)
    ctl.cycle()
    slurm.tick()
    job = slurm.submit(nodes=2)
    ctl.cycle()
    config = Store(state).config
    user = SlurmBackend(None, SlurmClient(slurm.run), public=(MINI8.read_text(), config))
    admin = SlurmBackend(Store(state), SlurmClient(slurm.run), clock=Clock())
    assert slurm.jobs[job]["state_reason"] == "JobHeldUser"
    for who, backend in (("user", user), ("admin", admin)):
        listed = {r.id: r.reason for r in backend.jobs()}
        assert listed[job].startswith("Resources: needs 2 nodes"), (who, listed)
        assert backend.job(job).reason == listed[job], who
        assert blocker in listed and listed[blocker] == "", who
    why = user.explain(job, 2000.0)
    assert (why.state, why.reason) == ("pending", {r.id: r.reason for r in admin.jobs()}[job])


def test_estimated_starts_are_the_controllers_for_users_and_admins(slurm, state):
    """`adsub queue --start` on Slurm: the reserved job's start as the controller's cycle expected it, from the
    store (admin) or from the job's AdminComment (a user without the store); none for a job with no estimate."""
    ctl = controller(state, slurm)
    slurm.submit(nodes=8, partition="release", minutes=10)  # the blocker, within its quota: nothing reclaims it
    ctl.cycle()
    slurm.tick(now=2000)
    reserved = slurm.submit(nodes=2, partition="train")  # within train's quota: the core reserves for it
    slurm.submit(nodes=2, partition="train")  # behind it: no reservation of its own (depth 1)
    ctl.cycle()
    config = Store(state).config
    user = SlurmBackend(None, SlurmClient(slurm.run), public=(MINI8.read_text(), config))
    admin = SlurmBackend(Store(state), SlurmClient(slurm.run), clock=Clock())
    for who, backend in (("user", user), ("admin", admin)):
        starts = backend.estimated_starts(2000.0)
        assert starts == {reserved: 2000 + 600}, (who, starts)  # neither the running blocker nor the job behind


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])  # Ctrl-C; SIGTERM (run_controller)
def test_a_stopped_controller_says_so_on_the_held_jobs_and_the_next_one_takes_it_back(slurm, state, stop):
    clock = Clock()
    blocker = slurm.submit(nodes=8, partition="release", minutes=10)
    controller(state, slurm, clock).cycle()
    slurm.tick()
    job = slurm.submit(nodes=2, partition="train")

    def stopped(report):
        raise stop

    with pytest.raises(stop):
        controller(state, slurm, clock).run(on_cycle=stopped)
    user = SlurmBackend(None, SlurmClient(slurm.run), public=(MINI8.read_text(), Store(state).config))
    admin = SlurmBackend(Store(state), SlurmClient(slurm.run), clock=clock)
    for who, backend in (("user", user), ("admin", admin)):
        assert backend.job(job).reason.startswith("NoController: the adsched controller stopped at "), who
        assert backend.estimated_starts(clock.t) == {}, who
        assert backend.job(blocker).reason == "", who  # running: Slurm's own state
    controller(state, slurm, clock).cycle()  # back: the core's reason and estimate again
    for who, backend in (("user", user), ("admin", admin)):
        assert backend.job(job).reason.startswith("Reservation") or backend.job(job).reason.startswith("Resources")
        assert backend.estimated_starts(clock.t) == {job: 2600}, who


@pytest.mark.parametrize("age, want_stale", [(10, False), (59, False), (61, True)])
def test_everyone_sees_when_the_controllers_last_cycle_is_too_old(slurm, state, age, want_stale):
    clock = Clock()
    slurm.submit(nodes=8, partition="release", minutes=10)
    controller(state, slurm, clock).cycle()
    slurm.tick()
    job = slurm.submit(nodes=2, partition="train")
    controller(state, slurm, clock).cycle()  # the last cycle, at t=2000 (then killed)
    clock.t += age
    admin = SlurmBackend(Store(state), SlurmClient(slurm.run), clock=clock)  # its heartbeat in the store
    user = SlurmBackend(None, SlurmClient(slurm.run), public=(MINI8.read_text(), Store(state).config), clock=clock,
                        state_dir=state)  # the public heartbeat file, and the reason in the job's AdminComment
    for who, backend in (("admin", admin), ("user", user)):
        reason = backend.job(job).reason
        assert reason.startswith("NoController: the adsched controller's last cycle was at ") == want_stale, who
        assert (backend.estimated_starts(clock.t) == {}) == want_stale, who


@pytest.mark.parametrize("name,rc,stderr,want_errors", [
    ("every line took", 0, "", []),
    ("an unknown job", 1, "Invalid job id specified for job 999\n", ["Invalid job id specified for job 999"]),
    # what 22.05 answers when an array's id reaches its ended task 0 too (seen on the mini-cluster)
    ("an array whose ended tasks refuse", 1, "1_0: Job has already finished\n1_1-3: No error\n", []),
    ("both", 1, "1_0: Job has already finished\n1_1-3: No error\nInvalid job id specified for job 999\n",
     ["Invalid job id specified for job 999"]),
    ("a failure that says nothing", 1, "", ["scontrol: exit 1"]),
])
def test_publishing_reports_only_real_failures(name, rc, stderr, want_errors):
    seen = []

    def runner(argv, stdin, timeout):
        seen.append((argv, stdin))
        return rc, "", stderr

    assert SlurmClient(runner).set_admin_comments({1: "adsched: a", 999: "adsched: b"}) == want_errors, name
    assert seen == [(["scontrol"], 'update JobId=1 AdminComment="adsched: a"\n'
                                   'update JobId=999 AdminComment="adsched: b"\n')]


@pytest.mark.parametrize("change, want", [
    (None, (2000.0, 0.5)),
    ("garbage", None),
    ("another owner", None),  # a heartbeat the store's owner did not write speaks for nobody
])
def test_the_public_heartbeat_is_read_only_from_the_store_owner(state, change, want):
    import os

    from adsched.publicconfig import CONTROLLER_BEAT, publish_beat, read_beat

    publish_beat(state, 2000.0, 0.5)
    path = os.path.join(state, CONTROLLER_BEAT)
    assert os.stat(path).st_mode & 0o777 == 0o644  # every user may read it
    if change == "garbage":
        Path(path).write_text("not a heartbeat\n")
    elif change == "another owner":
        os.chown(path, 65534, 65534)
    assert read_beat(state) == want
