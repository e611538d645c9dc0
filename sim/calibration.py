"""Fit the simulator's latency model to a run's records (real or simulated).

The model (``sim/latency.py``): a restore, cold start or checkpoint is a job of *solo
work* ``W = fixed + size / rate`` on its node's CPU, which concurrent jobs share
(processor sharing: with ``n`` jobs each runs at ``min(1, C / n)``, ``C`` =
``node.cpu_parallelism``). The records give each job's node, start and duration; so:

1. For a candidate ``C``, each job's solo work follows exactly from the observed
   overlaps: ``W_i(C) = ∫ min(1, C / n(t)) dt`` over its interval.
2. ``C`` is chosen so that ``W`` no longer depends on contention: the value that
   minimises the spread of ``log W`` within each kind of job (too large a ``C`` leaves
   contention in the work, too small over-corrects). With no overlap at all ``C`` is not
   identifiable and the prior is kept.
3. The size rate is the slope of ``W`` on snapshot size, when sizes vary enough
   (coefficient of variation >= 0.1); otherwise the prior rate is kept.
4. ``fixed = W - size / rate`` gets a lognormal fit (median, sigma of its log).

Pure numpy; reading run directories and writing YAML is ``experiments/analysis/calibrate.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

MIB = float(1 << 20)
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Jobs:
    """CPU jobs of one kind: node, start, end, snapshot bytes."""

    kind: str
    node: NDArray[Any]
    start: FloatArray
    end: FloatArray
    size: FloatArray

    def __len__(self) -> int:
        return int(self.start.size)


@dataclass
class KindFit:
    """The fitted model of one kind of job."""

    kind: str
    samples: int
    median_s: float  # of the fixed part
    sigma: float
    mib_per_s: float | None  # None: kept from the prior
    rate_fitted: bool
    mean_concurrency: float  # time-averaged jobs on the node, itself included


@dataclass
class Calibration:
    """The whole fit, with what it could and could not identify."""

    cpu_parallelism: float
    parallelism_fitted: bool
    kinds: dict[str, KindFit] = field(default_factory=dict)
    control_plane_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def jobs_from_records(activations: Mapping[str, Any], checkpoints: Mapping[str, Any]) -> list[Jobs]:
    """The CPU jobs in a run's activation and checkpoint tables (schema of control/metrics.py)."""
    out = []
    if len(activations["start_s"]):
        start = np.asarray(activations["start_s"], float) + np.asarray(
            activations["download_s"], float
        )
        end = start + np.asarray(activations["restore_s"], float)
        cold = np.asarray(activations["cold"]).astype(bool)
        node = np.asarray(activations["node"])
        size = np.asarray(activations["snapshot_bytes"], float)
        for kind, mask in (("restore", ~cold), ("cold_start", cold)):
            if mask.any():
                out.append(Jobs(kind, node[mask], start[mask], end[mask], size[mask]))
    if len(checkpoints["start_s"]):
        start = np.asarray(checkpoints["start_s"], float) + np.asarray(
            checkpoints["control_plane_s"], float
        )
        end = start + np.asarray(checkpoints["checkpoint_s"], float)
        out.append(
            Jobs(
                "checkpoint", np.asarray(checkpoints["node"]), start, end,
                np.asarray(checkpoints["snapshot_bytes"], float),
            )
        )  # fmt: skip
    return out


def concurrency_steps(jobs: list[Jobs]) -> dict[Any, tuple[FloatArray, FloatArray]]:
    """Per node: change times and the number of jobs running from each change on."""
    events: dict[Any, list[tuple[float, int]]] = {}
    for j in jobs:
        for node, s, e in zip(j.node.tolist(), j.start.tolist(), j.end.tolist(), strict=True):
            events.setdefault(node, []).extend([(s, 1), (e, -1)])
    steps = {}
    for node, evs in events.items():
        evs.sort(key=lambda x: (x[0], -x[1]))  # starts before ends at the same instant
        times = np.array([t for t, _ in evs])
        counts = np.cumsum([d for _, d in evs]).astype(float)
        steps[node] = (times, counts)
    return steps


