"""The cluster TOML: nodes, the switch tree, queues and scheduler settings.

`parse_config_text(text)` parses and validates (adsched.configfile.load_config reads the file); every problem is reported at once, each with
its key path (`queues.explore.quota_gpus: must be >= 0`), as a ConfigError.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field, replace
from typing import Any

from .hostlist import HostlistError, expand
from .timefmt import parse_duration


class ConfigError(ValueError):
    """Invalid cluster configuration; `errors` holds one "key.path: message" per problem."""

    def __init__(self, errors: list[str], source: str = "config"):
        self.errors = errors
        self.source = source
        super().__init__(f"{source}: " + "; ".join(errors))


@dataclass(frozen=True)
class NodeSpec:
    name: str
    gpus: int
    gpu_model: str
    cpus: int
    memory_gb: int
    leaf: str
    address: str = "localhost"  # where the SSH executor reaches it
    # MIG: the last `mig_gpus` GPUs of the node are split, each into `mig_profile` slices,
    # e.g. (("1g.10gb", 7),). Those GPUs are never given whole.
    mig_gpus: int = 0
    mig_profile: tuple[tuple[str, int], ...] = ()

    @property
    def whole_gpus(self) -> int:
        """GPUs a whole-GPU job may get (the first ones; MIG-split GPUs come last)."""
        return self.gpus - self.mig_gpus


@dataclass(frozen=True)
class QueueSpec:
    name: str
    tier: int = 0  # higher tiers are ordered first (Slurm's PriorityTier)
    quota_gpus: int | None = None  # None: no quota
    preemptible: bool = False
    max_time: int | None = None  # seconds; None: unlimited
    default_time: int = 3600
    max_gpus_per_job: int | None = None
    # Borrowing (Kueue's borrowingLimit): GPUs beyond quota_gpus a queue may use while idle.
    # None: no limit; 0: never beyond quota. Only meaningful with quota_gpus.
    borrow_limit_gpus: int | None = None
    max_running_per_user: int | None = None  # jobs of one user running in this queue
    # Preemption (preempt.py). `preempts`: the queues whose running jobs this queue's jobs may
    # stop, resolved at load from `preempts = [...]` and `preempt_lower_tiers = true` (every
    # preemptible queue of a lower tier); only preemptible queues ever appear in it.
    preempts: tuple[str, ...] = ()
    preempt_lower_tiers: bool = False
    # As a victim: a job that has run less than min_run_time seconds is never preempted
    # (Slurm's PreemptExemptTime); the daemon sends preempt_signal to every rank and kills
    # the gang grace_period seconds later.
    min_run_time: int = 0
    grace_period: int = 60
    preempt_signal: str = "TERM"


ALL = float("inf")  # reservation_depth = "all": every blocked job gets a reservation


@dataclass(frozen=True)
class SchedulerSettings:
    default_queue: str = ""
    cycle_interval: float = 2.0  # seconds between daemon cycles
    # Policy toggles (the simulator compares them side by side):
    backfill: bool = True  # False: strict priority order, the first blocked job blocks all after it
    topology_aware: bool = True  # False: first fit by node order, leaves ignored
    # Backfill reservations (Flux's reservation-depth): the first N blocked jobs get a
    # place and a start time that later jobs may not delay. 0: plain greedy backfill;
    # 1: EASY; ALL (`reservation_depth = "all"`): conservative backfill, every blocked job.
    reservation_depth: int | float = 1
    # Priority score (order.py): weight of each factor, every factor in [0, 1] except
    # the job's own priority, which counts per point.
    weight_age: float = 0.0
    weight_fairshare: float = 0.0
    weight_size: float = 0.0
    weight_priority: float = 1.0
    age_max: int = 7 * 86400  # seconds of waiting at which the age factor reaches 1
    fairshare_half_life: int = 7 * 86400  # seconds; the store decays usage with it
    # Preemption: how many blocked jobs per cycle (in priority order) may look for victims.
    # 0: no preemption at all.
    preemption_depth: int = 4
    # Leaf wait (Slurm's --switches=count@max-time, max_switch_wait): a gang whose best placement
    # now spans more leaves than the fewest it could ever need waits up to this many seconds
    # after it became eligible for a placement on that few (schedule.py, Cycle._leaf_wait).
    # 0: never waits (it takes the fewest leaves free now).
    leaf_wait: float = 0.0


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    nodes: tuple[NodeSpec, ...]
    # switch tree: leaf switch -> its nodes; every other switch -> its child switches
    leaves: dict[str, tuple[str, ...]]
    parents: dict[str, str]  # switch -> parent switch (absent for the root(s))
    queues: dict[str, QueueSpec]
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    executor: str = "local"
    backend: str = "standalone"  # "slurm": adsub talks to Slurm, which runs the jobs
    admins: tuple[str, ...] = ()  # users who may cancel/hold/modify any job (root always may)
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)  # "key.path: message", not errors

    @property
    def total_gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)

    @property
    def max_gpus_per_node(self) -> int:
        """The most whole GPUs one job rank can get on a node."""
        return max(n.whole_gpus for n in self.nodes)

    def __post_init__(self) -> None:
        # Tables derived from the (frozen) nodes once, when the config is made: read-only
        # data of the config itself, not answers remembered between cycles.
        top = max((n.whole_gpus for n in self.nodes), default=0)
        at_least = tuple(sum(1 for n in self.nodes if n.whole_gpus >= g) for g in range(top + 1))
        mig: dict[str, int] = {}
        for n in self.nodes:
            for name, count in n.mig_profile:
                mig[name] = max(mig.get(name, 0), n.mig_gpus * count)
        object.__setattr__(self, "_nodes_at_least", at_least)
        object.__setattr__(self, "_mig_most", mig)
        object.__setattr__(self, "_by_name", {n.name: n for n in self.nodes})
        whole = {n.name: n.whole_gpus for n in self.nodes}
        object.__setattr__(self, "_leaf_sizes", tuple(
            tuple(sorted((sum(1 for n in members if whole.get(n, 0) >= g) for members in self.leaves.values()),
                         reverse=True))
            for g in range(top + 1)))

    def nodes_with_at_least(self, gpus: int) -> int:
        """How many nodes have >= `gpus` whole GPUs in total (free or not)."""
        table = self._nodes_at_least
        return table[gpus] if gpus < len(table) else 0

    def leaf_sizes(self, gpus: int) -> tuple[int, ...]:
        """Per leaf, how many of its nodes have >= `gpus` whole GPUs; largest first."""
        return self._leaf_sizes[gpus] if gpus < len(self._leaf_sizes) else ()

    def mig_slices(self, profile: str) -> int:
        """The most slices of `profile` one node offers (0: no node has it)."""
        return self._mig_most.get(profile, 0)

    def node(self, name: str) -> NodeSpec:
        return self._by_name[name]

    def spine_of(self, leaf: str) -> str | None:
        return self.parents.get(leaf)

    def default_queue(self) -> QueueSpec:
        return self.queues[self.scheduler.default_queue]


class _Errors:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, msg: str) -> None:
        self.items.append(f"{path}: {msg}")


_NODE_KEYS = {"names", "gpus", "gpu_model", "cpus", "memory_gb", "addresses", "mig_gpus", "mig_profile"}
_QUEUE_KEYS = {"tier", "quota_gpus", "preemptible", "max_time", "default_time", "max_gpus_per_job",
               "borrow_limit_gpus", "max_running_per_user", "preempts", "preempt_lower_tiers", "min_run_time",
               "grace_period", "preempt_signal"}
PREEMPT_SIGNALS = ("TERM", "USR1", "USR2", "INT", "HUP")
_WEIGHTS = ("weight_age", "weight_fairshare", "weight_size", "weight_priority")
_SCHED_KEYS = {"default_queue", "cycle_interval", "backfill", "topology_aware", "reservation_depth",
               "age_max", "fairshare_half_life", "preemption_depth", "leaf_wait", *_WEIGHTS}
# A MIG profile "<g>g.<mem>gb" takes g of a GPU's 7 compute slices.
MIG_PROFILE = re.compile(r"^([1-7])g\.(\d+)gb$")


def mig_sevenths(profile: str) -> int:
    """How many of a GPU's 7 compute slices one `profile` slice takes (0: not a profile)."""
    m = MIG_PROFILE.match(profile)
    return int(m.group(1)) if m else 0
