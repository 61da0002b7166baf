"""`adsched sim TRACE`: replay a real cluster trace through the core, policies side by side.

    adsched sim ../shared/traces/KTH-SP2-1996-2.1-cln.swf.gz
    adsched sim TRACE --cluster X.toml --policy fifo,backfill-flat,adsched [--limit N] [--json] [--plots DIR]

The command object is `sim`; the main CLI registers it with `main.add_command(sim)`.
"""

from __future__ import annotations

import json
import os
import queue as queue_mod
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click

from adsched.core.config import ClusterConfig, ConfigError

from adsched.configfile import load_config
from adsched.sim import metrics
from adsched.sim.engine import POLICIES, simulate
from adsched.sim.traces import DEFAULT_QOS_QUEUES, SwfMapping, TraceError, Workload, load_trace, openb_cluster, to_workload

KTH100 = Path(__file__).resolve().parent.parent / "sched" / "examples" / "kth100.toml"
try:  # installed: the examples package holds the TOML files
    import adsched.examples as _examples

    KTH100 = Path(_examples.__file__).resolve().parent / "kth100.toml"
except ImportError:  # pragma: no cover
    pass


class InputError(click.ClickException):
    """A bad trace, cluster or option value: one line on stderr, exit 2 (like a usage error)."""

    exit_code = 2


def _parse_map(text: str) -> tuple[dict[int, str], dict[str, str]]:
    """'0=debug,1=batch,LS=prod' -> ({0: 'debug', 1: 'batch'}, {'LS': 'prod'}): SWF ids, openb QoS."""
    swf, qos = {}, {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (x.strip() for x in item.partition("="))
        if not sep or not key or not value:
            raise InputError(f"--queue-map: expected KEY=QUEUE items separated by commas, got {item!r}")
        if key.lstrip("-").isdigit():
            swf[int(key)] = value
        else:
            qos[key] = value
    return swf, qos


def _cluster_for(trace, cluster_path: Path | None, nodes_csv: Path | None) -> tuple[ClusterConfig, str]:
    if cluster_path is not None:
        try:
            return load_config(cluster_path), str(cluster_path)
        except ConfigError as e:
            raise InputError(str(e)) from None
    if trace.format == "openb":
        nodes_csv = nodes_csv or trace.path.parent / "openb_node_list_gpu_node.csv"
        try:
            return openb_cluster(nodes_csv), f"generated from {nodes_csv.name}"
        except (TraceError, ConfigError) as e:
            raise InputError(f"{e} (pass --nodes NODE_LIST.csv or --cluster X.toml)") from None
    return load_config(KTH100), "kth100.toml (default for SWF)"


def _run_one(args) -> dict:
    """One policy's replay; returns only what the report needs (cheap to send between processes)."""
    workload, config, policy, check, progress_q = args
    progress = (lambda n: progress_q.put(n)) if progress_q is not None else None
    res = simulate(workload, config, policy, check_invariants=check, progress=progress)
    span = max((t for t, _ in res.busy), default=0.0) - min((t for t, _ in res.busy), default=0.0)
    # the shortest of hour / 6 h / day / week that keeps the plot under 400 points
    bin_s = next((b for b in (3600.0, 21600.0, 86400.0) if span / b <= 400), 604800.0)
    return {
        "summary": metrics.summarize(res),
        "waits": metrics.wait_values(res),
        "timeline": metrics.utilization_timeline(res, bin_s),
        "bin_seconds": bin_s,
    }


_WORKER_QUEUE = None


def _init_worker(q) -> None:  # pragma: no cover - runs in the worker processes
    global _WORKER_QUEUE
    _WORKER_QUEUE = q


def _run_in_worker(args) -> dict:  # pragma: no cover - runs in the worker processes
    return _run_one((*args, _WORKER_QUEUE))


def replay(workload: Workload, config: ClusterConfig, policies: list[str], check: bool, workers: int,
           bar=None) -> list[dict]:
    """Replay each policy (in `workers` processes when > 1); results in `policies` order."""
    if workers <= 1 or len(policies) <= 1:
        out = []
        for p in policies:
            out.append(_run_one((workload, config, p, check, None if bar is None else _BarQueue(bar))))
        return out
    import multiprocessing as mp

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    q = ctx.Queue() if bar is not None else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(q,)) as pool:
        futures = [pool.submit(_run_in_worker, (workload, config, p, check)) for p in policies]
        while bar is not None and not all(f.done() for f in futures):
            try:
                bar.update(q.get(timeout=0.2))
            except queue_mod.Empty:
                pass
        return [f.result() for f in futures]


