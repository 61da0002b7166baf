"""Backfill reservations: who gets one, and the rule no start may break.

The top `reservation_depth` blocked jobs (every one with `reservation_depth = "all"`:
conservative backfill; 1: EASY) each get a Reservation: the first time and the placement at
which they fit for their whole time limit on the cycle's availability profile (profile.py),
built from the running jobs' ends and everything this cycle started or reserved before them.
A reservation occupies its GPUs over [start, start + time limit) only, so a later job may be
promised the gap before an earlier reservation.

Backfill rule (schedule.py applies it): a job that ends at `now + time_limit` may use a
reservation's GPUs only if it ends by that reservation's start; all other holds stay.
"""

from __future__ import annotations

from .model import Placement, Reservation


def conflicts(res: Reservation, end_time: float, placement: Placement) -> bool:
    """Does a job holding `placement` from now until `end_time` delay this reservation?"""
    if end_time <= res.start_time:
        return False
    mine = {(a.node, g) for a in res.placement for g in a.gpus}
    return any((a.node, g) in mine for a in placement for g in a.gpus)
