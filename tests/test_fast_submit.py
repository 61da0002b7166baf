"""adsub's fast path: subcommands load on demand (cli/lazy.py), `adsub submit` imports only what it uses, and
a store reads its cluster config from the JSON parse kept beside the TOML (Store.config).

Speed itself is printed by bench/submit.py, never asserted; these tests check the mechanism: every listed
command still loads and helps, a real submit leaves the modules it does not need unimported, and the config
read through the JSON is the one the TOML gives (a stale or missing parse falls back to the TOML).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from adsched.core.config import parse_config_text
from adsched.standalone.store import Store

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
    {"module": "tomllib", "why": "the store's config is read from its JSON parse"},
    {"module": "adsched.core.schedule", "why": "the scheduler: the daemon's"},
    {"module": "adsched.core.snapshot", "why": "the cycle's dataclasses (~1 ms each to create)"},
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


def _init(tmp_path, example: str = "demo.toml") -> tuple[str, str]:
    text = (EXAMPLES / example).read_text()
    Store.init(tmp_path / "state", text)
    return str(tmp_path / "state"), text


@pytest.mark.parametrize("case", [
    {"name": "as init wrote it", "parsed": None, "want_from": "json"},
    {"name": "a store made before the parse was kept", "parsed": "DELETE", "want_from": "toml"},
    {"name": "a parse of another text", "parsed": ["[cluster]\nname = 'other'\n", {"cluster": {"name": "other"}}],
     "want_from": "toml"},
    {"name": "empty (a TOML JSON cannot hold)", "parsed": "", "want_from": "toml"},
], ids=lambda case: case["name"])
@pytest.mark.parametrize("example", ["demo.toml", "demo_mig.toml", "cluster1024.toml"])
def test_store_config_from_the_kept_parse_equals_the_toml(tmp_path, monkeypatch, case, example):
    state, text = _init(tmp_path, example)
    store = Store(state)
    if case["parsed"] == "DELETE":
        store.conn.execute("DELETE FROM meta WHERE key = 'cluster_parsed'")
    elif case["parsed"] is not None:
        value = case["parsed"] if isinstance(case["parsed"], str) else json.dumps(case["parsed"])
        store.conn.execute("UPDATE meta SET value = ? WHERE key = 'cluster_parsed'", (value,))
    store.conn.commit()
    parsed_from = []
    import adsched.standalone.store as store_module

    for name in ("parse_config", "parse_config_text"):
        real = getattr(store_module, name)
        monkeypatch.setattr(store_module, name, lambda *a, _real=real, _name=name: parsed_from.append(_name) or
                            _real(*a))
    config = Store(state).config
    assert parsed_from == ["parse_config" if case["want_from"] == "json" else "parse_config_text"]
    want = parse_config_text(text, str(tmp_path / "state" / "cluster.toml"))
    assert (config, config.raw, config.warnings) == (want, want.raw, want.warnings)  # raw, warnings: compare=False
