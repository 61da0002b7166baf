"""Capacity.trial: the one log of changes that a what-if keeps (commit) or forgets (discard).

Each change is made on the Capacity under test inside trials and, as a concrete operation
(the exact picks, placement or owner), remembered; the reference is a fresh Capacity on which
only the operations that should survive are replayed. Discarded work must leave no trace in
any counter, row, mask, hold or MIG slot."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adsched.core.capacity import Capacity, WhatIf, _counters
from adsched.core.place import NoFit, find_mig, find_placement
from builders import cluster
from test_properties import MIG, QUEUES, random_snapshot

CFG = cluster(leaves=3, nodes_per_leaf=3, gpus=8, spines=1, queues=QUEUES, scheduler={"default_queue": "open"},
              mig=MIG)
SNAP = random_snapshot(CFG, 8, 7, 0, 10_000.0)  # busy, idle and MIG nodes; two MIG jobs
WHOLE = [r.placement for r in SNAP.running if r.job.mig is None and r.placement]
SLICED = [r.placement for r in SNAP.running if r.job.mig is not None]


def full_state(cap: Capacity) -> dict:
    """Everything a Capacity knows that a change could touch."""
    return {
        "busy": list(cap.busy), "held": list(cap.held), "free_mask": list(cap.free_mask), "free": list(cap.free),
        "at_least": list(cap.at_least), "leaf_at_least": [list(r) for r in cap.leaf_at_least],
        "holds": {i: dict(o) for i, o in cap.holds.items()}, "owned": {o: dict(n) for o, n in cap._owned.items()},
        "mig_free": {i: dict(f) for i, f in cap.mig_free.items()}, "up": list(cap.up),
    }


def fresh() -> Capacity:
    cap = Capacity(CFG, SNAP)
    cap.hold(1, cap.peek(find_placement(cap, 2, 2)))  # a reservation to release
    return cap


def perform(cap: Capacity, kind: str, a: int = 0, b: int = 0):
    """Make one change of `kind` (a and b choose its shape) on `cap`; the concrete operation
    made, to replay elsewhere, or None when that shape has nothing to do here."""
    if kind == "take":
        picks = find_placement(cap, 1 + a % 3, (1, 2, 4, 8)[b % 4])
        op = None if isinstance(picks, NoFit) else ("take", picks)
    elif kind == "hold":
        picks = find_placement(cap, 1 + a % 2, (1, 2, 4)[b % 3])
        op = None if isinstance(picks, NoFit) else ("hold", 10 + a % 3, cap.peek(picks))
    elif kind == "give":
        op = ("give", (WHOLE + SLICED)[a % len(WHOLE + SLICED)])
    elif kind == "occupy":
        op = ("occupy", WHOLE[a % len(WHOLE)])
    elif kind == "release":
        op = ("release", (1, 10, 11, 12)[a % 4])
    else:  # "mig"
        profile, count = (("1g.10gb", 1 + b % 3), ("3g.40gb", 1))[a % 2]
        picks = find_mig(cap, profile, count)
        op = None if isinstance(picks, NoFit) else ("take_mig", picks[0][0], profile, count)
    if op is not None:
        replay(cap, op)
    return op


def replay(cap: Capacity, op: tuple) -> None:
    getattr(cap, op[0])(*op[1:])


def assert_consistent(cap: Capacity) -> None:
    assert (cap.at_least, cap.leaf_at_least) == _counters(cap.free, cap.up, cap.leaf_of, len(cap.leaf_names),
                                                          cap.max_gpus)


# Letters are changes (each of a kind that does change this Capacity); "(" opens a trial,
# ")+" commits the innermost and ")-" discards it. want_kept: the letters whose changes remain.
CHANGES = {"A": ("take", 2, 3), "B": ("hold", 0, 1), "C": ("give", 0, 0), "D": ("release", 0, 0),
           "E": ("mig", 0, 1), "F": ("take", 0, 0), "G": ("give", 1, 0)}
CASES = [
    dict(name="discard restores exactly", script="( A B C D E F G )-", want_kept=""),
    dict(name="commit keeps", script="( A B C D E F G )+", want_kept="ABCDEFG"),
    dict(name="no trial: changes are for good", script="A B", want_kept="AB"),
    dict(name="nested discard inside a committed trial", script="( A B ( C D E )- F )+", want_kept="ABF"),
    dict(name="nested commit inside a discarded trial", script="( A ( B C )+ D )-", want_kept=""),
    dict(name="nested commit inside a committed trial", script="( A ( B C )+ )+", want_kept="ABC"),
    dict(name="trials one after another", script="( A )- ( B )+ ( C )-", want_kept="B"),
    dict(name="three deep", script="( A ( B ( C D )- E )+ F )+", want_kept="ABEF"),
    dict(name="a change outside, a trial around the rest", script="A ( B C D )-", want_kept="A"),
]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_trial_keeps_exactly_what_is_committed(case):
    cap, stack, done = fresh(), [], []
    for token in case["script"].split():
        if token == "(":
            stack.append(cap.trial())
        elif token in (")+", ")-"):
            trial = stack.pop()
            trial.commit() if token == ")+" else trial.discard()
        else:
            before = full_state(cap)
            op = perform(cap, *CHANGES[token])
            assert op is not None and full_state(cap) != before, f"{token} changed nothing: the case tests nothing"
            done.append((token, op))
        assert_consistent(cap)
    assert not stack and cap._trial is None
    want = fresh()
    for token, op in done:
        if token in case["want_kept"]:
            replay(want, op)
    assert full_state(cap) == full_state(want)


def test_an_exception_inside_a_trial_discards_it():
    cap = fresh()
    before = full_state(cap)
    with pytest.raises(ZeroDivisionError):
        with cap.trial():
            perform(cap, "take", 2, 3)
            1 / 0
    assert full_state(cap) == before


@pytest.mark.parametrize("case", [
    dict(name="outer ended while the inner is open", end="outer", want_error="innermost"),
    dict(name="ended twice", end="inner twice", want_error="innermost"),
], ids=lambda c: c["name"])
def test_only_the_innermost_open_trial_may_end(case):
    cap = fresh()
    outer = cap.trial()
    inner = cap.trial()
    with pytest.raises(RuntimeError, match=case["want_error"]):
        if case["end"] == "outer":
            outer.commit()
        else:
            inner.discard()
            inner.commit()


def test_a_what_if_is_applied_only_inside_a_trial():
    cap = fresh()
    what_if = WhatIf(cap, 8)
    what_if.lift([1])
    with pytest.raises(RuntimeError, match="trial"):
        what_if.apply()
    before = full_state(cap)
    with cap.trial():
        what_if.apply()
        assert cap.at_least[8] == what_if.have
    assert full_state(cap) == before


KINDS = ["take", "hold", "give", "occupy", "release", "mig"]
steps = st.lists(st.one_of(
    st.just(("open",)),
    st.tuples(st.just("close"), st.booleans()),
    st.tuples(st.sampled_from(KINDS), st.integers(0, 11), st.integers(0, 11)),
), max_size=30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.booleans())
def test_random_changes_in_random_trials_discarded_never_happened(script, commit_rest):
    """Whatever changes and nesting: what a discard covers never happened; what all enclosing
    trials committed stays, as if made on a Capacity that never saw the rest."""
    cap = fresh()
    levels: list[list[tuple]] = [[]]  # the concrete changes per open trial (level 0: none open)
    trials = []
    for step in script:
        if step[0] == "open":
            trials.append(cap.trial())
            levels.append([])
        elif step[0] == "close":
            if not trials:
                continue
            ops = levels.pop()
            if step[1]:
                trials.pop().commit()
                levels[-1] += ops
            else:
                trials.pop().discard()
        else:
            op = perform(cap, *step)
            if op is not None:
                levels[-1].append(op)
    while trials:  # end what is still open
        ops = levels.pop()
        if commit_rest:
            trials.pop().commit()
            levels[-1] += ops
        else:
            trials.pop().discard()
    assert_consistent(cap)
    want = fresh()
    for op in levels[0]:
        replay(want, op)
    assert full_state(cap) == full_state(want)
