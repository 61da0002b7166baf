"""adsched's own wheel, for the mini-cluster image: from a source tree, or from the installed adsched.

A source checkout (pyproject.toml beside sched/) builds it with `pip wheel`. An adsched installed
without its source (`pip install .`, not editable) has no pyproject.toml to build from: its wheel is
put back together from the installed distribution's own RECORD (importlib.metadata), i.e. exactly the
files the original wheel placed in site-packages, with a fresh RECORD. Either way the image gets the
adsched that is running the mini-cluster.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import adsched

# Written by the installer, not part of the wheel (PEP 376 / the binary distribution format).
_INSTALLER_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


class WheelError(RuntimeError):
    """The project's wheel cannot be built; the message says why."""


@dataclass(frozen=True)
class ProjectSource:
    """Where the running adsched comes from: `root` (a source tree) or `dist` (an installed distribution)."""

    root: Path | None = None
    dist: metadata.Distribution | None = None

    @property
    def kind(self) -> str:
        return "source tree" if self.root is not None else "installed distribution"

    def dependencies(self) -> list[str]:
        """The run-time requirements (no extras), as pip takes them (markers included)."""
        if self.root is not None:
            import tomllib  # noqa: PLC0415

            return list(tomllib.loads((self.root / "pyproject.toml").read_text())["project"].get("dependencies", []))
        return [r for r in (self.dist.requires or []) if "extra" not in r.partition(";")[2]]

    def fingerprint(self) -> str:
        """A hash of everything that goes into the wheel (the image is rebuilt when it changes)."""
        h = hashlib.sha256()
        for rel, data in self._contents():
            h.update(f"{rel}\0{len(data)}\0".encode())
            h.update(data)
        return h.hexdigest()[:12]

    def _contents(self):
        if self.root is not None:
            yield "pyproject.toml", (self.root / "pyproject.toml").read_bytes()
            for folder in ("sched", "cli", "docker", "plugins"):
                base = self.root / folder
                for p in sorted(base.rglob("*")) if base.is_dir() else ():
                    if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc"):
                        yield str(p.relative_to(self.root)), p.read_bytes()
            return
        for rel, path in _installed_files(self.dist):
            yield rel, path.read_bytes()

    def build_wheel(self, dest: Path, pip: list[str] | None = None) -> Path:
        """The wheel in `dest`; `pip` is the `pip wheel` command line to build a source tree with."""
        dest.mkdir(parents=True, exist_ok=True)
        if self.root is not None:
            before = set(dest.glob("adsched-*.whl"))
            pip = pip or [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
            # Build isolation: the wheel is built with pyproject's own build-system, whatever this Python has.
            r = subprocess.run([*pip, "--no-deps", "-w", str(dest), str(self.root)], capture_output=True, text=True,
                               timeout=600, check=False, cwd=tempfile.gettempdir())
            if r.returncode != 0:
                raise WheelError(f"pip wheel --no-deps {self.root} failed:\n{r.stderr[-2000:]}")
            made = sorted(set(dest.glob("adsched-*.whl")) - before) or sorted(dest.glob("adsched-*.whl"))
            return made[-1]
        return rebuild_wheel(self.dist, dest)


def project_source() -> ProjectSource:
    """The source tree the running adsched is imported from, else the distribution that installed it."""
    package = Path(adsched.__file__).resolve().parent
    root = package.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and package.name == "sched" and 'name = "adsched"' in pyproject.read_text():
        return ProjectSource(root=root)
    return ProjectSource(dist=_installed_distribution(package))


def _installed_distribution(package: Path) -> metadata.Distribution:
    """The installed adsched whose files are the ones imported (not another copy on sys.path)."""
    init = package / "__init__.py"
    for dist in metadata.distributions(name="adsched"):
        for f in dist.files or ():
            if f.parts[:2] == ("adsched", "__init__.py") and Path(dist.locate_file(f)).resolve() == init:
                return dist
    raise WheelError(f"adsched at {package} is neither a source tree (no pyproject.toml in {package.parent}) nor "
                     "an installed distribution with a RECORD: reinstall it with pip")


def _installed_files(dist: metadata.Distribution) -> list[tuple[str, Path]]:
    """(path in the wheel, file) for what the wheel installed: site-packages only, no bytecode."""
    out = []
    for f in dist.files or ():
        if f.parts[0] == ".." or "__pycache__" in f.parts or f.suffix == ".pyc":
            continue  # scripts in bin/ are made by the installer from entry_points.txt
        if f.parts[0].endswith(".dist-info") and f.name in _INSTALLER_FILES:
            continue
        out.append((f.as_posix(), Path(dist.locate_file(f))))
    return sorted(out)


def rebuild_wheel(dist: metadata.Distribution, dest: Path) -> Path:
    """A wheel of an installed distribution from its RECORD: the same files, a fresh RECORD."""
    files = _installed_files(dist)
    info_dir = next((rel.split("/")[0] for rel, _ in files if rel.split("/")[0].endswith(".dist-info")), None)
    if info_dir is None or not any(rel == f"{info_dir}/WHEEL" for rel, _ in files):
        raise WheelError(f"the installed {dist.metadata['Name']} has no .dist-info/WHEEL: it was not installed "
                         "from a wheel; reinstall it with pip")
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    name = dist.metadata["Name"].replace("-", "_")
    wheel = dest / f"{name}-{dist.version}-{tags[0] if tags else 'py3-none-any'}.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for rel, path in files:
            data = path.read_bytes()
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (os.stat(path).st_mode & 0xFFFF) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{rel},sha256={digest},{len(data)}")
        record.append(f"{info_dir}/RECORD,,")
        z.writestr(zipfile.ZipInfo(f"{info_dir}/RECORD", date_time=(1980, 1, 1, 0, 0, 0)), "\n".join(record) + "\n")
    return wheel
