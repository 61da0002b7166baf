"""Render Slurm 22.05 configuration files from a ClusterConfig.

Pure functions: a ClusterConfig (and a few I/O-specific arguments with defaults) in, file text out.
Nothing here touches the file system, the network or Slurm itself; `render_all` returns
{file name: text} for a caller to write wherever it likes.

Mapping (adsched -> Slurm):
- node group        -> `NodeName=... CPUs= RealMemory= Gres=gpu:N` (nodes with equal specs share a line)
- leaf switch       -> topology.conf `SwitchName=leaf Nodes=...`; spine -> `SwitchName=spine Switches=...`
- queue             -> one partition: `PriorityTier=tier`, `MaxTime`, `DefaultTime`,
                       `PreemptMode=REQUEUE` if preemptible else `OFF`; the default queue is `Default=YES`
- fake/real GPUs    -> gres.conf `Name=gpu File=<gpu_device_prefix>[0-N]`
- adsched plugin    -> `JobSubmitPlugins=lua` with job_submit.lua + adsched_rules.lua (queue rules as lua data),
                       `PrologFlags=Alloc`, Prolog/PrologSlurmctld/Epilog wrapper scripts running
                       `adsched hook KIND --config <conf_dir>/adsched-hooks.toml`
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from adsched.core.config import ClusterConfig, NodeSpec
from adsched.core.hostlist import compress
from adsched.core.timefmt import format_duration
from .luarules import render_lua_rules

__all__ = ["render_slurm_conf", "render_topology_conf", "render_gres_conf", "render_all", "slurm_cluster_name",
           "PluginSettings", "render_plugin_files", "EXECUTABLE"]

HOOKS = {"Prolog": "prolog", "PrologSlurmctld": "prolog-slurmctld", "Epilog": "epilog"}
EXECUTABLE = {f"adsched-{kind}" for kind in HOOKS.values()}  # files a caller must make executable


@dataclass(frozen=True)
class PluginSettings:
    """Where the adsched pieces live on the Slurm hosts (the same paths on every host)."""

    conf_dir: str = "/etc/slurm"  # job_submit.lua must sit beside slurm.conf
    store: str = "/var/lib/adsched"  # adsched state dir the hooks record events in ("" : none)
    hints_dir: str = "/run/adsched"
    nvidia_smi_xml: str = ""  # read instead of running nvidia-smi (test beds)
    gpu_check: bool = True  # False: the prolog skips the GPU health check (no GPUs at all)
    python: str = "/usr/bin/python3"  # with adsched installed
    # Controller mode (sched/slurm/controller.py): job_submit.lua holds every job at submit and adsched's
    # core decides which starts, when and where; Slurm's own preemption is off (the controller preempts).
    controller: bool = False


def slurm_cluster_name(config: ClusterConfig) -> str:
    """Slurm's ClusterName: lower case, letters/digits/underscore only."""
    name = re.sub(r"[^a-z0-9_]", "_", config.name.lower()).strip("_")
    return name or "cluster"


def _node_groups(nodes: tuple[NodeSpec, ...]) -> list[tuple[list[str], NodeSpec]]:
    """Nodes with identical Slurm-visible specs, in first-seen order (one NodeName line each)."""
    groups: dict[tuple, list[NodeSpec]] = {}
    for n in nodes:
        groups.setdefault((n.cpus, n.memory_gb, n.gpus), []).append(n)
    return [([n.name for n in members], members[0]) for members in groups.values()]


def _time(seconds: int | None) -> str:
    return format_duration(seconds)  # "UNLIMITED", "HH:MM:SS" or "D-HH:MM:SS": all Slurm syntax


