"""A pending reason is data (code and fields) and its text is rendered from the same values:
the text users see is the one they saw when reasons were strings."""

from __future__ import annotations

import pytest

from adsched.core import reasons

CASES = [
    # (reason, want_text, want_code, want_job)
    (reasons.priority(1), "Priority: waiting behind job 1", "Priority", 1),
    (reasons.resources(4, 8, 3), "Resources: needs 4 nodes with 8 free GPUs; 3 available", "Resources", None),
    (reasons.resources(1, 1, 0), "Resources: needs 1 node with 1 free GPU; 0 available", "Resources", None),
    (reasons.mig_resources("1g.10gb", 5), "Resources: needs 5 1g.10gb MIG slices on one node; none has them free",
     "Resources", None),
    (reasons.topology(4, 1, "leaf1", 3), "Topology: needs 4 nodes within 1 leaf; best leaf leaf1 has 3 free",
     "Topology", None),
    (reasons.reservation(1, 1000.0, ("n01", "n14", "n15", "n16")),
     "Reservation: would delay job 1, reserved from t=1000 on n01,n14,n15,n16", "Reservation", 1),
    (reasons.reservation(7, 50.5, tuple(f"n{k:02d}" for k in range(1, 7))),
     "Reservation: would delay job 7, reserved from t=50.5 on n01..n06 (6 nodes)", "Reservation", 7),
    (reasons.preempting((11, 12)), "Preempting: waiting for jobs 11, 12 to stop", "Preempting", 11),
    (reasons.preempting((12,)), "Preempting: waiting for job 12 to stop", "Preempting", 12),
    (reasons.dependency((12, 13)), "Dependency: waiting for job 12, 13", "Dependency", 12),
    (reasons.dependency_never_satisfied(12, "FAILED"), "DependencyNeverSatisfied: job 12 FAILED",
     "DependencyNeverSatisfied", 12),
    (reasons.quota_exceeded("a", 24.0, 16, 8, 8), "QuotaExceeded: queue a uses 24 of its 16 GPUs (may borrow 8); "
     "job needs 8", "QuotaExceeded", None),
    (reasons.array_task_limit(7, 3, 3), "JobArrayTaskLimit: array 7 has 3 of at most 3 tasks running",
     "JobArrayTaskLimit", 7),
    (reasons.user_limit("a", 2, "shared", 2), "UserLimit: user a has 2 running jobs in queue shared (max 2)",
     "UserLimit", None),
    (reasons.begin_time(160.0, "ranks [1] not running 300 s after the gang started; retry after 60 s"),
     "BeginTime: ranks [1] not running 300 s after the gang started; retry after 60 s", "BeginTime", None),
    (reasons.never_runs("QueueLimit", "time limit exceeds queue debug max_time"),
     "QueueLimit: time limit exceeds queue debug max_time", "QueueLimit", None),
]


@pytest.mark.parametrize("reason, want_text, want_code, want_job", CASES, ids=lambda c: getattr(c, "code", None))
def test_text_is_rendered_from_the_data(reason, want_text, want_code, want_job):
    assert (str(reason), reason.code, reason.job) == (want_text, want_code, want_job)