MAX_GPUS_PER_NODE = 256  # more is a typo (an HGX server has 8); GPU sets are bit masks
MAX_CYCLE_INTERVAL = 3600.0
MAX_DURATION = 100 * 365 * 86400
_TOP_KEYS = {"cluster", "nodes", "switches", "queues", "scheduler", "standalone"}


def _int(errs: _Errors, path: str, value: Any, minimum: int | None = None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        errs.add(path, f"must be an integer, got {value!r}")
        return None
    if minimum is not None and value < minimum:
        errs.add(path, f"must be >= {minimum}")
        return None
    return value


def _finite(value: Any) -> float | None:
    """A number as a finite float; None for anything else (bool, text, nan, inf, an int past float range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _duration(errs: _Errors, path: str, value: Any) -> int | None:
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError) as e:
        errs.add(path, str(e))
        return None
    if seconds > MAX_DURATION:  # times are floats: an endless limit is left out, not written huge
        errs.add(path, f"must be at most {MAX_DURATION // 86400} days")
        return None
    return seconds


def _unknown(errs: _Errors, path: str, table: dict, allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            errs.add(f"{path}.{key}" if path else key, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def toml_module():
    """tomllib (tomli before 3.11), imported when first needed: a store's config is read from JSON (~5 ms less
    for each `adsub` call, Store.config)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib


