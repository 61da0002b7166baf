"""Free capacity of the cluster during one cycle, indexed for fast topology-aware queries.

A Capacity is built fresh from each Snapshot (it is never the live state) and is mutated
as the cycle decides; every mutation returns an undo so what-if questions are cheap.

Counters kept per node, per leaf and for the whole cluster:
  at_least[g]         nodes (up) with >= g free GPUs
  leaf_at_least[l][g] the same inside leaf l
so "can N nodes with G free GPUs be had, and within how many leaves?" never scans nodes.
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
        self.total: list[int] = [n.gpus for n in config.nodes]
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
        self.free_mask: list[int] = [(1 << g) - 1 for g in self.total]
        self.free: list[int] = list(self.total)
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
                        self.free_mask[i] &= ~(1 << g)
                    self.free[i] = self.free_mask[i].bit_count()
        self._rebuild_counters()

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
            self.free_mask[i] = mask
            self._set_free(i, self.free[i] - count)
            taken.append((i, bits))
            allocs.append(NodeAlloc(self.names[i], tuple(gpus)))

        def undo() -> None:
            for i, bits in taken:
                self.free_mask[i] |= bits
                self._set_free(i, self.free[i] + bits.bit_count())

        return tuple(allocs), undo

    def give(self, placement: Placement) -> Callable[[], None]:
        """Return a placement's GPUs (a job ending or preempted, in a what-if)."""
        given: list[tuple[int, int]] = []
        for a in placement:
            i = self.index[a.node]
            bits = 0
            for g in a.gpus:
                bits |= 1 << g
            bits &= ~self.free_mask[i]  # never count a GPU as freed twice
            self.free_mask[i] |= bits
            self._set_free(i, self.free[i] + bits.bit_count())
            given.append((i, bits))

        def undo() -> None:
            for i, bits in given:
                self.free_mask[i] &= ~bits
                self._set_free(i, self.free[i] - bits.bit_count())

        return undo

    # --- queries -----------------------------------------------------------------------

    def free_gpus_total(self) -> int:
        return sum(f for f, up in zip(self.free, self.up) if up)