class _BarQueue:
    def __init__(self, bar):
        self.bar = bar

    def put(self, n: int) -> None:
        self.bar.update(n)


@click.command("sim")
@click.argument("trace", type=click.Path(path_type=Path))
@click.option("--cluster", "cluster_path", type=click.Path(path_type=Path), default=None,
              help="Cluster TOML. Default: kth100.toml for SWF logs; for openb, generated from the node list.")
@click.option("--nodes", "nodes_csv", type=click.Path(path_type=Path), default=None,
              help="openb node list CSV (default: openb_node_list_gpu_node.csv beside the pod list).")
# conservative (depth "all") costs 16-40 ms a cycle on KTH: asked for by name, not run by default.
@click.option("--policy", "policy_list", default=",".join(p for p in POLICIES if p != "conservative"), show_default=True,
              help=f"Comma-separated policies: {', '.join(POLICIES)}.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Replay only the first N jobs of the trace.")
@click.option("--json", "as_json", is_flag=True, help="Print every figure as JSON instead of the table.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write wait_cdf.png and utilization.png into this directory (no plots without it).")
@click.option("--procs-as", type=click.Choice(["auto", "node", "gpu"]), default="auto", show_default=True,
              help="SWF processors as whole nodes (P -> P nodes x G GPUs) or as GPUs packed G per node; "
                   "auto: node when the header says MaxProcs == MaxNodes.")
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=8, show_default=True,
              help="G in the SWF processor mapping.")
@click.option("--queue-map", default="", help="SWF queue id (or openb QoS) -> queue, e.g. '0=debug,1=batch'. "
                                              "Unmapped: the cluster's default queue.")
@click.option("--oversize", type=click.Choice(["clamp", "drop"]), default="clamp", show_default=True,
              help="Jobs that can never fit the cluster: clamp them to it, or drop them (counted either way).")
@click.option("--missing-limit", type=click.Choice(["runtime", "queue"]), default="runtime", show_default=True,
              help="Time limit of a job whose trace has none: its run time, or the queue's default_time.")
@click.option("--check/--no-check", default=False, show_default=True,
              help="Run the invariants checker on every cycle (slower).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Policies replayed in parallel processes (default: one per policy, at most the CPU count).")
def sim(trace, cluster_path, nodes_csv, policy_list, limit, as_json, plots_dir, procs_as, gpus_per_node, queue_map,
        oversize, missing_limit, check, workers):
    """Replay TRACE (an SWF log, plain or .gz, or an Alibaba openb pod list CSV) through the
    scheduler core under each policy and compare wait, slowdown, utilization and topology.
    Plots only with --plots DIR."""
    policies = [p.strip() for p in policy_list.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise InputError(f"--policy: unknown policy {', '.join(unknown) or '(none)'} (known: {', '.join(POLICIES)})")
    try:
        swf_queues, qos = _parse_map(queue_map)
        mapping = SwfMapping(procs_as=procs_as, gpus_per_node=gpus_per_node, queues=swf_queues)
        qos = {**DEFAULT_QOS_QUEUES, **qos}
        tr = load_trace(trace, limit=limit, mapping=mapping, qos_queues=qos)
    except TraceError as e:
        raise InputError(str(e)) from None
    config, cluster_desc = _cluster_for(tr, cluster_path, nodes_csv)
    workload = to_workload(tr, config, oversize=oversize, missing_limit=missing_limit)
    if not workload.jobs:
        raise InputError(f"{trace}: no job fits cluster {config.name} (dropped: {dict(workload.dropped)})")

    workers = workers or max(1, min(len(policies), os.cpu_count() or 1))
    show_bar = not as_json and sys.stderr.isatty()
    if show_bar:
        with click.progressbar(length=len(workload.jobs) * len(policies), label="replaying", file=sys.stderr) as bar:
            results = replay(workload, config, policies, check, workers, bar)
    else:
        results = replay(workload, config, policies, check, workers)

    production = metrics.trace_summary(workload.jobs, config.total_gpus)
    report = {
        "trace": {"path": str(trace), "format": tr.format, "jobs_read": len(tr.jobs), "header": tr.header},
        "cluster": {"name": config.name, "source": cluster_desc, "nodes": len(config.nodes),
                    "gpus": config.total_gpus, "leaves": len(config.leaves)},
        "loader": {
            "bad_lines": len(tr.bad_lines),
            "first_bad_lines": [f"line {n}: {msg}" for n, msg in tr.bad_lines[:20]],
            "skipped": dict(tr.skipped), "notes": dict(tr.notes),
            "clamped": dict(workload.clamped), "dropped": dict(workload.dropped),
            "jobs_replayed": len(workload.jobs),
        },
        "policies": [r["summary"] for r in results],
        "production": production,
    }
    if plots_dir is not None:
        report["plots"] = [str(p) for p in _plots(plots_dir, tr.name, results, production, workload)]
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=False))
        return
    _print_report(report, tr, results)


