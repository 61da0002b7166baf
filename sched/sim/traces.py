"""Loaders for real cluster traces and their documented mapping onto adsched jobs.

Two steps, so a trace is read once and can be fitted to any cluster:

  load_trace(path) -> Trace        the trace's jobs in a neutral form (TraceJob), plus every line
                                   that could not be read (with its line number) and why
  to_workload(trace, config)       adsched Jobs for one cluster: queue, time limit, oversize
                                   jobs clamped or dropped (and counted)

SWF (Standard Workload Format v2.2, plain or gzip; any log of the Parallel Workloads Archive)
---------------------------------------------------------------------------------------------
  processors  allocated processors (field 5), else requested processors (field 8). Two mappings
              (SwfMapping.procs_as):
                "node"  one processor is one whole node: P processors -> P nodes x 8 GPUs.
                        Right for logs of machines with one processor per node (KTH SP2:
                        MaxProcs = MaxNodes = 100), replayed on as many 8-GPU nodes.
                "gpu"   one processor is one GPU, packed 8 per node: P -> ceil(P/8) nodes x 8
                        GPUs, or one node with P GPUs when P < 8.
                "auto"  (default) "node" when the header says MaxProcs == MaxNodes, else "gpu".
  time limit  requested time (field 9); when -1, the run time (SwfMapping.missing_limit =
              "runtime", default) or the queue's default_time ("queue").
  duration    run time (field 4), clamped to the time limit (counted). -1: the job is skipped.
  queue       SWF queue id (field 15) through SwfMapping.queues {id: queue name}; ids not in the
              mapping (and -1) go to the cluster's default queue.
  user        "u<field 12>".  Production wait: field 3 (kept to compare against).
  Lines starting with ';' are header comments ("; MaxNodes: 100"); a line that is not 18
  numbers, or lacks a submit time, is reported as a bad line with its number, not fatal.

Alibaba GPU cluster trace "openb" (cluster-trace-gpu-v2023 pod list)
--------------------------------------------------------------------
  one pod = one single-node job with num_gpu GPUs; a GPU-sharing pod (gpu_milli < 1000) is
  rounded up to one whole GPU (counted); gpu_spec (GPU model constraints) is ignored.
  submit = creation_time; duration = deletion_time - scheduled_time; production wait =
  scheduled_time - creation_time; time limit = duration (no limits are recorded).
  Skipped (counted): CPU-only pods (num_gpu 0), pods never scheduled in production.
  QoS -> queue: DEFAULT_QOS_QUEUES (LS -> ls, Guaranteed -> guaranteed, Burstable ->
  burstable, BE -> be); `openb_cluster(nodes_csv)` builds the matching ClusterConfig.

Oversize jobs (to_workload): a job the core's own `validate_job` says can never run on the
cluster is clamped (nodes, GPUs per node, time limit to the queue's max_time) or dropped
(`oversize="drop"`, or when clamping cannot make it valid). Both are counted by reason.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping

from adsched.core.config import ClusterConfig, parse_config
from adsched.core.hostlist import compress
from adsched.core.model import Job
from adsched.core.schedule import validate_job


class TraceError(ValueError):
    """The trace cannot be read at all (missing file, unknown format, no usable job)."""


@dataclass(frozen=True, slots=True)
class TraceJob:
    id: int
    submit: float
    run_time: float  # what the job actually ran, seconds (>= 0)
    requested_time: int | None  # the trace's wall-clock limit; None when unknown
    num_nodes: int
    gpus_per_node: int
    queue: str | None  # adsched queue name; None: the cluster's default queue
    user: str
    trace_wait: float | None  # the production scheduler's wait, when recorded
    line: int  # where it came from in the file


@dataclass
class Trace:
    name: str
    format: str  # "swf" | "openb"
    jobs: list[TraceJob]
    header: dict[str, str] = field(default_factory=dict)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, problem)
    skipped: Counter = field(default_factory=Counter)  # readable but unusable jobs, by reason
    notes: Counter = field(default_factory=Counter)  # jobs changed by the mapping, by what changed
    path: Path | None = None


@dataclass(frozen=True)
class SwfMapping:
    procs_as: str = "auto"  # "node" | "gpu" | "auto" (see the module docstring)
    gpus_per_node: int = 8
    queues: Mapping[int, str] = field(default_factory=dict)  # SWF queue id -> adsched queue

    def __post_init__(self):
        if self.procs_as not in ("auto", "node", "gpu"):
            raise ValueError(f"procs_as must be auto, node or gpu, not {self.procs_as!r}")
        if self.gpus_per_node < 1:
            raise ValueError("gpus_per_node must be >= 1")


DEFAULT_QOS_QUEUES = {"LS": "ls", "Guaranteed": "guaranteed", "Burstable": "burstable", "BE": "be"}
# Tiers of the generated openb cluster: latency-sensitive first, best effort last.
OPENB_QUEUE_TIERS = {"ls": 3, "guaranteed": 2, "burstable": 1, "be": 0}

SWF_FIELDS = (
    "job id", "submit time", "wait time", "run time", "allocated processors", "average CPU time",
    "used memory", "requested processors", "requested time", "requested memory", "status",
    "user id", "group id", "executable id", "queue id", "partition id", "preceding job id",
    "think time",
)


# --- format detection -------------------------------------------------------------------


def _open_text(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, "r", encoding="utf-8", errors="replace")


def detect_format(path: Path) -> str:
    try:
        with _open_text(path) as f:
            first = f.readline()
    except OSError as e:
        raise TraceError(f"cannot read trace {path}: {e.strerror or e}") from None
    except (EOFError, gzip.BadGzipFile) as e:
        raise TraceError(f"cannot read trace {path}: {e}") from None
    if first.startswith("name,") and "num_gpu" in first:
        return "openb"
    name = path.name.lower()
    if name.endswith((".swf", ".swf.gz")) or first.startswith(";") or first.split()[:1] and first.split()[0].isdigit():
        return "swf"
    raise TraceError(f"{path}: not an SWF log or an openb pod list (first line: {first.strip()[:60]!r})")


def load_trace(path: str | Path, limit: int | None = None, mapping: SwfMapping | None = None,
               qos_queues: Mapping[str, str] | None = None) -> Trace:
    """Read an SWF log or an openb pod list (detected from its content); `limit`: first N jobs."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"cannot read trace {path}: no such file")
    fmt = detect_format(path)
    if fmt == "openb":
        trace = load_openb(path, limit=limit, qos_queues=qos_queues)
    else:
        with _open_text(path) as f:
            try:
                trace = parse_swf(f, name=path.name, limit=limit, mapping=mapping)
            except (EOFError, gzip.BadGzipFile, OSError) as e:
                raise TraceError(f"cannot read trace {path}: {e}") from None
    trace.path = path
    if not trace.jobs:
        why = "; ".join(f"{n} {r}" for r, n in trace.skipped.most_common(3))
        bad = f"{len(trace.bad_lines)} bad lines" if trace.bad_lines else ""
        raise TraceError(f"{path}: no usable job ({', '.join(x for x in (why, bad) if x) or 'empty'})")
    return trace