def parse_config_text(text: str, source: str = "config") -> ClusterConfig:
    tomllib = toml_module()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"malformed TOML: {e}"], source) from None
    return parse_config(data, source)


def parse_config(data: dict, source: str = "config") -> ClusterConfig:
    errs = _Errors()
    _unknown(errs, "", data, _TOP_KEYS)
    cluster = data.get("cluster", {})
    name = cluster.get("name", "cluster") if isinstance(cluster, dict) else "cluster"
    backend = "standalone"
    admins: tuple[str, ...] = ()
    if not isinstance(cluster, dict):
        errs.add("cluster", "must be a table")
    else:
        _unknown(errs, "cluster", cluster, {"name", "backend", "admins"})
        backend = cluster.get("backend", "standalone")
        if backend not in ("standalone", "slurm"):
            errs.add("cluster.backend", f"must be 'standalone' or 'slurm', got {backend!r}")
        raw_admins = cluster.get("admins", [])
        if not isinstance(raw_admins, list) or not all(isinstance(a, str) and a for a in raw_admins):
            errs.add("cluster.admins", f"must be a list of user names, got {raw_admins!r}")
        else:
            admins = tuple(raw_admins)

    before = len(errs.items)
    nodes = _parse_nodes(errs, data.get("nodes"))
    nodes_ok = len(errs.items) == before  # else the GPU total below is not the cluster's
    leaves, parents = _parse_switches(errs, data.get("switches", {}), [n["name"] for n in nodes])
    queues = _parse_queues(errs, data.get("queues"))
    # Legal (the cluster may grow, as Slurm and Kueue allow) but most likely a typo: said, not silent.
    warnings = []
    total_gpus = sum(n["gpus"] for n in nodes)
    if nodes_ok and nodes and total_gpus == 0:
        errs.add("nodes", "no node has a GPU (set gpus = N on at least one [[nodes]] group)")
    elif nodes_ok and isinstance(data.get("nodes"), list):
        for i, g in enumerate(data["nodes"]):  # CPU-only nodes: rendered for Slurm, never given a GPU job
            if isinstance(g, dict) and g.get("gpus", 8) == 0:
                warnings.append(f"nodes[{i}].gpus: 0: adsched never places a job on these nodes")
    for q in queues.values():
        if nodes_ok and q.quota_gpus is not None and q.quota_gpus > total_gpus:
            warnings.append(f"queues.{q.name}.quota_gpus: {q.quota_gpus} is more than the cluster's {total_gpus} "
                            "GPUs (the queue can never borrow)")
    sched = _parse_scheduler(errs, data.get("scheduler", {}), queues)
    executor = "local"
    standalone = data.get("standalone", {})
    if not isinstance(standalone, dict):
        errs.add("standalone", "must be a table")
    else:
        _unknown(errs, "standalone", standalone, {"executor"})
        executor = standalone.get("executor", "local")
        if executor not in ("local", "ssh"):
            errs.add("standalone.executor", f"must be 'local' or 'ssh', got {executor!r}")

    if errs.items:
        raise ConfigError(errs.items, source)

    leaf_of = {n: leaf for leaf, members in leaves.items() for n in members}
    specs = tuple(
        NodeSpec(
            name=n["name"],
            gpus=n["gpus"],
            gpu_model=n["gpu_model"],
            cpus=n["cpus"],
            memory_gb=n["memory_gb"],
            leaf=leaf_of[n["name"]],
            address=n["address"],
            mig_gpus=n["mig_gpus"],
            mig_profile=n["mig_profile"],
        )
        for n in nodes
    )
    return ClusterConfig(
        name=str(name),
        nodes=specs,
        leaves=leaves,
        parents=parents,
        queues=queues,
        scheduler=sched,
        executor=executor,
        backend=backend,
        admins=admins,
        raw=data,
        warnings=tuple(warnings),
    )