def _plots(plots_dir: Path, title: str, results: list[dict], production: dict | None, workload: Workload):
    from adsched.sim import plots

    try:
        plots_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise click.ClickException(f"cannot create plot directory {plots_dir}: {e.strerror or e}") from None
    waits = {r["summary"]["policy"]: r["waits"] for r in results}
    if production is not None:
        waits["trace (production)"] = sorted(s.trace_wait for s in workload.jobs if s.trace_wait is not None)
    hours = results[0]["bin_seconds"] / 3600
    return [
        plots.wait_cdf(waits, plots_dir / "wait_cdf.png", f"{title}: wait time CDF"),
        plots.utilization({r["summary"]["policy"]: r["timeline"] for r in results}, plots_dir / "utilization.png",
                          f"{title}: GPU utilization", f"{hours:g} h"),
    ]


def _print_report(report: dict, tr, results: list[dict]) -> None:
    c, ld = report["cluster"], report["loader"]
    mode = tr.header.get("adsched.procs_as")
    how = {"node": "1 processor -> 1 node", "gpu": "processors -> GPUs, packed per node"}.get(mode, "")
    click.echo(f"trace    {tr.name}: {tr.format}, {len(tr.jobs):,} jobs read" + (f" ({how})" if how else ""))
    click.echo(f"cluster  {c['name']} ({c['source']}): {c['nodes']} nodes, {c['gpus']} GPUs, {c['leaves']} leaves")
    extra = []
    if ld["bad_lines"]:
        extra.append(f"{ld['bad_lines']} bad lines (first: {ld['first_bad_lines'][0]})")
    for key in ("skipped", "notes", "clamped", "dropped"):
        if ld[key]:
            extra.append(f"{key}: " + ", ".join(f"{n:,} {why}" for why, n in ld[key].items()))
    for line in extra:
        click.echo(f"         {line}")
    click.echo("")
    rows = metrics.table_rows(report["policies"])
    if report["production"]:
        rows += metrics.table_rows([report["production"]])
    click.echo(metrics.format_table(metrics.COLUMNS, rows))
    queues = report["policies"][0]["queues"]
    if len(queues) > 1:
        click.echo("\nper queue (jobs, wait mean / p95, bsld):")
        for s in report["policies"]:
            parts = [f"{q} {v['jobs']} {metrics.human_seconds(v['wait_mean'])}/{metrics.human_seconds(v['wait_p95'])} "
                     f"{v['bsld_mean']:.1f}" for q, v in s["queues"].items()]
            click.echo(f"  {s['policy']:<14} " + "; ".join(parts))
    never = [f"{s['policy']} {s['never_started']}" for s in report["policies"] if s["never_started"]]
    if never:
        click.echo(f"\nnever started (still pending at the end): {', '.join(never)}")
    for p in report.get("plots", []):
        click.echo(f"plot     {p}")
