"""``actormux collect SWEEP_DIR``: one table and two plots from a Hydra multirun sweep.

Every run directory under ``SWEEP_DIR`` holding a ``summary.json`` becomes one row:
the summary (nested percentiles flattened to ``activation_latency_s.p99``), the run's
overrides and config-group choices, and a ``policy`` label (placement/suspension
[TTL]/admission). Written to ``SWEEP_DIR/sweep.parquet``, with
``p99_activation_vs_oversubscription.png`` (each policy's knee) and
``failed_vs_workers.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from experiments.analysis.report import plt, save_figure


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def policy_label(choices: dict[str, Any], config: dict[str, Any] | None) -> str:
    """``placement/suspension[(TTL)]/admission`` of one run."""
    suspension = str(choices.get("policy/suspension", "?"))
    ttl = ((config or {}).get("policy", {}).get("suspension", {}) or {}).get("ttl_s")
    if ttl is not None:
        suspension += f"({ttl:g}s)"
    placement = choices.get("policy/placement", "?")
    admission = choices.get("policy/admission", "?")
    return f"{placement}/{suspension}/{admission}"


def collect(sweep_dir: Path) -> pd.DataFrame:
    """All runs under ``sweep_dir`` as one DataFrame (one row per run)."""
    rows = []
    for summary_path in sorted(sweep_dir.rglob("summary.json")):
        run = summary_path.parent
        if run.name == "calibration_run":
            continue
        row = _flatten(json.loads(summary_path.read_text()))
        hydra_cfg = _yaml(run / ".hydra" / "hydra.yaml") or {}
        choices = hydra_cfg.get("hydra", {}).get("runtime", {}).get("choices", {}) or {}
        config = _yaml(run / ".hydra" / "config.yaml")
        for override in _yaml(run / ".hydra" / "overrides.yaml") or []:
            key, _, value = str(override).partition("=")
            row[f"override.{key.lstrip('+~')}"] = value
        row.update({f"choice.{k}": v for k, v in choices.items()})
        row["policy"] = policy_label(choices, config)
        requests = row.get("requests") or 0
        row["failed_fraction"] = (
            (row["rejected"] + row["timed_out"]) / requests if requests else 0.0
        )
        row["run_dir"] = str(run.relative_to(sweep_dir))
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no run with a summary.json under {sweep_dir}")
    return pd.DataFrame(rows).sort_values(["policy", "workers", "actors"]).reset_index(drop=True)


def plot(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The two sweep plots."""
    written = []
    for name, x, y, ylabel in [
        (
            "p99_activation_vs_oversubscription.png",
            "oversubscription",
            "activation_latency_s.p99",
            "activation latency p99 (s)",
        ),
        ("failed_vs_workers.png", "workers", "failed_fraction", "failed requests (fraction)"),
    ]:
        fig, ax = plt.subplots(figsize=(7, 4))
        for policy, group in frame.groupby("policy"):
            g = group.groupby(x, as_index=False)[y].mean().sort_values(x)
            ax.plot(g[x], g[y], marker="o", label=policy)
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} by {x}, per policy")
        ax.legend(fontsize=7)
        save_figure(fig, ax, out_dir / name)
        written.append(out_dir / name)
    return written


def main(argv: list[str]) -> int:
    """The ``actormux collect`` command."""
    parser = argparse.ArgumentParser(
        prog="actormux collect",
        description="Gather a multirun sweep's summaries into SWEEP_DIR/sweep.parquet; plot.",
    )
    parser.add_argument("sweep_dir", type=Path, help="where the table and plots go")
    parser.add_argument("more", type=Path, nargs="*", help="other sweep directories to include")
    args = parser.parse_args(argv)
    try:
        frames = [collect(d) for d in (args.sweep_dir, *args.more)]
    except FileNotFoundError as e:
        print(f"actormux collect: {e}", file=sys.stderr)
        return 2
    frame = pd.concat(frames, ignore_index=True)
    frame.to_parquet(args.sweep_dir / "sweep.parquet", index=False)
    plots = plot(frame, args.sweep_dir)
    columns = [
        "policy",
        "workers",
        "actors",
        "oversubscription",
        "failed_fraction",
        "activation_latency_s.p99",
        "activations",
    ]
    print(frame[columns].to_string(index=False))
    print(
        f"wrote {args.sweep_dir / 'sweep.parquet'} ({len(frame)} runs), "
        + ", ".join(p.name for p in plots)
    )
    return 0
