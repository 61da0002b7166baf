"""Backfill reservations: who gets one, and the rule no start may break.

The top `reservation_depth` blocked jobs (every one with `reservation_depth = "all"`:
conservative backfill; 1: EASY) each get a Reservation: the first time and the placement at
which they fit for their whole time limit on the cycle's availability profile (profile.py),
built from the running jobs' ends and everything this cycle started or reserved before them.
A reservation occupies its GPUs over [start, start + time limit) only, so a later job may be
promised the gap before an earlier reservation.

While every reservation of the cycle starts now (none yet, or a preemptor's hold), later
GPUs only come free, so the free GPUs at a time are those of any window from it: the first
reservation is found by a cheaper walk instead (`earliest`, the same answer): the end times
of running jobs in order, returning their GPUs on a capacity.WhatIf until the job fits; the
walk's answers are remembered in the shell's Memo (a daemon's consecutive cycles ask the
same). The profile is built only when a second reservation is sought.

Backfill rule (schedule.py applies it): a job that ends at `now + time_limit` may use a
reservation's GPUs only if it ends by that reservation's start; all other holds stay.
"""

from __future__ import annotations

import bisect

from .capacity import Capacity, WhatIf
from .model import Job, Placement, Reservation, RunningJob
from .place import NoFit, place_what_if, would_place

_GIVE, _RELEASE = 0, 1


class Timeline:
    """Future events of this cycle: running jobs ending, reservations ending; in time order."""

    def __init__(self, running: tuple[RunningJob, ...], now: float):
        self.now = now
        # (time, seq, kind, payload); seq makes the order total and deterministic.
        self.events: list[tuple[float, int, int, object]] = sorted(
            (max(now, r.end_time), k, _GIVE, r.placement) for k, r in enumerate(running)
        )
        self._seq = len(self.events)

    def _add(self, t: float, kind: int, payload: object) -> None:
        bisect.insort(self.events, (t, self._seq, kind, payload))
        self._seq += 1

    def started(self, job: Job, placement: Placement) -> None:
        self._add(self.now + job.time_limit, _GIVE, placement)

    def reserved(self, res: Reservation, time_limit: int) -> None:
        self._add(res.start_time + time_limit, _RELEASE, res.job_id)

    def taken(self, placement: Placement, end: float, owner: int | None) -> None:
        """A start (owner None: busy GPUs given back at `end`) or reservation `owner` held on
        the Capacity (its hold lifted at `end`)."""
        if owner is None:
            self._add(end, _GIVE, placement)
        else:
            self._add(end, _RELEASE, owner)


def earliest(cap: Capacity, timeline: Timeline, job: Job, topology_aware: bool) -> tuple[float, Placement] | None:
    """The first time (and placement) at which `job` fits as jobs end; None if it never does."""
    # The walk is a pure function of the request, the busy and up nodes and the events, and
    # consecutive cycles often ask it again for the same blocked job over the same running
    # set: answers are remembered per config (cycles with holds are not: their keys are long).
    key = None if cap.holds else _key(cap, timeline, job, topology_aware)
    if key is not None:
        memo = cap.layout.earliest
        hit = memo.get(key)
        if hit is not None:
            found, resolved = hit[0], hit[2]
            if found is not None:
                cap.remember(found[1], resolved)  # for the hold that follows
            return found
    found = _walk(cap, timeline, job, topology_aware)
    if key is not None:
        if len(memo) >= 256:  # bounded: a dict keeps insertion order, drop the oldest
            del memo[next(iter(memo))]
        # The events' placements are kept with the answer: alive, their ids in the key stay theirs.
        memo[key] = (found, [e[3] for e in timeline.events], found and cap.resolve(found[1]))
    return found


def _key(cap: Capacity, timeline: Timeline, job: Job, topology_aware: bool) -> tuple | None:
    """What the walk depends on, for a Capacity without holds; None if a placement given
    back might be mutable (identity would not stand for its content)."""
    events = []
    for t, _, kind, payload in timeline.events:
        if kind == _GIVE:
            if not cap.frozen(payload):
                return None
            payload = id(payload)
        events.append((t, kind, payload))
    return (job.gpus_per_node, job.num_nodes, job.max_leaves, topology_aware, tuple(cap.busy), tuple(cap.up),
            tuple(events))


def _walk(cap: Capacity, timeline: Timeline, job: Job, topology_aware: bool) -> tuple[float, Placement] | None:
    # The walk runs on a WhatIf (counters only, nothing changed); the job is placed on it
    # only at the times the counters say it may fit.
    what_if = WhatIf(cap, job.gpus_per_node)
    events = timeline.events
    k = 0
    while k < len(events):
        t = events[k][0]
        while k < len(events) and events[k][0] == t:  # all events at t, then one check
            _, _, kind, payload = events[k]
            if kind == _GIVE:
                what_if.give(payload)
            else:
                what_if.lift((payload,))
            k += 1
        if what_if.have < job.num_nodes:
            continue  # too few nodes yet, whatever the topology
        verdict = would_place(cap, job.num_nodes, job.gpus_per_node, job.max_leaves, topology_aware,
                              what_if.have, what_if.counts)
        if isinstance(verdict, NoFit):
            continue
        _, placement = place_what_if(cap, what_if, job.num_nodes, job.gpus_per_node, job.max_leaves,
                                     topology_aware)
        if placement is not None:
            return t, placement
    return None



def conflicts(res: Reservation, end_time: float, placement: Placement) -> bool:
    """Does a job holding `placement` from now until `end_time` delay this reservation?"""
    if end_time <= res.start_time:
        return False
    mine = {(a.node, g) for a in res.placement for g in a.gpus}
    return any((a.node, g) in mine for a in placement for g in a.gpus)
