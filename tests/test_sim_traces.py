"""Trace loaders: hand-made SWF (header, malformed lines, -1 fields), the mapping, and the real files."""

from __future__ import annotations

import gzip

import pytest
from builders import cluster

from adsched.sim.traces import (SwfMapping, TraceError, load_trace, openb_cluster, parse_swf, to_workload)
from shared_data import KTH, OPENB_NODES, OPENB_PODS, TRACES, requires  # noqa: F401

needs_kth = requires(KTH)
needs_openb = requires(OPENB_PODS, OPENB_NODES)


def swf_line(job_id, submit=0, wait=0, run=100, procs=1, req_time=200, queue=-1, user=1, req_procs=None):
    req_procs = procs if req_procs is None else req_procs
    fields = [job_id, submit, wait, run, procs, -1, -1, req_procs, req_time, -1, 1, user, user, -1, queue, -1, -1, -1]
    return " ".join(str(f) for f in fields)


SWF = "\n".join([
    "; Version: 2.2",
    "; MaxNodes: 4",
    "; MaxProcs: 32",
    ";",
    swf_line(1, submit=0, procs=4),  # 4 procs < 8: 1 node x 4 GPUs
    "this line is garbage",  # line 6
    swf_line(2, submit=5, procs=16, req_time=-1, run=50),  # 2 nodes x 8, limit = run time
    "  3 10 0 x 1 -1 -1 1 60 -1 1 1 1 -1 -1 -1 -1 -1",  # line 8: run time not a number
    swf_line(4, submit=-1),  # line 9: no submit time
    swf_line(5, submit=20, procs=-1, req_procs=9),  # allocated unknown: requested 9 -> 2 nodes x 8
    swf_line(6, submit=30, run=-1),  # no run time: skipped
    swf_line(7, submit=40, procs=0, req_procs=-1),  # no processor count: skipped
    swf_line(8, submit=50, run=500, req_time=100, queue=2),  # run > limit: clamped later
    "1 2 3",  # line 14: too few fields
    "",
])


def test_swf_header_mapping_and_bad_lines_with_numbers():
    tr = parse_swf(SWF.splitlines())
    assert tr.header["MaxNodes"] == "4" and tr.header["adsched.procs_as"] == "gpu"  # MaxProcs != MaxNodes
    assert [j.id for j in tr.jobs] == [1, 2, 5, 8]
    by_id = {j.id: j for j in tr.jobs}
    assert (by_id[1].num_nodes, by_id[1].gpus_per_node) == (1, 4)
    assert (by_id[2].num_nodes, by_id[2].gpus_per_node, by_id[2].requested_time) == (2, 8, None)
    assert (by_id[5].num_nodes, by_id[5].gpus_per_node) == (2, 8)
    assert [n for n, _ in tr.bad_lines] == [6, 8, 9, 14]
    assert "field 4 (run time)" in dict(tr.bad_lines)[8]
    assert "submit time" in dict(tr.bad_lines)[9]
    assert tr.skipped == {"no run time": 1, "no processor count": 1}
    assert by_id[1].trace_wait == 0.0 and by_id[8].run_time == 500.0


def test_swf_node_mode_and_auto_from_header():
    lines = ["; MaxNodes: 100", "; MaxProcs: 100", swf_line(1, procs=3), swf_line(2, procs=12)]
    tr = parse_swf(lines)
    assert tr.header["adsched.procs_as"] == "node"
    assert [(j.num_nodes, j.gpus_per_node) for j in tr.jobs] == [(3, 8), (12, 8)]
    tr = parse_swf(lines, mapping=SwfMapping(procs_as="gpu", gpus_per_node=4))
    assert [(j.num_nodes, j.gpus_per_node) for j in tr.jobs] == [(1, 3), (3, 4)]
    with pytest.raises(ValueError):
        SwfMapping(procs_as="cores")


def test_swf_queue_mapping_limit_and_duplicate_ids():
    lines = [swf_line(1, queue=0), swf_line(2, queue=1), swf_line(1, submit=3, queue=5), swf_line(4)]
    tr = parse_swf(lines, mapping=SwfMapping(queues={0: "debug", 1: "release"}))
    assert [j.queue for j in tr.jobs] == ["debug", "release", None, None]
    assert sorted(j.id for j in tr.jobs) == [1, 2, 4, 5]  # the second id 1 renumbered past the largest
    assert tr.notes["duplicate job id renumbered"] == 1
    assert len(parse_swf(lines, limit=2).jobs) == 2


