"""Prometheus text exposition of the standalone scheduler (`adsched metrics`, `adsched run
--metrics-file PATH` for node_exporter's textfile collector).

From the store (what any process sees):
  adsched_jobs{queue,state}                    gauge: pending and running jobs
  adsched_jobs_finished_total{queue,state}     counter: jobs ended COMPLETED/FAILED/CANCELLED/TIMEOUT
  adsched_pending_jobs{queue,reason}           gauge: pending jobs by the reason's kind (Resources, ...)
  adsched_gpus{leaf,state}                     gauge: busy (running ranks), free (idle on nodes
                                               that are up), held (idle but out of service: node
                                               drained or down)
  adsched_nodes{state}                         gauge: nodes up, drain, down
  adsched_preemptions_total                    counter: preemptions decided (preempt events)
From the daemon (STATE/cycle-stats.json, written after every cycle):
  adsched_cycle_duration_seconds               histogram: wall time of one daemon cycle
  adsched_last_cycle_timestamp_seconds         gauge: when the last cycle ran (alert when stale)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from adsched.errors import InvalidRequest

from .store import ACTIVE_STATES, FINAL_STATES, PENDING, Store

STATS_NAME = "cycle-stats.json"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class CycleStats:
    """The cycle-duration histogram, kept across daemon restarts in STATE/cycle-stats.json."""

    def __init__(self, counts: list[int] | None = None, total: float = 0.0, count: int = 0, last: float = 0.0):
        self.counts = counts if counts is not None and len(counts) == len(BUCKETS) else [0] * len(BUCKETS)
        self.total, self.count, self.last = total, count, last

    def observe(self, seconds: float, at: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
        self.total += seconds
        self.count += 1
        self.last = at

    @classmethod
    def load(cls, state_dir: str | Path) -> "CycleStats":
        try:
            data = json.loads((Path(state_dir) / STATS_NAME).read_text())
            return cls(list(data["counts"]), float(data["sum"]), int(data["count"]), float(data["last"]))
        except (OSError, ValueError, KeyError, TypeError):
            return cls()  # no daemon has run yet (or the file is not ours): an empty histogram

    def save(self, state_dir: str | Path) -> None:
        write_atomically(Path(state_dir) / STATS_NAME,
                         json.dumps({"counts": self.counts, "sum": self.total, "count": self.count, "last": self.last}))


def write_atomically(path: str | Path, text: str) -> None:
    """Readers (the textfile collector) see the old file or the new one, never half of one."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as e:
        raise InvalidRequest(f"{path}: cannot write there: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _labels(**labels) -> str:
    def esc(v) -> str:
        return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}" if labels else ""


class _Exposition:
    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: list[tuple[dict, float]],
               suffix: str = "") -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.lines += [f"{name}{suffix}{_labels(**labels)} {_num(value)}" for labels, value in samples]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def exposition(store: Store, stats: CycleStats | None = None) -> str:
    """Every metric above, in the Prometheus text format (version 0.0.4)."""
    config = store.config
    stats = stats if stats is not None else CycleStats.load(store.state_dir)
    out = _Exposition()

    counts = {(q, s): n for q, s, n in store.conn.execute(
        "SELECT queue, state, COUNT(*) FROM jobs GROUP BY queue, state")}
    queues = sorted(set(config.queues) | {q for q, _ in counts})
    out.family("adsched_jobs", "gauge", "Jobs pending or running, by queue and state.",
               [({"queue": q, "state": s.lower()}, counts.get((q, s), 0)) for q in queues for s in ACTIVE_STATES])
    out.family("adsched_jobs_finished_total", "counter", "Jobs that ended, by queue and final state.",
               [({"queue": q, "state": s.lower()}, counts.get((q, s), 0)) for q in queues for s in FINAL_STATES])

    reasons: dict[tuple[str, str], int] = {}
    for q, reason in store.conn.execute("SELECT queue, reason FROM jobs WHERE state = ?", (PENDING,)):
        kind = (reason or "None").split(":", 1)[0].split(" ", 1)[0] or "None"
        reasons[q, kind] = reasons.get((q, kind), 0) + 1
    out.family("adsched_pending_jobs", "gauge", "Pending jobs by queue and the kind of reason they wait.",
               [({"queue": q, "reason": r}, n) for (q, r), n in sorted(reasons.items())])

    gpus: dict[str, dict[str, int]] = {leaf: {"busy": 0, "free": 0, "held": 0} for leaf in config.leaves}
    node_states: dict[str, int] = {"up": 0, "drain": 0, "down": 0}
    for n in store.nodes():
        leaf = gpus.setdefault(n["leaf"], {"busy": 0, "free": 0, "held": 0})
        busy = min(n["gpus"], n["gpus_used"])
        leaf["busy"] += busy
        leaf["free" if n["state"] == "up" else "held"] += n["gpus"] - busy
        node_states[n["state"]] = node_states.get(n["state"], 0) + 1
    out.family("adsched_gpus", "gauge", "GPUs per leaf switch: busy, free (schedulable) or held (node drained "
               "or down).", [({"leaf": leaf, "state": s}, v) for leaf in sorted(gpus) for s, v in gpus[leaf].items()])
    out.family("adsched_nodes", "gauge", "Nodes by state.", [({"state": s}, v) for s, v in sorted(node_states.items())])

    preemptions = store.conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'preempt'").fetchone()[0]
    out.family("adsched_preemptions_total", "counter", "Preemptions decided (victims chosen).", [({}, preemptions)])

    name = "adsched_cycle_duration_seconds"
    out.lines += [f"# HELP {name} Wall time of one daemon cycle (reap, schedule, persist, launch).",
                  f"# TYPE {name} histogram"]
    out.lines += [f'{name}_bucket{{le="{b}"}} {c}' for b, c in zip(BUCKETS, stats.counts)]
    out.lines += [f'{name}_bucket{{le="+Inf"}} {stats.count}', f"{name}_sum {_num(stats.total)}",
                  f"{name}_count {stats.count}"]
    out.family("adsched_last_cycle_timestamp_seconds", "gauge",
               "When the daemon's last cycle ran (seconds since the epoch; 0: never).", [({}, stats.last)])
    return out.text()


class MetricsWriter:
    """What `adsched run` calls after every cycle: the histogram, and the textfile if asked for."""

    def __init__(self, store: Store, path: str | None):
        self.store, self.path = store, path
        self.stats = CycleStats.load(store.state_dir)
        if path:  # a path that cannot be written is said before the daemon starts, not after a cycle
            write_atomically(path, exposition(store, self.stats))

    def after_cycle(self, started_at: float) -> None:
        now = time.time()
        self.stats.observe(max(0.0, now - started_at), now)
        self.stats.save(self.store.state_dir)
        if self.path:
            write_atomically(self.path, exposition(self.store, self.stats))

