"""Reading the cluster TOML from disk: the core parses text (core/config.py), the shells read files."""

from __future__ import annotations

from pathlib import Path

from .core.config import ClusterConfig, ConfigError, parse_config_text


def load_config(path: str | Path) -> ClusterConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError([f"cannot read: {e.strerror}"], str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError(["not UTF-8 text"], str(path)) from None
    return parse_config_text(text, str(path))
