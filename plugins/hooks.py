"""Slurm hooks: node Prolog, PrologSlurmctld, Epilog (and EpilogSlurmctld).

slurm.conf names small wrapper scripts that run `adsched hook KIND --config FILE`. The hooks
  - are short and call no Slurm command, with one exception: a failing node prolog drains its own
    node with the real reason (`scontrol update NodeName=X State=DRAIN Reason=...`, as NHC does), so
    that `scontrol show node` and `sinfo -R` say why instead of Slurm's bare "Prolog error";
  - take their settings from the hooks TOML an admin owns (never from the job's environment);
  - validate every SLURM_* variable they use (job id digits, node names known to the cluster,
    host lists parsed strictly, the comment parsed as the plugin wrote it);
  - exit non-zero only to mean "fail this node / this job": node Prolog failure drains the
    node and requeues the job; PrologSlurmctld failure requeues the job.

Hooks TOML:
    cluster = "/etc/slurm/adsched-cluster.toml"   # the cluster TOML (nodes, leaves, GPUs)
    store = "/var/lib/adsched"                     # adsched state dir where events are recorded
    nvidia_smi_xml = ""                            # read this instead of running nvidia-smi (tests)
    hints_dir = "/run/adsched"                     # per-job topology hints: HINTS_DIR/job-ID.json
    gpu_check = true                               # false: skip the GPU health check (no GPUs)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from adsched.core.config import ClusterConfig, toml_module

from adsched.configfile import load_config
from adsched.errors import AdschedError, InvalidRequest
from adsched.core.hostlist import HostlistError, expand
from adsched.standalone.store import Store

from .gpu_health import HealthInputError, check_xml

tomllib = toml_module()  # hooks read TOML files

NVIDIA_SMI_TIMEOUT = 30
SCONTROL_TIMEOUT = 10  # the drain on a failed prolog; slurmd waits for the prolog meanwhile
REASON_MAX = 250  # characters of a node reason we write (Slurm keeps more; sinfo -R shows ~50)


class HookFailure(AdschedError):
    """The hook decided to fail the node or the job; the message goes to Slurm's log."""


@dataclass(frozen=True)
class HookSettings:
    cluster: str
    store: str = ""
    nvidia_smi_xml: str = ""
    hints_dir: str = "/run/adsched"
    gpu_check: bool = True

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HookSettings":
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise InvalidRequest(f"hooks config {path}: {e}") from None
        unknown = set(data) - {"cluster", "store", "nvidia_smi_xml", "hints_dir", "gpu_check"}
        if unknown or "cluster" not in data:
            raise InvalidRequest(f"hooks config {path}: needs 'cluster'; unknown keys: {sorted(unknown)}")
        if not isinstance(data.get("gpu_check", True), bool):
            raise InvalidRequest(f"hooks config {path}: gpu_check must be true or false")
        return cls(**{k: v if k == "gpu_check" else str(v) for k, v in data.items()})


_COMMENT = re.compile(r"^adsched:queue=([\w.-]+);tier=(\d+);max_leaves=(\d*)$")


def _job_id(env: Mapping[str, str]) -> int:
    value = env.get("SLURM_JOB_ID", "")
    if not value.isdigit():
        raise HookFailure(f"SLURM_JOB_ID is not a job id: {value[:40]!r}")
    return int(value)


def _nodes(env: Mapping[str, str], key: str, config: ClusterConfig) -> list[str]:
    try:
        nodes = expand(env.get(key, ""))
    except HostlistError as e:
        raise HookFailure(f"{key}: {e}") from None
    known = {n.name for n in config.nodes}
    unknown = [n for n in nodes if n not in known]
    if not nodes or unknown:
        raise HookFailure(f"{key} names nodes this cluster does not have: {unknown[:3] or '(none)'}")
    return nodes


def _max_leaves(env: Mapping[str, str]) -> int | None:
    m = _COMMENT.match(env.get("SLURM_JOB_COMMENT", ""))
    return int(m.group(3)) if m and m.group(3) else None


def _record(settings: HookSettings, job_id: int, kind: str, data: dict) -> str:
    """Bookkeeping must not fail a node or a job: a store problem is reported, not raised."""
    if not settings.store:
        return ""
    try:
        Store(settings.store).add_event(job_id, kind, data, time.time())
    except Exception as e:  # noqa: BLE001 - any store failure is only a warning here
        return f" (event not recorded: {e})"
    return ""


def topology_hints(config: ClusterConfig, nodes: list[str]) -> dict:
    """Leaf of each node and a rank order grouped by leaf (pipeline stages stay on one leaf)."""
    leaf = {n.name: n.leaf for n in config.nodes}
    order = sorted(nodes, key=lambda n: (list(config.leaves).index(leaf[n]), nodes.index(n)))
    return {"leaf_of": {n: leaf[n] for n in nodes}, "rank_order": order,
            "leaves": sorted({leaf[n] for n in nodes}, key=list(config.leaves).index)}


