"""The metrics schema shared by the simulator and the real backends, and the run summary.

Every driver produces the same four tidy tables, as columns (name -> 1-D array):

* ``requests``: one row per request: ``request, actor, arrival_s, outcome`` (ok,
  rejected, timeout), ``status`` (HTTP), ``activated`` (waited for an activation),
  ``control_plane_s, queue_s, activation_s, service_s, total_s``;
* ``activations``: one row per restore or cold start: ``actor, worker, node,
  start_s, cold, cache_hit, snapshot_bytes, control_plane_s, download_s,
  restore_s, total_s``;
* ``checkpoints``: ``actor, worker, node, start_s, snapshot_bytes,
  control_plane_s, checkpoint_s, upload_s, total_s``;
* ``samples``: one row per sampling tick: ``t_s, workers, workers_busy``, actors by
  state, ``waiting_actors, open_requests, cp_queue, cp_busy,
  snapshot_bytes_stored, cache_bytes, bandwidth_bytes_per_s``.

Pure: numpy only, no I/O; writing Parquet and plots lives in ``experiments``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

REQUEST_COLUMNS = (
    "request",
    "actor",
    "arrival_s",
    "outcome",
    "status",
    "activated",
    "control_plane_s",
    "queue_s",
    "activation_s",
    "service_s",
    "total_s",
)
ACTIVATION_COLUMNS = (
    "actor",
    "worker",
    "node",
    "start_s",
    "cold",
    "cache_hit",
    "snapshot_bytes",
    "control_plane_s",
    "download_s",
    "restore_s",
    "total_s",
)
CHECKPOINT_COLUMNS = (
    "actor",
    "worker",
    "node",
    "start_s",
    "snapshot_bytes",
    "control_plane_s",
    "checkpoint_s",
    "upload_s",
    "total_s",
)
SAMPLE_COLUMNS = (
    "t_s",
    "workers",
    "workers_busy",
    "actors_suspended",
    "actors_resuming",
    "actors_running",
    "actors_suspending",
    "waiting_actors",
    "open_requests",
    "cp_queue",
    "cp_busy",
    "snapshot_bytes_stored",
    "cache_bytes",
    "bandwidth_bytes_per_s",
)
OUTCOMES = ("ok", "rejected", "timeout")

# The keys of summary.json, in order. Stable: other tools and CI benchmarks read them.
SUMMARY_KEYS = (
    "experiment",
    "backend",
    "seed",
    "actors",
    "workers",
    "oversubscription",
    "duration_s",
    "requests",
    "ok",
    "rejected",
    "timed_out",
    "activations",
    "activation_latency_s",
    "request_latency_s",
    "worker_utilization",
    "control_plane_calls_per_s",
    "sim_events",
    "wall_s",
    "reliability",
    "warmup_s",
    "versions",
)

Table = Mapping[str, Any]


def percentiles(values: ArrayLike) -> dict[str, float | None]:
    """p50, p90, p99 and max of ``values`` (all None when there are none)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(arr.max())}


def summarize(
    requests: Table,
    activations: Table,
    *,
    experiment: str,
    backend: str,
    seed: int,
    actors: int,
    workers: int,
    duration_s: float,
    worker_utilization: float,
    control_plane_calls: int,
    events: int,
    wall_s: float,
    reliability: Mapping[str, int] | None = None,
    warmup_s: float = 0.0,
    versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The run summary (keys :data:`SUMMARY_KEYS`).

    ``reliability`` holds injected faults and the controller's fault and recovery
    counters (stale completions, retries, lost activations, ...). ``versions``: of the
    packages that shape the numbers (the caller reads them).

    Request latency percentiles are over requests that ended ok; activation latency
    is each activation's ``total_s`` (control plane + download + restore). With
    ``warmup_s``, requests that arrived and activations that started before it are left
    out of the request and activation metrics (the transient of a run that starts
    cold); rates, utilization and counters still cover the whole run.
    """
    if warmup_s > 0:
        requests = _from(requests, "arrival_s", warmup_s)
        activations = _from(activations, "start_s", warmup_s)
    outcome = np.asarray(requests["outcome"])
    ok = outcome == "ok"
    summary: dict[str, Any] = {
        "experiment": experiment,
        "backend": backend,
        "seed": seed,
        "actors": actors,
        "workers": workers,
        "oversubscription": actors / workers if workers else None,
        "duration_s": duration_s,
        "requests": int(outcome.size),
        "ok": int(ok.sum()),
        "rejected": int((outcome == "rejected").sum()),
        "timed_out": int((outcome == "timeout").sum()),
        "activations": len(activations["total_s"]),
        "activation_latency_s": percentiles(activations["total_s"]),
        "request_latency_s": percentiles(np.asarray(requests["total_s"])[ok]),
        "worker_utilization": worker_utilization,
        "control_plane_calls_per_s": control_plane_calls / duration_s if duration_s else None,
        "sim_events": events,
        "wall_s": wall_s,
        "reliability": dict(reliability or {}),
        "warmup_s": warmup_s,
        "versions": dict(versions or {}),
    }
    assert tuple(summary) == SUMMARY_KEYS
    return summary


def _from(table: Table, column: str, start: float) -> dict[str, Any]:
    """The rows of ``table`` whose ``column`` is at least ``start``."""
    keep = np.asarray(table[column], dtype=float) >= start
    return {name: np.asarray(values)[keep] for name, values in table.items()}
