"""What an ordinary user may read of a Slurm-mode state dir: the cluster config, never the store.

In Slurm mode the store (adsched.sqlite) belongs to root or the SlurmUser: the hooks record events in
it and the controller its decisions. It is locked down like standalone's (files 0600, dir 0711), and
there is no adsched daemon to ask. What `adsub` needs as an ordinary user is the cluster config (to
check a request before sbatch, to name leaves, to explain a pending job) and Slurm itself (which runs
sbatch/squeue/scancel as that user and decides who may cancel what). So `adsched init` publishes the
cluster TOML beside the store, world-readable (the same text the rendered Slurm site already has in
/etc/slurm/adsched-cluster.toml, 0644), and removes it again when the cluster becomes standalone.

Stdlib only (plus the core's config parser): `adsub` reads this on its fast path.
"""

from __future__ import annotations

import contextlib
import os

PUBLIC_CONFIG = "cluster.toml"  # Store.CONFIG_NAME: the name the store's config errors already use
DB_NAME = "adsched.sqlite"  # Store.DB_NAME, without importing the store


def publish_config(state_dir: str | os.PathLike, cluster_toml: str, backend: str) -> None:
    """Slurm backend: STATE/cluster.toml, 0644, written whole (rename). Standalone: none (its users ask the
    daemon, which knows who they are; a stale Slurm file would send them to sbatch)."""
    path = os.path.join(os.fspath(state_dir), PUBLIC_CONFIG)
    if backend != "slurm":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(cluster_toml)
    os.chmod(tmp, 0o644)  # whatever the umask
    os.replace(tmp, path)


def read_public_config(state_dir: str | os.PathLike):
    """(text, ClusterConfig) of a Slurm-mode state dir's published config; None when there is none, it is not
    Slurm's, or it is not the store owner's (nobody else may speak for the state dir)."""
    from adsched.core.config import parse_config_text

    base = os.fspath(state_dir)
    path = os.path.join(base, PUBLIC_CONFIG)
    try:
        owner = os.stat(os.path.join(base, DB_NAME)).st_uid
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as f:
        if os.fstat(f.fileno()).st_uid != owner:
            return None
        text = f.read()
    config = parse_config_text(text, path)  # a ConfigError names the file
    return (text, config) if config.backend == "slurm" else None
