"""The controller on the real Slurm 22.05 mini-cluster: adsched's core decides, Slurm runs.

Each scenario is one where Slurm left alone would decide differently (or could), and asserts that the core's
decision is what happened. The session's controller runs in the controller container (conftest.py).
"""

from __future__ import annotations

import json
import random
import re
import time

import pytest

from adsched.standalone.store import Store

from test_slurm_hybrid import STATE, adsub, cancel_all, client, drain, resume_all, sbatch, until

pytestmark = pytest.mark.slurm


@pytest.fixture
def slurm(minicluster):
    cancel_all(minicluster)
    yield minicluster
    cancel_all(minicluster)
    resume_all(minicluster)


def running(mc, job_id, timeout=60):
    return until(lambda: (j := client(mc).job(job_id)) and j.state == "RUNNING" and j, timeout=timeout,
                 what=f"job {job_id} running")


def events(mc, job_id, kind):
    return [e for e in Store(mc.store_dir).events(job_id) if e["kind"] == kind]


def test_jobs_go_exactly_where_the_core_puts_them(slurm):
    drain(slurm, [n for n in slurm.nodes if n != "node5"])
    seven = sbatch(slurm, "--gres=gpu:7", "--wrap", "sleep 300")
    assert running(slurm, seven).nodes == ["node5"]
    resume_all(slurm)
    # A 1-GPU job: the core packs it on node5's last free GPU and keeps idle nodes idle.
    one = sbatch(slurm, "--gres=gpu:1", "--wrap", "sleep 300")
    assert running(slurm, one).nodes == ["node5"]
    assert events(slurm, one, "start")[0]["data"]["nodes"] == ["node5"]
    # A 4-node gang with a free leaf: pinned on exactly the core's nodes (the one leaf left whole).
    gang = sbatch(slurm, "-N4", "--gres=gpu:8", "--wrap", "sleep 300")
    job = running(slurm, gang)
    decided = events(slurm, gang, "start")[0]["data"]["nodes"]
    assert decided == ["node1", "node2", "node3", "node4"] and sorted(job.nodes) == decided


def test_a_gang_goes_where_the_core_puts_it_not_where_slurm_would(slurm):
    # Busy pattern: node1 runs a job that ends within 2 minutes, node5 one that runs 10; both leaves have
    # 3 free nodes. A release gang that must fit in one leaf (max_leaves=1) is blocked: the core reserves
    # leaf1 for it (node1's job ends first). A 3-node gang for 10 minutes then comes: topology/tree, seeing
    # two leaves of 3 free nodes, takes the first (node[2-4]); the core's best fit keeps off the reserved leaf.
    for node, minutes in (("node5", 10), ("node1", 2)):
        drain(slurm, [n for n in slurm.nodes if n != node])
        busy = sbatch(slurm, "-p", "release", "--gres=gpu:8", "-t", str(minutes), "--wrap", "sleep 300")
        assert running(slurm, busy).nodes == [node]
        resume_all(slurm)
    blocked = sbatch(slurm, "-p", "release", "-N4", "--gres=gpu:8", "-t", "10", "--comment=adsched:max_leaves=1",
                     "--wrap", "true")
    why = until(lambda: (r := adsub(slurm, "explain", str(blocked), "--json")).rc == 0
                and (w := json.loads(r.stdout))["estimated_nodes"] and w, timeout=30, what="the reservation")
    assert sorted(why["estimated_nodes"]) == ["node1", "node2", "node3", "node4"], why
    gang = ["-p", "train", "-N3", "--gres=gpu:8", "-t", "10", "--wrap", "sleep 300"]
    # Slurm deciding (controller stopped, the same free nodes, the blocked gang still held): release it as root.
    slurm.signal_controller(slurm.controller_pid, "KILL")
    try:
        control = sbatch(slurm, *gang)
        assert slurm.exec(["scontrol", "release", str(control)], timeout=30).rc == 0
        slurms_nodes = sorted(running(slurm, control).nodes)
        slurm.exec(["scancel", str(control)], timeout=30)
        until(lambda: client(slurm).job(control).state not in ("RUNNING", "COMPLETING"), what="control gone")
    finally:
        slurm.controller_pid = slurm.start_controller("--interval", "0.5")
    # The core deciding: the same submission.
    mine = sbatch(slurm, *gang)
    nodes = sorted(running(slurm, mine).nodes)
    assert nodes == events(slurm, mine, "start")[0]["data"]["nodes"] == ["node6", "node7", "node8"]
    assert slurms_nodes == ["node2", "node3", "node4"] and nodes != slurms_nodes
    assert client(slurm).job(blocked).priority == 0  # still held, its leaf still promised


