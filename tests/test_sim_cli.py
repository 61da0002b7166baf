"""`adsched sim` through click's CliRunner: table, --json, plots, and one-line errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from adsched.cli.sim import sim
from shared_data import KTH, OPENB_NODES, OPENB_PODS, TRACES, requires  # noqa: F401

OPENB = OPENB_PODS
needs_kth = requires(KTH)

SWF = """; MaxNodes: 4
; MaxProcs: 4
1 0 5 100 2 -1 -1 2 200 -1 1 1 1 -1 -1 -1 -1 -1
2 10 0 50 4 -1 -1 4 -1 -1 1 2 2 -1 -1 -1 -1 -1
broken line
3 20 0 30 1 -1 -1 1 60 -1 1 1 1 -1 -1 -1 -1 -1
"""


def run(*args):
    return CliRunner().invoke(sim, [str(a) for a in args])


@pytest.fixture
def swf(tmp_path):
    p = tmp_path / "tiny.swf"
    p.write_text(SWF)
    return p


def test_json_parses_and_has_the_default_policies(swf):
    r = run(swf, "--json", "--workers", "1")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [p["policy"] for p in out["policies"]] == ["fifo", "backfill-flat", "adsched"]  # conservative: by name
    assert out["loader"]["bad_lines"] == 1 and out["loader"]["first_bad_lines"] == ["line 5: expected 18 fields, found 2"]
    assert out["cluster"]["name"] == "kth100"
    assert all(p["jobs"] == 3 for p in out["policies"])
    assert out["production"]["wait_mean"] == pytest.approx(5 / 3)


def test_conservative_is_run_when_named(swf):
    r = run(swf, "--json", "--workers", "1", "--policy", "adsched,conservative")
    assert r.exit_code == 0, r.output
    assert [p["policy"] for p in json.loads(r.output)["policies"]] == ["adsched", "conservative"]


def test_table_and_plots(swf, tmp_path):
    r = run(swf, "--policy", "adsched", "--plots", tmp_path / "plots")
    assert r.exit_code == 0, r.output
    assert "adsched" in r.output and "trace (production)" in r.output and "bad lines" in r.output
    for name in ("wait_cdf.png", "utilization.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_bad_trace_path_is_one_line_exit_2(tmp_path):
    r = run(tmp_path / "nope.swf")
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and r.output.startswith("Error: cannot read trace")
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)


@pytest.mark.parametrize("args, message", [
    (["--policy", "sjf"], "unknown policy sjf"),
    (["--queue-map", "zero"], "--queue-map"),
    (["--cluster", "/nonexistent.toml"], "cannot read"),
])
def test_bad_options_are_one_line(swf, args, message):
    r = run(swf, *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and r.output.strip().count("\n") == 0


def test_not_a_trace_is_one_line(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello\n")
    r = run(p)
    assert r.exit_code == 2 and "not an SWF log" in r.output and r.output.strip().count("\n") == 0


def test_queue_map_routes_swf_queues(tmp_path):
    p = tmp_path / "q.swf"
    p.write_text("1 0 0 10 1 -1 -1 1 60 -1 1 1 1 -1 7 -1 -1 -1\n2 0 0 10 1 -1 -1 1 60 -1 1 1 1 -1 8 -1 -1 -1\n")
    r = run(p, "--json", "--policy", "adsched", "--queue-map", "8=nosuch")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["loader"]["dropped"] == {"unknown queue 'nosuch'": 1}
    assert list(out["policies"][0]["queues"]) == ["batch"]


@needs_kth
def test_real_slice_parallel_equals_serial():
    a = run(KTH, "--limit", "150", "--json", "--workers", "1")
    b = run(KTH, "--limit", "150", "--json", "--workers", "2")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    strip = lambda out: [{k: v for k, v in p.items() if not k.endswith("seconds")} for p in json.loads(out)["policies"]]
    assert strip(a.output) == strip(b.output)
    assert json.loads(a.output)["loader"]["jobs_replayed"] == 150


@requires(OPENB_PODS)
def test_openb_slice_on_generated_cluster():
    r = run(OPENB, "--limit", "300", "--json", "--policy", "adsched")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["cluster"]["nodes"] == 1213 and out["trace"]["format"] == "openb"
    assert out["policies"][0]["jobs"] == 300
