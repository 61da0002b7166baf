"""Run every rank as a real process on this host (the demo and single-machine mode).

Each rank runs under `rankwrap` in its own session (process group), with stdout/stderr in
STATE/jobs/ID/rank-R.out|.err and its exit code in rank-R.rc. State lives in files and
the store, not in this object, so a restarted daemon picks up where the last one left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from adsched.standalone import crashpoints
from adsched.standalone.store import JobRecord
from . import RankEnd, checkpoint_file, job_dir, probe, rank_base, rank_env
from .runas import Account, owner_env, run_as

RANKWRAP = "adsched.standalone.executors.rankwrap"


class LocalExecutor:
    def __init__(self, state_dir: os.PathLike, owner_mode: bool = False):
        self.state_dir = os.path.abspath(state_dir)  # ranks run in their own workdir: no relative paths
        self.owner_mode = owner_mode  # run each job as its owner (runas.py); `adsched run` sets it
        self._children: dict[int, subprocess.Popen] = {}  # reaped here so they don't linger as zombies

    def launch(self, job: JobRecord, ranks: list[int] | None = None) -> dict[int, int]:
        account = run_as(job, self.owner_mode)  # raises JobRefused before anything runs
        d = job_dir(self.state_dir, job.id)
        os.makedirs(d, exist_ok=True)
        if account is not None:
            _private_job_dir(d, account, checkpoint_file(self.state_dir, job.id))
        pids = {}
        for rank in range(len(job.allocations)) if ranks is None else ranks:
            out_base = os.path.join(d, f"rank-{rank}")
            base = rank_base(self.state_dir, job, rank)  # this attempt's exit-code files
            renv = rank_env(job, rank, master_addr="127.0.0.1", state_dir=self.state_dir)
            if account is None:
                env, wrap, cwd = {**os.environ, **renv}, ["--workdir", job.workdir], None
            else:  # the daemon's environment for the root wrapper; the job's goes to the owner only
                env, cwd = dict(os.environ), "/"
                wrap = ["--as", account.name, "--env-file", _write_private(base + ".env", owner_env(account, renv)),
                        "--workdir", job.workdir]
            out, err = (_output_file(out_base + suffix, account) for suffix in (".out", ".err"))
            with out, err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", RANKWRAP, base + ".rc", *wrap, "--", *job.command],
                    cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                )
            self._children[proc.pid] = proc
            pids[rank] = proc.pid
            crashpoints.hit("launch")
        return pids

    def reconcile(self, job: JobRecord) -> dict[int, int]:
        pids, never_launched = {}, []
        for a in job.allocations:
            if a.get("pid"):
                continue
            what, pid = probe.rank_state(rank_base(self.state_dir, job, a["rank"]) + ".rc")
            if what == "pid":
                pids[a["rank"]] = pid  # adopt it
            elif what == "never":
                never_launched.append(a["rank"])
        if never_launched:  # the wrapper holding each rank's claim is the rank (probe.py), not always ours
            for rank, pid in self.launch(job, never_launched).items():
                pids[rank] = probe.claimed_by(rank_base(self.state_dir, job, rank) + ".rc", pid)
        return pids

    def sweep(self, keep: set[tuple[int, int]]) -> list[str]:
        """Kill every rank wrapper of this state dir whose (job, attempt) is not in `keep`."""
        return probe.sweep(self.state_dir, keep)

    def ended(self, job: JobRecord) -> list[RankEnd]:
        ends = []
        for a in job.allocations:
            rc_path = rank_base(self.state_dir, job, a["rank"]) + ".rc"
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
        return {a["rank"] for a in job.allocations
                if os.path.exists(rank_base(self.state_dir, job, a["rank"]) + ".rc.started")}

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
    return not _zombie(pid)


_zombie = probe.zombie  # an orphaned wrapper that ended but was never reaped


def _rank_wrappers() -> dict[str, int]:
    """Live rank wrappers on this host: their exit-code file (which says job, rank, attempt) -> a pid."""
    return {rc: pids[0] for rc, pids in probe.live_wrappers().items()}


def _output_file(path: str, account: Account | None):
    """A rank's .out/.err: private to the job's owner (never follows a link planted in its place)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    if account is not None:
        os.fchown(fd, account.uid, account.gid)
    return os.fdopen(fd, "ab")


def _write_private(path: str, env: dict[str, str]) -> str:
    """The owner's environment for rankwrap: readable by the daemon's user only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(env, f)
    return path


def _private_job_dir(d: str, account: Account, checkpoint: str) -> None:
    """jobs/ID stays the daemon's (so exit codes cannot be forged), passable by others (0711); the
    owner gets an empty checkpoint file to touch (mtime 0: no checkpoint reported yet)."""
    os.chmod(d, 0o711)
    os.chmod(os.path.dirname(d), 0o711)
    if not os.path.exists(checkpoint):
        fd = os.open(checkpoint, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.fchown(fd, account.uid, account.gid)
        os.close(fd)
        os.utime(checkpoint, (0, 0))