def test_fair_share_orders_before_slurms_fifo(slurm):
    # root runs the whole cluster for a while (usage in the adsched store); then root and tester queue
    # identical jobs, root first: Slurm's FIFO would start root's first; the core favours tester.
    first = sbatch(slurm, "-p", "train", "-N8", "--gres=gpu:8", "--wrap", "sleep 4")
    running(slurm, first)
    mine = sbatch(slurm, "-p", "train", "-N8", "--gres=gpu:8", "--wrap", "sleep 1")
    r = slurm.exec(["sbatch", "--parsable", "-p", "train", "-N8", "--gres=gpu:8", "--wrap", "sleep 1"],
                   timeout=30, user="tester")
    assert r.rc == 0, r.stderr
    theirs = int(r.stdout.strip())
    until(lambda: all((j := client(slurm).job(i)) and j.state == "COMPLETED" for i in (mine, theirs)), timeout=120,
          what="both jobs done")  # 8-node prologs and epilogs take 10-20 s each at load ~20
    start_ids = {i: events(slurm, i, "start")[0]["id"] for i in (mine, theirs)}
    assert start_ids[theirs] < start_ids[mine], "the core should start tester's job first (fair share)"
    # Slurm deciding the same pair (controller stopped, root releases both): its multifactor priority (age,
    # partition; no fair share without slurmdbd) starts root's first. Each job notes when it started.
    slurm.signal_controller(slurm.controller_pid, "KILL")
    try:
        script = "date +%s.%N > /jobs/fs-$SLURM_JOB_ID; sleep 1"
        slurms = [sbatch(slurm, "-p", "train", "-N8", "--gres=gpu:8", "--wrap", script)]
        r = slurm.exec(["sbatch", "--parsable", "-p", "train", "-N8", "--gres=gpu:8", "--wrap", script], timeout=30,
                       user="tester")
        assert r.rc == 0, r.stderr
        slurms.append(int(r.stdout.strip()))
        assert slurm.exec(["scontrol", "release", ",".join(map(str, slurms))], timeout=30).rc == 0
        until(lambda: all((j := client(slurm).job(i)) and j.state == "COMPLETED" for i in slurms), timeout=120,
              what="both control jobs done")
    finally:
        slurm.controller_pid = slurm.start_controller("--interval", "0.5")
    began = {i: float((slurm.jobs_dir / f"fs-{i}").read_text()) for i in slurms}
    assert began[slurms[0]] < began[slurms[1]], "Slurm alone starts root's job first"


def test_a_release_job_preempts_explore_gangs_which_are_requeued_whole(slurm):
    # A raw sbatch gang whose batch shell traps the signal, and an adsub gang (srun inside): issue 16 says the
    # latter must come back requeued, not FAILED with exit 143.
    trap = 'trap "echo TERM >> /jobs/term-$SLURM_JOB_ID; sleep 1; exit 0" TERM; echo up > /jobs/up-$SLURM_JOB_ID; ' \
           'sleep 300 & wait'
    raw = sbatch(slurm, "-p", "explore", "-N4", "--gres=gpu:8", "--wrap", trap)
    r = adsub(slurm, "submit", "-N", "4", "-q", "explore", "--json", "--", "sleep", "300")
    assert r.rc == 0, r.stderr
    gang = json.loads(r.stdout)["job_id"]
    victims = {v: running(slurm, v) for v in (raw, gang)}
    until(lambda: (slurm.jobs_dir / f"up-{raw}").exists(), what="the raw gang's trap is set")
    release = sbatch(slurm, "-p", "release", "-N8", "--gres=gpu:8", "--wrap", "sleep 3")
    job = until(lambda: (j := client(slurm).job(release)) and j.state in ("RUNNING", "COMPLETED") and j,
                timeout=90, what="release job started")
    assert sorted(job.nodes) == sorted(victims[raw].nodes + victims[gang].nodes)
    assert (slurm.jobs_dir / f"term-{raw}").read_text().split() == ["TERM"]  # the job saw the signal
    for v in (raw, gang):
        back = client(slurm).job(v)
        assert back.restart_count == 1 and back.state in ("PENDING", "RUNNING"), back  # requeued, not FAILED
        kinds = [e["kind"] for e in Store(slurm.store_dir).events(v)]
        assert kinds.index("preempt") < kinds.index("requeue")
        preempt, requeue = events(slurm, v, "preempt")[0], events(slurm, v, "requeue")[0]
        assert preempt["data"]["by"] == release and preempt["data"]["grace"] == 5
    # The adsub gang's shell stays through the grace period: requeued at its end, whole.
    assert events(slurm, gang, "requeue")[0]["time"] - events(slurm, gang, "preempt")[0]["time"] >= 4.5
    for v in (raw, gang):  # after the release job, each runs again whole, restarted once
        again = running(slurm, v, timeout=90)
        assert again.restart_count == 1 and len(again.nodes) == 4


