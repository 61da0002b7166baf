from pathlib import Path

import pytest

from adsched.core.config import ConfigError, parse_config_text

from adsched.configfile import load_config
from adsched.core.hostlist import HostlistError, compress, expand
from adsched.core.timefmt import format_duration, parse_duration

EXAMPLES = Path(__file__).resolve().parent.parent / "sched" / "examples"

GOOD = """
[[nodes]]
names = "n[1-4]"
gpus = 8
[switches.leafA]
nodes = "n[1-2]"
[switches.leafB]
nodes = "n[3-4]"
[switches.spine]
switches = "leafA,leafB"
[queues.q]
tier = 1
"""


@pytest.mark.parametrize("name,nodes,gpus,leaves", [
    ("demo", 16, 128, 4), ("su128", 128, 1024, 8), ("cluster1024", 1024, 8192, 64),
])
def test_examples_load(name, nodes, gpus, leaves):
    c = load_config(EXAMPLES / f"{name}.toml")
    assert (len(c.nodes), c.total_gpus, len(c.leaves)) == (nodes, gpus, leaves)
    assert all(c.parents.get(leaf) for leaf in c.leaves)  # every leaf under a spine


def test_good_config():
    c = parse_config_text(GOOD)
    assert [n.leaf for n in c.nodes] == ["leafA", "leafA", "leafB", "leafB"]
    assert c.parents == {"leafA": "spine", "leafB": "spine"}
    assert c.scheduler.default_queue == "q"


@pytest.mark.parametrize("value, want_depth", [("4", 4), ("0", 0), ('"all"', float("inf"))])
def test_reservation_depth_is_a_number_or_all(value, want_depth):
    c = parse_config_text(GOOD + f"[scheduler]\nreservation_depth = {value}\n")
    assert c.scheduler.reservation_depth == want_depth


@pytest.mark.parametrize("patch,want", [
    ('[queues.explore]\nquota_gpus = -1\n', "queues.explore.quota_gpus: must be >= 0"),
    ('[queues.x]\nmax_time = "soon"\n', "queues.x.max_time: not a duration"),
    ('[queues.x]\npreemptible = "yes"\n', "queues.x.preemptible: must be true or false"),
    ('[queues.x]\ncolour = 1\n', "queues.x.colour: unknown key"),
    ('[scheduler]\ndefault_queue = "nope"\n', "scheduler.default_queue: unknown queue 'nope'"),
    ('[switches.leafC]\nnodes = "n9"\n', "switches.leafC.nodes: unknown node n9"),
    ('[switches.leafC]\nnodes = "n1"\n', "node n1 is already under switch leafA"),
    ('[[nodes]]\nnames = "n1"\n', "nodes[1].names: node n1 is defined twice"),
    ('[[nodes]]\nnames = "m[1-2]"\ngpus = -8\n', "nodes[1].gpus: must be >= 0"),
    ('[scheduler]\nreservation_depth = "deep"\n', 'scheduler.reservation_depth: must be an integer >= 0 or "all"'),
    ('[scheduler]\nreservation_depth = -1\n', "scheduler.reservation_depth: must be >= 0"),
])
def test_validation_errors_have_key_paths(patch, want):
    with pytest.raises(ConfigError) as e:
        parse_config_text(GOOD + patch)
    assert any(want in err for err in e.value.errors), e.value.errors


@pytest.mark.parametrize("patch,want_errors", [
    # A bad preemptible is one error, not also "is not preemptible" where another queue preempts it.
    ('[queues.x]\npreemptible = "yes"\n[queues.y]\npreempts = ["x"]\n',
     ["queues.x.preemptible: must be true or false"]),
    # A node group with a bad gpus count does not also make the quota look larger than the cluster.
    ('[[nodes]]\nnames = "m1"\ngpus = "eight"\n[switches.leafC]\nnodes = "m1"\n[queues.x]\nquota_gpus = 40\n',
     ["nodes[1].gpus: must be an integer, got 'eight'"]),
    ('[queues.x]\nquota_gpus = 32\n', []),  # the whole cluster is a valid quota
])
def test_exactly_the_errors(patch, want_errors):
    try:
        parse_config_text(GOOD + patch)
        errors = []
    except ConfigError as e:
        errors = e.errors
    assert errors == want_errors


def test_a_cluster_without_gpus_is_an_error():
    with pytest.raises(ConfigError) as e:
        parse_config_text(GOOD.replace("gpus = 8", "gpus = 0"))
    assert e.value.errors == ["nodes: no node has a GPU (set gpus = N on at least one [[nodes]] group)"]


@pytest.mark.parametrize("patch,want_warnings", [
    ('[queues.x]\nquota_gpus = 33\n',
     ["queues.x.quota_gpus: 33 is more than the cluster's 32 GPUs (the queue can never borrow)"]),
    ('[queues.x]\nquota_gpus = 32\n', []),
    ('[[nodes]]\nnames = "c1"\ngpus = 0\n[switches.leafC]\nnodes = "c1"\n',
     ["nodes[1].gpus: 0: adsched never places a job on these nodes"]),
])
def test_config_warnings(patch, want_warnings):
    assert list(parse_config_text(GOOD + patch).warnings) == want_warnings


def test_all_errors_at_once():
    bad = GOOD + '[queues.a]\nquota_gpus = -1\n[queues.b]\ntier = "high"\n'
    with pytest.raises(ConfigError) as e:
        parse_config_text(bad)
    assert len(e.value.errors) == 2


def test_malformed_toml():
    with pytest.raises(ConfigError, match="malformed TOML"):
        parse_config_text("[[nodes]\nnames=")


def test_node_under_no_leaf():
    with pytest.raises(ConfigError, match="under no leaf switch"):
        parse_config_text(GOOD.replace('nodes = "n[3-4]"', 'nodes = "n3"'))


def test_hostlist_roundtrip():
    assert expand("node[01-03,07],gpu1") == ["node01", "node02", "node03", "node07", "gpu1"]
    assert expand("r[1-2]n[1-2]") == ["r1n1", "r1n2", "r2n1", "r2n2"]
    assert compress(["node01", "node02", "node03", "node07"]) == "node[01-03,07]"
    for bad in ("n[1-", "n[3-1]", "n[a]"):
        with pytest.raises(HostlistError):
            expand(bad)


@pytest.mark.parametrize("text,seconds", [
    ("30", 1800), ("1:30", 90), ("2:00:00", 7200), ("1-00", 86400), ("1-2:3:4", 93784), (5, 300),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_duration_and_format():
    with pytest.raises(ValueError):
        parse_duration("1h")
    assert format_duration(93784) == "1-02:03:04"