def test_to_workload_limits_clamps_and_drops():
    cfg = cluster(leaves=2, nodes_per_leaf=2)  # 4 nodes x 8 GPUs; explore/debug/release queues
    lines = [
        swf_line(1, procs=4),  # fits
        swf_line(2, procs=16, req_time=-1, run=50),  # limit = run time
        swf_line(3, procs=48),  # 6 nodes x 8: more than the cluster's 4 nodes
        swf_line(4, run=500, req_time=100),  # run > limit: duration clamped to 100
        swf_line(5, req_time=-1, run=0),  # no limit, no run time: queue default_time
        swf_line(6, req_time=400000),  # > explore max_time (2 days)
        swf_line(7, queue=9),  # mapped to an unknown queue
    ]
    tr = parse_swf(lines, mapping=SwfMapping(procs_as="gpu", queues={9: "nosuch"}))
    w = to_workload(tr, cfg)
    got = {s.job.id: s for s in w.jobs}
    assert got[2].job.time_limit == 50 and got[2].duration == 50
    assert got[3].job.num_nodes == 4
    assert got[4].job.time_limit == 100 and got[4].duration == 100.0
    assert got[5].job.time_limit == cfg.queues["explore"].default_time
    assert got[6].job.time_limit == cfg.queues["explore"].max_time
    assert all(s.job.queue == "explore" for s in w.jobs)
    assert w.clamped == {"nodes > cluster": 1, "run time > time limit": 1, "time limit > queue max_time": 1}
    assert w.dropped == {"unknown queue 'nosuch'": 1}

    dropped = to_workload(tr, cfg, oversize="drop", missing_limit="queue")
    assert {s.job.id for s in dropped.jobs} == {1, 2, 4, 5}
    assert dropped.dropped == {"InvalidRequest": 1, "QueueLimit": 1, "unknown queue 'nosuch'": 1}
    assert {s.job.id: s.job.time_limit for s in dropped.jobs}[2] == cfg.queues["explore"].default_time


def test_load_trace_plain_and_gzip_and_errors(tmp_path):
    plain = tmp_path / "log.swf"
    plain.write_text(SWF)
    gz = tmp_path / "log.swf.gz"
    gz.write_bytes(gzip.compress(SWF.encode()))
    a, b = load_trace(plain), load_trace(gz)
    assert a.jobs == b.jobs and a.bad_lines == b.bad_lines
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "missing.swf")
    empty = tmp_path / "empty.swf"
    empty.write_text("; only a header\n")
    with pytest.raises(TraceError, match="no usable job"):
        load_trace(empty)
    other = tmp_path / "x.txt"
    other.write_text("hello world\n")
    with pytest.raises(TraceError, match="not an SWF"):
        load_trace(other)


@needs_kth
def test_real_kth_slice():
    tr = load_trace(KTH, limit=2000)
    assert len(tr.jobs) == 2000 and not tr.bad_lines
    assert tr.header["MaxNodes"] == "100" and tr.header["adsched.procs_as"] == "node"
    first = tr.jobs[0]  # "15 599850 192180 3477 4 ... 53940": 4 nodes, ran 3477 s, waited 192180 s
    assert (first.id, first.submit, first.run_time, first.num_nodes, first.requested_time, first.trace_wait) == (
        15, 599850.0, 3477.0, 4, 53940, 192180.0)
    assert max(j.num_nodes for j in tr.jobs) <= 100


@needs_openb
def test_real_openb_slice_and_cluster():
    cfg = openb_cluster(OPENB_NODES)
    assert len(cfg.nodes) == 1213
    assert cfg.max_gpus_per_node == 8 and set(cfg.queues) == {"ls", "guaranteed", "burstable", "be"}
    tr = load_trace(OPENB_PODS, limit=500)
    assert tr.format == "openb" and len(tr.jobs) == 500
    assert all(j.num_nodes == 1 and 1 <= j.gpus_per_node <= 8 for j in tr.jobs)
    assert tr.skipped  # CPU-only pods and never-scheduled pods are counted, not replayed
    w = to_workload(tr, cfg)
    assert len(w.jobs) == 500 and not w.dropped
    assert {s.job.queue for s in w.jobs} <= set(cfg.queues)
