"""Topology-aware best-fit placement of one gang onto IB leaf groups.

Rules, in order:
  1. all or nothing: N distinct nodes, each with G free GPUs, or no placement;
  2. fewest leaf switches: one leaf if any leaf can hold the gang, else the fewest leaves
     under one spine, else the fewest leaves anywhere;
  3. best fit: among equally few leaves, the tightest set (least capacity left over), so
     whole leaves stay free for the next big gang;
  4. sub-node jobs go to the node with the fewest free GPUs that still fits (pack partly
     used nodes; keep idle nodes idle), in the leaf with the fewest idle nodes;
  5. node index breaks every remaining tie, so placement is deterministic.

`find_placement` is the one answer to "would this job place, and where?" for every caller:
on the Capacity as it is or as a what-if would leave it, with picks or only the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import reasons
from .capacity import Capacity, Fitting, WhatIf
from .model import Reason

Picks = list[tuple[int, int]]  # (node index, GPUs on it), rank order


@dataclass(frozen=True, slots=True)
class NoFit:
    reason: Reason


def find_placement(
    cap: Capacity, num_nodes: int, gpus: int, max_leaves: int | None = None, topology_aware: bool = True,
    *, what_if: WhatIf | Fitting | None = None, pick: bool = True,
) -> Picks | NoFit | bool | None:
    """The one answer to "would this job place, and where?".

    On the Capacity as it is, or as `what_if` would leave it (a capacity.WhatIf: jobs ended,
    holds lifted; place its picks with WhatIf.peek). With `pick` the picks (node index, GPUs
    on it) or NoFit; without, only the verdict: True or NoFit, taken from the fitting-node
    counters whenever they can tell (all but first fit under a leaf limit, which places).
    `what_if` may also be a capacity.Fitting, counters alone (a memo's, the profile's): then
    only the verdict is asked, and None says the counters cannot tell."""
    if what_if is None:
        have = cap.at_least[gpus] if gpus <= cap.max_gpus else 0
    else:
        have = what_if.have
    if have < num_nodes:
        return _no_resources(cap, num_nodes, gpus, have)
    if not pick and (max_leaves is None or num_nodes == 1):
        return True  # first fit, one node or an unlimited gang always place
    if topology_aware and num_nodes > 1:  # the leaves come from the per-leaf counts alone
        counts = [row[gpus] for row in cap.leaf_at_least] if what_if is None else what_if.counts
        n_leaves, leaves = _gang_leaves(cap, counts, num_nodes)
        if max_leaves is not None and n_leaves > max_leaves:
            return _no_topology(cap, counts, num_nodes, max_leaves)
        if not pick:
            return True
        free = None
        if what_if is not None:  # the free GPUs of the chosen leaves' nodes in the what-if
            free = {i: m.bit_count() for i, m in what_if.free_masks(i for l in leaves for i in cap.leaf_nodes[l]).items()}
        return _take_nodes(cap, leaves, num_nodes, gpus, counts, free)
    # One node, or first fit: placed on every node's free GPUs, so a what-if is applied first.
    if what_if is not None:
        if not isinstance(what_if, WhatIf):
            return None
        with cap.trial():
            what_if.apply()
            return find_placement(cap, num_nodes, gpus, max_leaves, topology_aware, pick=pick)
    if not topology_aware:
        picks = _first_fit(cap, num_nodes, gpus)
        if max_leaves is None or len({cap.leaf_of[i] for i, _ in picks}) <= max_leaves:
            return picks if pick else True
        # max leaves is the job's hard limit, not a placement preference: honour it even here
        return find_placement(cap, num_nodes, gpus, max_leaves, True, pick=pick)
    return _place_one(cap, gpus)


def _no_resources(cap: Capacity, num_nodes: int, gpus: int, have: int) -> NoFit:
    # The commonest answer of all (a blocked queue's every job, every cycle), from a few
    # (need, have) pairs: each NoFit (immutable) is made once per layout.
    key = (num_nodes, gpus, have)
    found = cap.layout.no_fits.get(key)
    if found is None:
        if len(cap.layout.no_fits) >= 65_536:  # bounded, whatever sizes a long-lived daemon meets
            cap.layout.no_fits.clear()
        found = cap.layout.no_fits[key] = NoFit(reasons.resources(num_nodes, gpus, have))
    return found


def _no_topology(cap: Capacity, counts: list[int], num_nodes: int, max_leaves: int) -> NoFit:
    top = max(range(len(counts)), key=lambda l: (counts[l], -l))
    return NoFit(reasons.topology(num_nodes, max_leaves, cap.leaf_names[top], counts[top]))


def _first_fit(cap: Capacity, num_nodes: int, gpus: int) -> Picks:
    """The baseline the simulator compares against: lowest node indexes that fit."""
    picks = []
    for i in range(len(cap.free)):
        if cap.up[i] and cap.free[i] >= gpus:
            picks.append((i, gpus))
            if len(picks) == num_nodes:
                break
    return picks


def _place_one(cap: Capacity, gpus: int) -> Picks:
    at_least, top = cap.at_least, cap.max_gpus
    for f in range(gpus, top + 1):  # tightest free count first
        if at_least[f] - at_least[f + 1] == 0:
            continue
        best_leaf, best_key = -1, None
        for l, row in enumerate(cap.leaf_at_least):
            if row[f] - row[f + 1] > 0:
                key = (row[top], l)  # fewest idle nodes: don't break into a free leaf
                if best_key is None or key < best_key:
                    best_leaf, best_key = l, key
        for i in cap.leaf_nodes[best_leaf]:
            if cap.up[i] and cap.free[i] == f:
                return [(i, gpus)]
    raise AssertionError("counters say a node fits but none was found")  # pragma: no cover


def _cover(leaves: list[int], counts: list[int], need: int) -> tuple[int, int, list[int]] | None:
    """Fewest leaves whose fitting nodes add up to `need`; the last one chosen best-fit.

    Returns (leaves used, spare nodes, leaves) or None when the group cannot hold the gang.
    """
    by_size = sorted(leaves, key=lambda l: (-counts[l], l))
    chosen, total = [], 0
    for l in by_size:
        if total >= need:
            break
        if counts[l] == 0:
            break
        chosen.append(l)
        total += counts[l]
    if total < need:
        return None
    # Swap the last (smallest) leaf for the tightest one that still covers the remainder.
    rest = need - (total - counts[chosen[-1]])
    used = set(chosen[:-1])
    last = min((l for l in leaves if l not in used and counts[l] >= rest), key=lambda l: (counts[l], l))
    chosen[-1] = last
    spare = sum(counts[l] for l in chosen) - need
    return len(chosen), spare, chosen


def _gang_leaves(cap: Capacity, counts: list[int], num_nodes: int) -> tuple[int, list[int]]:
    """The leaves a gang goes to: one leaf (tightest fit) if any holds it, else the fewest
    leaves under one spine, else the fewest anywhere. Needs at_least[gpus] >= num_nodes."""
    single = [l for l, c in enumerate(counts) if c >= num_nodes]
    if single:
        return 1, [min(single, key=lambda l: (counts[l], l))]
    best = None
    for group in cap.spine_groups:
        found = _cover(group, counts, num_nodes)
        if found and (best is None or found[:2] < best[:2]):
            best = found
    if best is None:
        best = _cover(list(range(len(counts))), counts, num_nodes)
    assert best is not None  # at_least[gpus] >= num_nodes guarantees a cover
    return best[0], best[2]


def _take_nodes(cap: Capacity, leaves: list[int], num_nodes: int, gpus: int,
                counts: list[int] | None = None, free=None) -> Picks:
    """Fill the chosen leaves largest first; inside a leaf take the tightest nodes.
    `counts` (fitting nodes per leaf) and `free` (per node) default to the Capacity's."""
    taken: list[tuple[int, list[int]]] = []  # (leaf, its nodes taken)
    need = num_nodes
    up = cap.up
    if free is None:
        free = cap.free
    if counts is None:
        counts = [row[gpus] for row in cap.leaf_at_least]
    for l in sorted(leaves, key=lambda l: (-counts[l], l)):
        fitting = [i for i in cap.leaf_nodes[l] if up[i] and free[i] >= gpus]
        fitting.sort(key=free.__getitem__)  # stable on ascending indexes: by (free, index)
        take = fitting[:need]
        taken.append((l, take))
        need -= len(take)
        if need == 0:
            break
    # Ranks grouped by leaf, by node index inside one: the order of (leaf_of[i], i).
    taken.sort()
    return [(i, gpus) for _, take in taken for i in sorted(take)]


