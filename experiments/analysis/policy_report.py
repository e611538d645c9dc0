"""The policy evaluation's report: per workload and scale, each policy's metrics with
their 95% intervals, the Pareto front, and the pick per goal."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.analysis.report import plt

GiB = float(1 << 30)
OBJECTIVES = ("failed_fraction", "activation_p99_s", "worker_s_billed")  # all minimised


def pareto_front(group: pd.DataFrame) -> pd.Series:
    """True for the rows no other row beats on every objective (and strictly on one)."""
    values = group[list(OBJECTIVES)].fillna(math.inf).to_numpy()
    front = []
    for i, row in enumerate(values):
        dominated = any(
            (other <= row).all() and (other < row).any() for j, other in enumerate(values) if j != i
        )
        front.append(not dominated)
    return pd.Series(front, index=group.index)


def _pick(group: pd.DataFrame, key: Callable[[pd.DataFrame], pd.Series]) -> str:
    if group.empty:
        return "none"
    return str(group.loc[key(group).idxmin(), "policy"])


def picks(group: pd.DataFrame, slo_p99_s: float, slo_failed: float) -> dict[str, str]:
    """The policy to pick per goal, in one workload at one scale."""
    reliable = group[group["failed_fraction"] <= slo_failed]
    meets = reliable[reliable["activation_p99_s"] <= slo_p99_s]
    moved = group["bytes_downloaded"].fillna(0) + group["bytes_uploaded"].fillna(0)
    return {
        "fewest failed requests": _pick(
            group, lambda g: g["failed_fraction"] + 1e-12 * g["worker_s_billed"]
        ),
        "fastest activations (of the reliable)": _pick(
            reliable if not reliable.empty else group, lambda g: g["activation_p99_s"]
        ),
        "cheapest meeting the SLO": _pick(meets, lambda g: g["worker_s_billed"]),
        "least snapshot traffic (of the reliable)": _pick(
            reliable if not reliable.empty else group, lambda g: moved.loc[g.index]
        ),
    }


def _ci(row: pd.Series, column: str, scale: float = 1.0, digits: int = 3) -> str:
    mean = row[column]
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    low, high = row[f"{column}_low"], row[f"{column}_high"]
    text = f"{mean * scale:.{digits}g}"
    if low is not None and math.isfinite(low) and math.isfinite(high):
        low = max(low, 0.0)  # every metric here is >= 0
        text += f" [{low * scale:.{digits}g}, {high * scale:.{digits}g}]"
    return text


def markdown(rows: pd.DataFrame, *, reference: str, slo_p99_s: float, slo_failed: float,
             question: str, plot: str | None) -> str:  # fmt: skip
    """The report (Markdown)."""
    replications = int(rows["replications"].max())
    lines = [
        "# Policy evaluation",
        "",
        question,
        "",
        f"Simulated; every cell over {replications} seeds: mean [95% Student-t interval, "
        "cut at 0]. Cost is "
        "billed worker-seconds (the pool; pod-per-actor: the pods while they exist). Pareto: "
        "no other row has fewer failed requests, a lower activation p99 and a lower cost at "
        f"once. SLO: activation p99 <= {slo_p99_s} s and at most {slo_failed:.1%} failed. "
        f"Reference row: `{reference}`.",
        "",
        "## Picks",
        "",
    ]
    groups = list(rows.groupby(["workload", "actors"], sort=False))
    goals: dict[str, list[str]] = {}
    for (_workload, _actors), group in groups:
        for goal, policy in picks(group, slo_p99_s, slo_failed).items():
            goals.setdefault(goal, []).append(policy)
    header = [f"{w} @ {a:,}" for (w, a), _ in groups]
    lines += ["| goal | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    lines += [f"| {goal} | " + " | ".join(picked) + " |" for goal, picked in goals.items()]
    if plot:
        lines += ["", f"![cost against activation p99]({plot})"]
    for (workload, actors), group in groups:
        front = pareto_front(group)
        workers = int(group["workers"].iloc[0])
        lines += [
            "",
            f"## {workload}, {actors:,} actors ({workers} workers in a pool)",
            "",
            "| policy | failed % | activation p99 s | request p99 s | worker-s billed | "
            "GiB moved | GiB stored (peak) | activations | Pareto |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for index, row in group.iterrows():
            moved = (row["bytes_downloaded"] or 0) + (row["bytes_uploaded"] or 0)
            stored = row["bytes_stored_peak"]
            name = f"**{row['policy']}** (ref.)" if row["policy"] == reference else row["policy"]
            lines.append(
                f"| {name} | {_ci(row, 'failed_fraction', 100)} | "
                f"{_ci(row, 'activation_p99_s')} | {_ci(row, 'request_p99_s')} | "
                f"{_ci(row, 'worker_s_billed')} | {moved / GiB:.3g} | "
                f"{'n/a' if stored is None or math.isnan(stored) else f'{stored / GiB:.3g}'} | "
                f"{row['activations']:.0f} | {'yes' if front.loc[index] else ''} |"
            )
    return "\n".join(lines) + "\n"


def plot(rows: pd.DataFrame, path: Path, slo_failed: float) -> None:
    """Cost against activation p99 per workload (rows) and scale (columns); green: at
    most the SLO's failed fraction, red: more."""
    workloads = list(dict.fromkeys(rows["workload"]))
    scales = sorted(set(rows["actors"]))
    fig, axes = plt.subplots(len(workloads), len(scales), squeeze=False,
                             figsize=(4.2 * len(scales), 3.2 * len(workloads)))  # fmt: skip
    for i, workload in enumerate(workloads):
        for j, actors in enumerate(scales):
            ax = axes[i][j]
            group = rows[(rows["workload"] == workload) & (rows["actors"] == actors)]
            for _, row in group.iterrows():
                ok = row["failed_fraction"] <= slo_failed
                ax.scatter(row["worker_s_billed"], row["activation_p99_s"],
                           color="C2" if ok else "C3", s=18)  # fmt: skip
                ax.annotate(row["policy"], (row["worker_s_billed"], row["activation_p99_s"]),
                            fontsize=6, xytext=(2, 2), textcoords="offset points")  # fmt: skip
            ax.set_xscale("log")
            ax.set_title(f"{workload}, {actors:,} actors", fontsize=8)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel("activation p99 (s)", fontsize=7)
            if i == len(workloads) - 1:
                ax.set_xlabel("worker-seconds billed", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(rows: list[dict[str, Any]], out_dir: Path, *, reference: str, slo_p99_s: float,
          slo_failed: float, question: str, workloads: list[str],
          policies: list[str]) -> Path:  # fmt: skip
    """``evaluation.parquet``, ``pareto.png`` and ``report.md`` in ``out_dir``; rows in
    the order of ``workloads``, actors, ``policies``."""
    frame = pd.DataFrame(rows)
    first_seen = {
        "workload": {v: i for i, v in enumerate(workloads)},
        "policy": {v: i for i, v in enumerate(policies)},
    }
    frame = frame.sort_values(
        ["workload", "actors", "policy"],
        key=lambda c: c.map(first_seen[str(c.name)]) if c.name in first_seen else c,
    ).reset_index(drop=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out_dir / "evaluation.parquet")
    plot(frame, out_dir / "pareto.png", slo_failed)
    report = out_dir / "report.md"
    text = markdown(frame, reference=reference, slo_p99_s=slo_p99_s, slo_failed=slo_failed,
                    question=question, plot="pareto.png")  # fmt: skip
    report.write_text(text)
    return report
