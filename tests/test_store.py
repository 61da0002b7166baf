import re
import multiprocessing
import sqlite3
import time

import pytest

from adsched.errors import InvalidRequest, NotFound
from adsched.core.model import Decisions, NodeAlloc, Start
from adsched.standalone.store import PENDING, RUNNING, JobRequest, Store

from test_config import EXAMPLES

DEMO = (EXAMPLES / "demo.toml").read_text()


@pytest.fixture
def store(tmp_path):
    return Store.init(tmp_path, DEMO, memory=True)


def req(**kw):
    kw.setdefault("command", ["true"])
    return JobRequest(**kw)


def test_submit_defaults(store):
    job = store.job(store.submit(req(), 10.0))
    assert (job.state, job.queue, job.num_nodes, job.gpus_per_node, job.time_limit) == (
        PENDING, "explore", 1, 8, 7200)
    assert [e["kind"] for e in store.events(job.id)] == ["submit"]


@pytest.mark.parametrize("bad,msg", [
    (dict(queue="nope"), "unknown queue 'nope'"),
    (dict(nodes=17), "needs 17 nodes with 8 GPUs; the cluster has 16"),
    (dict(gpus=0), "--gpus must be >= 1"),
    (dict(gpus_per_node=-2), "--gpus-per-node must be >= 1"),
    (dict(nodes=0), "--nodes must be >= 1"),
    (dict(gpus=9), "needs 1 nodes with 9 GPUs; the cluster has 0"),
    (dict(command=[]), "no command given"),
    (dict(time="soon"), "--time: not a duration"),
    (dict(queue="debug", time="2:00:00"), "exceeds queue debug max_time"),
    (dict(queue="debug", nodes=2), "QueueLimit: 16 GPUs > queue debug limit of 8 per job"),
    # Never runnable: beyond quota + borrow limit (train: 64 + 32), more nodes than max_leaves leaves hold.
    (dict(queue="train", nodes=13), "QueueLimit: needs 104 GPUs; queue train may use at most 96 "
                                    "(quota 64 + borrow limit 32)"),
    (dict(nodes=5, max_leaves=1), "needs 5 nodes with 8 GPUs within 1 leaf; the largest leaf has 4"),
    (dict(nodes=4, gpus_per_node=4, max_leaves=1, queue="train"), None),  # 4 fit one leaf: accepted
])
def test_bad_requests_write_nothing(store, bad, msg):
    if msg is None:  # the control row: the same shape that is accepted
        store.submit(req(**bad), 1.0)
        return
    with pytest.raises(InvalidRequest, match=re.escape(msg)):
        store.submit(req(**bad), 1.0)
    assert store.jobs() == [] and store.events() == [e for e in store.events() if e["kind"] == "init"]


def test_cycle_transitions_and_cancel(store):
    a, b = store.submit(req(nodes=2), 1.0), store.submit(req(), 2.0)
    placement = (NodeAlloc("node01", tuple(range(8))), NodeAlloc("node02", tuple(range(8))))
    started = store.record_cycle(Decisions(starts=[Start(a, placement)], pending_reasons={b: "Resources: x"}), 3.0)
    assert [j.id for j in started] == [a]
    assert store.job(a).state == RUNNING and store.job(a).nodelist == "node01,node02"
    assert store.job(b).reason == "Resources: x"
    snap = store.snapshot(3.0)
    assert [j.id for j in snap.pending] == [b] and snap.running[0].placement[1].node == "node02"
    assert store.cancel(b, 4.0) == "CANCELLED"
    assert store.cancel(a, 4.0) == "CANCELLING" and store.job(a).cancel_requested
    store.finish(a, "CANCELLED", -15, "cancelled by user", 5.0)
    with pytest.raises(InvalidRequest, match="already ended"):
        store.cancel(a, 6.0)
    with pytest.raises(NotFound):
        store.cancel(999, 6.0)
    assert [e["kind"] for e in store.events(a)] == ["submit", "start", "cancel_requested", "end"]


def test_drained_node_leaves_the_snapshot(store):
    store.set_node_state("node03", "drain", "bad GPU", 1.0)
    assert store.snapshot(1.0).unavailable == {"node03"}
    with pytest.raises(NotFound):
        store.set_node_state("node99", "drain", "", 1.0)


def test_open_missing_state_is_a_clear_error(tmp_path):
    with pytest.raises(NotFound, match="adsched init"):
        Store(tmp_path / "nothing")


def _submit_many(state_dir, n, out):
    s = Store(state_dir)
    out.put([s.submit(req(), time.time()) for _ in range(n)])


def test_job_ids_unique_under_concurrent_submitters(tmp_path):
    Store.init(tmp_path, DEMO)
    q = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_submit_many, args=(tmp_path, 25, q)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = [i for _ in procs for i in q.get(timeout=60)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(ids) == 100 and len(set(ids)) == 100
    assert len(Store(tmp_path).jobs()) == 100


def test_wal_mode_and_schema_version(tmp_path):
    Store.init(tmp_path, DEMO)
    conn = sqlite3.connect(tmp_path / Store.DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
