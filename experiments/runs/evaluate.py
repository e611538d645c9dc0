"""The policy evaluation (``actormux experiment=policy_eval``): every policy row x
workload x scale of the ``evaluation`` section, simulated with replications.

Each cell is one composed config (the experiment's seed, duration and warm-up, the
scale's cluster and actors, the workload's and the policy row's overrides), simulated
for ``replications`` seeds; cells run in ``jobs`` processes. The result is one row per
cell with each metric's mean and 95% interval (``evaluation.parquet``); the report
(:mod:`experiments.analysis.policy_report`) adds the Pareto front and the picks.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from experiments.runs.bench import metrics_of
from experiments.runs.replicate import interval

# What each cell reports (a summary's flattened metric -> the report's column).
METRICS = {
    "failed_fraction": "failed_fraction",
    "activation_latency_s.p99": "activation_p99_s",
    "request_latency_s.p99": "request_p99_s",
    "worker_seconds.billed": "worker_s_billed",
    "snapshot_bytes_moved.downloaded": "bytes_downloaded",
    "snapshot_bytes_moved.uploaded": "bytes_uploaded",
    "snapshot_bytes_stored.peak": "bytes_stored_peak",
    "activations": "activations",
    "ok": "ok",
}


class EvaluationError(ValueError):
    """The ``evaluation`` section cannot run; the message names the field."""


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a policy row on a workload at a scale."""

    policy: str
    workload: str
    actors: int
    workers: int
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    """The checked ``evaluation`` section."""

    cells: tuple[Cell, ...]
    replications: int
    jobs: int
    reference: str
    slo_activation_p99_s: float
    slo_max_failed_fraction: float


def _names(section: Any, field: str) -> dict[str, list[str]]:
    if not isinstance(section, Mapping) or not section:
        raise EvaluationError(f"{field}: must map names to lists of overrides")
    found = {}
    for name, overrides in section.items():
        if not isinstance(overrides, Sequence) or isinstance(overrides, str):
            raise EvaluationError(f"{field}.{name}: must be a list of overrides")
        found[str(name)] = [str(o) for o in overrides]
    return found


def _chosen(named: dict[str, list[str]], names: Any, field: str) -> dict[str, list[str]]:
    """The entries of ``named`` that ``names`` selects (None: all), in config order."""
    if names is None:
        return named
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise EvaluationError(f"{field}: must be a list of names or null")
    unknown = [n for n in names if n not in named]
    if unknown:
        raise EvaluationError(f"{field}: unknown {unknown}; allowed: {list(named)}")
    return {k: v for k, v in named.items() if k in names}


def _count(section: Mapping[str, Any], key: str, field: str, low: int) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise EvaluationError(f"{field}.{key}: must be an integer >= {low} (got {value!r})")
    return value


