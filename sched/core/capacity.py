"""Free capacity of the cluster during one cycle, indexed for fast topology-aware queries.

A Capacity is built fresh from each Snapshot (it is never the live state) and is mutated
as the cycle decides. Every mutation (take, occupy, take_mig, give, hold, release) goes
through one writer, `_write`, which logs what it replaces to the open `Trial`: a what-if
question opens a trial (`with cap.trial(): ...`), changes the Capacity, asks, and the trial's
discard puts everything back; trials nest, and a committed inner one is undone with its outer.

Counters kept per node, per leaf and for the whole cluster:
  at_least[g]         nodes (up) with >= g free GPUs
  leaf_at_least[l][g] the same inside leaf l
so "can N nodes with G free GPUs be had, and within how many leaves?" never scans nodes.

A GPU is free when it is neither busy (a running or just-started job holds it) nor held
(a reservation promises it to a blocked job). Holds are per reservation, so backfill can
lift one reservation's hold for a job that ends before that reservation starts;
a WhatIf answers "how many nodes would fit if these holds were lifted?" without lifting
them (the scheduler asks it for every backfill candidate; `fitting_counts` gives its counts).
MIG-split GPUs are not in the whole-GPU masks at all; their slices are tracked apart.

What depends on the config alone (names, leaves, spines, masks, MIG slots, the counters of
an idle cluster) is a `_Layout`, built once per ClusterConfig and kept by the shell's Memo
(memo.py) with the answers cycles remember for each other; without a Memo it is built for
this Capacity alone.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Callable, Iterable, NamedTuple

from .config import ClusterConfig
from .memo import Memo
from .model import NodeAlloc, Placement, Snapshot


class _Layout:
    """The config-derived, read-only part of a Capacity."""

    def __init__(self, config: ClusterConfig):
        self.names: list[str] = [n.name for n in config.nodes]
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.names)}
        self.total: list[int] = [n.whole_gpus for n in config.nodes]
        self.max_gpus = max(self.total) if self.total else 0
        self.leaf_names: list[str] = list(config.leaves)
        leaf_idx = {name: l for l, name in enumerate(self.leaf_names)}
        self.leaf_of: list[int] = [leaf_idx[n.leaf] for n in config.nodes]
        self.leaf_nodes: list[list[int]] = [[] for _ in self.leaf_names]
        for i, l in enumerate(self.leaf_of):
            self.leaf_nodes[l].append(i)
        # Leaves grouped under their spine (the leaf's parent switch): a gang that cannot fit
        # in one leaf should at least stay under one spine.
        groups: dict[str, list[int]] = {}
        for l, name in enumerate(self.leaf_names):
            groups.setdefault(config.parents.get(name, ""), []).append(l)
        self.spine_groups: list[list[int]] = list(groups.values())
        self.all_mask: list[int] = [(1 << g) - 1 for g in self.total]

        # MIG slices: per node, slot k = (GPU, slice index, profile); free slots per profile.
        self.mig_nodes: list[int] = []
        self.mig_slots: dict[int, list[tuple[int, int, str]]] = {}
        self.mig_pos: dict[int, dict[tuple[int, int], int]] = {}
        self.mig_free: dict[int, dict[str, int]] = {}  # all free; each cycle copies it
        for i, n in enumerate(config.nodes):
            if n.mig_gpus:
                self._init_mig(i, n.whole_gpus, n.mig_gpus, n.mig_profile)
        # id(placement) -> (placement, [(node index, GPU bits)], has MIG slices): running jobs
        # keep their placement object from cycle to cycle, so each is resolved once. The entry
        # holds the placement itself, so its id cannot be reused while the entry lives.
        self.resolved: dict[int, tuple[Placement, list[tuple[int, int]], bool, bool]] = {}
        # (busy bits per node, up per node) -> (free_mask, free, at_least, leaf_at_least) as
        # tuples: what a Capacity derives from them, for the next cycle with the same ones.
        self.derived: dict[tuple, tuple] = {}
        # The busy GPUs of the running jobs the last cycle was built from (see _RunningBusy).
        self.running: _RunningBusy | None = None
        # reserve.earliest's answers, keyed by everything the walk reads (see reserve._key).
        self.earliest: dict[tuple, tuple] = {}
        # (node, free mask, count) -> (GPU bits, NodeAlloc) of its `count` lowest free GPUs:
        # placements repeat the same few, and building a frozen NodeAlloc is not cheap.
        self.picks: dict[tuple[int, int, int], tuple[int, NodeAlloc] | None] = {}
        # (nodes, GPUs per node, nodes that have them) -> place.NoFit: "not enough nodes" answers.
        self.no_fits: dict[tuple[int, int, int], object] = {}
        # GPU index tuple -> bit mask; placements repeat the same few tuples ((0..7) above all).
        self.masks: dict[tuple[int, ...], int] = {}
        # The counters of an idle cluster with every node up: most cycles start from a copy.
        self.at_least, self.leaf_at_least = _counters(self.total, [True] * len(self.total), self.leaf_of,
                                                      len(self.leaf_names), self.max_gpus)

    def mask(self, gpus: tuple[int, ...]) -> int:
        try:
            return self.masks[gpus]
        except (KeyError, TypeError):  # TypeError: a list, from a hand-built placement
            bits = 0
            for g in gpus:
                bits |= 1 << g
            if isinstance(gpus, tuple) and len(self.masks) < 65_536:  # bounded, whatever tuples come
                self.masks[gpus] = bits
            return bits

    def _init_mig(self, i: int, first: int, count: int, profile: tuple[tuple[str, int], ...]) -> None:
        slots = []
        for gpu in range(first, first + count):
            k = 0
            for name, n in profile:
                for _ in range(n):
                    slots.append((gpu, k, name))
                    k += 1
        self.mig_nodes.append(i)
        self.mig_slots[i] = slots
        self.mig_pos[i] = {(g, k): pos for pos, (g, k, _) in enumerate(slots)}
        free: dict[str, int] = {}
        for pos, (_, _, name) in enumerate(slots):
            free[name] = free.get(name, 0) | (1 << pos)
        self.mig_free[i] = free


def layout_of(config: ClusterConfig, memo: Memo | None) -> _Layout:
    """The config's layout: the Memo's, or a fresh one (a cold cycle)."""
    return _Layout(config) if memo is None else memo.layout(config, _Layout)


def _counters(free: list[int], up: list[bool], leaf_of: list[int], n_leaves: int,
              top: int) -> tuple[list[int], list[list[int]]]:
    """at_least and leaf_at_least from scratch: count nodes per (leaf, exact free count),
    then sum from the top down (one pass over nodes, not one per GPU count)."""
    rows = [[0] * (top + 2) for _ in range(n_leaves)]
    for l, f, is_up in zip(leaf_of, free, up):
        if is_up:
            rows[l][f] += 1
    rows = [list(accumulate(row[::-1]))[::-1] for row in rows]  # suffix sums, at C speed
    at_least = list(map(sum, zip(*rows))) if rows else [0] * (top + 2)
    return at_least, rows


# The kinds of state cell Capacity._write sets (compared by identity: they are the hot path).
_BUSY, _HOLD, _MIG = "busy", "hold", "mig"


class Capacity:
    def __init__(self, config: ClusterConfig, snapshot: Snapshot | None = None, memo: Memo | None = None):
        self.layout = lay = layout_of(config, memo)
        self.config = config
        # Shared with the layout and every other cycle: read, never mutated.
        self.names, self.index, self.total, self.max_gpus = lay.names, lay.index, lay.total, lay.max_gpus
        self.leaf_names, self.leaf_of, self.leaf_nodes = lay.leaf_names, lay.leaf_of, lay.leaf_nodes
        self.spine_groups, self.all_mask = lay.spine_groups, lay.all_mask
        self.mig_nodes, self.mig_slots, self.mig_pos = lay.mig_nodes, lay.mig_slots, lay.mig_pos
        self._picks = lay.picks
        self._mask = lay.mask

        n = len(self.names)
        self.up: list[bool] = [True] * n
        self.busy: list[int] = [0] * n
        self.held: list[int] = [0] * n  # union of holds[i]
        self.holds: dict[int, dict[int, int]] = {}  # node -> reservation job id -> GPU bits
        self._owned: dict[int, dict[int, int]] = {}  # reservation job id -> node -> GPU bits
        self.free_mask: list[int] = list(self.all_mask)
        self.free: list[int] = list(self.total)
        self.mig_free: dict[int, dict[str, int]] = {i: dict(f) for i, f in lay.mig_free.items()}
        self._trial: Trial | None = None  # the innermost open trial: it logs every change

        # id(placement) -> (placement, its (node index, GPU bits)): the running jobs' placements,
        # resolved once here for the what-ifs that give them back (profile.py).
        self._resolved: dict[int, tuple[Placement, list[tuple[int, int]]]] = {}
        if snapshot is None or not (snapshot.running or snapshot.unavailable):
            self.at_least = list(lay.at_least)
            self.leaf_at_least = [list(row) for row in lay.leaf_at_least]
            return
        if memo is not None and not self.mig_nodes:
            # A daemon's or a replay's next cycle differs by a few jobs ended and started.
            if lay.running is None:
                lay.running = _RunningBusy(lambda: Capacity(config, None, memo))
            base = lay.running.cap
            if lay.running.update(snapshot):
                self.up, self.busy, self.free_mask, self.free = (list(base.up), list(base.busy),
                                                                 list(base.free_mask), list(base.free))
                self.at_least, self.leaf_at_least = list(base.at_least), [list(r) for r in base.leaf_at_least]
                return
        index, up, busy = self.index, self.up, self.busy
        for name in snapshot.unavailable:
            if name in index:
                up[index[name]] = False
        mig, known, resolved = bool(self.mig_nodes), lay.resolved, self._resolved
        for run in snapshot.running:  # the per-cycle hot loop: one pass over every rank
            placement = run.placement
            found = known.get(id(placement))
            if found is None or found[0] is not placement:
                found = self._resolve_running(placement)
            for i, bits in found[1]:
                busy[i] |= bits
            if mig and found[2]:
                for a in placement:
                    if a.slices and a.node in index:
                        self._write(self._mig_changes(index[a.node], a.slices, busy=True))
            if found[3]:  # a placement on a node the config lacks is resolved the slow way
                resolved[id(placement)] = (placement, found[1])
        # Consecutive cycles often see the same busy GPUs (only jobs were submitted): the free
        # masks and counters derived from them are remembered per (busy, up) on the layout.
        key = (tuple(busy), tuple(up))
        derived = lay.derived.get(key)
        if derived is None:
            self.free_mask = [m & ~b for m, b in zip(self.all_mask, busy)]
            self.free = list(map(int.bit_count, self.free_mask))
            self._rebuild_counters()
            if len(lay.derived) >= 256:  # bounded: a dict keeps insertion order, drop the oldest
                del lay.derived[next(iter(lay.derived))]
            lay.derived[key] = (tuple(self.free_mask), tuple(self.free), tuple(self.at_least),
                                tuple(map(tuple, self.leaf_at_least)))
        else:
            free_mask, free, at_least, rows = derived
            self.free_mask, self.free, self.at_least = list(free_mask), list(free), list(at_least)
            self.leaf_at_least = list(map(list, rows))

    def _resolve_running(self, placement: Placement) -> tuple[Placement, list[tuple[int, int]], bool, bool]:
        """(placement, its known ranks' (node index, GPU bits), any MIG slices, every node
        known), remembered in the layout when the placement is immutable."""
        index, pairs, slices, known, frozen = self.index, [], False, True, type(placement) is tuple
        for a in placement:
            frozen = frozen and type(a.gpus) is tuple
            slices = slices or bool(a.slices)
            i = index.get(a.node)
            if i is None:
                known = False
                continue
            pairs.append((i, self._mask(a.gpus)))
        found = (placement, pairs, slices, known)
        if frozen:
            memo = self.layout.resolved
            if len(memo) > 65_536:  # bounded, whatever a long-lived daemon meets
                memo.clear()
            memo[id(placement)] = found
        return found

    def frozen(self, placement: Placement) -> bool:
        """Is this placement immutable all through (a tuple of NodeAllocs with GPU tuples)?"""
        found = self.layout.resolved.get(id(placement))
        if found is not None and found[0] is placement:  # memoised: checked when resolved
            return True
        return type(placement) is tuple and all(type(a.gpus) is tuple for a in placement)

    def remember(self, placement: Placement, pairs: list[tuple[int, int]]) -> None:
        """Its (node index, GPU bits), known to the caller, for `resolve`."""
        self._resolved[id(placement)] = (placement, pairs)

    def resolve(self, placement: Placement) -> list[tuple[int, int]]:
        """(node index, GPU bits) for each rank of a placement."""
        found = self._resolved.get(id(placement))
        if found is not None and found[0] is placement:  # the same object, not a reused id
            return found[1]
        found = self.layout.resolved.get(id(placement))  # a running job's, on nodes all known
        if found is not None and found[0] is placement and found[3]:
            return found[1]
        return [(self.index[a.node], self._mask(a.gpus)) for a in placement]

    def _mig_changes(self, i: int, slices, busy: bool) -> list[tuple]:
        """The MIG cells (see _write) that mark these slices of node i busy (or free): one
        per profile touched, only real changes (a slice is never freed twice)."""
        pos, slots, free = self.mig_pos.get(i, {}), self.mig_slots.get(i, []), self.mig_free.get(i, {})
        new: dict[str, int] = {}
        for s in slices:
            p = pos.get(tuple(s))
            if p is None:
                continue
            name, bit = slots[p][2], 1 << p
            mask = new.get(name, free.get(name, 0))
            if bool(mask & bit) == busy:
                new[name] = mask ^ bit
        return [(_MIG, i, name, mask) for name, mask in new.items()]

    def _rebuild_counters(self) -> None:
        self.at_least, self.leaf_at_least = _counters(self.free, self.up, self.leaf_of, len(self.leaf_names),
                                                      self.max_gpus)

    # --- the one way a Capacity changes ------------------------------------------------
    # Its state is busy bits per node, holds per (node, reservation) and free MIG slots per
    # (node, profile); free masks and counters derive from it. Every mutation below computes
    # new values for some of these cells and hands them to _write, which logs the old ones
    # to the open trial (if any) and brings the derived values in step with _sync.

    def trial(self) -> "Trial":
        """Open a trial (nested in the open one, if any): every change from now until it is
        committed or discarded is logged, and discard undoes them all (see Trial)."""
        self._trial = Trial(self, self._trial)
        return self._trial

    def _write(self, cells) -> None:
        """Set state cells, in order: (_BUSY, node, None, bits), (_HOLD, node, owner, bits or
        None for no hold), (_MIG, node, profile, free slot bits). The open trial logs each
        cell's old value in the same form, so replaying its log backwards undoes them."""
        busy, holds, held, owned, mig_free = self.busy, self.holds, self.held, self._owned, self.mig_free
        log = None if self._trial is None else self._trial.log
        nodes = []
        for cell in cells:
            kind, i, key, new = cell
            if kind is _BUSY:
                old = busy[i]
                busy[i] = new
                nodes.append(i)
            elif kind is _HOLD:
                owners = holds.get(i)
                old = None if owners is None else owners.get(key)
                if new is not None:
                    if owners is None:
                        owners = holds[i] = {}
                    owners[key] = new
                    owned.setdefault(key, {})[i] = new
                elif old is not None:  # the hold goes; no empty entries are kept
                    del owners[key]
                    if not owners:
                        del holds[i]
                    mine = owned[key]
                    del mine[i]
                    if not mine:
                        del owned[key]
                bits = 0
                if owners:
                    for b in owners.values():
                        bits |= b
                held[i] = bits
                nodes.append(i)
            else:
                free = mig_free[i]
                old = free.get(key)
                if new is None:
                    free.pop(key, None)
                else:
                    free[key] = new
            if log is not None:
                log.append((kind, i, key, old))
        if nodes:
            self._sync(nodes)

    def _sync(self, nodes: list[int]) -> None:
        """These nodes' busy or held bits changed: bring their free masks and counts, and the
        counters, in step (the one place that does). A few changed counts step the counters
        one GPU at a time; more are summed per leaf first, then added as suffix sums."""
        all_mask, busy, held, free_mask, free, up, leaf_of = (self.all_mask, self.busy, self.held, self.free_mask,
                                                               self.free, self.up, self.leaf_of)
        steps = []  # (leaf, old free count, new free count) of up nodes whose count changed
        for i in nodes:
            mask = all_mask[i] & ~(busy[i] | held[i])
            free_mask[i] = mask
            new, old = mask.bit_count(), free[i]
            if new != old:
                free[i] = new
                if up[i]:
                    steps.append((leaf_of[i], old, new))
        if not steps:
            return
        at_least, rows = self.at_least, self.leaf_at_least
        if len(steps) < 4:
            for l, old, new in steps:
                row = rows[l]
                if new < old:
                    for g in range(new + 1, old + 1):
                        at_least[g] -= 1
                        row[g] -= 1
                else:
                    for g in range(old + 1, new + 1):
                        at_least[g] += 1
                        row[g] += 1
            return
        # Per touched leaf, the change in nodes per exact free count; its suffix sums are the
        # change of the leaf's at-least row.
        deltas: dict[int, list[int]] = {}
        size = len(at_least)
        for l, old, new in steps:
            d = deltas.get(l)
            if d is None:
                d = deltas[l] = [0] * size
            d[old] -= 1
            d[new] += 1
        for l, d in deltas.items():
            row, step = rows[l], 0
            for g in range(size - 2, -1, -1):
                step += d[g]
                if step:
                    row[g] += step
                    at_least[g] += step

    # --- mutations ---------------------------------------------------------------------

    def peek(self, picks: list[tuple[int, int]], masks: dict[int, int] | None = None) -> Placement:
        """The placement `take(picks)` would return, without taking anything; with `masks`,
        the free masks of the picked nodes in a what-if (WhatIf.free_masks)."""
        if masks is None:
            masks = self.free_mask
        memo, pick = self._picks, self._pick
        # _pick's memo looked up inline: this runs per rank of every gang
        found = [memo.get((i, masks[i], count)) or pick(i, count, masks[i]) for i, count in picks]
        placement = tuple([f[1] for f in found])
        # Its GPU bits are known here: remember them for the hold that often follows.
        self._resolved[id(placement)] = (placement, [(i, f[0]) for (i, _), f in zip(picks, found)])
        return placement

    def _pick(self, i: int, count: int, free_mask: int | None = None) -> tuple[int, NodeAlloc]:
        """The `count` lowest free GPUs of node i: their bits and their NodeAlloc."""
        key = (i, self.free_mask[i] if free_mask is None else free_mask, count)
        found = self._picks.get(key)
        if found is None:
            mask, bits, gpus = key[1], 0, []
            while len(gpus) < count:
                low = mask & -mask
                if not low:
                    raise ValueError(f"node {self.names[i]} has fewer than {count} free GPUs")
                gpus.append(low.bit_length() - 1)
                bits |= low
                mask ^= low
            if len(self._picks) > 100_000:  # bounded, whatever masks a long-lived daemon meets
                self._picks.clear()
            found = self._picks[key] = (bits, NodeAlloc(self.names[i], tuple(gpus)))
        return found

    def take(self, picks: list[tuple[int, int]]) -> Placement:
        """Take `count` GPUs (lowest free indexes) on each (node index, count)."""
        allocs, cells, busy = [], [], self.busy
        for i, count in picks:
            bits, alloc = self._pick(i, count)
            cells.append((_BUSY, i, None, busy[i] | bits))
            allocs.append(alloc)
        self._write(cells)
        return tuple(allocs)

    def occupy(self, placement: Placement) -> None:
        """Mark a placement's GPUs busy, held or not: a backfilled job placed (on a WhatIf) on
        GPUs a reservation lends it. Their holds stay."""
        busy, new = self.busy, {}
        for i, bits in self.resolve(placement):
            new[i] = new.get(i, busy[i]) | bits
        self._write([(_BUSY, i, None, bits) for i, bits in new.items()])

    def take_mig(self, i: int, profile: str, count: int) -> Placement:
        """Take `count` free `profile` slices on node i, lowest slot first."""
        mask, picked = self.mig_free[i].get(profile, 0), []
        while len(picked) < count:
            low = mask & -mask
            if not low:
                raise ValueError(f"node {self.names[i]} has fewer than {count} free {profile} slices")
            g, k, _ = self.mig_slots[i][low.bit_length() - 1]
            picked.append((g, k))
            mask ^= low
        self._write(self._mig_changes(i, picked, busy=True))
        return (NodeAlloc(self.names[i], (), tuple(picked)),)

    def give(self, placement: Placement) -> None:
        """Return a placement's GPUs and slices (a job ending, in a what-if)."""
        busy, new, cells = self.busy, {}, []
        for a in placement:
            i = self.index[a.node]
            new[i] = new.get(i, busy[i]) & ~self._mask(a.gpus)
            if a.slices:
                cells += self._mig_changes(i, a.slices, busy=False)
        self._write([(_BUSY, i, None, bits) for i, bits in new.items()] + cells)

    def hold(self, owner: int, placement: Placement) -> None:
        """Hold a placement's GPUs for reservation `owner`: no one else may take them.
        As _write of its (_HOLD, node, owner, bits) cells, inlined: a reservation of a big
        gang holds a cell per node, once a cycle in every replay (bench/sim_replay.py)."""
        holds, held, owned, free_mask = self.holds, self.held, self._owned, self.free_mask
        log = None if self._trial is None else self._trial.log
        pairs = self.resolve(placement)
        if not holds and log is None and pairs:  # the cycle's first reservation, at EASY depth its only one
            owned[owner] = dict(pairs)
            for i, bits in pairs:
                holds[i] = {owner: bits}
                held[i] = bits
            self._sync([i for i, bits in pairs if free_mask[i] & bits])
            return
        mine = owned.get(owner)
        nodes = []  # those whose free GPUs change: a node whose held GPUs are all busy keeps its own
        for i, bits in pairs:
            if mine is None:  # no empty entries are kept (as _write)
                mine = owned[owner] = {}
            owners = holds.get(i)
            if owners is None:
                holds[i] = {owner: bits}
                old = None
                held[i] = bits
            else:
                old = owners.get(owner)
                owners[owner] = bits
                union = 0
                for b in owners.values():
                    union |= b
                held[i] = union
            mine[i] = bits
            if old is not None or free_mask[i] & bits:
                nodes.append(i)
            if log is not None:
                log.append((_HOLD, i, owner, old))
        if nodes:
            self._sync(nodes)

    def release(self, owner: int) -> None:
        """Lift reservation `owner`'s hold (busy GPUs stay busy)."""
        mine = self._owned.get(owner)
        if mine:
            self._write([(_HOLD, i, owner, None) for i in list(mine)])

    # --- queries -----------------------------------------------------------------------

    def free_gpus_total(self) -> int:
        return sum(f for f, up in zip(self.free, self.up) if up)

    def fitting_counts(self, gpus: int, released: Iterable[int] = ()) -> Fitting:
        """(at_least[gpus], [leaf_at_least[l][gpus] per leaf]) as they would be if the holds of
        reservations `released` were lifted; nothing is changed."""
        what_if = WhatIf(self, gpus)
        what_if.lift(released)
        return Fitting(what_if.have, what_if.counts)