def test_backfill_only_what_ends_before_the_reservation(slurm):
    # Every job within its queue's quota (a borrowing job gets no reservation).
    blocker = sbatch(slurm, "-p", "train", "-N4", "--gres=gpu:8", "-t", "3", "--wrap", "sleep 300")
    running(slurm, blocker)
    big = sbatch(slurm, "-p", "release", "-N8", "--gres=gpu:8", "-t", "10", "--wrap", "true")  # reserved at +3 min
    long = sbatch(slurm, "-p", "explore", "-N2", "--gres=gpu:8", "-t", "10", "--wrap", "sleep 300")
    short = sbatch(slurm, "-p", "explore", "-N2", "--gres=gpu:8", "-t", "1", "--wrap", "sleep 300")
    running(slurm, short)
    time.sleep(3)  # several cycles: the long one stays held although 4 nodes are idle
    queue = {j["id"]: j for j in json.loads(adsub(slurm, "queue", "--json").stdout)}
    assert queue[long]["state"] == "PENDING" and queue[big]["state"] == "PENDING"
    assert queue[long]["reason"].startswith(f"Reservation: would delay job {big}"), queue[long]["reason"]
    assert client(slurm).job(long).priority == 0  # still held by the controller
    r = adsub(slurm, "explain", str(big), "--json")
    assert r.rc == 0, r.stderr
    why = json.loads(r.stdout)
    assert why["estimated_start"] is not None and len(why["estimated_nodes"]) == 8
    # squeue --start's view: the controller's own estimate, the same reservation (its start: the blocker's limit)
    r = adsub(slurm, "queue", "--start", "--json")
    assert r.rc == 0, r.stderr
    starts = {j["id"]: j["estimated_start"] for j in json.loads(r.stdout)}
    assert starts[long] is None and abs(starts[big] - why["estimated_start"]) < 2, (starts, why)


def test_afterok_chain_runs_in_order_and_a_failed_parent_cancels(slurm):
    a = sbatch(slurm, "--gres=gpu:8", "--wrap", "sleep 1")
    b = sbatch(slurm, "--gres=gpu:8", f"--dependency=afterok:{a}", "--wrap", "sleep 1")
    c = sbatch(slurm, "--gres=gpu:8", f"--dependency=afterok:{b}", "--wrap", "true")
    bad = sbatch(slurm, "--gres=gpu:8", "--wrap", "exit 3")
    orphan = sbatch(slurm, "--gres=gpu:8", f"--dependency=afterok:{bad}", "--wrap", "true")
    until(lambda: (j := client(slurm).job(c)) and j.state == "COMPLETED", timeout=60, what="chain done")
    starts = [events(slurm, i, "start")[0]["time"] for i in (a, b, c)]
    ends = {i: client(slurm).job(i) for i in (a, b, c)}
    assert starts == sorted(starts) and all(j.state == "COMPLETED" for j in ends.values())
    assert ends[b].start_time >= ends[a].end_time and ends[c].start_time >= ends[b].end_time
    until(lambda: (j := client(slurm).job(orphan)) and j.state == "CANCELLED", timeout=30, what="orphan cancelled")
    assert not events(slurm, orphan, "start")
    assert events(slurm, orphan, "cancel")[0]["data"]["reason"] == f"DependencyNeverSatisfied: job {bad} FAILED"


def test_a_user_cannot_release_a_held_job(slurm):
    job = sbatch(slurm, "--begin=now+1hour", "--gres=gpu:1", "--wrap", "true")
    r = slurm.exec(["scontrol", "release", str(job)], timeout=30, user="tester")
    assert r.rc != 0
    own = slurm.exec(["sbatch", "--parsable", "--begin=now+1hour", "--gres=gpu:1", "--wrap", "true"], timeout=30,
                     user="tester")
    r = slurm.exec(["scontrol", "release", own.stdout.strip()], timeout=30, user="tester")
    assert r.rc != 0  # job_submit.lua's slurm_job_modify refuses (scontrol shows no reason for updates)
    assert client(slurm).job(int(own.stdout.strip())).priority == 0
    # The core holds a job until its Slurm begin time: it reaches the core with Job.begin_time and gets the
    # core's BeginTime reason (the controller passes it on; it no longer drops such jobs from the snapshot).
    until(lambda: (q := {j["id"]: j for j in json.loads(adsub(slurm, "queue", "--json").stdout)}).get(job)
          and q[job]["reason"].startswith("BeginTime: not eligible before"), timeout=30, what="BeginTime reason")


