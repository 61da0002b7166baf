"""Fuzzed cluster TOML (issue 13): wrong types, missing and unknown keys, cycles in the switch
tree, huge numbers. Every problem is a ConfigError line "key.path: message", all of them at
once, never a traceback; a config that parses can be scheduled on.
"""

from __future__ import annotations

import json
import math
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adsched.core.config import ConfigError, parse_config_text
from adsched.core.model import Job, Snapshot
from adsched.core.schedule import schedule

BASE = {
    "cluster": {"name": "fuzz"},
    "nodes": [{"names": "n[1-4]", "gpus": 8}, {"names": "m[1-2]", "gpus": 4, "mig_gpus": 1,
                                               "mig_profile": {"1g.10gb": 7}}],
    "switches": {"leaf1": {"nodes": "n[1-2]"}, "leaf2": {"nodes": "n[3-4],m[1-2]"},
                 "spine": {"switches": "leaf[1-2]"}},
    "queues": {"high": {"tier": 10, "preempts": ["low"], "max_time": "1-00:00:00", "quota_gpus": 16},
               "low": {"tier": 1, "preemptible": True, "grace_period": "0:30", "preempt_signal": "USR1"}},
    "scheduler": {"default_queue": "low", "cycle_interval": 0.5, "reservation_depth": 2, "weight_age": 1.0},
    "standalone": {"executor": "local"},
}

# Every value a key could be given, good or bad.
HUGE = st.sampled_from([2**31, 2**63 - 1, 2**63, 10**30, 10**400, -(2**63), 1e308, -1e308, math.inf, -math.inf, math.nan])
SCALARS = st.one_of(st.booleans(), st.integers(-10, 100), HUGE, st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["n[1-4]", "n[9-1]", "n[1-100000000]", "leaf1", "low",
                                                           "1g.10gb", "8g.80gb", "1-00:00:00", "-5", "USR9", ""]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)
# Paths to every key of BASE (and to the tables themselves).
PATHS: list[tuple] = []


def _walk(node, path=()):
    PATHS.append(path)
    if isinstance(node, dict):
        for k, v in node.items():
            _walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _walk(v, path + (i,))


_walk(BASE)
KEYS = st.sampled_from(sorted({p[-1] for p in PATHS if p and isinstance(p[-1], str)}) + ["bogus", "gpu", "Nodes"])


def _copy(x):
    return json.loads(json.dumps(x))


def _parent(doc, path):
    for k in path[:-1]:
        doc = doc[k]
    return doc


@st.composite
def mutated(draw):
    """BASE with a few edits: a value replaced, a key dropped, an unknown key added, a cycle."""
    doc = _copy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from([p for p in PATHS if p]))
        try:
            parent = _parent(doc, path)
            kind = draw(st.sampled_from(["replace", "drop", "unknown", "cycle"]))
            if kind == "replace":
                parent[path[-1]] = draw(VALUES)
            elif kind == "drop" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif kind == "unknown" and isinstance(parent, dict):
                parent[draw(KEYS)] = draw(VALUES)
            elif kind == "cycle" and isinstance(doc.get("switches"), dict):
                doc["switches"]["leaf1"] = {"switches": "spine"}
        except (KeyError, IndexError, TypeError):
            pass  # an earlier edit removed or retyped what this path went through
    return doc


def toml(value, top=True) -> str:
    """A TOML document (top) or value: every table inline, every key quoted."""
    if isinstance(value, dict):
        items = [f"{json.dumps(k)} = {toml(v, False)}" for k, v in value.items()]
        return "\n".join(items) + "\n" if top else "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml(v, False) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(value).replace("\x7f", "\\u007f")


def check(doc) -> None:
    text = toml(doc)
    try:
        config = parse_config_text(text, "fuzz.toml")
    except ConfigError as e:
        assert e.errors, text
        for line in e.errors:
            path, sep, message = line.partition(": ")
            assert sep and path and message, f"{line!r} has no key path\n{text}"
        return
    t0 = time.monotonic()  # what parses must be usable: one cycle with a job of each queue
    jobs = tuple(Job(id=i + 1, queue=q, num_nodes=1, gpus_per_node=1, time_limit=60, submit_time=0.0)
                 for i, q in enumerate(config.queues))
    schedule(Snapshot(pending=jobs, running=()), config, 1.0)
    assert time.monotonic() - t0 < 5, f"one cycle took {time.monotonic() - t0:.0f} s\n{text}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzzed_cluster_toml_is_errors_with_key_paths_never_a_traceback(doc):
    check(doc)


def test_independent_mistakes_are_all_reported_at_once():
    doc = _copy(BASE)
    doc["bogus"] = 1
    doc["nodes"][0]["gpus"] = "eight"
    doc["switches"]["leaf1"] = {"switches": "spine"}  # a cycle: spine -> leaf1 -> spine
    doc["queues"]["low"]["grace_period"] = -3
    doc["scheduler"]["cycle_interval"] = math.nan
    try:
        parse_config_text(toml(doc), "fuzz.toml")
    except ConfigError as e:
        paths = {line.partition(": ")[0] for line in e.errors}
    else:
        raise AssertionError("accepted")
    assert {"bogus", "nodes[0].gpus", "queues.low.grace_period", "scheduler.cycle_interval"} <= paths
    assert any(p.startswith("switches") for p in paths)
