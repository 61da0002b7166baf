"""Scheduling-quality figures of a replay, and of the production scheduler where the trace has them.

  wait             start - submit (s): mean, p50, p95 (linear interpolation between ranks)
  bounded slowdown max(1, (wait + run) / max(run, tau)), tau = 10 s (Feitelson's BSLD)
  utilization      GPU-seconds of work / (cluster GPUs x makespan)
  makespan         last end - first submit
  preemptions      stops counted by the simulator (0 while the core has no preemption)
  leaves           for every multi-node gang: leaf switches its placement spans, against the
                   lower bound for its size, ceil(nodes / nodes per leaf) (the largest leaf)
  per queue        jobs, wait mean / p95, bounded slowdown mean
  trace            where the trace records the production scheduler's waits (SWF field 3, openb
                   scheduled - creation), the same figures for those, on the same jobs
"""

from __future__ import annotations

import math
from typing import Iterable

from .engine import SimResult
from .traces import SimJob

TAU = 10.0


def percentile(sorted_values: list[float], q: float) -> float:
    """q in [0, 100] of an ascending list (linear interpolation, as numpy's default)."""
    if not sorted_values:
        return 0.0
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def bounded_slowdown(wait: float, run: float, tau: float = TAU) -> float:
    return max(1.0, (wait + run) / max(run, tau))


def _wait_stats(waits: list[float], bslds: list[float]) -> dict:
    waits = sorted(waits)
    n = len(waits)
    return {
        "jobs": n,
        "wait_mean": sum(waits) / n if n else 0.0,
        "wait_p50": percentile(waits, 50),
        "wait_p95": percentile(waits, 95),
        "bsld_mean": sum(bslds) / n if n else 0.0,
    }


def _schedule_stats(jobs: list[SimJob], starts: list[float | None], total_gpus: int) -> dict:
    """Wait, slowdown, utilization and makespan of the jobs with a start time."""
    waits, bslds, work = [], [], 0.0
    first = min((s.job.submit_time for s in jobs), default=0.0)
    last = first
    for s, start in zip(jobs, starts):
        if start is None:
            continue
        wait = start - s.job.submit_time
        waits.append(wait)
        bslds.append(bounded_slowdown(wait, s.duration))
        work += s.job.total_gpus * s.duration
        last = max(last, start + s.duration)
    out = _wait_stats(waits, bslds)
    makespan = last - first
    out["makespan"] = makespan
    out["utilization"] = work / (total_gpus * makespan) if makespan > 0 and total_gpus else 0.0
    return out


def summarize(result: SimResult) -> dict:
    """Every figure of one replay, JSON-ready."""
    config, jobs = result.config, result.jobs
    out = {"policy": result.policy}
    out.update(_schedule_stats(jobs, result.start, config.total_gpus))
    out["submitted"] = len(jobs)
    out["never_started"] = sum(1 for s in result.start if s is None) - len(result.cancelled)
    out["cancelled"] = len(result.cancelled)
    out["preemptions"] = result.preemptions
    out["cycles"] = result.cycles
    out["wall_seconds"] = result.wall_seconds
    out["schedule_seconds"] = result.schedule_seconds
    out["check_seconds"] = result.check_seconds
    out["gangs"] = gang_leaves(result)

    per_queue: dict[str, tuple[list, list]] = {}
    for s, start in zip(jobs, result.start):
        if start is not None:
            w = start - s.job.submit_time
            waits, bslds = per_queue.setdefault(s.job.queue, ([], []))
            waits.append(w)
            bslds.append(bounded_slowdown(w, s.duration))
    out["queues"] = {q: _wait_stats(w, b) for q, (w, b) in sorted(per_queue.items())}

    # Ours beside production's, on exactly the jobs whose production wait is known.
    known = [(s, st) for s, st in zip(jobs, result.start) if s.trace_wait is not None and st is not None]
    if known:
        ours = [st - s.job.submit_time for s, st in known]
        out["vs_trace"] = {
            "jobs": len(known),
            "wait_mean": sum(ours) / len(ours),
            "trace_wait_mean": sum(s.trace_wait for s, _ in known) / len(known),
        }
    return out