def test_controller_killed_at_random_points_every_job_runs_exactly_once(slurm):
    # 20 SIGKILLs at random points (0.2-1.2 s after each restart: while it reads, decides, pins, releases
    # or carries on a dead cycle's starts) of a busy workload of 24 gangs and single jobs.
    rng = random.Random(7)
    out = slurm.jobs_dir / "once"
    out.mkdir(exist_ok=True)
    jobs = []
    for i in range(24):
        nodes = rng.choice([1, 1, 2, 3, 4])
        gpus = 8 if nodes > 1 else rng.choice([1, 2, 4, 8])
        jobs.append(sbatch(slurm, "-p", "train", f"-N{nodes}", f"--gres=gpu:{gpus}",
                           "-t", "5", "--wrap",
                           f"echo $SLURM_JOB_ID ${{SLURM_RESTART_COUNT:-0}} $SLURMD_NODENAME >> /jobs/once/$SLURM_JOB_ID;"
                           f" sleep {rng.choice([2, 3, 4])}"))
    kills, unfinished_at_kill = 0, []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = {j.id: j.state for j in client(slurm).jobs() if j.id in jobs}
        if all(s == "COMPLETED" for s in states.values()) and len(states) == len(jobs):
            break
        if kills < 20:
            time.sleep(rng.uniform(0.2, 1.2))
            slurm.signal_controller(slurm.controller_pid, "KILL")
            kills += 1
            unfinished_at_kill.append(sum(s != "COMPLETED" for s in states.values()))
            slurm.controller_pid = slurm.start_controller("--interval", "0.5")
        else:
            time.sleep(1)
    final = {j.id: j for j in client(slurm).jobs() if j.id in jobs}
    print(f"kills {kills}, jobs not yet completed at each kill: {unfinished_at_kill}")
    assert kills == 20 and min(unfinished_at_kill) > 0  # every kill hit a busy workload
    assert {i: final[i].state for i in jobs} == {i: "COMPLETED" for i in jobs}
    for i in jobs:
        lines = (out / str(i)).read_text().splitlines()
        assert len(lines) == 1 and lines[0].split()[1] == "0", (i, lines)  # started once, never restarted
        assert final[i].restart_count == 0
    problems = [e for e in Store(slurm.store_dir).events() if e["kind"] == "mismatch" and e["job_id"] in jobs]
    assert problems == []
    # Slurm's own record: one allocation per job, by the main scheduler ("sched: Allocate JobId=N") or by
    # backfill ("backfill: Started JobId=N"); a second start would log a second one.
    log = slurm.logs()["slurmctld"]
    for i in jobs:
        starts = re.findall(rf"(?:Allocate|Started) JobId={i} ", log)
        assert len(starts) == 1, (i, re.findall(rf".*JobId={i} .*", log))


def test_an_array_is_started_task_by_task_within_its_throttle(slurm):
    # Slurm keeps the pending tasks in one record; the controller hands the core one Job per task and
    # starts each by splitting it off ("scontrol update JobId=A_I ..."), so every task runs where the core put
    # it and the %2 throttle is the core's (at most 2 at once).
    array = sbatch(slurm, "--array=0-3%2", "-p", "train", "--gres=gpu:8", "--wrap",
                   "echo $SLURM_ARRAY_TASK_ID >> /jobs/array-$SLURM_ARRAY_JOB_ID; sleep 3")
    tasks = until(lambda: len(done := [j for j in client(slurm).jobs() if j.raw.get("array_job_id") == array
                                       and j.state == "COMPLETED"]) == 4 and done, timeout=120, what="4 tasks done")
    assert sorted(j.raw["array_task_id"] for j in tasks) == [0, 1, 2, 3]
    assert sorted((slurm.jobs_dir / f"array-{array}").read_text().split()) == ["0", "1", "2", "3"]  # once each
    for j in tasks:
        assert sorted(j.nodes) == sorted(events(slurm, j.id, "start")[0]["data"]["nodes"])
    for j in tasks:  # Slurm's start and end times: never more than 2 tasks running at once
        assert sum(k.start_time <= j.start_time < k.end_time for k in tasks) <= 2
    assert [e for e in Store(slurm.store_dir).events() if e["kind"] == "mismatch"
            and e["job_id"] in {array, *(j.id for j in tasks)}] == []