def solo_work(
    jobs: Jobs, steps: dict[Any, tuple[FloatArray, FloatArray]], c: float
) -> tuple[FloatArray, FloatArray]:
    """Each job's solo work under parallelism ``c``, and its mean concurrency.

    Per node, the integrals of ``min(1, c / n)`` and of ``n`` are accumulated at every
    change of ``n``; a job's work is the difference at its end and start.
    """
    work = np.empty(len(jobs))
    mean_n = np.empty(len(jobs))
    for node, (times, counts) in steps.items():
        mask = jobs.node == node
        if not mask.any():
            continue
        n = np.maximum(counts, 1.0)
        rate = np.minimum(1.0, c / n)
        dt = np.diff(times, append=times[-1])
        f_work = np.concatenate([[0.0], np.cumsum(dt * rate)])
        f_n = np.concatenate([[0.0], np.cumsum(dt * n)])

        def at(
            x: FloatArray, f: FloatArray, v: FloatArray, times: FloatArray = times
        ) -> FloatArray:
            k = np.clip(np.searchsorted(times, x, side="right") - 1, 0, times.size - 1)
            return f[k] + (x - times[k]) * v[k]

        s, e = jobs.start[mask], jobs.end[mask]
        work[mask] = at(e, f_work, rate) - at(s, f_work, rate)
        mean_n[mask] = (at(e, f_n, n) - at(s, f_n, n)) / np.maximum(e - s, 1e-12)
    return work, mean_n


def _spread(values: FloatArray) -> float:
    logs = np.log(np.maximum(values, 1e-6))
    return float(np.var(logs)) * values.size


def calibrate(
    jobs: list[Jobs],
    *,
    prior_parallelism: float,
    prior_rates: Mapping[str, float],
    control_plane_s: FloatArray | None = None,
) -> Calibration:
    """Fit the model to ``jobs`` (see the module docstring).

    Priors fill in what the jobs cannot identify.
    """
    jobs = [j for j in jobs if len(j)]
    if not jobs:
        raise ValueError("no restores, cold starts or checkpoints in these records")
    steps = concurrency_steps(jobs)
    contention = np.concatenate([solo_work(j, steps, 1e9)[1] for j in jobs])
    alone = float(np.mean(contention < 1.2))
    crowded = float(np.mean(contention > 2.5))
    result = Calibration(prior_parallelism, False)
    if alone >= 0.05 and crowded >= 0.05:
        grid = np.arange(1.0, 8.0001, 0.05)
        spreads = [sum(_spread(solo_work(j, steps, float(c))[0]) for j in jobs) for c in grid]
        best = float(grid[int(np.argmin(spreads))])
        if best >= grid[-1] - 1e-9:
            result.notes.append("contention never slowed jobs down measurably: C >= 8")
        result.cpu_parallelism, result.parallelism_fitted = best, True
    else:
        result.notes.append(
            f"cpu_parallelism kept from the prior: it needs jobs both alone and crowded "
            f"(here {alone:.0%} ran alone, {crowded:.0%} with more than 2.5 at once)"
        )
    c = result.cpu_parallelism
    for j in jobs:
        work, mean_n = solo_work(j, steps, c)
        mib = j.size / MIB
        rate = prior_rates.get(j.kind)
        fitted = False
        if mib.size >= 10 and mib.mean() > 0 and mib.std() / mib.mean() >= 0.1:
            slope, _ = np.polyfit(mib, work, 1)
            if slope > 0:
                rate, fitted = 1.0 / float(slope), True
        if not fitted:
            result.notes.append(
                f"{j.kind}: snapshot sizes barely vary ({mib.mean():.1f} MiB): "
                "rate kept from the prior"
            )
        fixed = work - (mib / rate if rate else 0.0)
        fixed = np.maximum(fixed, 1e-4)
        logs = np.log(fixed)
        result.kinds[j.kind] = KindFit(
            j.kind, len(j), float(math.exp(np.mean(logs))), float(np.std(logs)),
            rate, fitted, float(mean_n.mean()),
        )  # fmt: skip
    if control_plane_s is not None and len(control_plane_s):
        result.control_plane_s = float(np.median(control_plane_s))
    return result
