"""The workload interface the simulator and the Locust side consume.

A workload, started for a duration and a seed, yields a :class:`WorkloadRun`: the
:class:`Population` of actors taking part and the requests, as time-ordered
:class:`ArrivalBatch` es. Batches are produced lazily so that a population of a
million actors never needs its whole schedule in memory; :class:`workloads.plan.Plan`
materialises one when it must be replayed elsewhere (Locust, a saved file).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from workloads.sessions import Scripts


@dataclass(frozen=True)
class ArrivalBatch:
    """Requests in time order: arrival times, actor indices and service times at the actor."""

    times: NDArray[np.float64]
    actors: NDArray[np.int64]
    service_s: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.times.size)


@dataclass(frozen=True)
class Population:
    """The actors of one run, by index.

    ``snapshot_version`` is 0 for an actor that never ran (its first activation is a
    cold start) and 1 for one that already has a snapshot. ``created_s`` is when the
    actor comes into existence: 0 for a population present from the start, the
    session's arrival for an actor that arrives during the run. ``owners`` names each
    actor's tenant when the workload has tenants (admission may budget per owner).
    """

    ids: list[str]
    snapshot_bytes: NDArray[np.int64]
    snapshot_version: NDArray[np.int64]
    created_s: NDArray[np.float64]
    template: str
    owners: list[str] | None = None  # the tenant each actor belongs to (None: no tenants)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class WorkloadRun:
    """A started workload: who takes part, and their requests in time order; or, for
    closed-loop sessions, their scripts (``sessions``; no batches): when those calls go
    out depends on the answers (:mod:`workloads.sessions`)."""

    population: Population
    batches: Iterator[ArrivalBatch]
    sessions: Scripts | None = None


class Workload(Protocol):
    """A model (or a recording) of who sends which requests when.

    ``start`` must be deterministic in ``seed``: the same seed gives the same
    population and the same requests. Batches are sorted within and across, and
    their times lie in ``[0, duration_s)``.
    """

    name: str

    def start(self, duration_s: float, seed: int) -> WorkloadRun:
        """The population and the requests of one run."""
        ...


def actor_ids(count: int, prefix: str = "a") -> list[str]:
    """Zero-padded ids ``a000 .. a249`` for ``count`` actors (valid DNS labels)."""
    width = len(str(max(count - 1, 0)))
    return [f"{prefix}{i:0{width}d}" for i in range(count)]


def empty_batch() -> ArrivalBatch:
    """A batch with no requests."""
    return ArrivalBatch(np.empty(0), np.empty(0, dtype=np.int64), np.empty(0))


def concat(parts: list[ArrivalBatch]) -> ArrivalBatch:
    """Batches joined end to end (not re-sorted)."""
    if not parts:
        return empty_batch()
    return ArrivalBatch(
        np.concatenate([p.times for p in parts]),
        np.concatenate([p.actors for p in parts]),
        np.concatenate([p.service_s for p in parts]),
    )


def select(batch: ArrivalBatch, mask: NDArray[np.bool_]) -> ArrivalBatch:
    """The requests of ``batch`` where ``mask`` is true."""
    return ArrivalBatch(batch.times[mask], batch.actors[mask], batch.service_s[mask])


def sort(batch: ArrivalBatch) -> ArrivalBatch:
    """By time; ties by actor, then by original position: deterministic."""
    order = np.lexsort((batch.actors, batch.times))
    return ArrivalBatch(batch.times[order], batch.actors[order], batch.service_s[order])
