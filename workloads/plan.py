"""A materialised run of a workload: every request, in order, with its actor.

The simulator reads workloads lazily; a :class:`Plan` holds one run whole so it can
be saved, inspected and replayed elsewhere, above all by the Locust side: the same
plan drives the simulator and Locust, so both issue the same requests to the same
actors at the same times. A plan is itself a workload (replaying it in the
simulator gives exactly its requests).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from workloads.base import ArrivalBatch, Population, Workload, WorkloadRun, actor_ids, concat

MIB = 1 << 20


@dataclass(frozen=True)
class Plan:
    """Requests (``times``, ``actors`` as indices, ``service_s``) and their population."""

    times: NDArray[np.float64]
    actors: NDArray[np.int64]
    service_s: NDArray[np.float64]
    population: Population
    duration_s: float
    seed: int
    name: str = "plan"

    def __len__(self) -> int:
        return int(self.times.size)

    @classmethod
    def materialize(cls, workload: Workload, duration_s: float, seed: int) -> Plan:
        """Run ``workload`` for ``duration_s`` with ``seed`` and keep every request."""
        run = workload.start(duration_s, seed)
        if run.sessions is not None:
            raise ValueError(
                "workload.loop=closed: closed-loop sessions have no plan (when a call goes "
                "out depends on the answers): play their scripts (AgentWorkload.scripts)"
            )
        batch = concat(list(run.batches))
        return cls(
            batch.times, batch.actors, batch.service_s, run.population, duration_s, seed,
            workload.name,
        )  # fmt: skip

    @classmethod
    def from_schedule(
        cls,
        times: Sequence[float],
        actors: Sequence[int],
        service_s: Sequence[float] | float,
        *,
        actor_count: int | None = None,
        snapshot_mib: float = 16.0,
        initial_snapshot: bool = False,
        duration_s: float | None = None,
    ) -> Plan:
        """A plan from explicit requests (``times`` need not be sorted; ties keep order)."""
        t = np.asarray(times, dtype=np.float64)
        a = np.asarray(actors, dtype=np.int64)
        s = np.broadcast_to(np.asarray(service_s, dtype=np.float64), t.shape).copy()
        if not (t.shape == a.shape == s.shape and t.ndim == 1):
            raise ValueError("times, actors and service_s must be 1-D and of equal length")
        if t.size and (t.min() < 0 or a.min() < 0 or s.min() < 0):
            raise ValueError("times, actor indices and service times must be >= 0")
        n = int(actor_count if actor_count is not None else (a.max() + 1 if a.size else 1))
        if a.size and a.max() >= n:
            raise ValueError(f"actor index {a.max()} >= actor_count {n}")
        order = np.argsort(t, kind="stable")
        population = Population(
            ids=actor_ids(n),
            snapshot_bytes=np.full(n, int(snapshot_mib * MIB), dtype=np.int64),
            snapshot_version=np.full(n, int(initial_snapshot), dtype=np.int64),
            created_s=np.zeros(n),
            template="agent",
        )
        end = float(duration_s if duration_s is not None else (t.max() + 1 if t.size else 1))
        return cls(t[order], a[order], s[order], population, end, 0, "schedule")

    def start(self, duration_s: float, seed: int) -> WorkloadRun:
        """Replay: the plan's requests before ``duration_s`` (the seed is not used)."""
        keep = self.times < duration_s

        def batches() -> Iterator[ArrivalBatch]:
            yield ArrivalBatch(self.times[keep], self.actors[keep], self.service_s[keep])

        return WorkloadRun(self.population, batches())

    def actor_requests(self) -> list[NDArray[np.int64]]:
        """For each actor, the indices of its requests in time order."""
        order = np.argsort(self.actors, kind="stable")
        bounds = np.searchsorted(self.actors[order], np.arange(len(self.population) + 1))
        return [order[bounds[i] : bounds[i + 1]] for i in range(len(self.population))]

    def save(self, path: Path) -> None:
        """Write the plan as a NumPy ``.npz`` archive."""
        pop = self.population
        np.savez_compressed(
            path,
            times=self.times,
            actors=self.actors,
            service_s=self.service_s,
            ids=np.asarray(pop.ids),
            snapshot_bytes=pop.snapshot_bytes,
            snapshot_version=pop.snapshot_version,
            created_s=pop.created_s,
            meta=np.asarray([pop.template, self.name, repr(self.duration_s), str(self.seed)]),
        )

    @classmethod
    def load(cls, path: Path) -> Plan:
        """Read a plan written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as f:
            template, name, duration, seed = (str(x) for x in f["meta"])
            population = Population(
                ids=[str(x) for x in f["ids"]],
                snapshot_bytes=f["snapshot_bytes"],
                snapshot_version=f["snapshot_version"],
                created_s=f["created_s"],
                template=template,
            )
            return cls(
                f["times"], f["actors"], f["service_s"], population, float(duration), int(seed),
                name,
            )  # fmt: skip
