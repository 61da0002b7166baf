"""The availability profile of one cycle: free GPUs per node over future time.

Built from the running jobs (busy until their time limit runs out) and, as the cycle decides,
each start (busy from now for its time limit) and each reservation, which occupies its GPUs
only over [start, start + time limit): a later blocked job may be promised the gap before an
earlier reservation begins (conservative backfill), never a GPU-second that reservation needs.

Per node the profile is a step function: sorted breakpoints `times[i]` (the first is `now`) and
the free GPU mask `masks[i][k]` from `times[i][k]` until the next breakpoint (the last holds
forever). A request (N nodes x G GPUs for D seconds, max leaves L) fits at time t when N nodes
have G GPUs free all through [t, t + D) and place.py's rules (one leaf if possible, else fewest
leaves under one spine, best fit, the leaf limit; first fit when topology is off) place it on
them: `earliest` returns the first such t and the placement those rules pick, with the same
node and GPU choices find_placement would make on a Capacity whose free GPUs were the window's.

Why it is fast enough for thousands of reservations per cycle:
  - a node's feasible start times for one (G, D) are a few intervals, computed from its own
    breakpoints only and recomputed only when a placement touches that node;
  - every request shape (N, G, L, D) keeps a cursor: within a cycle capacity is only ever
    taken, so its earliest start never moves back, and the next search of the same shape goes
    on from where the last one stopped, with the set of nodes feasible at the cursor as a bit
    mask over node indexes (leaf counts are popcounts of that mask and a leaf's mask) and the
    times nodes become feasible or stop being so in a heap. Jobs of the same shape, which
    most of a long queue is, cost a few heap steps each.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from math import nextafter
from operator import itemgetter
from typing import Iterable

from .capacity import Capacity
from .model import Placement, RunningJob
from .place import _gang_leaves, _take_nodes

INF = float("inf")
# Heap phases at one time: 0 = before the check at that time (a node becomes feasible, or an
# interval open at its right end stops), 1 = after it (an interval closed at its right end:
# a start exactly D before the next occupation still fits).
_BEFORE, _AFTER = 0, 1
_END = itemgetter(1)


class Profile:
    def __init__(self, cap: Capacity, now: float, running: Iterable[RunningJob] = ()):
        self.cap, self.now = cap, now
        n = len(cap.names)
        self.up = cap.up
        self.all_mask = cap.all_mask
        self.top = cap.max_gpus
        self.leaf_masks = [sum(1 << i for i in nodes) for nodes in cap.leaf_nodes]
        # Per node: breakpoints and the free mask from each on. Built from the running jobs'
        # ends (a job past its limit counts as ending now).
        ends: list[dict[float, int]] = [{} for _ in range(n)]
        busy = [0] * n
        index, mask = cap.index, cap.layout.mask
        for run in running:
            end = run.end_time
            if end <= now:
                continue
            for a in run.placement:
                i = index.get(a.node)
                if i is None or not a.gpus:
                    continue
                bits = mask(a.gpus)
                busy[i] |= bits
                ends[i][end] = ends[i].get(end, 0) | bits
        self.times: list[list[float]] = []
        self.masks: list[list[int]] = []
        for i in range(n):
            if not self.up[i]:
                self.times.append([now])
                self.masks.append([0])
                continue
            m = self.all_mask[i] & ~busy[i]
            ts, ms = [now], [m]
            for t in sorted(ends[i]):
                m |= ends[i][t]
                ts.append(t)
                ms.append(m)
            self.times.append(ts)
            self.masks.append(ms)
        # Change log: nodes whose profile changed, in order; classes and shapes catch up from
        # their own position in it.
        self._changed: list[int] = []
        self._since: list[float] = []  # ... and from when on it changed
        self._classes: dict[tuple[int, float], _Class] = {}
        self._shapes: dict[tuple, _Shape] = {}

    # --- changes -----------------------------------------------------------------------

    def occupy(self, pairs: Iterable[tuple[int, int]], start: float, end: float) -> None:
        """GPUs (node index, bits) are taken over [start, end)."""
        for i, bits in pairs:
            if not bits:
                continue
            ts, ms = self.times[i], self.masks[i]
            a = _split(ts, ms, max(start, self.now))
            b = _split(ts, ms, end) if end < INF else len(ts)
            keep = ~bits
            for k in range(a, b):
                ms[k] &= keep
            self._changed.append(i)
            self._since.append(max(start, self.now))

    def occupy_placement(self, placement: Placement, start: float, end: float) -> None:
        index, mask = self.cap.index, self.cap.layout.mask
        self.occupy(((index[a.node], mask(a.gpus)) for a in placement if a.gpus and a.node in index), start, end)

    # --- queries -----------------------------------------------------------------------

    def window_mask(self, i: int, t: float, duration: float) -> int:
        """Node i's GPUs free all through [t, t + duration)."""
        ts, ms = self.times[i], self.masks[i]
        k = bisect_right(ts, t) - 1
        acc, end, n = ms[k], t + duration, len(ts)
        k += 1
        while k < n and ts[k] < end and acc:
            acc &= ms[k]
            k += 1
        return acc

    def earliest(self, num_nodes: int, gpus: int, max_leaves: int | None, duration: float,
                 topology_aware: bool, until: float = INF) -> tuple[float, Placement] | None:
        """The first time (not after `until`) a request fits for its whole duration, and
        where; None if it never does (or not by `until`)."""
        if gpus < 1 or gpus > self.top or num_nodes < 1:
            return None
        if not topology_aware and (max_leaves is None or num_nodes == 1):
            key = (num_nodes, gpus, None, duration, False)
        else:
            key = (num_nodes, gpus, max_leaves, duration, topology_aware)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = _Shape(self, self._class(gpus, duration), *key)
        return shape.search(until)

    def fitting_now(self, gpus: int, duration: float) -> tuple[int, list[int]]:
        """(nodes, [nodes per leaf]) with `gpus` GPUs free from now for `duration`: the
        at_least / leaf_at_least counts of find_placement for a job starting now."""
        if gpus < 1 or gpus > self.top:
            return 0, [0] * len(self.leaf_masks)
        c = self._class(gpus, duration)
        c.sync()
        return c.at_now.bit_count(), [(c.at_now & m).bit_count() for m in self.leaf_masks]

    def _class(self, gpus: int, duration: float) -> "_Class":
        c = self._classes.get((gpus, duration))
        if c is None:
            c = self._classes[(gpus, duration)] = _Class(self, gpus, duration)
        return c