def _parse_nodes(errs: _Errors, groups: Any) -> list[dict]:
    if not isinstance(groups, list) or not groups:
        errs.add("nodes", "at least one [[nodes]] group is required")
        return []
    out: list[dict] = []
    seen: set[str] = set()
    for i, g in enumerate(groups):
        path = f"nodes[{i}]"
        if not isinstance(g, dict):
            errs.add(path, "must be a table")
            continue
        _unknown(errs, path, g, _NODE_KEYS)
        try:
            names = expand(str(g.get("names", "")))
        except HostlistError as e:
            errs.add(f"{path}.names", str(e))
            continue
        if not names:
            errs.add(f"{path}.names", "required (e.g. \"node[01-16]\")")
            continue
        gpus = _int(errs, f"{path}.gpus", g.get("gpus", 8), 0)
        if gpus is not None and gpus > MAX_GPUS_PER_NODE:
            errs.add(f"{path}.gpus", f"must be <= {MAX_GPUS_PER_NODE} (GPUs in one server)")
            gpus = None
        cpus = _int(errs, f"{path}.cpus", g.get("cpus", 112), 1)
        mem = _int(errs, f"{path}.memory_gb", g.get("memory_gb", 2048), 1)
        addresses = ["localhost"] * len(names)
        if "addresses" in g:
            try:
                addresses = expand(str(g["addresses"]))
            except HostlistError as e:
                errs.add(f"{path}.addresses", str(e))
            if len(addresses) != len(names):
                errs.add(f"{path}.addresses", f"lists {len(addresses)} addresses for {len(names)} nodes")
                addresses = ["localhost"] * len(names)
        mig_gpus, mig_profile = _parse_mig(errs, path, g, gpus or 0)
        for name, addr in zip(names, addresses):
            if name in seen:
                errs.add(f"{path}.names", f"node {name} is defined twice")
                continue
            seen.add(name)
            out.append(
                dict(name=name, gpus=gpus or 0, gpu_model=str(g.get("gpu_model", "GPU")),
                     cpus=cpus or 1, memory_gb=mem or 1, address=addr,
                     mig_gpus=mig_gpus, mig_profile=mig_profile)
            )
    return out


