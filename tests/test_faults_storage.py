"""A full disk or a read-only state directory (issue 13): one clear error, no half-written job,
and the daemon keeps the jobs it has.

The state lives on a 4 MB tmpfs the test mounts (root, as in CI), filled up with a file;
or on a read-only bind mount of a normal directory.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time

import pytest

from adsched.standalone.store import JobRequest, Store

from helpers import py, wait_for
from test_e2e_local import ME

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (CI runs as root)")

CLUSTER = """
[cluster]
name = "disk"
[[nodes]]
names = "n[1-2]"
gpus = 8
[queues.work]
tier = 1
[scheduler]
cycle_interval = 0.1
"""


@contextlib.contextmanager
def mounted(target, *args):
    target.mkdir(exist_ok=True)
    subprocess.run(["mount", *args, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def adsub(state, *args):
    return subprocess.run([sys.executable, "-m", "adsched.cli.adsub", *args[:1], "--state", str(state), *args[1:]],
                          capture_output=True, text=True, timeout=60)


def fill(directory) -> None:
    """Write until the file system says it is full."""
    with open(os.path.join(directory, "filler"), "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    try:
        os.fsync(f.fileno())
    except (OSError, ValueError):
        pass


def test_full_disk_a_submit_fails_with_one_line_and_the_daemon_keeps_its_jobs(tmp_path):
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=4m", "tmpfs") as disk:
        state = disk / "state"
        store = Store.init(state, CLUSTER)
        marker = tmp_path / "ran"  # outside the full disk
        running = store.submit(JobRequest(py(f"import time; time.sleep(1); open({str(marker)!r}, 'w')"),
                                          user=ME, workdir=str(tmp_path)), time.time())
        daemon = subprocess.Popen([sys.executable, "-m", "adsched.cli.adsched", "run", "--state", str(state)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: store.job(running).state == "RUNNING" and all(a["pid"] for a in store.job(running).allocations))
            before = len(store.jobs())
            fill(disk)
            wait_for(marker.exists, what="the rank's command finished")  # its exit code waits for space

            r = adsub(state, "submit", "-D", str(tmp_path), "--", "true")
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
            assert "database or disk is full" in lines[0] or "No space left" in lines[0], lines[0]
            r = adsub(state, "submit", "-a", "0-99", "-D", str(tmp_path), "--", "true")  # 100 rows in one transaction
            assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr

            time.sleep(1.0)  # the daemon cycles against the full disk meanwhile
            assert daemon.poll() is None, daemon.stderr.read()
            assert store.job(running).state == "RUNNING"
            os.remove(disk / "filler")

            wait_for(lambda: store.job(running).state != "RUNNING", timeout=30, what="the running job ended")
            job = store.job(running)
            assert (job.state, job.reason) == ("COMPLETED", ""), os.listdir(state / "jobs" / str(running))
            assert len(store.jobs()) == before  # nothing half-written: neither submit left a row
            later = adsub(state, "submit", "-D", str(tmp_path), "--", "true")
            assert later.returncode == 0, later.stderr
            later_id = int(later.stdout.split()[-1])
            wait_for(lambda: store.job(later_id).state == "COMPLETED", timeout=30, what="the later job completed")
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)


def test_read_only_state_dir_is_one_clear_line(tmp_path):
    state = tmp_path / "state"
    store = Store.init(state, CLUSTER)
    store.submit(JobRequest(["true"], user=ME), time.time())
    del store
    with mounted(tmp_path / "ro", "--bind", str(state)) as ro:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        for args in (("submit", "--", "true"), ("cancel", "1")):
            r = adsub(ro, *args)
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
            assert lines[0].startswith(f"Error: cannot use the adsched store {ro}/adsched.sqlite: "), lines[0]
            assert "(the state directory is on a read-only file system)" in lines[0], lines[0]
    after = Store(state)
    assert [(j.id, j.state) for j in after.jobs()] == [(1, "PENDING")]


def test_an_exit_code_is_retried_while_the_disk_fails_but_not_once_its_directory_is_gone(tmp_path):
    from adsched.standalone.executors import rankwrap

    gone = tmp_path / "removed" / "rank-0.0.rc"
    done = threading.Event()
    threading.Thread(target=lambda: (rankwrap._record(str(gone), 0), done.set()), daemon=True).start()
    assert done.wait(5), "the wrapper kept retrying for a job directory that no longer exists"

    kept = tmp_path / "jobs" / "rank-0.0.rc"
    kept.parent.mkdir()
    blocker = tmp_path / "jobs" / "rank-0.0.rc.tmp"
    blocker.mkdir()  # its temporary file cannot be written (IsADirectoryError), as on a failing disk: keep trying
    written = threading.Event()
    threading.Thread(target=lambda: (rankwrap._record(str(kept), 3), written.set()), daemon=True).start()
    assert not written.wait(0.6)
    blocker.rmdir()
    assert written.wait(10) and kept.read_text() == "3"
