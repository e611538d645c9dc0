"""``actormux workload-report workload=...``: a workload's statistics and plots, no simulation."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.analysis.report import format_summary, plt, save_figure, summary_rows
from experiments.app import CONF_DIR, build_or_exit
from workloads.plan import Plan
from workloads.stats import active_actors, actor_gaps, workload_stats

PLOTS = {
    "interarrival_cdf.png": "Inter-arrival times, all requests (CDF)",
    "actor_gaps_cdf.png": "Gaps between one actor's requests (CDF)",
    "active_actors.png": "Concurrently active actors and request rate",
    "requests_per_actor.png": "Requests per actor, by rank",
}


def _cdf(ax: Any, values: np.ndarray, label: str | None = None) -> None:
    if values.size:
        xs = np.sort(values)
        ax.step(xs, np.arange(1, xs.size + 1) / xs.size, where="post", label=label)
    ax.set_xscale("log")
    ax.set_ylabel("fraction <= x")
    ax.grid(True, alpha=0.3)


def write_workload_report(out_dir: Path, plan: Plan, active_window_s: float) -> dict[str, Any]:
    """Write stats JSON, plots and workload_report.md into ``out_dir``; return the stats."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = workload_stats(plan, active_window_s)
    (out_dir / "workload_stats.json").write_text(json.dumps(stats, indent=2) + "\n")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    _cdf(ax, np.diff(plan.times))
    ax.set_xlabel("seconds between consecutive requests (log scale)")
    ax.set_title(PLOTS["interarrival_cdf.png"])
    save_figure(fig, ax, out_dir / "interarrival_cdf.png")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    _cdf(ax, actor_gaps(plan))
    ax.axvline(active_window_s, color="grey", ls=":", lw=1)
    ax.set_xlabel(f"seconds (log scale); dotted: the {active_window_s:g} s activity window")
    ax.set_title(PLOTS["actor_gaps_cdf.png"])
    save_figure(fig, ax, out_dir / "actor_gaps_cdf.png")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    t, active = active_actors(plan, active_window_s)
    ax.plot(t, active, lw=1, label=f"actors active (request in the last {active_window_s:g} s)")
    per_s = np.bincount(np.floor(plan.times).astype(np.int64), minlength=t.size)[: t.size]
    ax.plot(t, per_s, lw=0.6, alpha=0.7, label="requests per second")
    ax.set_xlabel("time (s)")
    ax.set_title(PLOTS["active_actors.png"])
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    save_figure(fig, ax, out_dir / "active_actors.png")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    counts = np.sort(np.bincount(plan.actors, minlength=len(plan.population)))[::-1]
    ax.loglog(np.arange(1, counts.size + 1), np.maximum(counts, 0.5), marker=".", lw=0.5)
    ax.set_xlabel("actor rank")
    ax.set_ylabel("requests")
    ax.set_title(PLOTS["requests_per_actor.png"])
    ax.grid(True, alpha=0.3)
    save_figure(fig, ax, out_dir / "requests_per_actor.png")

    lines = [
        f"# Workload: {plan.name}",
        "",
        f"{stats['requests']:,} requests to {stats['actors']:,} actors over "
        f"{plan.duration_s:g} s (seed {plan.seed}). Inter-arrival CV "
        f"{_f(stats['interarrival_cv'])} (1 = Poisson), burstiness {_f(stats['burstiness'])}; "
        f"on average {stats['active_actors']['mean']:.1f} actors active at once "
        f"(peak {stats['active_actors']['max']:.0f}).",
        "",
        "| statistic | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in summary_rows(stats)),
        "",
    ]
    for name, title in PLOTS.items():
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    (out_dir / "workload_report.md").write_text("\n".join(lines))
    return stats


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def run_workload_report(cfg: DictConfig) -> None:
    """Materialise the configured workload for ``duration_s`` and report on it."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    spec = build_or_exit(cfg)
    window = float(cfg.get("policy", {}).get("suspension", {}).get("ttl_s", 5.0))
    workload = spec.workload
    if getattr(workload, "loop", "open") == "closed":
        # when a closed-loop call goes out depends on the answers: describe the scripts
        # as if every answer came at once (the open-loop plan of the same seed)
        workload = copy.copy(workload)
        workload.loop = "open"
        print("closed-loop sessions: their calls as if every answer were instant "
              "(workload.loop=open)", file=sys.stderr)  # fmt: skip
    plan = Plan.materialize(workload, spec.duration_s, spec.seed)
    stats = write_workload_report(out_dir, plan, active_window_s=window)
    print(f"workload {plan.name}:")
    print(format_summary(stats))
    print(f"report: {out_dir / 'workload_report.md'}")
