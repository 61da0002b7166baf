"""The shells follow one contract: a snapshot is read, never written, and holds every pending
job (held ones too, with their begin time); the core alone decides, so `adsub explain`,
`--test-only` and the daemon agree on the same state at the same `now`."""

from __future__ import annotations

import pytest

from adsched.core.model import Decisions, NodeAlloc, Start
from adsched.core.schedule import schedule
from adsched.standalone.store import JobRequest, Store

from test_config import EXAMPLES

DEMO = (EXAMPLES / "demo.toml").read_text()  # 16 nodes x 8 GPUs
WHOLE_CLUSTER = tuple(NodeAlloc(f"node{k:02d}", tuple(range(8))) for k in range(1, 17))
NOW = 1000.0
BACKOFF_CAUSE = "ranks [1] not running 300 s after the gang started; retry after 60 s"


@pytest.fixture
def store(tmp_path):
    return Store.init(tmp_path, DEMO, memory=True)


def _held(store: Store) -> int:
    """A job for the whole cluster, requeued by the gang start backoff until NOW + 60."""
    held = store.submit(JobRequest(["true"], nodes=16), 1.0)
    store.record_cycle(Decisions(starts=[Start(held, WHOLE_CLUSTER)]), 3.0)
    store.requeue(held, BACKOFF_CAUSE, NOW - 1, begin_time=NOW + 60, start_try=True)
    return held


def _held_then_waiting(store: Store) -> tuple[int, int]:
    """The held job, and job `later` (the whole cluster too) after it in priority order."""
    held = _held(store)
    return held, store.submit(JobRequest(["true"], nodes=16), 2.0)


def test_snapshot_reads_and_never_writes(store):
    store.submit(JobRequest(["true"], nodes=2), 1.0)
    store.record_cycle(schedule(store.snapshot(5.0), store.config, 5.0), 5.0)
    before = store.conn.total_changes
    store.snapshot(500.0)  # fair-share usage accrues in the snapshot, not in the store
    assert store.conn.total_changes == before


def test_the_held_job_is_in_the_snapshot_and_the_core_holds_it(store):
    held, later = _held_then_waiting(store)
    snap = store.snapshot(NOW)
    assert {j.id: j.begin_time for j in snap.pending} == {held: NOW + 60, later: None}
    d = schedule(snap, store.config, NOW)
    assert [s.job_id for s in d.starts] == [later]
    reason = d.pending_reasons[held]
    assert (reason.code, reason.time, reason.message) == ("BeginTime", NOW + 60, BACKOFF_CAUSE)


def test_explain_agrees_with_the_daemon_about_a_job_behind_a_held_one(store):
    held, later = _held_then_waiting(store)
    daemon_starts = [s.job_id for s in schedule(store.snapshot(NOW), store.config, NOW).starts]
    e = store.explain(later, NOW)
    want_state = "starts" if later in daemon_starts else "pending"
    assert (e.state, want_state) == ("starts", "starts")


def test_test_only_agrees_with_the_daemon_behind_a_held_job(store):
    _held(store)
    e = store.test_only(JobRequest(["true"], nodes=16), NOW)
    assert e.state == "starts"


def test_explain_of_the_held_job_says_why_and_promises_no_start(store):
    held, _ = _held_then_waiting(store)
    e = store.explain(held, NOW)
    assert (e.state, e.constraint, e.estimated_start) == ("pending", "BeginTime", None)
    assert BACKOFF_CAUSE in e.reason