def _parse_mig(errs: _Errors, path: str, g: dict, gpus: int) -> tuple[int, tuple[tuple[str, int], ...]]:
    """`mig_gpus = 2` + `mig_profile = {"1g.10gb" = 7}`: the last 2 GPUs split 7 ways."""
    if "mig_gpus" not in g and "mig_profile" not in g:
        return 0, ()
    n = _int(errs, f"{path}.mig_gpus", g.get("mig_gpus", 0), 1)
    if n is not None and n > gpus:
        errs.add(f"{path}.mig_gpus", f"must be <= gpus ({gpus})")
        n = None
    table = g.get("mig_profile")
    if not isinstance(table, dict) or not table:
        errs.add(f"{path}.mig_profile", 'required with mig_gpus, e.g. {"1g.10gb" = 7}')
        return 0, ()
    profile, sevenths = [], 0
    for name, count in sorted(table.items()):
        c = _int(errs, f"{path}.mig_profile.{name}", count, 1)
        if not mig_sevenths(name):
            errs.add(f"{path}.mig_profile.{name}", "not a MIG profile (e.g. 1g.10gb, 3g.40gb)")
        elif c is not None:
            sevenths += mig_sevenths(name) * c
            profile.append((name, c))
    if sevenths > 7:
        errs.add(f"{path}.mig_profile", f"uses {sevenths} of a GPU's 7 compute slices")
    return (n or 0), tuple(profile) if n else ()


def _parse_switches(errs: _Errors, table: Any, node_names: list[str]):
    leaves: dict[str, tuple[str, ...]] = {}
    parents: dict[str, str] = {}
    if not isinstance(table, dict):
        errs.add("switches", "must be a table of switches")
        return leaves, parents
    if not table:  # no tree given: the whole cluster hangs off one switch
        return ({"leaf1": tuple(node_names)} if node_names else {}), {}
    known = set(node_names)
    owner: dict[str, str] = {}
    children: dict[str, list[str]] = {}
    for sw, spec in table.items():
        path = f"switches.{sw}"
        if not isinstance(spec, dict):
            errs.add(path, "must be a table with 'nodes' or 'switches'")
            continue
        _unknown(errs, path, spec, {"nodes", "switches"})
        if ("nodes" in spec) == ("switches" in spec):
            errs.add(path, "needs exactly one of 'nodes' (a leaf switch) or 'switches' (a spine)")
            continue
        key = "nodes" if "nodes" in spec else "switches"
        try:
            members = expand(str(spec[key]))
        except HostlistError as e:
            errs.add(f"{path}.{key}", str(e))
            continue
        if key == "nodes":
            for n in members:
                if n not in known:
                    errs.add(f"{path}.nodes", f"unknown node {n}")
                elif n in owner:
                    errs.add(f"{path}.nodes", f"node {n} is already under switch {owner[n]}")
                else:
                    owner[n] = sw
            leaves[sw] = tuple(n for n in members if owner.get(n) == sw)
        else:
            children[sw] = members
    for sw, kids in children.items():
        for kid in kids:
            if kid not in table:
                errs.add(f"switches.{sw}.switches", f"unknown switch {kid}")
            elif kid in parents:
                errs.add(f"switches.{sw}.switches", f"switch {kid} already has parent {parents[kid]}")
            else:
                parents[kid] = sw
    for sw in table:  # a cycle would make "fewest leaves under one spine" meaningless
        seen, cur = set(), sw
        while cur in parents:
            if cur in seen:
                errs.add(f"switches.{sw}", "the switch tree has a cycle")
                break
            seen.add(cur)
            cur = parents[cur]
    missing = [n for n in node_names if n not in owner]
    if missing:
        errs.add("switches", f"{len(missing)} node(s) under no leaf switch, e.g. {missing[0]}")
    return leaves, parents


