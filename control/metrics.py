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

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

OUTCOMES = ("ok", "rejected", "timeout")


class RequestRow(NamedTuple):
    """One row of the requests table. ``total_s``: from arrival to the answer (or to
    the rejection or timeout)."""

    request: int
    actor: str
    arrival_s: float
    outcome: str
    status: int
    activated: bool
    control_plane_s: float
    queue_s: float
    activation_s: float
    service_s: float
    total_s: float
    wake: bool = False  # a wake-up the actor scheduled, not a client's request


class ActivationRow(NamedTuple):
    """One row of the activations table; build it with :meth:`of`."""

    actor: str
    worker: str
    node: str
    start_s: float
    cold: bool
    cache_hit: bool  # the snapshot was on the worker's node: nothing was downloaded
    snapshot_bytes: int
    control_plane_s: float  # the control plane's part: the admission and its writes
    download_s: float  # fetching (and checking) the snapshot
    restore_s: float  # the sandbox restored (or started cold) until it answers
    total_s: float

    @classmethod
    def of(
        cls, actor: str, worker: str, node: str, start_s: float, *, cold: bool,
        cache_hit: bool, snapshot_bytes: int, control_plane_s: float, download_s: float,
        restore_s: float,
    ) -> ActivationRow:  # fmt: skip
        """The row; its ``total_s`` (the activation latency) is the sum of its parts,
        here and nowhere else."""
        total = control_plane_s + download_s + restore_s
        return cls(actor, worker, node, start_s, cold, cache_hit, snapshot_bytes,
                   control_plane_s, download_s, restore_s, total)  # fmt: skip


class CheckpointRow(NamedTuple):
    """One row of the checkpoints table; build it with :meth:`of`."""

    actor: str
    worker: str
    node: str
    start_s: float
    snapshot_bytes: int  # the new snapshot's size, as the checkpoint measured it
    control_plane_s: float  # the Suspend call (fencing the activation)
    checkpoint_s: float  # runsc checkpoint
    upload_s: float  # describing and publishing the image to the snapshot store
    total_s: float
    tier: str = "remote"  # "local": paused, kept on its node (no upload)

    @classmethod
    def of(
        cls, actor: str, worker: str, node: str, start_s: float, *, snapshot_bytes: int,
        control_plane_s: float, checkpoint_s: float, upload_s: float, tier: str = "remote",
    ) -> CheckpointRow:  # fmt: skip
        """The row; ``total_s`` is the sum of its parts."""
        total = control_plane_s + checkpoint_s + upload_s
        return cls(actor, worker, node, start_s, snapshot_bytes, control_plane_s,
                   checkpoint_s, upload_s, total, tier)  # fmt: skip


class SampleRow(NamedTuple):
    """One row of the samples table (one sampling tick)."""

    t_s: float
    workers: int
    workers_busy: int
    actors_suspended: int
    actors_resuming: int
    actors_running: int
    actors_suspending: int
    waiting_actors: int
    open_requests: int
    cp_queue: int
    cp_busy: int
    snapshot_bytes_stored: int
    cache_bytes: int
    bandwidth_bytes_per_s: float


# The tables' columns: the row types' fields.
REQUEST_COLUMNS: tuple[str, ...] = RequestRow._fields
ACTIVATION_COLUMNS: tuple[str, ...] = ActivationRow._fields
CHECKPOINT_COLUMNS: tuple[str, ...] = CheckpointRow._fields
SAMPLE_COLUMNS: tuple[str, ...] = SampleRow._fields


