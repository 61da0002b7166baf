"""adsched metrics: Prometheus text exposition, read back with prometheus_client's own parser."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from adsched.cli import adsched as adsched_cli
from adsched.core.model import Decisions, NodeAlloc, Start
from adsched.standalone import metrics, nodeadmin
from adsched.standalone.store import JobRequest, Store

from test_config import EXAMPLES

DEMO = (EXAMPLES / "demo.toml").read_text()


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value; the parser raises on anything malformed."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.fixture
def store(tmp_path):
    s = Store.init(tmp_path / "s", DEMO)
    sub = lambda **kw: s.submit(JobRequest(command=["true"], **kw), 1.0)
    a, b, c = sub(queue="train", nodes=2), sub(queue="debug", gpus=3), sub(queue="train", nodes=12)
    sub(queue="debug", gpus=1)
    whole = lambda n: NodeAlloc(n, tuple(range(8)))
    s.record_cycle(Decisions(starts=[Start(a, (whole("node01"), whole("node02"))),
                                     Start(b, (NodeAlloc("node05", (0, 1, 2)),))],
                             pending_reasons={c: "Resources: needs 12 nodes"}), 2.0)
    s.finish(b, "FAILED", 1, "rank 0 exited with code 1", 3.0)
    s.add_event(a, "preempt", {"by": 99}, 3.0)
    nodeadmin.set_state(s, ("node16",), "drain", "fan", None, 4.0)
    return s


def test_exposition_parses_and_counts_what_the_store_holds(store):
    writer = metrics.MetricsWriter(store, None)
    for took in (0.003, 0.04, 0.3):
        writer.after_cycle(metrics.time.time() - took)
    got = samples(metrics.exposition(store))
    assert got["adsched_jobs", (("queue", "train"), ("state", "running"))] == 1
    assert got["adsched_jobs", (("queue", "train"), ("state", "pending"))] == 1
    assert got["adsched_jobs", (("queue", "debug"), ("state", "pending"))] == 1
    assert got["adsched_jobs_finished_total", (("queue", "debug"), ("state", "failed"))] == 1
    assert got["adsched_pending_jobs", (("queue", "train"), ("reason", "Resources"))] == 1
    assert got["adsched_pending_jobs", (("queue", "debug"), ("reason", "None"))] == 1
    gpus = lambda leaf, state: got["adsched_gpus", (("leaf", leaf), ("state", state))]
    assert (gpus("leaf1", "busy"), gpus("leaf1", "free"), gpus("leaf1", "held")) == (16, 16, 0)
    assert (gpus("leaf2", "busy"), gpus("leaf2", "free")) == (0, 32)  # job b ended
    assert (gpus("leaf4", "free"), gpus("leaf4", "held")) == (24, 8)  # node16 drained
    assert got["adsched_nodes", (("state", "drain"),)] == 1
    assert got["adsched_preemptions_total", ()] == 1
    bucket = lambda le: got["adsched_cycle_duration_seconds_bucket", (("le", le),)]
    assert (bucket("0.005"), bucket("0.05"), bucket("0.5"), bucket("+Inf")) == (1, 2, 3, 3)
    assert got["adsched_cycle_duration_seconds_count", ()] == 3
    assert got["adsched_cycle_duration_seconds_sum", ()] == pytest.approx(0.343, abs=0.05)
    assert got["adsched_last_cycle_timestamp_seconds", ()] > 0


def test_label_values_are_escaped(store):
    store.conn.execute("UPDATE jobs SET reason = ? WHERE id = 4", ('Weird"one\\x\nz: y',))
    store.conn.commit()
    got = samples(metrics.exposition(store))
    assert got["adsched_pending_jobs", (("queue", "debug"), ("reason", 'Weird"one\\x\nz'))] == 1


def test_command_and_bad_output_path(store, tmp_path):
    r = CliRunner().invoke(adsched_cli.main, ["metrics", "--state", str(store.state_dir)])
    assert r.exit_code == 0 and samples(r.output)["adsched_nodes", (("state", "up"),)] == 15
    r = CliRunner().invoke(adsched_cli.main, ["metrics", "--state", str(store.state_dir), "-o",
                                              str(tmp_path / "no" / "m.prom")])
    assert r.exit_code == 2 and "cannot write there" in r.output and len(r.output.strip().splitlines()) == 1


def test_daemon_writes_the_textfile_every_cycle(tmp_path):
    adsched_exe, adsub_exe = shutil.which("adsched"), shutil.which("adsub")
    assert adsched_exe and adsub_exe, "adsched/adsub not on PATH (see PROTOCOL)"
    state, prom = str(tmp_path / "s"), tmp_path / "adsched.prom"
    run = lambda *a: subprocess.run(list(a), capture_output=True, text=True, timeout=60)
    assert run(adsched_exe, "init", "--state", state, "--cluster", str(EXAMPLES / "demo.toml")).returncode == 0
    assert run(adsub_exe, "submit", "--state", state, "-q", "debug", "--gpus", "1", "--", "true").returncode == 0
    r = run(adsched_exe, "run", "--until-idle", "--max-seconds", "30", "--state", state, "--metrics-file", str(prom))
    assert r.returncode == 0, r.stderr
    got = samples(prom.read_text())
    assert got["adsched_jobs_finished_total", (("queue", "debug"), ("state", "completed"))] == 1
    assert got["adsched_cycle_duration_seconds_count", ()] >= 2
    r = run(adsched_exe, "run", "--once", "--state", state, "--metrics-file", str(tmp_path / "none" / "x.prom"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
