"""PNG plots of replays (matplotlib, Agg backend: no display needed).

  wait_cdf.png      cumulative distribution of wait time, one line per policy (+ production)
  utilization.png   GPU utilization over time (mean per bin), one line per policy
"""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def wait_cdf(series: dict[str, list[float]], path: Path, title: str = "") -> Path:
    """series: label -> ascending waits (s)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=90)
    for label, waits in series.items():
        if not waits:
            continue
        n = len(waits)
        xs = [max(w, 1.0) for w in waits]  # log axis: waits under 1 s drawn at 1 s
        ax.step(xs, [(k + 1) / n for k in range(n)], where="post", label=label,
                linestyle="--" if label.startswith("trace") else "-")
    ax.set_xscale("log")
    ax.set_xlabel("wait time (s, log; < 1 s drawn at 1 s)")
    ax.set_ylabel("fraction of jobs")
    ax.set_ylim(0, 1.0)
    return _finish(plt, fig, ax, path, title or "wait time CDF", "upper left")


def utilization(series: dict[str, tuple[list[float], list[float]]], path: Path, title: str = "",
                bin_label: str = "") -> Path:
    """series: label -> (bin start times in s, utilization fractions)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=90)
    for label, (xs, ys) in series.items():
        if xs:
            t0 = xs[0]
            ax.plot([(x - t0) / 86400 for x in xs], [y * 100 for y in ys], label=label, linewidth=0.9)
    ax.set_xlabel("days since the first submission")
    ax.set_ylabel(f"GPU utilization %{(' (' + bin_label + ' mean)') if bin_label else ''}")
    ax.set_ylim(0, 105)
    return _finish(plt, fig, ax, path, title or "utilization over time", "lower right")


def _finish(plt, fig, ax, path: Path, title: str, legend_loc: str) -> Path:
    ax.grid(True, alpha=0.3)
    ax.legend(loc=legend_loc)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