def trace_summary(jobs: list[SimJob], total_gpus: int) -> dict | None:
    """The production scheduler's figures (its recorded waits) for the same jobs, or None."""
    jobs = [s for s in jobs if s.trace_wait is not None]
    if not jobs:
        return None
    starts = [s.job.submit_time + s.trace_wait for s in jobs]
    out = {"policy": "trace (production)"}
    out.update(_schedule_stats(jobs, starts, total_gpus))
    out["submitted"] = len(jobs)
    return out


def gang_leaves(result: SimResult) -> dict:
    """Leaves spanned by multi-node gangs against ceil(nodes / nodes per leaf)."""
    per_leaf = max((len(m) for m in result.config.leaves.values()), default=1)
    gangs = at_bound = extra = spanned = 0
    for s, start, leaves in zip(result.jobs, result.start, result.leaves):
        n = s.job.num_nodes
        if start is None or n < 2:
            continue
        bound = -(-n // per_leaf)
        gangs += 1
        spanned += leaves
        extra += leaves - bound
        at_bound += leaves == bound
    return {
        "gangs": gangs,
        "at_lower_bound": at_bound / gangs if gangs else 1.0,
        "mean_leaves": spanned / gangs if gangs else 0.0,
        "mean_extra_leaves": extra / gangs if gangs else 0.0,
    }


def utilization_timeline(result: SimResult, bin_seconds: float) -> tuple[list[float], list[float]]:
    """Mean GPU utilization per time bin (bin starts, fractions), from the busy-GPU steps."""
    steps = result.busy
    total = result.config.total_gpus
    if not steps or not total:
        return [], []
    t0, t_end = steps[0][0], steps[-1][0]
    nbins = max(1, math.ceil((t_end - t0) / bin_seconds))
    area = [0.0] * nbins
    for (t, busy), (t_next, _) in zip(steps, steps[1:]):
        while t < t_next and busy:
            b = min(int((t - t0) // bin_seconds), nbins - 1)
            edge = min(t_next, t0 + (b + 1) * bin_seconds)
            if edge <= t:  # the last bin absorbs any rounding at the end
                edge = t_next
            area[b] += busy * (edge - t)
            t = edge
    starts = [t0 + b * bin_seconds for b in range(nbins)]
    return starts, [a / (total * bin_seconds) for a in area]


def wait_values(result: SimResult) -> list[float]:
    return sorted(st - s.job.submit_time for s, st in zip(result.jobs, result.start) if st is not None)


# --- text ------------------------------------------------------------------------------------


def human_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.1f}m"
    if s < 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


COLUMNS = ("policy", "jobs", "wait mean", "wait p50", "wait p95", "bsld", "util", "makespan", "preempt",
           "gangs min-leaf", "extra leaves", "wall")


def table_rows(summaries: Iterable[dict]) -> list[list[str]]:
    rows = []
    for m in summaries:
        g = m.get("gangs")
        rows.append([
            m["policy"], str(m["jobs"]), human_seconds(m["wait_mean"]), human_seconds(m["wait_p50"]),
            human_seconds(m["wait_p95"]), f"{m['bsld_mean']:.1f}", f"{m['utilization']:.1%}",
            human_seconds(m["makespan"]), str(m["preemptions"]) if "preemptions" in m else "-",
            f"{g['at_lower_bound']:.1%}" if g and g["gangs"] else "-",
            f"{g['mean_extra_leaves']:.2f}" if g and g["gangs"] else "-",
            f"{m['wall_seconds']:.1f}s" if "wall_seconds" in m else "-",
        ])
    return rows


def format_table(header: Iterable[str], rows: list[list[str]], markdown: bool = False) -> str:
    header = list(header)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)])