class _RunningBusy:
    """The busy GPUs of the running jobs of the last snapshot a Capacity was built from (with
    a Memo), as a Capacity without holds: the next snapshot's differ by the jobs that ended
    and started since, so only those are given back and taken. Exact while no two running
    placements share a GPU (then each GPU's busy bit has one owner); an overlap found starts
    it over, and that cycle builds its Capacity the plain way."""

    def __init__(self, fresh: Callable[[], Capacity]):
        self.fresh = fresh  # an idle Capacity on the same layout
        self._start_over({})

    def _start_over(self, last: dict[int, Placement]) -> bool:
        """Forget every placement (the next update steps from an idle cluster); False, for update."""
        self.cap = self.fresh()
        # id(placement) -> (placement, its (node index, GPU bits)); the placement is kept, so
        # its id stays its own while the entry lives.
        self.placements: dict[int, tuple[Placement, list[tuple[int, int]]]] = {}
        self.unavailable: frozenset[str] = frozenset()
        # The placements (by id, kept alive) of the last snapshot that was mostly new to this
        # one: a shell that makes new objects every cycle shows as two such in a row.
        self.last: dict[int, Placement] = last
        return False

    def update(self, snapshot: Snapshot) -> bool:
        """Step to the snapshot's running jobs and down nodes; False if the Capacity must be
        built the plain way: a new placement that is not immutable all through (its id could
        not stand for its GPUs), an overlap, or a shell that makes new placement objects
        every cycle (the store reads them from SQLite: a step would cost more than a build)."""
        cap, mine = self.cap, self.placements
        now = {id(run.placement): run.placement for run in snapshot.running}
        new = now.keys() - mine.keys()
        if len(new) > 8 and len(new) * 2 > len(now):  # mostly new to us: new to the last snapshot too?
            kept = len(now.keys() & self.last.keys())
            self.last = now
            if kept * 2 < len(now):
                return self._start_over(now)
        added = []
        for pid in new:
            placement = now[pid]
            if not cap.frozen(placement):
                return False
            found = cap.layout.resolved.get(pid)
            if found is None or found[0] is not placement:
                found = cap._resolve_running(placement)
            added.append((pid, placement, found[1]))
        busy, changed = cap.busy, set()
        ended = mine.keys() - now.keys() if len(mine) + len(new) > len(now) else ()  # else all kept
        for pid in ended:
            for i, bits in mine.pop(pid)[1]:
                busy[i] &= ~bits
                changed.add(i)
        for pid, placement, pairs in added:
            mine[pid] = (placement, pairs)
            for i, bits in pairs:
                if busy[i] & bits:  # a GPU of two running placements: not ours to step
                    return self._start_over(now)
                busy[i] |= bits
                changed.add(i)
        if snapshot.unavailable != self.unavailable:  # rare: every count from scratch
            self.unavailable = frozenset(snapshot.unavailable)
            cap.up = [name not in self.unavailable for name in cap.names]
            cap.free_mask = [m & ~b for m, b in zip(cap.all_mask, busy)]
            cap.free = list(map(int.bit_count, cap.free_mask))
            cap._rebuild_counters()
        elif changed:
            cap._sync(list(changed))
        return True


