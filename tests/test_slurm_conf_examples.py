"""The committed slurm-conf/ examples are exactly what `adsched slurm render` writes today."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from adsched.cli.adsched import main
from adsched.core.config import parse_config_text
from adsched.configfile import load_config
from adsched.slurm.render import import_topology

ROOT = Path(__file__).resolve().parent.parent
COPIES = {"job_submit.lua", "adsched-cluster.toml"}  # left out of the examples: copies of other files


@pytest.mark.parametrize("name,cluster,mode", [("demo", "demo", "plugin"), ("su128", "su128", "plugin"),
                                               ("demo-controller", "demo", "controller")])
def test_examples_are_in_sync(tmp_path, name, cluster, mode):
    r = CliRunner().invoke(main, ["slurm", "render", "--cluster", str(ROOT / "sched" / "examples" / f"{cluster}.toml"),
                                  "--out", str(tmp_path), "--mode", mode])
    assert r.exit_code == 0, r.output
    rendered = {p.name: p.read_text() for p in tmp_path.iterdir() if p.name not in COPIES}
    committed = {p.name: p.read_text() for p in (ROOT / "slurm-conf" / name).iterdir()}
    assert rendered == committed, "re-run: adsched slurm render --cluster ... --out slurm-conf/NAME"
    assert (tmp_path / "job_submit.lua").read_text() == (ROOT / "plugins" / "job_submit.lua").read_text()
    assert (tmp_path / "adsched-prolog").stat().st_mode & 0o111


def test_import_topology_round_trips():
    config = load_config(ROOT / "sched" / "examples" / "su128.toml")
    switches = import_topology((ROOT / "slurm-conf" / "su128" / "topology.conf").read_text())
    toml = '[[nodes]]\nnames = "node[001-128]"\n[queues.q]\ntier = 1\n' + switches
    again = parse_config_text(toml)
    assert again.leaves == config.leaves and again.parents == config.parents


@pytest.mark.parametrize("text,msg", [
    ("SwitchName=s1 Nodes=n[1-\n", "line 1"),
    ("# only a comment\n", "no SwitchName lines"),
    ("NodeName=x\n", "line 1: not 'SwitchName=X"),
])
def test_import_topology_errors(tmp_path, text, msg):
    f = tmp_path / "topology.conf"
    f.write_text(text)
    r = CliRunner().invoke(main, ["slurm", "import-topology", str(f)])
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output
