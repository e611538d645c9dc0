"""A workload given as an explicit schedule of requests (times, actors, service times)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from workloads.base import ArrivalBatch, actor_ids

MIB = 1 << 20


class ScheduledWorkload:
    """Plays exactly the given requests; the seed is not used.

    ``times`` need not be sorted (ties keep their given order); requests at or after
    the run's duration are dropped.
    """

    name = "schedule"

    def __init__(
        self,
        times: Sequence[float],
        actors: Sequence[int],
        service_s: Sequence[float] | float,
        *,
        actor_count: int | None = None,
        snapshot_mib: float = 16.0,
        template: str = "agent",
        initial_snapshot: bool = False,
    ) -> None:
        t = np.asarray(times, dtype=np.float64)
        a = np.asarray(actors, dtype=np.int64)
        s = np.broadcast_to(np.asarray(service_s, dtype=np.float64), t.shape).copy()
        if not (t.shape == a.shape == s.shape and t.ndim == 1):
            raise ValueError("times, actors and service_s must be 1-D and of equal length")
        if t.size and (t.min() < 0 or a.min() < 0 or s.min() < 0):
            raise ValueError("times, actor indices and service times must be >= 0")
        self.actors = int(
            actor_count if actor_count is not None else (a.max() + 1 if a.size else 1)
        )
        if a.size and a.max() >= self.actors:
            raise ValueError(f"actor index {a.max()} >= actor_count {self.actors}")
        order = np.argsort(t, kind="stable")
        self._batch = ArrivalBatch(t[order], a[order], s[order])
        self._bytes = int(snapshot_mib * MIB)
        self.template = template
        self.initial_snapshot = initial_snapshot
        self._ids = actor_ids(self.actors)

    def actor_id(self, index: int) -> str:
        return self._ids[index]

    def snapshot_bytes(self, index: int) -> int:
        return self._bytes

    def arrivals(self, duration_s: float, seed: int) -> Iterator[ArrivalBatch]:
        keep = self._batch.times < duration_s
        b = self._batch
        yield ArrivalBatch(b.times[keep], b.actors[keep], b.service_s[keep])