class Fitting(NamedTuple):
    """Fitting-node counts for one GPU count: `have` nodes with that many free GPUs, `counts`
    of them per leaf (of a Capacity, a WhatIf or the profile's window). place.find_placement
    tells from them alone whether a job places, except first fit under a leaf limit."""
    have: int
    counts: list[int]


class WhatIf:
    """Jobs ending and holds lifted, counted for one request size (`gpus` per node) without
    changing the Capacity: per-node changes are kept aside and only the nodes they touch
    are looked at. `have` and `counts` are at_least[gpus] and leaf_at_least[l][gpus] as they
    would be; `apply` makes the Capacity match for a moment, to place a job on it."""

    def __init__(self, cap: Capacity, gpus: int):
        self.cap, self.gpus = cap, gpus
        if gpus > cap.max_gpus:  # fits no node, whatever ends
            self.have, self.counts = 0, [0] * len(cap.leaf_names)
        else:
            self.have, self.counts = cap.at_least[gpus], [row[gpus] for row in cap.leaf_at_least]
        self.busy: dict[int, int] = {}  # node -> its busy bits once the given jobs ended
        self.lifted: set[int] = set()  # reservations whose holds are lifted
        self.held: dict[int, int] = {}  # node -> its held bits once those are lifted
        # Nodes that came to fit `gpus` in the what-if. Jobs ending and holds lifted only ever
        # free GPUs, so a node that fits keeps fitting and is never looked at again.
        self._fits: set[int] = set()
        # free_masks' last answer, until the what-if changes (as its counts, it takes the
        # Capacity to stay as it is while it is asked): peek reuses find_placement's.
        self._masks: dict[int, int] = {}

    def _recount(self, nodes: Iterable[int]) -> None:
        """These nodes' busy or held bits changed: which of them fit `gpus` now? Adjust the counts."""
        cap, gpus, fits, counts = self.cap, self.gpus, self._fits, self.counts
        up, free, all_mask, leaf_of = cap.up, cap.free, cap.all_mask, cap.leaf_of
        busy, held, cap_busy, cap_held = self.busy, self.held, cap.busy, cap.held
        for i in nodes:
            if i in fits or free[i] >= gpus or not up[i]:
                continue  # fitted already (GPUs only come free), or down
            if (all_mask[i] & ~(busy.get(i, cap_busy[i]) | held.get(i, cap_held[i]))).bit_count() >= gpus:
                fits.add(i)
                self.have += 1
                counts[leaf_of[i]] += 1

    def give(self, placement) -> None:
        """As Capacity.give: a job's GPUs come back (MIG slices are not counted here)."""
        cap, gpus, fits, counts = self.cap, self.gpus, self._fits, self.counts
        up, free, all_mask, leaf_of = cap.up, cap.free, cap.all_mask, cap.leaf_of
        busy, held, cap_busy, cap_held = self.busy, self.held, cap.busy, cap.held
        self._masks = {}
        for i, bits in cap.resolve(placement):  # _recount, inlined: the walk's inner loop
            b = busy[i] = busy.get(i, cap_busy[i]) & ~bits
            if i in fits or free[i] >= gpus or not up[i]:
                continue
            if (all_mask[i] & ~(b | held.get(i, cap_held[i]))).bit_count() >= gpus:
                fits.add(i)
                self.have += 1
                counts[leaf_of[i]] += 1

    def lift(self, owners: Iterable[int]) -> None:
        """As Capacity.release, for each of `owners`."""
        cap, lifted = self.cap, self.lifted
        self._masks = {}
        nodes: set[int] = set()
        for owner in owners:
            if owner not in lifted:
                lifted.add(owner)
                nodes.update(cap._owned.get(owner, ()))
        for i in nodes:
            held, owners = 0, cap.holds[i]
            if len(owners) > 1:  # else its one hold is lifted
                for other, bits in owners.items():
                    if other not in lifted:
                        held |= bits
            self.held[i] = held
        self._recount(nodes)

    def free_masks(self, nodes: Iterable[int]) -> dict[int, int]:
        """These nodes' free GPU bits in the what-if."""
        cap, busy, held = self.cap, self.busy, self.held
        all_mask, cap_busy, cap_held = cap.all_mask, cap.busy, cap.held
        self._masks = masks = {i: all_mask[i] & ~(busy.get(i, cap_busy[i]) | held.get(i, cap_held[i])) for i in nodes}
        return masks

    def apply(self) -> None:
        """Make the Capacity look like the what-if, to place a job on it: the lifted holds
        are released and the given GPUs freed (MIG slices stay) in the caller's open trial,
        whose discard puts them back."""
        cap = self.cap
        if cap._trial is None:
            raise RuntimeError("WhatIf.apply outside a trial would change the Capacity for good")
        cells = [(_BUSY, i, None, bits) for i, bits in self.busy.items()]
        for owner in self.lifted:
            cells += [(_HOLD, i, owner, None) for i in cap._owned.get(owner, ())]
        cap._write(cells)

    def peek(self, picks: list[tuple[int, int]]) -> Placement:
        """The placement these picks make on the what-if's free GPUs (as Capacity.peek)."""
        masks = self._masks  # find_placement's, of the nodes it picked among (the Capacity as then)
        if not all(i in masks for i, _ in picks):
            masks = self.free_masks(i for i, _ in picks)
        return self.cap.peek(picks, masks)


