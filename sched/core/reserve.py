"""Backfill reservations: who gets one, and the rule no start may break.

The top `reservation_depth` blocked jobs (every one with `reservation_depth = "all"`:
conservative backfill; 1: EASY) each get a Reservation: the first time and the placement at
which they fit for their whole time limit on the cycle's availability profile (profile.py),
built from the running jobs' ends and everything this cycle started or reserved before them.
A reservation occupies its GPUs over [start, start + time limit) only, so a later job may be
promised the gap before an earlier reservation.

With a few reservations (a shallow reservation_depth, the default), a cheaper walk finds the
same answer without a profile (`earliest`): the end times of running jobs in order, returning
their GPUs on a capacity.WhatIf until the job fits. A start at t runs over [t, t + D), so a
reservation of this cycle that starts at or after t + D lends its GPUs to it (as the profile's
window sees them free), and holds them again once the walk reaches t with t + D past its start.
While every reservation starts now (none yet, or a preemptor's hold), the walk's answers are
remembered in the shell's Memo (a daemon's consecutive cycles ask the same). The profile is
built past a few reservations (schedule.Cycle._reserve), where its cursors win.

Backfill rule (schedule.py applies it): a job that ends at `now + time_limit` may use a
reservation's GPUs only if it ends by that reservation's start; all other holds stay.
"""

from __future__ import annotations

import bisect

from .capacity import Capacity, WhatIf
from .model import Job, Placement, Reservation, RunningJob
from .place import NoFit, find_placement

_GIVE, _RELEASE = 0, 1


class Timeline:
    """Future events of this cycle: running jobs ending, reservations ending; in time order."""

    def __init__(self, running: tuple[RunningJob, ...], now: float):
        self.now = now
        # (time, seq, kind, payload); seq makes the order total and deterministic.
        self.events: list[tuple[float, int, int, object]] = sorted(
            [(max(now, r.end_time), k, _GIVE, r.placement) for k, r in enumerate(running)]
        )
        # A running job past its time limit: it ends now (and is first).
        self.overdue = bool(self.events) and self.events[0][0] <= now
        self._seq = len(self.events)
        # Reservations of this cycle that start later than now: owner -> start (the walk lends
        # their GPUs to a start that ends by then).
        self.later: dict[int, float] = {}

    def _add(self, t: float, kind: int, payload: object) -> None:
        bisect.insort(self.events, (t, self._seq, kind, payload))
        self._seq += 1

    def started(self, job: Job, placement: Placement) -> None:
        self._add(self.now + job.time_limit, _GIVE, placement)

    def reserved(self, res: Reservation, time_limit: int) -> None:
        self._add(res.start_time + time_limit, _RELEASE, res.job_id)

    def taken(self, placement: Placement, end: float, owner: int | None, start: float | None = None) -> None:
        """A start (owner None: busy GPUs given back at `end`) or reservation `owner` held on
        the Capacity from `start` (its hold lifted at `end`)."""
        if owner is None:
            self._add(end, _GIVE, placement)
        else:
            self._add(end, _RELEASE, owner)
            if start is not None and start > self.now:
                self.later[owner] = start


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
    duration = job.time_limit
    # Later reservations a start now would end by (by start): lent until t + D passes their start.
    lent = sorted((start, owner) for owner, start in timeline.later.items() if start >= timeline.now + duration)
    what_if = _LendingWhatIf(cap, job.gpus_per_node) if lent else WhatIf(cap, job.gpus_per_node)
    what_if.lift(owner for _, owner in lent)
    ended: set[int] = set()
    next_lent = 0
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
                ended.add(payload)
            k += 1
        # A start at t would run into these: they hold their GPUs again (unless already over).
        while next_lent < len(lent) and lent[next_lent][0] < t + duration:
            owner = lent[next_lent][1]
            next_lent += 1
            if owner not in ended:
                what_if.hold_again(owner)
        if what_if.have < job.num_nodes:
            continue  # too few nodes yet, whatever the topology
        picks = find_placement(cap, job.num_nodes, job.gpus_per_node, job.max_leaves, topology_aware,
                               what_if=what_if)
        if not isinstance(picks, NoFit):
            return t, what_if.peek(picks)
    return None



class _LendingWhatIf(WhatIf):
    """A WhatIf whose lifted holds may be held again (a lent reservation the walk's start would
    now run into). Its GPUs are among the Capacity's held ones, so a node the Capacity itself
    fits keeps fitting; one that came to fit in the what-if is checked again."""

    def hold_again(self, owner: int) -> None:
        cap, lifted = self.cap, self.lifted
        self._masks = {}
        lifted.discard(owner)
        all_mask, leaf_of, gpus, fits = cap.all_mask, cap.leaf_of, self.gpus, self._fits
        for i in cap._owned.get(owner, ()):
            held = 0
            for other, bits in cap.holds[i].items():
                if other not in lifted:
                    held |= bits
            self.held[i] = held
            if i in fits and (all_mask[i] & ~(self.busy.get(i, cap.busy[i]) | held)).bit_count() < gpus:
                fits.discard(i)
                self.have -= 1
                self.counts[leaf_of[i]] -= 1


def conflicts(res: Reservation, end_time: float, placement: Placement) -> bool:
    """Does a job holding `placement` from now until `end_time` delay this reservation?"""
    if end_time <= res.start_time:
        return False
    mine = {(a.node, g) for a in res.placement for g in a.gpus}
    return any((a.node, g) in mine for a in placement for g in a.gpus)
