"""Trace-driven simulation: replay real cluster traces through the real core.

    traces.py   loaders (SWF, Alibaba openb) and the documented mapping onto adsched jobs
    engine.py   the discrete-event simulator (virtual clock, simulated executor) around `schedule()`
    metrics.py  wait, bounded slowdown, utilization, makespan, leaves spanned, per-queue figures
    plots.py    PNG plots (matplotlib, Agg backend)

The simulator holds no policy of its own: policies are toggles of the one core's config.
"""

from .engine import POLICIES, SimResult, policy_config, simulate
from .traces import Trace, TraceError, Workload, load_trace, to_workload

__all__ = [
    "POLICIES", "SimResult", "Trace", "TraceError", "Workload",
    "load_trace", "policy_config", "simulate", "to_workload",
]
