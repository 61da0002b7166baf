"""What an ordinary user may read of a Slurm-mode state dir: the cluster config, never the store.

In Slurm mode the store (adsched.sqlite) belongs to root or the SlurmUser: the hooks record events in
it and the controller its decisions. It is locked down like standalone's (files 0600, dir 0711), and
there is no adsched daemon to ask. What `adsub` needs as an ordinary user is the cluster config (to
check a request before sbatch, to name leaves, to explain a pending job) and Slurm itself (which runs
sbatch/squeue/scancel as that user and decides who may cancel what). So `adsched init` publishes the
cluster TOML beside the store, world-readable (the same text the rendered Slurm site already has in
/etc/slurm/adsched-cluster.toml, 0644), and removes it again when the cluster becomes standalone. The
Slurm controller also keeps its heartbeat there (controller.beat, 0644: its last cycle's time and interval),
so that a user can tell a reason it published from a controller that no longer runs.

Stdlib only (plus the core's config parser): `adsub` reads this on its fast path.
"""

from __future__ import annotations

import contextlib
import os

PUBLIC_CONFIG = "cluster.toml"  # Store.CONFIG_NAME: the name the store's config errors already use
DB_NAME = "adsched.sqlite"  # Store.DB_NAME, without importing the store
CONTROLLER_BEAT = "controller.beat"


def _write_public(path: str, text: str) -> None:
    """`text` into `path`, 0644 whatever the umask, written whole (rename)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _read_owned(base: str, name: str) -> str | None:
    """A public file of the state dir, if the store's owner wrote it (nobody else may speak for the dir)."""
    path = os.path.join(base, name)
    try:
        owner = os.stat(os.path.join(base, DB_NAME)).st_uid
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as f:
        return f.read() if os.fstat(f.fileno()).st_uid == owner else None


def publish_beat(state_dir: str | os.PathLike, when: float, interval: float) -> None:
    """The Slurm controller's heartbeat, for users: the time of its last cycle and its interval."""
    _write_public(os.path.join(os.fspath(state_dir), CONTROLLER_BEAT), f"{when!r} {interval!r}\n")


def read_beat(state_dir: str | os.PathLike) -> tuple[float, float] | None:
    """(last cycle time, interval) of the controller's heartbeat; None if it never ran or the file is not
    the store owner's."""
    text = _read_owned(os.fspath(state_dir), CONTROLLER_BEAT)
    try:
        when, interval = map(float, (text or "").split())
    except ValueError:
        return None
    return when, interval


def publish_config(state_dir: str | os.PathLike, cluster_toml: str, backend: str) -> None:
    """Slurm backend: STATE/cluster.toml, 0644, written whole (rename). Standalone: none (its users ask the
    daemon, which knows who they are; a stale Slurm file would send them to sbatch)."""
    path = os.path.join(os.fspath(state_dir), PUBLIC_CONFIG)
    if backend != "slurm":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    _write_public(path, cluster_toml)


def read_public_config(state_dir: str | os.PathLike):
    """(text, ClusterConfig) of a Slurm-mode state dir's published config; None when there is none, it is not
    Slurm's, or it is not the store owner's (nobody else may speak for the state dir)."""
    from adsched.core.config import parse_config_text

    path = os.path.join(os.fspath(state_dir), PUBLIC_CONFIG)
    text = _read_owned(os.fspath(state_dir), PUBLIC_CONFIG)
    if text is None:
        return None
    config = parse_config_text(text, path)  # a ConfigError names the file
    return (text, config) if config.backend == "slurm" else None
