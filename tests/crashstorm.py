"""The crash storm the fault tests share: tests/faults_driver.py kills a daemon over one state dir again and
again while the test submits; then what the ranks logged and how every job ended are checked the same way.

Ranks run the RANK script of test_faults_crash.py: each logs `start`/`end JOB ATTEMPT RANK PID` to RANKLOG, and
a rank running beside another copy of itself logs a line starting with DUP.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from adsched.standalone.store import Store


@dataclass
class StormReport:
    log: list[list[str]]  # the ranks' log lines, split
    dups: list[list[str]]  # DUP lines: a rank ran beside a copy of itself
    jobs: dict  # job id -> Job, as the store ends them
    lives: list[dict]  # one per daemon life: killed, cli
    points: collections.Counter  # crash point -> times the daemon died there
    elapsed: float

    def summary(self, rank_starts: int) -> str:
        return (f"{sum(x['killed'] for x in self.lives)} crashes in {len(self.lives)} daemon lives "
                f"({sum(x['cli'] for x in self.lives)} via `adsched run`), {self.elapsed:.0f} s; "
                f"crash points: {dict(self.points)}; {len(self.jobs)} jobs checked, "
                f"{sum(j.restart_count for j in self.jobs.values())} requeues, {rank_starts} rank starts; "
                f"duplicates: {len(self.dups)}")


class Storm:
    """The driver process killing the daemon of `state` up to `crashes` times (`ssh`: the SSH executor's nodes)."""

    def __init__(self, tmp: Path, state: Path, seed: int, crashes: int, ssh: dict | None = None):
        self.tmp, self.state = tmp, state
        self.progress, self.stop = tmp / "progress.jsonl", tmp / "stop"
        args = [str(state), str(seed), str(crashes), str(self.progress), str(self.stop)]
        if ssh is not None:
            args.append(json.dumps(ssh))
        self.driver = subprocess.Popen([sys.executable, str(Path(__file__).parent / "faults_driver.py"), *args])
        self.t0 = time.monotonic()

    def crashed(self) -> int:
        lines = self.progress.read_text().splitlines() if self.progress.exists() else []
        return json.loads(lines[-1])["crashed"] if lines else 0

    def run(self, step, crashes: int, seconds: float, min_crashes: int) -> None:
        """Call `step()` (the workload) every 0.2 s until `crashes` crashes or `seconds`; then let the driver
        finish (it restarts the daemon one last time and waits for every job to end)."""
        try:
            while self.crashed() < crashes and time.monotonic() - self.t0 < seconds:
                assert self.driver.poll() is None, "the driver stopped early"
                step()
                time.sleep(0.2)
            assert self.crashed() >= min_crashes, f"only {self.crashed()} crashes in {seconds:g} s"
            self.stop.touch()
            assert self.driver.wait(timeout=180) == 0
        finally:
            if self.driver.poll() is None:
                self.driver.kill()
                self.driver.wait()

    def report(self, store: Store) -> StormReport:
        log = [line.split() for line in (self.tmp / "ranks.log").read_text().splitlines()]
        return StormReport(
            log=log, dups=[line for line in log if line[0].startswith("DUP")], jobs={j.id: j for j in store.jobs()},
            lives=[json.loads(line) for line in self.progress.read_text().splitlines()],
            points=collections.Counter((self.state / "crash-points.log").read_text().split()),
            elapsed=time.monotonic() - self.t0)


def wrong_endings(store: Store, jobs: dict, natural: dict[int, str], cancelled: dict[int, str], rank_ended) -> list:
    """Jobs that did not end exactly once in the state they had to: their natural end, or CANCELLED where a
    cancel answered so (a cancel that found the job ending, CANCELLING, allows either). A COMPLETED job must
    have every rank's end logged: `rank_ended(job, rank)`."""
    wrong = []
    for j in jobs.values():
        terminal = [e for e in store.events(j.id) if e["kind"] in ("end", "cancel")]
        allowed = {"CANCELLED"} if cancelled.get(j.id) == "CANCELLED" else (
            {"CANCELLED", natural[j.id]} if j.id in cancelled else {natural[j.id]})
        if j.state not in allowed or len(terminal) != 1:
            wrong.append((j.id, j.state, sorted(allowed), [e["kind"] for e in store.events(j.id)], j.reason))
        if j.state == "COMPLETED":
            missing = [r for r in range(j.num_nodes) if not rank_ended(j, r)]
            if missing:
                wrong.append((j.id, "COMPLETED without ranks ending", missing))
    return wrong
