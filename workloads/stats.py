"""Statistics of a workload plan: what a capacity planner looks at before simulating.

* aggregate inter-arrival times: CDF, coefficient of variation (1 for Poisson), and
  burstiness ``B = (σ - μ) / (σ + μ)`` (-1 periodic, 0 Poisson, -> 1 bursty);
* per-actor gaps between consecutive requests, and the *idle gaps* among them (longer
  than ``active_window_s``, e.g. the suspension TTL): what an actor's worker sees;
* concurrently active actors (a request within the last ``active_window_s``): the
  lower bound on workers busy if nothing is suspended while active;
* requests per actor (popularity skew) and the index of dispersion of counts per
  second (variance / mean; 1 for Poisson).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from control.metrics import percentiles
from workloads.plan import Plan

FloatArray = NDArray[np.float64]


def burstiness(values: FloatArray) -> float | None:
    """Goh-Barabási burstiness of inter-event times: (σ - μ) / (σ + μ)."""
    if values.size < 2:
        return None
    mu, sigma = float(values.mean()), float(values.std())
    return None if mu + sigma == 0 else (sigma - mu) / (sigma + mu)


def actor_gaps(plan: Plan) -> FloatArray:
    """All gaps between consecutive requests of the same actor."""
    order = np.lexsort((plan.times, plan.actors))
    actors, times = plan.actors[order], plan.times[order]
    same = actors[1:] == actors[:-1]
    return np.diff(times)[same]


def active_actors(plan: Plan, window_s: float, bin_s: float = 1.0) -> tuple[FloatArray, FloatArray]:
    """Sample times (every ``bin_s``) and the number of actors active at each.

    An actor is active from each request until ``window_s`` after it; overlapping
    stretches of one actor count once.
    """
    bins = max(1, int(np.ceil(plan.duration_s / bin_s)))
    counts = np.zeros(bins + 1)
    if len(plan):
        order = np.lexsort((plan.times, plan.actors))
        actors, times = plan.actors[order], plan.times[order]
        new_stretch = np.ones(times.size, dtype=bool)
        new_stretch[1:] = (actors[1:] != actors[:-1]) | (np.diff(times) > window_s)
        starts = times[new_stretch]
        last = np.flatnonzero(np.append(new_stretch[1:], True))
        ends = np.minimum(times[last] + window_s, plan.duration_s)
        # Sampled at each bin's start: the stretch [start, end) holds sample k when
        # start <= k * bin_s < end.
        first_bin = np.ceil(starts / bin_s).astype(np.int64)
        end_bin = np.minimum(np.ceil(ends / bin_s).astype(np.int64), bins)
        np.add.at(counts, first_bin, 1)
        np.add.at(counts, end_bin, -1)
    return np.arange(bins) * bin_s, np.cumsum(counts)[:bins]


def workload_stats(plan: Plan, active_window_s: float = 5.0) -> dict[str, Any]:
    """The statistics above, as a JSON-ready dict."""
    n = len(plan)
    inter = np.diff(plan.times)
    gaps = actor_gaps(plan)
    idle = gaps[gaps > active_window_s]
    _, active = active_actors(plan, active_window_s)
    per_actor = np.bincount(plan.actors, minlength=len(plan.population))
    per_second = np.bincount(
        np.floor(plan.times).astype(np.int64), minlength=int(np.ceil(plan.duration_s))
    )
    mean_inter = float(inter.mean()) if inter.size else None
    top = np.sort(per_actor)[::-1]
    top_share = float(top[: max(1, len(top) // 10)].sum() / n) if n else None
    return {
        "workload": plan.name,
        "seed": plan.seed,
        "duration_s": plan.duration_s,
        "requests": n,
        "actors": len(plan.population),
        "actors_with_requests": int((per_actor > 0).sum()),
        "requests_per_s": n / plan.duration_s,
        "interarrival_s": percentiles(inter),
        "interarrival_cv": float(inter.std() / mean_inter) if mean_inter else None,
        "burstiness": burstiness(inter),
        "dispersion_per_s": float(per_second.var() / per_second.mean()) if n else None,
        "actor_gap_s": percentiles(gaps),
        "actor_burstiness": burstiness(gaps),
        "active_window_s": active_window_s,
        "idle_gaps": int(idle.size),
        "idle_gap_s": percentiles(idle),
        "active_actors": {
            "mean": float(active.mean()),
            "p99": float(np.percentile(active, 99)),
            "max": float(active.max()),
        },
        "requests_per_actor": {
            "mean": float(per_actor.mean()),
            "max": int(per_actor.max()) if per_actor.size else 0,
            "top_10pct_share": top_share,
        },
    }
