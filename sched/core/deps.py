"""Job dependencies (`--dependency afterok:ID[,ID]` and `afterany:ID`).

The snapshot carries the final state of finished jobs the pending ones depend on
(Snapshot.finished). afterok needs COMPLETED; any other final state can never satisfy it,
so the dependent job is cancelled. afterany needs any final state. A dependency not in
`finished` has not finished yet: the job waits with reason Dependency.
"""

from __future__ import annotations

from typing import Mapping

from . import reasons
from .model import COMPLETED, Job, Reason

WAIT, CANCEL = "wait", "cancel"


def check(job: Job, finished: Mapping[int, str]) -> tuple[str, Reason] | None:
    """(CANCEL, reason), (WAIT, reason) or None when every dependency is met."""
    waiting = []
    for dep in job.after_ok:
        state = finished.get(dep)
        if state is None:
            waiting.append(dep)
        elif state != COMPLETED:  # a failed parent cancels, even if others still run
            return CANCEL, reasons.dependency_never_satisfied(dep, state)
    waiting.extend(dep for dep in job.after_any if dep not in finished)
    if waiting:
        return WAIT, reasons.dependency(tuple(waiting))
    return None