class Trial:
    """A statement of changes to one Capacity (the idea of Volcano's Statement): while it is
    the innermost open trial every change is logged with the value it replaced; `discard`
    writes those back in reverse order (the Capacity is exactly as before the trial),
    `commit` keeps the changes (they join the enclosing trial's log, so discarding that one
    still undoes them). Only the innermost open trial may end. As a context manager it
    discards on exit unless committed: `with cap.trial() as t: ...; t.commit()`."""

    __slots__ = ("cap", "parent", "log", "open")

    def __init__(self, cap: Capacity, parent: "Trial | None"):
        self.cap, self.parent, self.log, self.open = cap, parent, [], True

    def _close(self) -> None:
        if not self.open or self.cap._trial is not self:
            raise RuntimeError("only the innermost open trial may be committed or discarded")
        self.open = False
        self.cap._trial = self.parent

    def commit(self) -> None:
        self._close()
        if self.parent is not None:
            self.parent.log += self.log

    def discard(self) -> None:
        self._close()
        cap = self.cap
        cap._trial = None  # the undo itself is logged nowhere
        try:
            cap._write(reversed(self.log))
        finally:
            cap._trial = self.parent

    def __enter__(self) -> "Trial":
        return self

    def __exit__(self, *exc) -> None:
        if self.open:
            self.discard()