def test_afterok_on_a_whole_array_waits_for_every_task_and_a_failed_task_cancels(slurm):
    # `--dependency=afterok:A` on an array is "afterok:A_*" in Slurm: every task must complete. The tasks run at
    # once; the one that ends first is task 2, whose record keeps the array's id A (Slurm hands the last split
    # task the array's record): a dependent that took A for one job would start after it alone.
    script = "sleep $((6 - 2 * SLURM_ARRAY_TASK_ID)); exit $((SLURM_ARRAY_TASK_ID == {bad}))"
    good = sbatch(slurm, "--array=0-2", "--gres=gpu:8", "--wrap", script.format(bad=9))
    failing = sbatch(slurm, "--array=0-2", "--gres=gpu:8", "--wrap", script.format(bad=1))
    after_good = sbatch(slurm, "--gres=gpu:1", f"--dependency=afterok:{good}", "--wrap", "true")
    after_failing = sbatch(slurm, "--gres=gpu:1", f"--dependency=afterok:{failing}", "--wrap", "true")
    assert client(slurm).job(after_good).dependency == f"afterok:{good}_*(unfulfilled)"

    def tasks(array):
        return {j.raw["array_task_id"]: j for j in client(slurm).jobs() if j.raw.get("array_job_id") == array
                and isinstance(j.raw.get("array_task_id"), int)}

    until(lambda: (j := client(slurm).job(after_good)) and j.state == "COMPLETED", timeout=90, what="dependent done")
    done = tasks(good)
    assert sorted(done) == [0, 1, 2] and all(j.state == "COMPLETED" for j in done.values())
    assert done[2].id == good and done[2].end_time < done[0].end_time  # A's own record ended first
    decided = events(slurm, after_good, "start")[0]["time"]
    assert decided >= max(j.end_time for j in done.values())  # the core started it after the last task ended
    until(lambda: (j := client(slurm).job(after_failing)) and j.state == "CANCELLED", timeout=60,
          what="the dependent on the failing array cancelled")
    failed = tasks(failing)
    assert {i: j.state for i, j in failed.items()} == {0: "COMPLETED", 1: "FAILED", 2: "COMPLETED"}
    assert not events(slurm, after_failing, "start")
    assert events(slurm, after_failing, "cancel")[0]["data"]["reason"] == \
        f"DependencyNeverSatisfied: job {failed[1].id} FAILED"
    assert [e for e in Store(slurm.store_dir).events() if e["kind"] in ("mismatch", "release_timeout")
            and e["job_id"] in (after_good, after_failing)] == []


def test_a_controller_stopped_by_sigterm_says_so_and_the_next_one_takes_it_back(slurm):
    blocker = sbatch(slurm, "-p", "release", "-N8", "--gres=gpu:8", "-t", "3", "--wrap", "sleep 300")
    running(slurm, blocker)
    job = sbatch(slurm, "-p", "train", "-N2", "--gres=gpu:8", "-t", "1", "--wrap", "true")

    def reasons(user="root"):  # as root: from the store; as tester: from the job's AdminComment in Slurm
        r = slurm.exec(["adsub", "queue", "--state", STATE, "--json"], timeout=30, user=user)
        assert r.rc == 0, r.stderr
        return {j["id"]: j["reason"] for j in json.loads(r.stdout)}

    first = until(lambda: (r := reasons("tester").get(job, "")).startswith("Resources: ") and r, timeout=30,
                  what="the core's reason")
    beat = slurm.exec(["cat", f"{STATE}/controller.beat"], timeout=30, user="tester")  # its public heartbeat
    assert beat.rc == 0 and len(beat.stdout.split()) == 2, beat.stderr
    slurm.signal_controller(slurm.controller_pid, "TERM")
    try:
        for user in ("root", "tester"):
            assert reasons(user)[job].startswith("NoController: the adsched controller stopped at "), user
        assert client(slurm).job(job).priority == 0  # still held: nothing starts without a controller
    finally:
        slurm.controller_pid = slurm.start_controller("--interval", "0.5")
    until(lambda: reasons("tester")[job] == reasons()[job] == first, timeout=30, what="the core's reason back")