def _parse_queues(errs: _Errors, table: Any) -> dict[str, QueueSpec]:
    if not isinstance(table, dict) or not table:
        errs.add("queues", "at least one [queues.NAME] table is required")
        return {}
    out: dict[str, QueueSpec] = {}
    for qname, q in table.items():
        path = f"queues.{qname}"
        if not isinstance(q, dict):
            errs.add(path, "must be a table")
            continue
        _unknown(errs, path, q, _QUEUE_KEYS)
        tier = _int(errs, f"{path}.tier", q.get("tier", 0), 0)
        quota = None
        if "quota_gpus" in q:
            quota = _int(errs, f"{path}.quota_gpus", q["quota_gpus"], 0)
        max_gpus = None
        if "max_gpus_per_job" in q:
            max_gpus = _int(errs, f"{path}.max_gpus_per_job", q["max_gpus_per_job"], 1)
        pre = q.get("preemptible", False)
        if not isinstance(pre, bool):
            errs.add(f"{path}.preemptible", "must be true or false")
            pre = False
        borrow = None
        if "borrow_limit_gpus" in q:
            borrow = _int(errs, f"{path}.borrow_limit_gpus", q["borrow_limit_gpus"], 0)
            if "quota_gpus" not in q:
                errs.add(f"{path}.borrow_limit_gpus", "needs quota_gpus (borrowing is beyond a quota)")
        per_user = None
        if "max_running_per_user" in q:
            per_user = _int(errs, f"{path}.max_running_per_user", q["max_running_per_user"], 1)
        max_time = _duration(errs, f"{path}.max_time", q["max_time"]) if "max_time" in q else None
        default_time = _duration(errs, f"{path}.default_time", q.get("default_time", "1:00:00"))
        if max_time is not None and default_time is not None and default_time > max_time:
            errs.add(f"{path}.default_time", "must not exceed max_time")
        out[qname] = QueueSpec(
            name=qname, tier=tier or 0, quota_gpus=quota, preemptible=pre, max_time=max_time,
            default_time=default_time or 3600, max_gpus_per_job=max_gpus,
            borrow_limit_gpus=borrow, max_running_per_user=per_user, **_parse_preemption(errs, path, q),
        )
    return _resolve_preempts(errs, table, out)


def _parse_preemption(errs: _Errors, path: str, q: dict) -> dict:
    """The per-queue preemption keys; `preempts` is resolved against the other queues later."""
    out: dict = {}
    lower = q.get("preempt_lower_tiers", False)
    if not isinstance(lower, bool):
        errs.add(f"{path}.preempt_lower_tiers", "must be true or false")
        lower = False
    out["preempt_lower_tiers"] = lower
    for key, default in (("min_run_time", 0), ("grace_period", 60)):
        if key in q:
            value = _duration(errs, f"{path}.{key}", q[key])
            out[key] = default if value is None else value
    if "preempt_signal" in q:
        sig = q["preempt_signal"]
        name = sig.upper().removeprefix("SIG") if isinstance(sig, str) else None
        if name not in PREEMPT_SIGNALS:
            errs.add(f"{path}.preempt_signal", f"must be one of {', '.join(PREEMPT_SIGNALS)}, got {sig!r}")
        else:
            out["preempt_signal"] = name
    return out


def _resolve_preempts(errs: _Errors, table: dict, queues: dict[str, QueueSpec]) -> dict[str, QueueSpec]:
    """QueueSpec.preempts from `preempts = [...]` and `preempt_lower_tiers`: names, sorted."""
    out = {}
    for name, spec in queues.items():
        path = f"queues.{name}.preempts"
        listed = table[name].get("preempts", [])
        targets: set[str] = set()
        if not isinstance(listed, list) or not all(isinstance(x, str) for x in listed):
            errs.add(path, 'must be a list of queue names, e.g. ["explore", "debug"]')
            listed = []
        for other in listed:
            if other == name:
                errs.add(path, f"queue {name} cannot preempt itself")
            elif other not in queues:
                errs.add(path, f"unknown queue {other!r}")
            elif not isinstance(table[other].get("preemptible", False), bool):
                pass  # already reported at queues.OTHER.preemptible
            elif not queues[other].preemptible:
                errs.add(path, f"queue {other} is not preemptible (set queues.{other}.preemptible = true)")
            else:
                targets.add(other)
        if spec.preempt_lower_tiers:
            targets.update(o.name for o in queues.values() if o.preemptible and o.tier < spec.tier)
        out[name] = replace(spec, preempts=tuple(sorted(targets)))
    return out


