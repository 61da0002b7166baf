"""Free capacity of the cluster during one cycle, indexed for fast topology-aware queries.

A Capacity is built fresh from each Snapshot (it is never the live state) and is mutated
as the cycle decides; every mutation returns an undo so what-if questions are cheap.

Counters kept per node, per leaf and for the whole cluster:
  at_least[g]         nodes (up) with >= g free GPUs
  leaf_at_least[l][g] the same inside leaf l
so "can N nodes with G free GPUs be had, and within how many leaves?" never scans nodes.

A GPU is free when it is neither busy (a running or just-started job holds it) nor held
(a reservation promises it to a blocked job). Holds are per reservation, so backfill can
lift one reservation's hold for a job that ends before that reservation starts.
MIG-split GPUs are not in the whole-GPU masks at all; their slices are tracked apart.
"""

from __future__ import annotations

from typing import Callable

from .config import ClusterConfig
from .model import NodeAlloc, Placement, Snapshot


class Capacity:
    def __init__(self, config: ClusterConfig, snapshot: Snapshot | None = None):
        self.config = config
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

        self.up: list[bool] = [True] * len(self.names)
        self.all_mask: list[int] = [(1 << g) - 1 for g in self.total]
        self.busy: list[int] = [0] * len(self.names)
        self.held: list[int] = [0] * len(self.names)  # union of holds[i]
        self.holds: dict[int, dict[int, int]] = {}  # node -> reservation job id -> GPU bits
        self.free_mask: list[int] = list(self.all_mask)
        self.free: list[int] = list(self.total)

        # MIG slices: per node, slot k = (GPU, slice index, profile); free slots per profile.
        self.mig_nodes: list[int] = []
        self.mig_slots: dict[int, list[tuple[int, int, str]]] = {}
        self.mig_pos: dict[int, dict[tuple[int, int], int]] = {}
        self.mig_free: dict[int, dict[str, int]] = {}
        for i, n in enumerate(config.nodes):
            if n.mig_gpus:
                self._init_mig(i, n.whole_gpus, n.mig_gpus, n.mig_profile)

        if snapshot is not None:
            for name in snapshot.unavailable:
                if name in self.index:
                    self.up[self.index[name]] = False
            for run in snapshot.running:
                for a in run.placement:
                    i = self.index.get(a.node)
                    if i is None:
                        continue
                    for g in a.gpus:
                        self.busy[i] |= 1 << g
                    self.free_mask[i] = self.all_mask[i] & ~self.busy[i]
                    self.free[i] = self.free_mask[i].bit_count()
                    if a.slices:
                        self._mig_mark(i, a.slices, busy=True)
        self._rebuild_counters()

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

    def _mig_mark(self, i: int, slices, busy: bool) -> list[tuple[str, int]]:
        """Mark slices busy (or free); returns the (profile, bits) actually changed."""
        pos, slots, free = self.mig_pos.get(i, {}), self.mig_slots.get(i, []), self.mig_free.get(i, {})
        changed = []
        for s in slices:
            p = pos.get(tuple(s))
            if p is None:
                continue
            name, bit = slots[p][2], 1 << p
            if bool(free[name] & bit) == busy:  # only a real change counts (never freed twice)
                free[name] ^= bit
                changed.append((name, bit))
        return changed

    def _rebuild_counters(self) -> None:
        G = self.max_gpus
        self.at_least = [0] * (G + 2)
        self.leaf_at_least = [[0] * (G + 2) for _ in self.leaf_names]
        for i, f in enumerate(self.free):
            if not self.up[i]:
                continue
            row = self.leaf_at_least[self.leaf_of[i]]
            for g in range(f + 1):
                self.at_least[g] += 1
                row[g] += 1

    def _set_free(self, i: int, new: int) -> None:
        old = self.free[i]
        self.free[i] = new
        if not self.up[i] or old == new:
            return
        row = self.leaf_at_least[self.leaf_of[i]]
        if new < old:
            for g in range(new + 1, old + 1):
                self.at_least[g] -= 1
                row[g] -= 1
        else:
            for g in range(old + 1, new + 1):
                self.at_least[g] += 1
                row[g] += 1

    def _refresh(self, i: int) -> None:
        mask = self.all_mask[i] & ~self.busy[i] & ~self.held[i]
        self.free_mask[i] = mask
        self._set_free(i, mask.bit_count())

    # --- mutations, each with an undo -------------------------------------------------

    def take(self, picks: list[tuple[int, int]]) -> tuple[Placement, Callable[[], None]]:
        """Take `count` GPUs (lowest free indexes) on each (node index, count)."""
        allocs = []
        taken: list[tuple[int, int]] = []
        for i, count in picks:
            mask, bits = self.free_mask[i], 0
            gpus = []
            while len(gpus) < count:
                low = mask & -mask
                if not low:
                    raise ValueError(f"node {self.names[i]} has fewer than {count} free GPUs")
                gpus.append(low.bit_length() - 1)
                bits |= low
                mask ^= low
            self.busy[i] |= bits
            self._refresh(i)
            taken.append((i, bits))
            allocs.append(NodeAlloc(self.names[i], tuple(gpus)))

        def undo() -> None:
            for i, bits in taken:
                self.busy[i] &= ~bits
                self._refresh(i)

        return tuple(allocs), undo

    def take_mig(self, i: int, profile: str, count: int) -> tuple[Placement, Callable[[], None]]:
        """Take `count` free `profile` slices on node i, lowest slot first."""
        mask, picked = self.mig_free[i].get(profile, 0), []
        while len(picked) < count:
            low = mask & -mask
            if not low:
                raise ValueError(f"node {self.names[i]} has fewer than {count} free {profile} slices")
            g, k, _ = self.mig_slots[i][low.bit_length() - 1]
            picked.append((g, k))
            mask ^= low
        self._mig_mark(i, picked, busy=True)

        def undo() -> None:
            self._mig_mark(i, picked, busy=False)

        return (NodeAlloc(self.names[i], (), tuple(picked)),), undo

    def give(self, placement: Placement) -> Callable[[], None]:
        """Return a placement's GPUs and slices (a job ending, in a what-if)."""
        given: list[tuple[int, int]] = []
        slices: list[tuple[int, list]] = []
        for a in placement:
            i = self.index[a.node]
            bits = 0
            for g in a.gpus:
                bits |= 1 << g
            bits &= self.busy[i]  # never count a GPU as freed twice
            self.busy[i] &= ~bits
            self._refresh(i)
            given.append((i, bits))
            if a.slices:
                changed = self._mig_mark(i, a.slices, busy=False)
                slices.append((i, [self.mig_slots[i][b.bit_length() - 1][:2] for _, b in changed]))

        def undo() -> None:
            for i, bits in given:
                self.busy[i] |= bits
                self._refresh(i)
            for i, picked in slices:
                self._mig_mark(i, picked, busy=True)

        return undo

    def hold(self, owner: int, placement: Placement) -> Callable[[], None]:
        """Hold a placement's GPUs for reservation `owner`: no one else may take them."""
        nodes = []
        for a in placement:
            i = self.index[a.node]
            bits = 0
            for g in a.gpus:
                bits |= 1 << g
            self.holds.setdefault(i, {})[owner] = bits
            self.held[i] |= bits
            self._refresh(i)
            nodes.append(i)

        def undo() -> None:
            for i in nodes:
                self._drop_hold(i, owner)

        return undo

    def release(self, owner: int) -> Callable[[], None]:
        """Lift reservation `owner`'s hold (busy GPUs stay busy); the undo holds them again."""
        dropped = []
        for i, owners in self.holds.items():
            if owner in owners:
                dropped.append((i, owners[owner]))
        for i, _ in dropped:
            self._drop_hold(i, owner)

        def undo() -> None:
            for i, bits in dropped:
                self.holds.setdefault(i, {})[owner] = bits
                self.held[i] |= bits
                self._refresh(i)

        return undo

    def _drop_hold(self, i: int, owner: int) -> None:
        owners = self.holds[i]
        del owners[owner]
        held = 0
        for bits in owners.values():
            held |= bits
        self.held[i] = held
        self._refresh(i)

    # --- queries -----------------------------------------------------------------------

    def free_gpus_total(self) -> int:
        return sum(f for f, up in zip(self.free, self.up) if up)
