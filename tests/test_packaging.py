"""What an installed adsched needs at run time ships with it: the example clusters (by name), the
mini-cluster's image files, and its own wheel for the mini-cluster image (issue 15, packaging)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from adsched.cli import adsched as adsched_cli
from adsched.configfile import example_names

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("args,want_exit,want_output", [
    (["config", "check", "mini8"], 0, "8 nodes, 64 GPUs, 2 leaves"),
    (["config", "check", "demo.toml"], 0, "16 nodes, 128 GPUs, 4 leaves"),
    (["config", "check", "nope"], 2, "nope: cannot read: No such file or directory; nor one of the examples "
                                     "shipped with adsched: cluster1024, demo, demo_mig, kth100, mini8, su128"),
    (["config", "check", "./mini8"], 2, "./mini8: cannot read"),  # a path is only ever a path
])
def test_shipped_examples_by_name(tmp_path, monkeypatch, args, want_exit, want_output):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(adsched_cli.main, args)
    assert (r.exit_code, want_output in r.output) == (want_exit, True), r.output


def test_a_file_here_wins_over_a_shipped_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_text('[cluster]\nname = "mine"\n[[nodes]]\nnames = "n1"\n[queues.q]\n')
    r = CliRunner().invoke(adsched_cli.main, ["config", "check", "demo"])
    assert r.exit_code == 0 and "1 nodes, 8 GPUs" in r.output


def test_init_and_minicluster_render_take_example_names(tmp_path):
    r = CliRunner().invoke(adsched_cli.main, ["init", "--state", str(tmp_path / "s"), "--cluster", "demo"])
    assert r.exit_code == 0 and "cluster demo, 16 nodes" in r.output, r.output
    r = CliRunner().invoke(adsched_cli.main, ["minicluster", "render", "mini8", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert "ClusterName=mini8\n" in (tmp_path / "r" / "etc-slurm" / "slurm.conf").read_text()


def test_the_minicluster_toml_is_a_shipped_example():
    assert "mini8" in example_names()
    assert (ROOT / "tests" / "clusters" / "mini8.toml").resolve() == ROOT / "sched" / "examples" / "mini8.toml"


def _copy_source(dest: Path) -> Path:
    """What the wheel is built from, copied so the build writes nothing into the repository."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    for folder in ("sched", "cli", "plugins", "docker"):
        shutil.copytree(ROOT / folder, dest / folder, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _run(cmd: list, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ADSCHED_STATE")}
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}: {r.stdout[-1000:]}{r.stderr[-2000:]}"
    return r


def test_the_wheel_installed_in_a_fresh_venv_runs_outside_the_repo(tmp_path):
    """pip wheel (no build isolation: the [test] extra brings setuptools), a fresh venv that gets the
    wheel and nothing else of adsched (its dependencies come from the system site-packages), then the
    installed commands from a directory outside the repository."""
    (tmp_path / "src").mkdir()
    src = _copy_source(tmp_path / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", tmp_path / "dist", src], cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("adsched-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"adsched/examples/mini8.toml", "adsched/testbed/image/build-base.sh", "adsched/testbed/image/Dockerfile",
            "adsched/testbed/image/entrypoint.sh", "adsched/testbed/image/compose.yml"} <= set(names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--quiet", "--no-deps", "--no-index",
          "--ignore-installed", wheel],  # also when this Python has adsched installed (not editable)
         cwd=tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = _run([py, "-c", "import adsched; print(adsched.__file__)"], cwd=outside).stdout.strip()
    assert where.startswith(str(env_dir)), where  # the installed copy, not the repository's

    adsched = env_dir / "bin" / "adsched"
    r = _run([adsched, "config", "check", "mini8"], cwd=outside)
    assert "8 nodes, 64 GPUs, 2 leaves" in r.stdout
    r = _run([adsched, "minicluster", "render", "mini8", "out"], cwd=outside)
    assert (outside / "out" / "etc-slurm" / "slurm.conf").is_file() and (outside / "out" / "munge.key").is_file()

    # The mini-cluster image needs adsched's own wheel: without a source tree it comes from the installed files.
    code = ("import sys, zipfile; from pathlib import Path; from adsched.testbed.wheel import project_source;"
            "s = project_source(); w = s.build_wheel(Path(sys.argv[1]));"
            "print(s.kind); print(w.name); print(sorted(s.dependencies()))")
    kind, name, deps = _run([py, "-c", code, tmp_path / "rebuilt"], cwd=outside).stdout.splitlines()
    assert (kind, name) == ("installed distribution", wheel.name)
    assert deps == str(sorted(["click>=8.1", "sqlite-utils>=4.0", 'tomli>=2.0; python_version < "3.11"']))
    original, rebuilt = zipfile.ZipFile(wheel), zipfile.ZipFile(tmp_path / "rebuilt" / name)
    assert sorted(rebuilt.namelist()) == sorted(original.namelist())
    for member in original.namelist():
        if not member.endswith("/RECORD"):
            assert rebuilt.read(member) == original.read(member), member