def _parse_scheduler(errs: _Errors, table: Any, queues: dict[str, QueueSpec]) -> SchedulerSettings:
    if not isinstance(table, dict):
        errs.add("scheduler", "must be a table")
        return SchedulerSettings()
    _unknown(errs, "scheduler", table, _SCHED_KEYS)
    default_queue = table.get("default_queue")
    if default_queue is None:
        default_queue = min(queues.values(), key=lambda q: (q.tier, q.name)).name if queues else ""
    elif not isinstance(default_queue, str):
        errs.add("scheduler.default_queue", f"must be a queue name, got {default_queue!r}")
        default_queue = ""
    elif queues and default_queue not in queues:
        errs.add("scheduler.default_queue", f"unknown queue {default_queue!r}")
    interval = table.get("cycle_interval", 2.0)
    if _finite(interval) is None or not 0 < interval <= MAX_CYCLE_INTERVAL:
        errs.add("scheduler.cycle_interval", f"must be a positive number of seconds, at most {MAX_CYCLE_INTERVAL:g}")
        interval = 2.0
    toggles = {}
    for key in ("backfill", "topology_aware"):
        value = table.get(key, True)
        if not isinstance(value, bool):
            errs.add(f"scheduler.{key}", "must be true or false")
            value = True
        toggles[key] = value
    depth = table.get("reservation_depth", 1)
    if depth == "all":
        depth = ALL
    elif isinstance(depth, str):
        errs.add("scheduler.reservation_depth", f'must be an integer >= 0 or "all", got {depth!r}')
        depth = None
    else:
        depth = _int(errs, "scheduler.reservation_depth", depth, 0)
    weights = {}
    for key in _WEIGHTS:
        value = table.get(key, getattr(SchedulerSettings, key))
        if _finite(value) is None or value < 0:
            errs.add(f"scheduler.{key}", "must be a number >= 0")
            value = getattr(SchedulerSettings, key)
        weights[key] = float(value)
    spans = {}
    for key in ("age_max", "fairshare_half_life"):
        value = _duration(errs, f"scheduler.{key}", table.get(key, "7-00:00:00"))
        if value == 0:
            errs.add(f"scheduler.{key}", "must be longer than 0")
            value = None
        spans[key] = value or 7 * 86400
    preemption_depth = _int(errs, "scheduler.preemption_depth", table.get("preemption_depth", 4), 0)
    return SchedulerSettings(default_queue=default_queue, cycle_interval=float(interval), **toggles,
                             reservation_depth=1 if depth is None else depth, **weights, **spans,
                             preemption_depth=4 if preemption_depth is None else preemption_depth,
                             leaf_wait=_leaf_wait(errs, table.get("leaf_wait", 0)))


def _leaf_wait(errs: _Errors, value: Any) -> float:
    """Seconds, as Slurm's max_switch_wait (a number), or a Slurm duration text ("5:00" = 5 minutes)."""
    if isinstance(value, str):
        seconds = _duration(errs, "scheduler.leaf_wait", value)
        return 0.0 if seconds is None else float(seconds)
    seconds = _finite(value)
    if seconds is None or not 0 <= seconds <= MAX_DURATION:
        errs.add("scheduler.leaf_wait", f'must be a number of seconds >= 0 (or a duration such as "5:00"), '
                                        f"at most {MAX_DURATION // 86400} days, got {value!r}")
        return 0.0
    return seconds