def settings_of(evaluation: Mapping[str, Any], *, seed: int, duration_s: float,
                warmup_s: float) -> Settings:  # fmt: skip
    """Check the section and lay out its cells (policies x workloads x scales)."""
    field = "evaluation"
    policies = _names(evaluation.get("policies"), f"{field}.policies")
    workloads = _names(evaluation.get("workloads"), f"{field}.workloads")
    scales = evaluation.get("scales")
    if not isinstance(scales, Sequence) or not scales:
        raise EvaluationError(f"{field}.scales: must be a non-empty list")
    reference = str(evaluation.get("reference", ""))
    if reference not in policies:
        raise EvaluationError(f"{field}.reference: {reference!r} is not one of the policies")
    known_workloads = set(workloads)
    select = evaluation.get("select") or {}
    chosen_actors = select.get("actors")
    policies = _chosen(policies, select.get("policies"), f"{field}.select.policies")
    workloads = _chosen(workloads, select.get("workloads"), f"{field}.select.workloads")
    slo = evaluation.get("slo") or {}
    cells = []
    base = (f"seed={seed}", f"duration_s={duration_s}", f"warmup_s={warmup_s}")
    for k, scale in enumerate(scales):
        where = f"{field}.scales[{k}]"
        if not isinstance(scale, Mapping):
            raise EvaluationError(f"{where}: must be a mapping with actors, workers, nodes")
        actors = _count(scale, "actors", where, 1)
        if chosen_actors is not None and actors not in chosen_actors:
            continue
        workers = _count(scale, "workers", where, 1)
        nodes = _count(scale, "nodes", where, 1)
        per_scale = _names(scale.get("workloads") or {"-": []}, f"{where}.workloads")
        unknown = set(per_scale) - known_workloads - {"-"}
        if unknown:
            raise EvaluationError(f"{where}.workloads: unknown {sorted(unknown)}")
        for workload, workload_overrides in workloads.items():
            for policy, policy_overrides in policies.items():
                overrides = (
                    "experiment=oversub_250_on_8", *base, *workload_overrides,
                    f"workload.actors={actors}", f"cluster.workers={workers}",
                    f"cluster.nodes={nodes}", *per_scale.get(workload, []), *policy_overrides,
                    "backend.progress=false",
                )  # fmt: skip
                cells.append(Cell(policy, workload, actors, workers, overrides))
    if not cells:
        raise EvaluationError(f"{field}.select.actors: no scale has {chosen_actors}")
    if reference not in policies:
        raise EvaluationError(f"{field}.select.policies: must include the reference {reference!r}")
    return Settings(
        cells=tuple(cells),
        replications=_count(evaluation, "replications", field, 1),
        jobs=_count(evaluation, "jobs", field, 1),
        reference=reference,
        slo_activation_p99_s=float(slo.get("activation_p99_s", 1.0)),
        slo_max_failed_fraction=float(slo.get("max_failed_fraction", 0.001)),
    )


def run_cell(cell: Cell, replications: int) -> dict[str, Any]:
    """Simulate one cell for ``replications`` seeds; its row (means and intervals)."""
    from hydra import compose, initialize_config_dir

    from experiments.paths import CONF_DIR
    from experiments.runs.build import build
    from experiments.runs.runner import simulate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(cell.overrides))
    spec = build(cfg)
    started = time.perf_counter()
    flat = []
    for k in range(replications):
        summary = simulate(replace(spec, seed=spec.seed + k, progress=False)).summary
        flat.append(metrics_of(summary))
    row: dict[str, Any] = {
        "policy": cell.policy, "workload": cell.workload, "actors": cell.actors,
        "workers": cell.workers, "replications": replications,
    }  # fmt: skip
    for metric, column in METRICS.items():
        values = [f.get(metric) for f in flat]
        if any(v is None for v in values):
            row |= {column: None, f"{column}_low": None, f"{column}_high": None}
            continue
        found = interval([float(v) for v in values if v is not None])
        row |= {column: found.mean, f"{column}_low": found.low, f"{column}_high": found.high}
    row["wall_s"] = round(time.perf_counter() - started, 2)
    return row


def run(settings: Settings) -> Iterator[dict[str, Any]]:
    """Every cell's row, as cells finish (with a progress line and an ETA on stderr)."""
    from joblib import Parallel, delayed

    cells = settings.cells
    started = time.perf_counter()
    parallel = Parallel(n_jobs=settings.jobs, return_as="generator_unordered")
    jobs = (delayed(run_cell)(cell, settings.replications) for cell in cells)
    for done, row in enumerate(parallel(jobs), start=1):
        elapsed = time.perf_counter() - started
        eta = elapsed / done * (len(cells) - done)
        print(f"policy_eval: {done}/{len(cells)} cells ({row['policy']}, {row['workload']}, "
              f"{row['actors']} actors) {elapsed:.0f} s, ETA {eta:.0f} s",
              file=sys.stderr, flush=True)  # fmt: skip
        yield row
