"""``replications=N``: the same experiment with N seeds, and each metric's mean with its
95% confidence interval.

One run is one sample: with a mean think time of minutes, a 600 s run sees each actor
a few times, and a percentile moves from seed to seed. Replication ``k`` uses seed
``seed + k``; the summary keeps the first seed's keys as they were (so nothing that
reads a summary changes) and adds ``replications``, ``seeds`` and ``ci95``: for each
metric in :data:`REPLICATED`, the mean over the seeds and Student's t interval
(``mean ± t(0.975, N-1) · s / √N``), and the per-seed values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from experiments.runs.bench import metrics_of
from experiments.runs.build import RunSpec

REPLICATED = (
    "requests", "ok", "rejected", "timed_out", "failed_fraction", "activations",
    "activation_latency_s.p50", "activation_latency_s.p99",
    "request_latency_s.p50", "request_latency_s.p99",
    "worker_utilization", "control_plane_calls_per_s",
    "worker_seconds.provisioned", "worker_seconds.occupied", "worker_seconds.billed",
    "snapshot_bytes_moved.downloaded", "snapshot_bytes_moved.uploaded",
    "snapshot_bytes_stored.peak",
)  # fmt: skip


@dataclass(frozen=True)
class Interval:
    """A metric over replications: its mean and the 95% confidence interval."""

    mean: float
    low: float
    high: float
    values: tuple[float, ...]

    def as_json(self) -> dict[str, Any]:
        """For the summary."""
        return {"mean": self.mean, "low": self.low, "high": self.high, "values": list(self.values)}


def interval(values: list[float], confidence: float = 0.95) -> Interval:
    """Mean and Student's t interval of ``values`` (one value: an interval of width 0
    would claim certainty, so it is the value itself with infinite bounds)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    if n == 1:
        return Interval(mean, -math.inf, math.inf, tuple(values))
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, tuple(values))


def intervals(summaries: list[Mapping[str, Any]]) -> dict[str, Interval]:
    """For each replicated metric that every summary has, its interval."""
    flat = [metrics_of(dict(s)) for s in summaries]
    found = {}
    for metric in REPLICATED:
        values = [f.get(metric) for f in flat]
        if all(v is not None for v in values):
            found[metric] = interval([float(v) for v in values if v is not None])
    return found


def replicate(
    first: Mapping[str, Any], spec: RunSpec, run: Callable[[RunSpec], Mapping[str, Any]]
) -> dict[str, Any]:
    """The keys to add to ``first``, the summary of ``spec``: ``run`` (which returns a
    summary) plays seeds ``seed + 1 .. seed + replications - 1`` too."""
    others = [run(replace(spec, seed=spec.seed + k)) for k in range(1, spec.replications)]
    summaries = [first, *others]
    return {
        "replications": len(summaries),
        "seeds": [int(s["seed"]) for s in summaries],
        "ci95": {m: i.as_json() for m, i in intervals(summaries).items()},
    }


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "n/a"


def section(summary: Mapping[str, Any], plot: str | None = None) -> str:
    """The report's section for a replicated run (Markdown)."""
    ci = summary["ci95"]
    lines = [
        f"## Over {summary['replications']} seeds ({summary['seeds'][0]}..{summary['seeds'][-1]})",
        "",
        "Mean and 95% confidence interval (Student's t) of each metric over the seeds; the "
        "summary above is the first seed's.",
        "",
        "| metric | mean | 95% CI | per seed |",
        "|---|---|---|---|",
    ]
    for metric, entry in ci.items():
        values = ", ".join(_fmt(v) for v in entry["values"])
        lines.append(f"| {metric} | {_fmt(entry['mean'])} | {_fmt(entry['low'])} .. "
                     f"{_fmt(entry['high'])} | {values} |")  # fmt: skip
    if plot:
        lines += ["", f"![intervals]({plot})"]
    return "\n".join(lines)


def plot(summary: Mapping[str, Any], path: Any) -> None:
    """The latency metrics' means with their intervals, one point per seed beside them."""
    from experiments.analysis.report import plt, save_figure

    ci = summary["ci95"]
    names = [m for m in ci if m.endswith((".p50", ".p99"))]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for x, metric in enumerate(names):
        entry = ci[metric]
        low = entry["low"] if math.isfinite(entry["low"]) else entry["mean"]
        high = entry["high"] if math.isfinite(entry["high"]) else entry["mean"]
        ax.errorbar([x], [entry["mean"]], yerr=[[entry["mean"] - low], [high - entry["mean"]]],
                    fmt="o", capsize=6, color="C0")  # fmt: skip
        ax.plot([x + 0.15] * len(entry["values"]), entry["values"], ".", color="C1", alpha=0.6)
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.set_ylabel("seconds")
    ax.set_title(f"95% intervals over {summary['replications']} seeds (dots: each seed)")
    save_figure(fig, ax, path)
