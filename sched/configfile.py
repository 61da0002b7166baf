"""Reading the cluster TOML from disk: the core parses text (core/config.py), the shells read files."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .core.config import ClusterConfig, ConfigError, parse_config_text


def example_names() -> list[str]:
    """The cluster TOMLs shipped with adsched (adsched.examples): demo, mini8, su128, ..."""
    return sorted(p.name.removesuffix(".toml") for p in _examples().iterdir() if p.name.endswith(".toml"))


def _examples() -> Path:
    return Path(str(resources.files("adsched.examples")))


def cluster_file(name_or_path: str | Path) -> Path:
    """A cluster TOML: a path, or the name of a shipped example (`mini8`, `demo.toml`) when no such file
    exists here. A path that is neither comes back as given, for the reader to report."""
    path = Path(name_or_path)
    if path.exists() or "/" in str(name_or_path):  # ./demo is a path, never an example
        return path
    bundled = _examples() / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
    return bundled if bundled.is_file() else path


def load_config(path: str | Path) -> ClusterConfig:
    """Read and validate a cluster TOML (a path, or a shipped example's name: cluster_file)."""
    given = str(path)
    path = cluster_file(path)
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        bundled = f"; nor one of the examples shipped with adsched: {', '.join(example_names())}"
        raise ConfigError([f"cannot read: {e.strerror}" + (bundled if "/" not in given else "")], given) from None
    except OSError as e:
        raise ConfigError([f"cannot read: {e.strerror}"], given) from None
    except UnicodeDecodeError:
        raise ConfigError(["not UTF-8 text"], str(path)) from None
    return parse_config_text(text, str(path))