def gpu_xml(settings: HookSettings) -> str:
    if settings.nvidia_smi_xml:
        try:
            return Path(settings.nvidia_smi_xml).read_text()
        except OSError as e:
            raise HookFailure(f"cannot read {settings.nvidia_smi_xml}: {e.strerror}") from None
    try:
        r = subprocess.run(["nvidia-smi", "-q", "-x"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT)
    except FileNotFoundError:
        raise HookFailure("nvidia-smi not found") from None
    except subprocess.TimeoutExpired:
        raise HookFailure(f"nvidia-smi did not answer in {NVIDIA_SMI_TIMEOUT} s") from None
    if r.returncode != 0:
        raise HookFailure(f"nvidia-smi failed ({r.returncode}): {r.stderr.strip()[:200]}")
    return r.stdout


def prolog(settings: HookSettings, env: Mapping[str, str]) -> str:
    """Node prolog. On failure Slurm itself would only drain the node "Prolog error": the prolog drains it
    first with the real reason (slurmctld keeps the reason of a node already drained: node_mgr.c
    validate_node_specs), and records the failure in the store (`adsub show JOB`)."""
    try:
        return _prolog(settings, env)
    except HookFailure as e:
        job = env.get("SLURM_JOB_ID", "")
        node = env.get("SLURMD_NODENAME", "")
        # The job's id in the reason links the node to the job for anyone (sinfo is public): `adsub show JOB`.
        head = f"Prolog error (job {job})" if job.isdigit() else "Prolog error"
        warning = drain_own_node(settings, node, f"{head}: {e}", env)
        _record(settings, int(job) if job.isdigit() else None, "prolog_failed",
                {"node": node[:64], "reason": str(e)[:300]})
        raise HookFailure(f"{e}{warning}") from None


def node_reason(text: str) -> str:
    """One printable line Slurm can store as a node reason."""
    line = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(line.split())[:REASON_MAX]


def drain_own_node(settings: HookSettings, node: str, reason: str, env: Mapping[str, str]) -> str:
    """`scontrol update NodeName=node State=DRAIN Reason=reason`, for a node of this cluster only.

    "" when done; else why not, as a suffix for the prolog's message (the node is still drained by
    Slurm, "Prolog error", when the prolog exits 1)."""
    try:
        known = {n.name for n in load_config(settings.cluster).nodes}
    except Exception:  # noqa: BLE001 - a broken config is the prolog's failure, reported by it
        return " (node not drained by the prolog: cluster config unreadable)"
    if node not in known:
        return ""  # a name we do not know is not ours to drain (the failure already says so)
    scontrol = shutil.which("scontrol", path=env.get("PATH") or "/usr/local/bin:/usr/bin:/bin")
    if scontrol is None:
        return " (node not drained by the prolog: scontrol not found)"
    argv = [scontrol, "update", f"NodeName={node}", "State=DRAIN", f"Reason={node_reason(reason)}"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=SCONTROL_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f" (node not drained by the prolog: scontrol did not answer in {SCONTROL_TIMEOUT} s)"
    if r.returncode != 0:
        return f" (node not drained by the prolog: {node_reason(r.stderr or r.stdout)[:120]})"
    return ""


def _prolog(settings: HookSettings, env: Mapping[str, str]) -> str:
    """Node prolog: GPU health (fail closed), then topology hints for the job."""
    config = load_config(settings.cluster)
    job_id = _job_id(env)
    node = env.get("SLURMD_NODENAME", "")
    if node not in {n.name for n in config.nodes}:
        raise HookFailure(f"SLURMD_NODENAME {node[:40]!r} is not a node of cluster {config.name}")
    summary = "GPU check off"
    if settings.gpu_check:
        try:
            report = check_xml(gpu_xml(settings), expected_gpus=config.node(node).gpus)
        except HealthInputError as e:
            raise HookFailure(f"{node}: GPU health unknown: {e}") from None
        if not report.ok:
            raise HookFailure(f"{node}: GPU health check failed: {report.summary()}")
        summary = report.summary()
    nodes = _nodes(env, "SLURM_NODELIST", config)
    hints = topology_hints(config, nodes)
    os.makedirs(settings.hints_dir, exist_ok=True)
    path = os.path.join(settings.hints_dir, f"job-{job_id}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(hints, f, indent=1)
    os.replace(path + ".tmp", path)
    uid = env.get("SLURM_JOB_UID", "")
    if uid.isdigit() and os.getuid() == 0:
        os.chown(path, int(uid), -1)
    return f"{node}: {summary}; hints in {path}"


def prolog_slurmctld(settings: HookSettings, env: Mapping[str, str]) -> str:
    """Controller prolog: the allocation must honour the job's max leaves; record the start."""
    config = load_config(settings.cluster)
    job_id = _job_id(env)
    nodes = _nodes(env, "SLURM_JOB_NODELIST", config)
    leaves = topology_hints(config, nodes)["leaves"]
    limit = _max_leaves(env)
    if limit is not None and len(leaves) > limit:
        raise HookFailure(f"job {job_id}: allocation spans {len(leaves)} leaves {leaves} > max_leaves {limit}")
    warning = _record(settings, job_id, "slurm_start", {
        "nodes": nodes, "leaves": leaves, "partition": env.get("SLURM_JOB_PARTITION", "")[:64],
        "restart_count": env.get("SLURM_JOB_RESTART_COUNT", "0")[:8]})
    return f"job {job_id}: {len(nodes)} nodes on {len(leaves)} leaves{warning}"


def epilog(settings: HookSettings, env: Mapping[str, str]) -> str:
    """Epilog: record the end (on the node, or on the controller as EpilogSlurmctld)."""
    job_id = _job_id(env)
    node = env.get("SLURMD_NODENAME", "") or "controller"
    warning = _record(settings, job_id, "slurm_end", {"node": node[:64]})
    hints = os.path.join(settings.hints_dir, f"job-{job_id}.json")
    if os.path.exists(hints):
        os.remove(hints)
    return f"job {job_id}: end on {node}{warning}"


HOOKS = {"prolog": prolog, "prolog-slurmctld": prolog_slurmctld, "epilog": epilog, "epilog-slurmctld": epilog}