# --- SWF ----------------------------------------------------------------------------------


def _procs_as(mapping: SwfMapping, header: dict[str, str]) -> str:
    if mapping.procs_as != "auto":
        return mapping.procs_as
    nodes, procs = header.get("MaxNodes"), header.get("MaxProcs")
    return "node" if nodes is not None and nodes == procs else "gpu"


def parse_swf(lines: Iterable[str], name: str = "swf", limit: int | None = None,
              mapping: SwfMapping | None = None) -> Trace:
    """Parse SWF text (any iterable of lines). Bad lines are collected, never raised."""
    mapping = mapping or SwfMapping()
    trace = Trace(name=name, format="swf", jobs=[])
    header, bad, skipped = trace.header, trace.bad_lines, trace.skipped
    mode: str | None = None
    G = mapping.gpus_per_node
    queues = mapping.queues
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(";"):
            key, sep, value = line[1:].partition(":")
            if sep and key.strip() and " " not in key.strip() and key.strip() not in header:
                header[key.strip()] = value.strip()
            continue
        if mode is None:  # the header is complete once the first job line appears
            mode = _procs_as(mapping, header)
            trace.header["adsched.procs_as"] = mode
        parts = line.split()
        if len(parts) != 18:
            bad.append((lineno, f"expected 18 fields, found {len(parts)}"))
            continue
        try:
            f = [int(p) if p.lstrip("-").isdigit() else float(p) for p in parts]
        except ValueError:
            which = next(i for i, p in enumerate(parts) if not _is_number(p))
            bad.append((lineno, f"field {which + 1} ({SWF_FIELDS[which]}) is not a number: {parts[which]!r}"))
            continue
        job_id, submit, wait, run, alloc, req_procs, req_time, queue_id, user = (
            int(f[0]), f[1], f[2], f[3], int(f[4]), int(f[7]), f[8], int(f[14]), int(f[11]),
        )
        if submit < 0:
            bad.append((lineno, "field 2 (submit time) is missing"))
            continue
        procs = alloc if alloc > 0 else req_procs
        if procs <= 0:
            skipped["no processor count"] += 1
            continue
        if run < 0:
            skipped["no run time"] += 1
            continue
        if mode == "node":
            nodes, gpn = procs, G
        elif procs < G:
            nodes, gpn = 1, procs
        else:
            nodes, gpn = -(-procs // G), G
        trace.jobs.append(TraceJob(
            id=job_id, submit=float(submit), run_time=float(run),
            requested_time=int(math.ceil(req_time)) if req_time > 0 else None,
            num_nodes=nodes, gpus_per_node=gpn, queue=queues.get(queue_id), user=f"u{user}" if user >= 0 else "user",
            trace_wait=float(wait) if wait >= 0 else None, line=lineno,
        ))
        if limit is not None and len(trace.jobs) >= limit:
            break
    ids = Counter(j.id for j in trace.jobs)
    dups = [i for i, n in ids.items() if n > 1]
    if dups:  # the core needs unique ids: renumber the later copies after the largest id
        top = max(ids)
        seen: set[int] = set()
        for k, j in enumerate(trace.jobs):
            if j.id in seen:
                top += 1
                trace.jobs[k] = replace(j, id=top)
                trace.notes["duplicate job id renumbered"] += 1
            seen.add(j.id)
    return trace


def _is_number(p: str) -> bool:
    try:
        float(p)
        return True
    except ValueError:
        return False


# --- Alibaba openb --------------------------------------------------------------------------


def load_openb(path: str | Path, limit: int | None = None, qos_queues: Mapping[str, str] | None = None) -> Trace:
    path = Path(path)
    qos_queues = DEFAULT_QOS_QUEUES if qos_queues is None else qos_queues
    trace = Trace(name=path.name, format="openb", jobs=[], path=path)
    need = ("name", "num_gpu", "gpu_milli", "qos", "creation_time", "deletion_time", "scheduled_time")
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(f"{path}: not an openb pod list (missing columns: {', '.join(missing)})")
        for k, row in enumerate(reader):
            lineno = reader.line_num
            try:
                gpus = int(row["num_gpu"] or 0)
                milli = int(row["gpu_milli"] or 0)
                created = float(row["creation_time"])
                sched_at = float(row["scheduled_time"]) if row["scheduled_time"] else None
                deleted = float(row["deletion_time"]) if row["deletion_time"] else None
            except (ValueError, TypeError) as e:
                trace.bad_lines.append((lineno, f"not a number: {e}"))
                continue
            if gpus <= 0:
                trace.skipped["CPU-only pod (num_gpu 0)"] += 1
                continue
            if sched_at is None:
                trace.skipped["never scheduled in production"] += 1
                continue
            if deleted is None:
                trace.skipped["no deletion time"] += 1
                continue
            if gpus == 1 and 0 < milli < 1000:
                trace.notes["GPU-sharing pod rounded up to 1 GPU"] += 1
            trace.jobs.append(TraceJob(
                id=k + 1, submit=created, run_time=max(0.0, deleted - sched_at), requested_time=None,
                num_nodes=1, gpus_per_node=gpus, queue=qos_queues.get(row["qos"]), user="user",
                trace_wait=max(0.0, sched_at - created), line=lineno,
            ))
            if limit is not None and len(trace.jobs) >= limit:
                break
    return trace


def openb_cluster(nodes_csv: str | Path, nodes_per_leaf: int = 32) -> ClusterConfig:
    """A ClusterConfig for the openb node list: its nodes, GPUs and models as they are.

    The trace records no network topology (its pods are single-node, so none is needed): nodes
    are grouped into leaves by GPU model, `nodes_per_leaf` at most, under one spine. Queues are
    the QoS classes (OPENB_QUEUE_TIERS), without quotas or time limits; default queue `be`.
    """
    nodes_csv = Path(nodes_csv)
    try:
        with open(nodes_csv, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise TraceError(f"cannot read node list {nodes_csv}: {e.strerror or e}") from None
    groups: list[dict] = []
    by_model: dict[str, list[str]] = {}
    try:
        for row in rows:
            gpus = int(row["gpu"])
            spec = dict(gpus=gpus, gpu_model=row["model"] or "GPU", cpus=max(1, int(row["cpu_milli"]) // 1000),
                        memory_gb=max(1, int(row["memory_mib"]) // 1024))
            if groups and {k: groups[-1][k] for k in spec} == spec:
                groups[-1]["_names"].append(row["sn"])
            else:
                groups.append({**spec, "_names": [row["sn"]]})
            by_model.setdefault(spec["gpu_model"], []).append(row["sn"])
    except (KeyError, ValueError, TypeError) as e:
        raise TraceError(f"{nodes_csv}: not an openb node list ({e})") from None
    if not groups:
        raise TraceError(f"{nodes_csv}: no nodes")
    switches: dict[str, dict] = {}
    for model, names in by_model.items():
        for c in range(0, len(names), nodes_per_leaf):
            switches[f"leaf-{model}-{c // nodes_per_leaf + 1}"] = {"nodes": compress(names[c:c + nodes_per_leaf])}
    switches["spine"] = {"switches": ",".join(switches)}
    data = {
        "cluster": {"name": "openb"},
        "nodes": [{**{k: v for k, v in g.items() if k != "_names"}, "names": compress(g["_names"])} for g in groups],
        "switches": switches,
        "queues": {q: {"tier": t, "default_time": "1:00:00"} for q, t in OPENB_QUEUE_TIERS.items()},
        "scheduler": {"default_queue": "be"},
    }
    return parse_config(data, str(nodes_csv))


# --- fitting a trace to a cluster ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimJob:
    job: Job
    duration: float  # actual run time on the simulated cluster, <= job.time_limit
    trace_wait: float | None


@dataclass
class Workload:
    jobs: list[SimJob]  # by submit time, then id
    dropped: Counter = field(default_factory=Counter)  # by reason
    clamped: Counter = field(default_factory=Counter)  # by what was clamped
    trace: Trace | None = None


def to_workload(trace: Trace, config: ClusterConfig, oversize: str = "clamp", missing_limit: str = "runtime") -> Workload:
    """adsched Jobs for `config`. oversize: "clamp" or "drop"; missing_limit: "runtime" or "queue"."""
    if oversize not in ("clamp", "drop"):
        raise ValueError(f"oversize must be clamp or drop, not {oversize!r}")
    if missing_limit not in ("runtime", "queue"):
        raise ValueError(f"missing_limit must be runtime or queue, not {missing_limit!r}")
    out = Workload(jobs=[], trace=trace)
    default_queue = config.scheduler.default_queue
    max_gpn = config.max_gpus_per_node
    for tj in trace.jobs:
        qname = tj.queue or default_queue
        q = config.queues.get(qname)
        if q is None:
            out.dropped[f"unknown queue {qname!r}"] += 1
            continue
        if tj.requested_time is not None:
            limit = tj.requested_time
        elif missing_limit == "runtime" and tj.run_time > 0:
            limit = int(math.ceil(tj.run_time))
        else:
            limit = q.default_time
        limit = max(1, limit)
        job = Job(id=tj.id, queue=qname, num_nodes=tj.num_nodes, gpus_per_node=tj.gpus_per_node, time_limit=limit,
                  submit_time=tj.submit, user=tj.user)
        if validate_job(job, config) is not None:
            if oversize == "clamp":
                job = _clamp(job, config, max_gpn, out.clamped)
            reason = validate_job(job, config)
            if reason is not None:
                out.dropped[reason.code] += 1
                continue
        duration = tj.run_time
        if duration > job.time_limit:
            duration = float(job.time_limit)
            out.clamped["run time > time limit"] += 1
        out.jobs.append(SimJob(job, duration, tj.trace_wait))
    out.jobs.sort(key=lambda s: (s.job.submit_time, s.job.id))
    return out


def _clamp(job: Job, config: ClusterConfig, max_gpn: int, clamped: Counter) -> Job:
    q = config.queues[job.queue]
    if job.gpus_per_node > max_gpn:
        job = replace(job, gpus_per_node=max_gpn)
        clamped["GPUs per node > largest node"] += 1
    fitting = config.nodes_with_at_least(job.gpus_per_node)
    if job.num_nodes > fitting:
        job = replace(job, num_nodes=fitting)
        clamped["nodes > cluster"] += 1
    if q.max_gpus_per_job is not None and job.total_gpus > q.max_gpus_per_job:
        gpn = min(job.gpus_per_node, q.max_gpus_per_job)
        job = replace(job, gpus_per_node=gpn, num_nodes=max(1, q.max_gpus_per_job // gpn))
        clamped["GPUs > queue max_gpus_per_job"] += 1
    if q.max_time is not None and job.time_limit > q.max_time:
        job = replace(job, time_limit=q.max_time)
        clamped["time limit > queue max_time"] += 1
    return job