def _last_start(end: float, duration: float) -> float:
    """The latest t with t + duration <= end, in floats (end - duration may round either way;
    a start exactly `duration` before `end` must stay feasible, as window_mask computes it)."""
    t = end - duration
    while t + duration > end:
        t = nextafter(t, -INF)
    # Up while it still fits; a few steps at most (where t is tiny beside the duration, a step
    # of t's own size may never change the sum, and end - duration is then exact anyway).
    for _ in range(8):
        up = nextafter(t, INF)
        if up + duration > end:
            break
        t = up
    return t


def _split(ts: list[float], ms: list[int], t: float) -> int:
    """The index of the segment starting at t, made if needed (t >= ts[0])."""
    k = bisect_left(ts, t)
    if k < len(ts) and ts[k] == t:
        return k
    ts.insert(k, t)
    ms.insert(k, ms[k - 1])
    return k


class _Class:
    """Per node, the start times at which G GPUs are free for D seconds: a list of intervals
    (a, b, closed) with b the end (INF: forever; closed: b itself is still a feasible start)."""

    def __init__(self, profile: Profile, gpus: int, duration: float):
        self.p, self.gpus, self.duration = profile, gpus, duration
        n = len(profile.times)
        self.intervals = [self._compute(i) for i in range(n)]
        self.version = [0] * n
        self.seen = len(profile._changed)  # the change log is applied up to here
        # Nodes where a start now fits (bit per node): the counts a pending reason quotes.
        self.at_now = 0
        for i in range(n):
            if self._fits_now(i):
                self.at_now |= 1 << i

    def _fits_now(self, i: int) -> bool:
        ivs = self.intervals[i]
        now = self.p.now
        return bool(ivs) and ivs[0][0] == now and (ivs[0][1] > now or ivs[0][2])

    def sync(self) -> None:
        """Recompute the nodes changed since the last sync, from where their change can matter."""
        log, since = self.p._changed, self.p._since
        if self.seen == len(log):
            return
        first: dict[int, float] = {}
        for k in range(self.seen, len(log)):
            i, t = log[k], since[k]
            if t < first.get(i, INF):
                first[i] = t
        self.seen = len(log)
        for i, t in first.items():
            self.intervals[i] = self._compute(i, _last_start(t, self.duration))
            self.version[i] += 1
            if not self._fits_now(i):  # GPUs are only ever taken: a node never comes to fit now
                self.at_now &= ~(1 << i)

    def _compute(self, i: int, since: float = -INF) -> list[tuple[float, float, bool]]:
        """Node i's intervals; with `since`, those of starts before it are kept as they were
        (a window [t, t + D) that ends before a change is not touched by it)."""
        ts, ms, G, D = self.p.times[i], self.p.masks[i], self.gpus, self.duration
        n, out = len(ts), []
        if n == 1:  # nothing ever changes on this node (idle, down, or all busy for good)
            return [(ts[0], INF, False)] if ms[0].bit_count() >= G else []
        s0 = 0
        if since > ts[0]:
            s0 = bisect_right(ts, since) - 1
            cut = ts[s0]
            for a, b, closed in self.intervals[i]:
                if a >= cut:
                    break
                if b > cut or (b == cut and closed):
                    out.append((a, cut, False))  # recomputed from cut on; merged below if it goes on
                    break
                out.append((a, b, closed))
        for s in range(s0, n):
            acc = ms[s]
            if acc.bit_count() < G:
                continue
            a = ts[s]
            j, ok = s + 1, True
            while j < n and ts[j] < a + D:  # the window of a start at a
                acc &= ms[j]
                if acc.bit_count() < G:
                    ok = False
                    break
                j += 1
            if not ok:
                continue  # later starts in this segment have even longer windows
            b, closed = (ts[s + 1], False) if s + 1 < n else (INF, False)
            while j < n and ts[j] < b + D:  # segments the window reaches as the start moves on
                acc &= ms[j]
                if acc.bit_count() < G:
                    b, closed = _last_start(ts[j], D), True
                    break
                j += 1
            if out and not out[-1][2] and out[-1][1] == a:
                out[-1] = (out[-1][0], b, closed)  # continues the previous segment's interval
            else:
                out.append((a, b, closed))
        return out


