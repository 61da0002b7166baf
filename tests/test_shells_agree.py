"""One workload through two shells, the standalone daemon (its real store, a fake clock and
an executor whose ranks run on that clock) and the simulator: every cycle's decisions must
be the same, starts with their nodes and GPUs, preemptions, cancels, reservations and reasons.

The daemon cycles at the instants the simulator does (the simulator's event times), so both
call the core with the same `now`; that both shells then hand it the same snapshot is what
is under test (borrowing kept, preemptions in course, dependencies, fair-share usage).
"""

from __future__ import annotations

import random
import signal

import pytest

import adsched.sim.engine as engine
import adsched.standalone.daemon as daemon_module
from adsched.core.model import Decisions
from adsched.sim.traces import SimJob
from adsched.standalone.daemon import Daemon
from adsched.standalone.executors import RankEnd
from adsched.standalone.store import JobRequest, Store

CLUSTER = """
[cluster]
name = "agree"
[[nodes]]
names = "n[1-6]"
gpus = 8
[switches.leaf1]
nodes = "n[1-3]"
[switches.leaf2]
nodes = "n[4-6]"
[switches.spine]
switches = "leaf[1-2]"
[queues.release]
tier = 10
preempts = ["explore"]
[queues.explore]
tier = 1
preemptible = true
grace_period = "0:30"
[queues.lab]
quota_gpus = 16
grace_period = "0:30"
[queues.team]
quota_gpus = 8
borrow_limit_gpus = 24
grace_period = "0:30"
[scheduler]
default_queue = "explore"
reservation_depth = 2
preemption_depth = 4
weight_fairshare = 1000
weight_priority = 1
fairshare_half_life = "2:00:00"
"""

USERS = ("alice", "bob", "carol")


def workload(seed: int, count: int) -> list[tuple[float, JobRequest, float]]:
    """(submit time, request, run time): gangs and sub-node jobs over every queue and user, a
    few dependencies; run times end before the time limits."""
    rng = random.Random(seed)
    out, t = [], 0.0
    for k in range(1, count + 1):
        t += rng.choice((0, 0, 50, 100, 300))
        queue = rng.choice(("explore", "explore", "release", "lab", "team", "team"))
        nodes = rng.choice((1, 1, 2, 3, 4))
        gpus = {} if nodes > 1 or rng.random() < 0.5 else {"gpus": rng.choice((2, 4))}
        run = float(rng.choice((400, 900, 1500, 2500)))
        dependency = f"afterok:{rng.randrange(1, k)}" if k > 3 and rng.random() < 0.1 else None
        req = JobRequest(["true"], nodes=nodes, queue=queue, user=rng.choice(USERS), time="1:00:00",
                         priority=rng.choice((0, 0, 5)), dependency=dependency, **gpus)
        out.append((t, req, run))
    return out


class ClockedExecutor:
    """Ranks that run on the test's clock: every rank of a job ends `run` seconds after its
    launch; a preemption signal ends them when the grace period runs out (the kill)."""

    def __init__(self, clock, run_times: dict[int, float], grace: dict[str, float]):
        self.clock, self.run_times, self.grace = clock, run_times, grace
        self.ends: dict[int, tuple[float, int]] = {}  # job id -> (when its ranks end, exit code)
        self.natural_end_in_grace: list[int] = []

    def launch(self, job):
        self.ends[job.id] = (self.clock() + self.run_times[job.id], 0)
        return {rank: 0 for rank in range(len(job.allocations))}

    def ended(self, job):
        at, code = self.ends[job.id]
        if at > self.clock():
            return []
        return [RankEnd(job.id, rank, code) for rank in range(len(job.allocations))]

    def signal(self, job, signum):
        at, _ = self.ends[job.id]
        kill = self.clock() if signum == signal.SIGKILL else self.clock() + self.grace[job.queue]
        if at <= kill:  # would end on its own first: the simulator says it ends, the daemon requeues
            self.natural_end_in_grace.append(job.id)
        self.ends[job.id] = (min(at, kill), -signum)

    def started(self, job):
        return set(range(len(job.allocations)))

    def checkpoint_time(self, job):
        return None

    def next_end(self, after: float) -> float | None:
        return min((at for at, _ in self.ends.values() if at > after), default=None)


def recording(monkeypatch, module) -> list[tuple[float, object, Decisions]]:
    seen = []
    real = module.schedule

    def spy(snapshot, config, now, *memo):
        d = real(snapshot, config, now, *memo)
        seen.append((now, snapshot, d))
        return d

    monkeypatch.setattr(module, "schedule", spy)
    return seen


def decided(cycles) -> list[tuple]:
    """Every cycle that had a pending job, as comparable data."""
    return [(now, [(s.job_id, s.placement, s.borrowing) for s in d.starts],
             [(p.victim_id, p.preemptor_id, p.reason) for p in d.preemptions], sorted(d.cancels.items()),
             d.reservations, sorted(d.pending_reasons.items()))
            for now, snap, d in cycles if snap.pending]


@pytest.mark.parametrize("seed", [1, 5])
def test_daemon_and_simulator_make_the_same_decisions(tmp_path, monkeypatch, seed):
    store = Store.init(tmp_path / "state", CLUSTER, memory=True)
    config = store.config
    work = workload(seed, 40)

    # The simulator first: its jobs are the ones the store will hold (ids 1.. in submit order).
    sim_jobs = [SimJob(store.build_job(req, t, job_id=k), run, None) for k, (t, req, run) in enumerate(work, 1)]
    sim_cycles = recording(monkeypatch, engine)
    res = engine.simulate(sim_jobs, config, check_invariants=True)
    instants = sorted({t for t, _ in res.busy})

    clock = [0.0]
    executor = ClockedExecutor(lambda: clock[0], {k: run for k, (_, _, run) in enumerate(work, 1)},
                               {q.name: float(q.grace_period) for q in config.queues.values()})
    daemon = Daemon(store, executor, clock=lambda: clock[0])
    daemon_cycles = recording(monkeypatch, daemon_module)
    submitted = 0
    for now in instants:
        clock[0] = now
        while submitted < len(work) and work[submitted][0] <= now:
            assert store.submit(work[submitted][1], now) == submitted + 1
            submitted += 1
        daemon.cycle()
    assert submitted == len(work) and not store.jobs(states=("PENDING", "RUNNING"))
    # No daemon event fell between two of the simulator's instants, and no run hit the one
    # case the two model apart (a victim ending on its own inside its grace period).
    assert executor.next_end(instants[-1]) is None and executor.natural_end_in_grace == []

    want = decided(sim_cycles)
    got = decided(daemon_cycles)
    assert len(got) == len(want)
    for daemon_cycle, sim_cycle in zip(got, want):
        assert daemon_cycle == sim_cycle
    # The workload exercises what the shells must carry: preemption, reclaim of borrowed GPUs,
    # dependencies and fair share.
    assert res.preemptions > 0 and any(s.borrowing for _, _, d in sim_cycles for s in d.starts)
    assert any("reclaims borrowed" in p.reason for _, _, d in sim_cycles for p in d.preemptions)
