"""adsub's fast path: subcommands load on demand (cli/lazy.py), and `adsub submit` imports only what it uses.

Speed itself is printed by bench/submit.py, never asserted; these tests check the mechanism: every listed
command still loads and helps, and a real submit leaves the modules it does not need unimported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from adsched.cli import adsched as adsched_cli
from adsched.cli import adsub as adsub_cli
from adsched.cli.lazy import LazyGroup

from test_config import EXAMPLES


@pytest.mark.parametrize("group", [adsub_cli.main, adsched_cli.main], ids=["adsub", "adsched"])
def test_every_listed_command_loads_and_helps(group):
    ctx = click.Context(group, info_name=group.name)
    names = group.list_commands(ctx)
    assert names == sorted(names) and len(names) >= 8
    for name in names:
        command = group.get_command(ctx, name)
        assert isinstance(command, click.Command), name
        r = CliRunner().invoke(group, [name, "--help"])
        assert r.exit_code == 0, (name, r.output)
        assert r.output.startswith(f"Usage: {group.name} {name} "), (name, r.output)


def test_lazy_group_loads_a_command_by_name_and_alias():
    group = LazyGroup("g", lazy_commands={"hold": "adsched.cli.usercmds:hold", "stop": "adsched.cli.usercmds:hold",
                                          "bad": "adsched.cli.usercmds:local_store"})
    ctx = click.Context(group)
    assert group.list_commands(ctx) == ["bad", "hold", "stop"]
    assert group.get_command(ctx, "hold") is group.get_command(ctx, "stop") is sys.modules["adsched.cli.usercmds"].hold
    assert group.get_command(ctx, "nope") is None
    with pytest.raises(TypeError, match="usercmds:local_store is not a click command"):
        group.get_command(ctx, "bad")


# What one `adsub submit` must not import (each was on its path once: bench/submit.py's figures).
NOT_ON_SUBMIT = [
    {"module": "sqlite_utils", "why": "0.27 s of imports and a plugin scan per Database()"},
    {"module": "importlib.metadata", "why": "entry-point and version lookups"},
    {"module": "adsched.cli.usercmds", "why": "acct/prio/hold/release/update load when run"},
    {"module": "adsched.jobrefs", "why": "job references: commands that name jobs"},
    {"module": "socket", "why": "only for another user's store, through its daemon"},
    {"module": "adsched.core.schedule", "why": "the scheduler: the daemon's"},
]


def test_submit_imports_only_what_it_uses(tmp_path):
    state = tmp_path / "state"
    r = CliRunner().invoke(adsched_cli.main, ["init", "--state", str(state), "--cluster", str(EXAMPLES / "demo.toml")])
    assert r.exit_code == 0, r.output
    code = (
        "import json, sys\n"
        "from adsched.cli.adsub import main\n"
        f"try:\n    main(['submit', '--state', {str(state)!r}, '-q', 'debug', '--gpus', '1', '--', 'true'])\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ADSCHED_STATE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Submitted job 1\n"
    loaded = set(json.loads(done.stderr.splitlines()[-1]))
    assert {"adsched.standalone.store", "adsched.core.config"} <= loaded  # it did submit through the store
    imported = [(case["module"], case["why"]) for case in NOT_ON_SUBMIT if case["module"] in loaded]
    assert imported == []