class _Shape:
    """One request shape's search state: a cursor time, the nodes feasible then (bit mask) and
    a heap of (time, phase, node, version, on) changes after it."""

    def __init__(self, profile: Profile, cls: _Class, num_nodes: int, gpus: int, max_leaves: int | None,
                 duration: float, topology_aware: bool):
        self.p, self.cls = profile, cls
        self.num_nodes, self.gpus, self.max_leaves, self.duration = num_nodes, gpus, max_leaves, duration
        self.topology_aware = topology_aware
        cls.sync()
        self.t = profile.now
        self.feasible = 0
        self.heap: list[tuple[float, int, int, int, bool]] = []
        self.seen = len(profile._changed)
        for i in range(len(cls.intervals)):
            self._enter(i)
        heapq.heapify(self.heap)

    def _enter(self, i: int, push=list.append) -> None:
        """Node i's feasibility at the cursor and its changes after it, from its intervals."""
        t, heap, version = self.t, self.heap, self.cls.version[i]
        on = False
        intervals = self.cls.intervals[i]
        if len(intervals) == 1 and intervals[0][1] == INF:  # feasible from some time on, for good
            a = intervals[0][0]
            if a <= t:
                self.feasible |= 1 << i
            else:
                push(heap, (a, _BEFORE, i, version, True))
                self.feasible &= ~(1 << i)
            return
        for a, b, closed in intervals[bisect_left(intervals, t, key=_END) if len(intervals) > 4 else 0:]:
            if b < t or (b == t and not closed):
                continue
            if a <= t:
                on = True
            else:
                push(heap, (a, _BEFORE, i, version, True))
            if b < INF:
                push(heap, (b, _AFTER, i, version, False) if closed else (b, _BEFORE, i, version, False))
        bit = 1 << i
        self.feasible = (self.feasible | bit) if on else (self.feasible & ~bit)

    def _catch_up(self) -> None:
        self.cls.sync()
        log = self.p._changed
        if self.seen != len(log):
            nodes = dict.fromkeys(log[self.seen:])
            self.seen = len(log)
            for i in nodes:
                self._enter(i, heapq.heappush)
        if len(self.heap) > 64 + 8 * len(self.cls.intervals):  # mostly stale entries: rebuild
            self.heap = []
            for i in range(len(self.cls.intervals)):
                self._enter(i)
            heapq.heapify(self.heap)

    def search(self, until: float) -> tuple[float, Placement] | None:
        if self.t > until:  # its earliest start is already known to be later
            return None
        self._catch_up()
        heap, version = self.heap, self.cls.version
        pop = heapq.heappop
        while self.t <= until:
            if self.feasible.bit_count() >= self.num_nodes:
                placement = self._place()
                if placement is not None:
                    return self.t, placement
            # Past the cursor: its after-phase changes, then every before-phase change of the
            # next time that has any.
            t = self.t
            while heap and heap[0][0] == t and heap[0][1] == _AFTER:
                self._apply(pop(heap), version)
            while heap and version[heap[0][2]] != heap[0][3]:
                pop(heap)
            if not heap:
                self.t = INF  # nothing will ever change: it never fits
                return None
            self.t = t = heap[0][0]
            while heap and heap[0][0] == t and heap[0][1] == _BEFORE:
                self._apply(pop(heap), version)
        return None

    def _apply(self, event, version) -> None:
        _, _, i, v, on = event
        if version[i] != v:
            return
        if on:
            self.feasible |= 1 << i
        else:
            self.feasible &= ~(1 << i)

    # --- placement at the cursor, by place.py's rules on the window's free GPUs ---------

    def _place(self) -> Placement | None:
        p, cap, F, N, G = self.p, self.p.cap, self.feasible, self.num_nodes, self.gpus
        t, D = self.t, self.duration
        if not self.topology_aware:
            picks = []
            rest = F
            while rest and len(picks) < N:
                low = rest & -rest
                picks.append(low.bit_length() - 1)
                rest ^= low
            if self.max_leaves is None or len({cap.leaf_of[i] for i in picks}) <= self.max_leaves:
                return self._placement(picks)
            # max leaves is the job's hard limit: as find_placement, place by topology then
        if N == 1:
            return self._place_one()
        counts = [(F & m).bit_count() for m in p.leaf_masks]
        n_leaves, leaves = _gang_leaves(cap, counts, N)
        if self.max_leaves is not None and n_leaves > self.max_leaves:
            return None
        free = {}
        for l in leaves:
            for i in cap.leaf_nodes[l]:
                free[i] = p.window_mask(i, t, D).bit_count() if F >> i & 1 else 0
        picks = _take_nodes(cap, leaves, N, G, counts, free)
        return self._placement([i for i, _ in picks])

    def _place_one(self) -> Placement | None:
        """place._place_one on the window: the tightest node, in the leaf with fewest idle nodes."""
        p, cap, F, G, top = self.p, self.p.cap, self.feasible, self.gpus, self.p.top
        t, D = self.t, self.duration
        free: dict[int, int] = {}
        idle = [0] * len(p.leaf_masks)
        rest = F
        while rest:
            low = rest & -rest
            i = low.bit_length() - 1
            rest ^= low
            f = free[i] = p.window_mask(i, t, D).bit_count()
            if f >= top:
                idle[cap.leaf_of[i]] += 1
        if not free:
            return None
        f = min(free.values())
        best_leaf = min({cap.leaf_of[i] for i, c in free.items() if c == f}, key=lambda l: (idle[l], l))
        node = min(i for i, c in free.items() if c == f and cap.leaf_of[i] == best_leaf)
        return self._placement([node])

    def _placement(self, nodes: list[int]) -> Placement:
        masks = {i: self.p.window_mask(i, self.t, self.duration) for i in nodes}
        return self.p.cap.peek([(i, self.gpus) for i in nodes], masks)
