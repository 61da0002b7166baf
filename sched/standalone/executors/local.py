"""Run every rank as a real process on this host (the demo and single-machine mode).

Each rank runs under `rankwrap` in its own session (process group), with stdout/stderr in
STATE/jobs/ID/rank-R.out|.err and its exit code in rank-R.rc. State lives in files and
the store, not in this object, so a restarted daemon picks up where the last one left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from adsched.standalone.store import JobRecord
from . import RankEnd, checkpoint_file, job_dir, rank_env


class LocalExecutor:
    def __init__(self, state_dir: os.PathLike):
        self.state_dir = os.path.abspath(state_dir)  # ranks run in their own workdir: no relative paths
        self._children: dict[int, subprocess.Popen] = {}  # reaped here so they don't linger as zombies

    def launch(self, job: JobRecord) -> dict[int, int]:
        d = job_dir(self.state_dir, job.id)
        os.makedirs(d, exist_ok=True)
        pids = {}
        for rank in range(len(job.allocations)):
            base = os.path.join(d, f"rank-{rank}")
            for suffix in (".rc", ".rc.tmp", ".rc.started"):
                if os.path.exists(base + suffix):
                    os.remove(base + suffix)  # a requeued job starts clean
            env = dict(os.environ)
            env.update(rank_env(job, rank, master_addr="127.0.0.1", state_dir=self.state_dir))
            with open(base + ".out", "ab") as out, open(base + ".err", "ab") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "adsched.standalone.executors.rankwrap", base + ".rc", "--", *job.command],
                    cwd=job.workdir if os.path.isdir(job.workdir) else None,
                    env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                )
            self._children[proc.pid] = proc
            pids[rank] = proc.pid
        return pids

    def ended(self, job: JobRecord) -> list[RankEnd]:
        d = job_dir(self.state_dir, job.id)
        ends = []
        for a in job.allocations:
            rc_path = os.path.join(d, f"rank-{a['rank']}.rc")
            # Look at the process before the file: a wrapper that wrote its file and exited
            # between the two looks must not be taken for one that was killed.
            gone = bool(a.get("pid")) and not _alive(a["pid"], self._children)
            if os.path.exists(rc_path):
                with open(rc_path) as f:
                    ends.append(RankEnd(job.id, a["rank"], int(f.read().strip() or 1)))
            elif gone:
                ends.append(RankEnd(job.id, a["rank"], -signal.SIGKILL))  # wrapper killed before it could write
        return ends

    def started(self, job: JobRecord) -> set[int]:
        d = job_dir(self.state_dir, job.id)
        return {a["rank"] for a in job.allocations if os.path.exists(os.path.join(d, f"rank-{a['rank']}.rc.started"))}

    def checkpoint_time(self, job: JobRecord) -> float | None:
        try:
            return os.stat(checkpoint_file(self.state_dir, job.id)).st_mtime
        except OSError:
            return None

    def signal(self, job: JobRecord, signum: int) -> None:
        for a in job.allocations:
            pid = a.get("pid")
            if pid and _alive(pid, self._children):
                try:
                    os.killpg(pid, signum)
                except ProcessLookupError:
                    pass


def _alive(pid: int, children: dict[int, subprocess.Popen]) -> bool:
    proc = children.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return True
        children.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
