"""-D/--chdir: a working directory that does not exist is refused at submit where the submitter can
see it (ranks run on this host), and otherwise fails the rank with a clear line in its stderr
(it used to be ignored: the job ran elsewhere and COMPLETED)."""

from __future__ import annotations

import os
import time

import pytest
from click.testing import CliRunner

from adsched.cli import adsched as adsched_cli
from adsched.cli import adsub as adsub_cli
from adsched.standalone.daemon import Daemon
from adsched.standalone.executors.local import LocalExecutor
from adsched.standalone.store import JobRequest, Store

from test_config import EXAMPLES
from test_e2e_local import SMALL
from users import unix_users


@pytest.fixture
def state(tmp_path):
    d = str(tmp_path / "state")
    assert CliRunner().invoke(adsched_cli.main, ["init", "--state", d, "--cluster", str(EXAMPLES / "demo.toml")]
                              ).exit_code == 0
    return d


@pytest.mark.parametrize("workdir,extra,want", [
    ("/nonexistent-adsched", [], "-D/--chdir: /nonexistent-adsched: no such directory"),
    ("/nonexistent-adsched", ["--test-only"], "-D/--chdir: /nonexistent-adsched: no such directory"),
    ("/etc/hostname", [], "-D/--chdir: /etc/hostname: not a directory"),
])
def test_submit_refuses_a_missing_workdir(state, workdir, extra, want):
    r = CliRunner().invoke(adsub_cli.main, ["submit", "--state", state, "-D", workdir, *extra, "--", "true"])
    assert (r.exit_code, r.output.strip()) == (2, f"Error: {want}")
    assert Store(state).jobs() == []


def test_submit_accepts_an_existing_workdir(state, tmp_path):
    r = CliRunner().invoke(adsub_cli.main, ["submit", "--state", state, "-D", str(tmp_path), "--", "true"])
    assert r.exit_code == 0 and Store(state).job(1).workdir == str(tmp_path)


def _run_to_end(store: Store, executor) -> None:
    Daemon(store, executor, kill_wait=2.0).run(until_idle=True, max_seconds=30)


def test_a_workdir_gone_by_start_fails_the_rank_with_a_clear_line(tmp_path):
    store = Store.init(tmp_path / "state", SMALL)
    gone = tmp_path / "gone"
    job_id = store.submit(JobRequest(["true"], nodes=2, workdir=str(gone)), time.time())  # removed after submit
    _run_to_end(store, LocalExecutor(store.state_dir))
    job = store.job(job_id)
    assert (job.state, job.exit_code) == ("FAILED", 1)
    err = (store.state_dir / "jobs" / str(job_id) / "rank-0.err").read_text()
    assert err == f"adsched: cannot enter working directory '{gone}': No such file or directory\n"


def test_a_workdir_its_owner_cannot_enter_fails_the_rank(tmp_path):
    """A root daemon runs the job as its owner, who may not enter /root: no fallback to HOME."""
    with unix_users(1, prefix="adwd") as (user,):
        store = Store.init(tmp_path / "state", SMALL)
        job_id = store.submit(JobRequest(["/bin/true"], user=user.name, workdir="/root"), time.time())
        _run_to_end(store, LocalExecutor(store.state_dir, owner_mode=True))
        job = store.job(job_id)
        err = (store.state_dir / "jobs" / str(job_id) / "rank-0.err").read_text()
    assert (job.state, job.exit_code) == ("FAILED", 1), job.reason
    assert err == f"adsched: cannot enter working directory '/root' as {user.name}: Permission denied\n"


def test_a_bulk_file_with_a_missing_workdir_submits_nothing(state, tmp_path):
    f = tmp_path / "jobs.jsonl"
    f.write_text(f'{{"command": ["true"], "workdir": "{tmp_path}"}}\n'
                 '{"command": ["true"], "workdir": "/nonexistent-adsched"}\n')
    r = CliRunner().invoke(adsub_cli.main, ["submit", "--state", state, "--file", str(f)])
    assert (r.exit_code, r.output.strip()) == (2, "Error: -D/--chdir: /nonexistent-adsched: no such directory")
    assert Store(state).jobs() == []
