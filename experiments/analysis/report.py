"""Write a run's outputs: summary.json, Parquet records, PNG plots and report.md."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from experiments.runs.build import RunSpec
from experiments.runs.runner import RunOutput

TABLES = ("requests", "activations", "checkpoints", "samples")
PLOTS = {
    "activation_cdf.png": "Activation and request latency (CDF)",
    "workers_busy.png": "Workers busy over time",
    "actors_by_state.png": "Actors by state over time",
}


def write_run(
    out_dir: Path, spec: RunSpec, output: RunOutput, extra_sections: tuple[str, ...] = ()
) -> Path:
    """Write every output of a run into ``out_dir``; return the report's path.

    ``extra_sections`` (Markdown) go after the summary, e.g. a real run's checks.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(output.summary, indent=2) + "\n")
    frames = {name: pd.DataFrame(getattr(output.result, name)) for name in TABLES}
    for name, frame in frames.items():
        frame.to_parquet(out_dir / f"{name}.parquet", index=False)
    _plot_latency(out_dir / "activation_cdf.png", frames["activations"], frames["requests"])
    _plot_workers(out_dir / "workers_busy.png", frames["samples"], spec)
    _plot_states(out_dir / "actors_by_state.png", frames["samples"], spec)
    report = out_dir / "report.md"
    report.write_text(render_report(spec, output.summary, extra_sections))
    return report


def save_figure(fig: Any, ax: Any, path: Path) -> None:
    """Grid, tight layout, write ``path`` (PNG) and free the figure."""
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ecdf(ax: Any, values: np.ndarray, label: str) -> None:
    if values.size == 0:
        return
    xs = np.sort(values)
    ax.step(xs, np.arange(1, xs.size + 1) / xs.size, where="post", label=label)


def _plot_latency(path: Path, activations: pd.DataFrame, requests: pd.DataFrame) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(activations):
        cold = activations["cold"].to_numpy(bool)
        _ecdf(ax, activations["total_s"].to_numpy()[~cold], "activation from snapshot")
        _ecdf(ax, activations["total_s"].to_numpy()[cold], "cold start")
    ok = requests["outcome"] == "ok" if len(requests) else []
    if len(requests):
        _ecdf(ax, requests.loc[ok, "total_s"].to_numpy(), "request (ok), end to end")
    ax.set_xscale("log")
    ax.set_xlabel("seconds (log scale)")
    ax.set_ylabel("fraction <= x")
    ax.set_title(PLOTS[path.name])
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    save_figure(fig, ax, path)


def _plot_workers(path: Path, samples: pd.DataFrame, spec: RunSpec) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if len(samples):
        t = samples["t_s"].to_numpy()
        ax.plot(t, samples["workers_busy"], label="workers busy (hosting an actor)", lw=1)
        ax.plot(t, samples["workers"], label="workers", color="black", lw=1, ls="--")
        ax.plot(t, samples["waiting_actors"], label="actors queued for a worker", lw=1)
    ax.axvline(spec.duration_s, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("simulated time (s); dotted: arrivals end")
    ax.set_title(PLOTS[path.name])
    ax.legend(loc="upper right", fontsize=8)
    save_figure(fig, ax, path)


def _plot_states(path: Path, samples: pd.DataFrame, spec: RunSpec) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if len(samples):
        t = samples["t_s"].to_numpy()
        states = ["actors_running", "actors_resuming", "actors_suspending"]
        ax.stackplot(
            t,
            *(samples[s].to_numpy() for s in states),
            labels=[s.removeprefix("actors_") for s in states],
        )
        suspended = samples["actors_suspended"].to_numpy()
        ax.set_title(
            f"{PLOTS[path.name]} (the rest, {suspended.min()}-{suspended.max()}, suspended)"
        )
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("actors")
    ax.legend(loc="upper right", fontsize=8)
    save_figure(fig, ax, path)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The summary as (metric, value) rows for a table, latency percentiles expanded."""
    rows = []
    for key, value in summary.items():
        if isinstance(value, Mapping):
            inner = ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
            rows.append((key, inner))
        else:
            rows.append((key, _fmt(value)))
    return rows


COMPARED = (
    "requests", "ok", "rejected", "timed_out", "activations", "activation_latency_s",
    "request_latency_s", "worker_utilization", "control_plane_calls_per_s",
)  # fmt: skip


def side_by_side(left: Mapping[str, Any], right: Mapping[str, Any], names: tuple[str, str]) -> str:
    """A Markdown table comparing two summaries on the metrics that both have."""
    lines = [f"| metric | {names[0]} | {names[1]} |", "|---|---|---|"]
    for key in COMPARED:
        a, b = left.get(key), right.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for q in ("p50", "p99"):
                lines.append(f"| {key} {q} | {_fmt(a.get(q))} | {_fmt(b.get(q))} |")
        else:
            lines.append(f"| {key} | {_fmt(a)} | {_fmt(b)} |")
    return "\n".join(lines)


def format_summary(summary: Mapping[str, Any]) -> str:
    """A plain-text table of the summary for the terminal."""
    rows = summary_rows(summary)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def render_report(
    spec: RunSpec, summary: Mapping[str, Any], extra_sections: tuple[str, ...] = ()
) -> str:
    """report.md: the question, the setup, the summary table, extra sections, the plots."""
    choices = spec.choices
    lines = [f"# {spec.experiment}", ""]
    if spec.question:
        lines += [f"**Question.** {spec.question}", ""]
    lines += [f"> **Warning.** {w}\n" for w in spec.warnings]
    requests = summary["requests"] or 1
    lines += [
        "## Answer in one line",
        "",
        f"{summary['actors']} actors on {summary['workers']} workers "
        f"({_fmt(summary['oversubscription'])}x oversubscribed): "
        f"{100 * summary['ok'] / requests:.2f}% of {summary['requests']:,} requests ok, "
        f"{100 * summary['rejected'] / requests:.2f}% rejected, "
        f"{100 * summary['timed_out'] / requests:.2f}% timed out; activation p50 "
        f"{_fmt(summary['activation_latency_s']['p50'])} s, p99 "
        f"{_fmt(summary['activation_latency_s']['p99'])} s.",
        "",
        "## Setup",
        "",
        "| setting | value |",
        "|---|---|",
        f"| backend | {spec.backend} |",
        f"| seed | {spec.seed} |",
        f"| duration | {_fmt(spec.duration_s)} s of arrivals, then drained |",
        f"| cluster | {spec.workers} workers on {spec.nodes} node(s) |",
        f"| workload | {spec.workload.name}, {summary['actors']:,} actors |",
        f"| latency profile | {choices.get('latency', 'custom')} |",
        f"| policy preset | {choices.get('policy', '-')} |",
    ]
    for kind, name in spec.policy_names.items():
        lines.append(f"| {kind} | {name} |")
    lines += [
        f"| router | {choices.get('router', '-')}: resume on every request = "
        f"{spec.resume_on_every_request}, timeout {spec.router_timeout_s} s |",
        "",
        "## Summary",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(summary)]
    for section in extra_sections:
        lines += ["", section.rstrip()]
    lines += ["", "## Plots", ""]
    for name, title in PLOTS.items():
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    lines += [
        "## Files",
        "",
        "`summary.json` (the numbers above), `requests.parquet`, `activations.parquet`,",
        "`checkpoints.parquet`, `samples.parquet` (schema: `control/metrics.py`),",
        "`.hydra/config.yaml` (the full config; rerun with the overrides in",
        "`.hydra/overrides.yaml`).",
        "",
    ]
    return "\n".join(lines)