def table(columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> dict[str, np.ndarray]:
    """Rows (of one of the row types above) as columns."""
    rows = list(rows)
    if not rows:
        return {c: np.empty(0) for c in columns}
    return {c: np.asarray(v) for c, v in zip(columns, zip(*rows, strict=True), strict=True)}


def worker_utilization(occupied_worker_s: float, workers: int, duration_s: float) -> float:
    """The share of the workers' time that actors occupied them, over the plan's window
    ``[0, duration_s]`` (not the drain after it): the same window in the simulator and
    on a real backend."""
    if workers <= 0 or duration_s <= 0:
        return 0.0
    return occupied_worker_s / (workers * duration_s)


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
    "worker_seconds",
    "snapshot_bytes_moved",
    "snapshot_bytes_stored",
    "policy_actions",
    "sim_events",
    "wall_s",
    "reliability",
    "warmup_s",
    "versions",
    "resources",
    "wakeup_wait_s",
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
    checkpoints: Table | None = None,
    policy_actions: Mapping[str, int] | None = None,
    samples: Table | None = None,
    billing: str = "pool",
    provisioned_s: float | None = None,
    later_uploads: int = 0,
    resources: Mapping[str, float | None] | None = None,
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

    ``worker_seconds``: provisioned (the pool), occupied (hosting an actor) and billed:
    what the workers cost, the provisioned pool or, with ``billing="occupied"``
    (pod-per-actor: a pod exists only while its actor is resumed), the occupied ones.
    ``provisioned_s``: the pool's integral when it was scaled (default: ``workers`` all
    along).
    ``snapshot_bytes_moved``: downloaded by activations that missed their node's cache
    and uploaded by ``checkpoints`` (after the warm-up, as activations; paused ones
    upload nothing) plus ``later_uploads`` bytes of paused snapshots uploaded since.
    ``snapshot_bytes_stored``: in the object store, at its peak and at the end (from
    ``samples``; None without them).
    ``policy_actions``: what the policies did (evictions, pre-warms).
    ``wakeup_wait_s``: how long wake-ups waited before their actor served them.
    ``resources``: how busy each modelled resource was, as a share of its capacity
    (the simulator's control plane, node CPUs and links, snapshot store, workers; empty
    on a real backend): the one nearest 1 binds.
    """
    if warmup_s > 0:
        requests = _from(requests, "arrival_s", warmup_s)
        activations = _from(activations, "start_s", warmup_s)
        if checkpoints is not None:
            checkpoints = _from(checkpoints, "start_s", warmup_s)
    fetched = ~np.asarray(activations["cache_hit"], dtype=bool) & ~np.asarray(
        activations["cold"], dtype=bool
    )
    uploaded = later_uploads
    if checkpoints is not None:
        sizes = np.asarray(checkpoints["snapshot_bytes"])
        if "tier" in checkpoints:
            sizes = sizes[np.asarray(checkpoints["tier"]) != "local"]
        uploaded += int(np.sum(sizes))
    if billing not in ("pool", "occupied"):
        raise ValueError(f"billing: must be pool or occupied (got {billing!r})")
    pool_s = workers * duration_s if provisioned_s is None else provisioned_s
    occupied_s = worker_utilization * pool_s
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
        "worker_seconds": {
            "provisioned": pool_s,
            "occupied": occupied_s,
            "billed": occupied_s if billing == "occupied" else pool_s,
        },
        "snapshot_bytes_moved": {
            "downloaded": int(np.sum(np.asarray(activations["snapshot_bytes"])[fetched])),
            "uploaded": uploaded,
        },
        "snapshot_bytes_stored": _peak_and_end(samples, "snapshot_bytes_stored"),
        "policy_actions": dict(policy_actions or {}),
        "sim_events": events,
        "wall_s": wall_s,
        "reliability": dict(reliability or {}),
        "warmup_s": warmup_s,
        "versions": dict(versions or {}),
        "resources": dict(resources or {}),
        "wakeup_wait_s": _wakeup_wait(requests, ok),
    }
    assert tuple(summary) == SUMMARY_KEYS
    return summary


def _wakeup_wait(requests: Table, ok: np.ndarray) -> dict[str, float | None]:
    """From a wake-up's due time until the actor starts serving it (its total minus its
    service), over the wake-ups that ended ok: p50, p95 (Agent Substrate's goal: 100 ms),
    p99, max; all None without wake-ups."""
    if "wake" not in requests or not ok.any():
        return {"p50": None, "p95": None, "p99": None, "max": None}
    chosen = np.flatnonzero(np.asarray(requests["wake"], dtype=bool) & ok)  # few rows: take
    # them before subtracting (a million-actor hour has 13 M requests)
    total, service = np.asarray(requests["total_s"]), np.asarray(requests["service_s"])
    waits = np.maximum(total[chosen] - service[chosen], 0.0)  # -1e-16 is 0
    if waits.size == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(waits, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(waits.max())}


def _peak_and_end(samples: Table | None, column: str) -> dict[str, int | None]:
    values = np.asarray(samples[column]) if samples is not None else np.empty(0)
    if values.size == 0:
        return {"peak": None, "end": None}
    return {"peak": int(values.max()), "end": int(values[-1])}


def _from(table: Table, column: str, start: float) -> dict[str, Any]:
    """The rows of ``table`` whose ``column`` is at least ``start``."""
    keep = np.asarray(table[column], dtype=float) >= start
    return {name: np.asarray(values)[keep] for name, values in table.items()}