def render_slurm_conf(
    config: ClusterConfig,
    *,
    controller: str = "slurmctld",
    controller_addr: str | None = None,
    node_addrs: Mapping[str, str] | None = None,
    slurmctld_port: int = 6817,
    slurmd_port: int = 6818,
    state_dir: str = "/var/spool/slurmctld",
    slurmd_spool_dir: str = "/var/spool/slurmd",
    slurm_user: str = "root",
    def_mem_per_cpu: int | None = None,
    extra_lines: tuple[str, ...] = (),
    plugin: PluginSettings | None = None,
) -> str:
    """slurm.conf for `config`.

    controller/controller_addr: SlurmctldHost (`name(addr)` when an address is given).
    node_addrs: optional {node: address} -> `NodeAddr=` (one line per node then), so slurmctld never waits on
    name resolution. def_mem_per_cpu (MB): default is the smallest memory-per-CPU of any node, so that a job
    that asks for no memory does not take a whole node.
    """
    if def_mem_per_cpu is None:
        def_mem_per_cpu = min(n.memory_gb * 1024 // n.cpus for n in config.nodes)
    host = f"{controller}({controller_addr})" if controller_addr else controller
    lines = [
        f"# slurm.conf rendered by adsched from cluster {config.name!r}. Do not edit: re-render instead.",
        f"ClusterName={slurm_cluster_name(config)}",
        f"SlurmctldHost={host}",
        f"SlurmctldPort={slurmctld_port}",
        f"SlurmdPort={slurmd_port}",
        f"SlurmUser={slurm_user}",
        f"SlurmdUser={slurm_user}",
        "AuthType=auth/munge",
        "CryptoType=crypto/munge",
        f"StateSaveLocation={state_dir}",
        f"SlurmdSpoolDir={slurmd_spool_dir}",
        "ReturnToService=2",
        "MailProg=/bin/true",
        # slurmd 22.05 drains nodes "Prolog error" under load without it (REQUEST_LAUNCH_PROLOG wait).
        "MessageTimeout=100",
        # Nodes register with the configured (possibly fake) CPUs, memory and GPUs.
        "SlurmdParameters=config_overrides",
        "",
        "# No cgroups, no accounting daemon",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "",
        "# Scheduling",
        "SchedulerType=sched/backfill",
        # multifactor (not basic) so that `sprio` works; age and partition only (fair share needs slurmdbd)
        "PriorityType=priority/multifactor",
        "PriorityWeightAge=1000",
        "PriorityWeightPartition=1000",
        "PriorityMaxAge=7-0",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        f"DefMemPerCPU={def_mem_per_cpu}",
        "TopologyPlugin=topology/tree",
        "GresTypes=gpu",
        *_preempt_lines(config, plugin),
        "JobRequeue=1",
        *_plugin_lines(plugin),
        *extra_lines,
        "",
        "# Nodes",
    ]
    for names, spec in _node_groups(config.nodes):
        gres = f" Gres=gpu:{spec.gpus}" if spec.gpus else ""
        attrs = f"CPUs={spec.cpus} RealMemory={spec.memory_gb * 1024}{gres} State=UNKNOWN"
        if node_addrs:
            lines += [f"NodeName={n} NodeAddr={node_addrs[n]} {attrs}" for n in names]
        else:
            lines.append(f"NodeName={compress(names)} {attrs}")
    lines += ["", "# Partitions: one per queue; a higher PriorityTier is scheduled (and preempts) first"]
    default = config.scheduler.default_queue
    for q in config.queues.values():
        # A preemptible queue's grace period is Slurm's GraceTime: SIGTERM, then SIGKILL that much later.
        controller_mode = plugin is not None and plugin.controller
        preempt = f"REQUEUE GraceTime={q.grace_period}" if q.preemptible and not controller_mode else "OFF"
        lines.append(
            f"PartitionName={q.name} Nodes=ALL Default={'YES' if q.name == default else 'NO'} "
            f"PriorityTier={q.tier} MaxTime={_time(q.max_time)} DefaultTime={_time(q.default_time)} "
            f"PreemptMode={preempt} State=UP"
        )
    lines += _not_expressed(config, plugin)
    return "\n".join(lines) + "\n"


def _not_expressed(config: ClusterConfig, plugin: PluginSettings | None) -> list[str]:
    """The queue settings slurm.conf cannot hold without slurmdbd, said out loud instead of dropped."""
    controller = plugin is not None and plugin.controller
    who = "the adsched controller enforces it" if controller else "NOT enforced on Slurm (needs the controller mode)"
    out = []
    for q in config.queues.values():
        if q.quota_gpus is not None:
            out.append(f"# queue {q.name}: quota_gpus={q.quota_gpus} (QOS GrpTRES=gres/gpu needs slurmdbd): {who}")
        if q.max_running_per_user is not None:
            out.append(f"# queue {q.name}: max_running_per_user={q.max_running_per_user} (QOS MaxJobsPerUser "
                       f"needs slurmdbd): {who}")
        if q.preemptible and q.preempt_signal != "TERM":
            out.append(f"# queue {q.name}: preempt_signal={q.preempt_signal} (Slurm's GraceTime always sends "
                       f"SIGTERM): {who}")
    if out:
        out = ["", "# adsched settings Slurm cannot express here (see slurm-conf/README.md):", *out]
    return out


def _preempt_lines(config: ClusterConfig, plugin: PluginSettings | None) -> list[str]:
    if plugin is None or not plugin.controller:
        return ["PreemptType=preempt/partition_prio", "PreemptMode=REQUEUE"]
    # Controller mode: nothing starts without the controller's release and Slurm never preempts by
    # itself (it would requeue victims un-held, onto nodes of its own choice). Release -> start at
    # slurmctld's next 1 s tick (batch_sched_delay=0: not a tick later), no shrinking of a running job by
    # a node-list update, no waiting for switches (the core already chose the leaves). A preempted job
    # that ends during its grace period is requeued by the controller afterwards: Slurm must remember it
    # that long (MinJobAge).
    longest_grace = max((q.grace_period for q in config.queues.values()), default=0)
    return [
        "PreemptType=preempt/none",
        "PreemptMode=OFF",
        "SchedulerParameters=batch_sched_delay=0,disable_job_shrink,max_switch_wait=0",
        f"MinJobAge={max(300, 2 * longest_grace + 60)}",
    ]


def _plugin_lines(plugin: PluginSettings | None) -> list[str]:
    if plugin is None:
        return []
    return [
        "",
        "# adsched: queue rules at submit (job_submit.lua), GPU health and topology hooks",
        "JobSubmitPlugins=lua",
        "PrologFlags=Alloc",
        *(f"{key}={plugin.conf_dir}/adsched-{kind}" for key, kind in HOOKS.items()),
    ]


def render_plugin_files(config: ClusterConfig, cluster_toml: str, plugin: PluginSettings) -> dict[str, str]:
    """job_submit.lua, its rules, the hooks TOML, the cluster TOML and the hook wrapper scripts.

    The wrappers carry no logic and read nothing from the job: Slurm runs them as root with the
    job's SLURM_* variables, and they exec the one Python entry point with a fixed config path.
    """
    hooks_toml = "\n".join([
        "# adsched hooks settings (rendered by adsched).",
        f'cluster = "{plugin.conf_dir}/adsched-cluster.toml"',
        f'store = "{plugin.store}"',
        f'hints_dir = "{plugin.hints_dir}"',
        f'nvidia_smi_xml = "{plugin.nvidia_smi_xml}"',
        f"gpu_check = {'true' if plugin.gpu_check else 'false'}",
        "",
    ])
    files = {
        "job_submit.lua": resources.files("adsched.plugins").joinpath("job_submit.lua").read_text(),
        "adsched_rules.lua": render_lua_rules(config, controller=plugin.controller),
        "adsched-hooks.toml": hooks_toml,
        "adsched-cluster.toml": cluster_toml,
    }
    for kind in HOOKS.values():
        files[f"adsched-{kind}"] = (
            "#!/bin/sh\n"
            f"# Slurm {kind} hook (rendered by adsched): all logic is in `adsched hook {kind}`.\n"
            f"exec {plugin.python} -m adsched.cli.adsched hook {kind} --config {plugin.conf_dir}/adsched-hooks.toml\n"
        )
    return files


def render_topology_conf(config: ClusterConfig) -> str:
    """topology.conf: leaf switches with their nodes, then every other switch with its child switches."""
    lines = [f"# topology.conf rendered by adsched from cluster {config.name!r}."]
    for leaf, members in config.leaves.items():
        if members:
            lines.append(f"SwitchName={leaf} Nodes={compress(list(members))}")
    children: dict[str, list[str]] = {}
    for child, parent in config.parents.items():
        children.setdefault(parent, []).append(child)
    for spine, kids in children.items():
        lines.append(f"SwitchName={spine} Switches={compress(kids)}")
    return "\n".join(lines) + "\n"


def render_gres_conf(config: ClusterConfig, *, gpu_device_prefix: str = "/dev/nvidia") -> str:
    """gres.conf: `NodeName=... Name=gpu File=/dev/nvidia[0-7]` per group of nodes with the same GPU count.

    Every GPU needs a File= (slurmd drops GPUs without one and the node goes INVAL)."""
    lines = [f"# gres.conf rendered by adsched from cluster {config.name!r}."]
    by_count: dict[int, list[str]] = {}
    for n in config.nodes:
        if n.gpus:
            by_count.setdefault(n.gpus, []).append(n.name)
    for count, names in by_count.items():
        files = compress([f"{gpu_device_prefix}{i}" for i in range(count)])
        lines.append(f"NodeName={compress(names)} Name=gpu File={files}")
    return "\n".join(lines) + "\n"


def render_all(config: ClusterConfig, *, gpu_device_prefix: str = "/dev/nvidia", **slurm_conf_args) -> dict[str, str]:
    """{file name: text} for slurm.conf, topology.conf and gres.conf; slurm_conf_args go to render_slurm_conf."""
    return {
        "slurm.conf": render_slurm_conf(config, **slurm_conf_args),
        "topology.conf": render_topology_conf(config),
        "gres.conf": render_gres_conf(config, gpu_device_prefix=gpu_device_prefix),
    }


def render_site(config: ClusterConfig, cluster_toml: str, *, controller: str = "slurmctld",
                plugin: PluginSettings | None = PluginSettings(), **slurm_conf_args) -> dict[str, str]:
    """Everything a Slurm site needs in its config dir, adsched plugin included (unless plugin=None)."""
    files = render_all(config, controller=controller, plugin=plugin, **slurm_conf_args)
    if plugin is not None:
        files.update(render_plugin_files(config, cluster_toml, plugin))
    return files


# --- the reverse: an existing topology.conf into the TOML's switch tree ------------------------------------

_TOPO_LINE = re.compile(r"^SwitchName=(\S+)\s+(Nodes|Switches)=(\S+)", re.IGNORECASE)


def import_topology(text: str) -> str:
    """`[switches.X]` TOML tables from a Slurm topology.conf (comments and link speeds ignored).

    Host lists are kept as Slurm wrote them; `adsched config check` validates the result with the nodes.
    """
    from adsched.core.hostlist import HostlistError, expand

    tables = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _TOPO_LINE.match(line)
        if not m:
            raise ValueError(f"topology.conf line {number}: not 'SwitchName=X Nodes=...' or 'Switches=...': {raw!r}")
        name, kind, members = m.group(1), m.group(2).lower(), m.group(3)
        try:
            expand(members)
        except HostlistError as e:
            raise ValueError(f"topology.conf line {number}: {e}") from None
        tables.append(f'[switches.{name}]\n{kind} = "{members}"\n')
    if not tables:
        raise ValueError("topology.conf holds no SwitchName lines")
    return "# Imported from topology.conf by `adsched slurm import-topology`.\n" + "\n".join(tables)