def leaves_spanned(cap: Capacity, nodes) -> int:
    """How many leaves the nodes (indexes) of one placement are under."""
    return len({cap.leaf_of[i] for i in nodes})


def fewest_leaves(cap: Capacity, num_nodes: int, gpus: int) -> int:
    """The fewest leaves a gang of `num_nodes` x `gpus` could ever span: on the up nodes with
    that many GPUs, every one free (largest leaves first). What a leaf wait waits for."""
    sizes = sorted((sum(1 for i in nodes if cap.up[i] and cap.total[i] >= gpus) for nodes in cap.leaf_nodes),
                   reverse=True)
    covered = 0
    for k, size in enumerate(sizes, 1):
        covered += size
        if covered >= num_nodes:
            return k
    return len(sizes)


def find_mig(cap: Capacity, profile: str, count: int) -> Picks | NoFit:
    """A MIG job: one node with `count` free `profile` slices; the tightest such node, so
    whole MIG GPUs stay free for bigger requests; node index breaks ties."""
    best, best_free = -1, 0
    for i in cap.mig_nodes:
        if not cap.up[i]:
            continue
        free = cap.mig_free[i].get(profile, 0).bit_count()
        if free >= count and (best < 0 or free < best_free):
            best, best_free = i, free
    if best < 0:
        return NoFit(reasons.mig_resources(profile, count))
    return [(best, count)]
