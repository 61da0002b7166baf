"""`adsched nodes` says what Slurm's sinfo says: idle, mix, alloc, and drain/draining/down
(it said `up` for a full node)."""

import json

from click.testing import CliRunner

from adsched.cli import adsched as adsched_cli
from adsched.core.model import Decisions, NodeAlloc, Start
from adsched.standalone.store import JobRequest, Store

from test_config import EXAMPLES

WANT_STATE = {  # node -> (what is on it, want STATE)
    "node01": ("a whole-node job", "alloc"),
    "node02": ("2 of 8 GPUs", "mix"),
    "node03": ("nothing", "idle"),
    "node04": ("nothing, drained", "drain"),
    "node05": ("a job, drained", "draining"),
    "node06": ("nothing, down", "down"),
}


def test_nodes_state_like_sinfo(tmp_path):
    store = Store.init(tmp_path, (EXAMPLES / "demo.toml").read_text())
    ids = [store.submit(JobRequest(["true"], **kw), 1.0) for kw in ({}, {"gpus": 2}, {})]
    store.record_cycle(Decisions(starts=[Start(ids[0], (NodeAlloc("node01", tuple(range(8))),)),
                                         Start(ids[1], (NodeAlloc("node02", (0, 1)),)),
                                         Start(ids[2], (NodeAlloc("node05", tuple(range(8))),))]), 2.0)
    for node, state in (("node04", "drain"), ("node05", "drain"), ("node06", "down")):
        store.set_node_state(node, state, "test", 3.0)
    r = CliRunner().invoke(adsched_cli.main, ["nodes", "--state", str(tmp_path)])
    assert r.exit_code == 0, r.output
    shown = {line.split()[0]: line.split()[2] for line in r.output.splitlines()[1:]}
    assert {n: shown[n] for n in WANT_STATE} == {n: want for n, (_, want) in WANT_STATE.items()}
    r = CliRunner().invoke(adsched_cli.main, ["nodes", "--state", str(tmp_path), "--json"])
    rows = {n["name"]: n for n in json.loads(r.output)}
    assert {n: rows[n]["status"] for n in WANT_STATE} == {n: want for n, (_, want) in WANT_STATE.items()}
    assert rows["node04"]["state"] == "drain"  # the admin state set by drain/resume stays as it was
