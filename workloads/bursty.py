"""A minimal bursty agent workload.

Each actor alternates a burst of tool calls (``burst_calls`` requests, ``call_gap``
apart, e.g. 0.1-2 s) and an idle gap (``idle_gap``, heavy-tailed: seconds to
minutes). Every request carries a service time at the actor (``service``).

Arrivals are generated vectorised, one time window at a time, from per-actor arrays
(next burst start); an idle actor is one array slot, never a process, so 1M actors
cost a few MB.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sim.distributions import Distribution, from_config
from workloads.base import ArrivalBatch, actor_ids

MIB = 1 << 20


class BurstyWorkload:
    """Bursts of calls separated by heavy-tailed idle gaps, per actor, seeded."""

    name = "bursty"

    def __init__(
        self,
        *,
        actors: int,
        snapshot_mib: float,
        burst_calls: Distribution,
        call_gap: Distribution,
        idle_gap: Distribution,
        service: Distribution,
        template: str = "agent",
        window_s: float = 60.0,
        initial: str = "snapshot",
    ) -> None:
        if actors < 1:
            raise ValueError(f"workload.actors: must be >= 1 (got {actors})")
        if snapshot_mib < 0:
            raise ValueError(f"workload.snapshot_mib: must be >= 0 (got {snapshot_mib})")
        if not idle_gap.mean > 0:
            raise ValueError("workload.idle_gap: must have a mean > 0")
        if window_s <= 0:
            raise ValueError(f"workload.window_s: must be > 0 (got {window_s})")
        if initial not in ("snapshot", "cold"):
            raise ValueError(f"workload.initial: must be snapshot or cold (got {initial!r})")
        self.initial_snapshot = initial == "snapshot"
        self.actors = actors
        self.template = template
        self._bytes = int(snapshot_mib * MIB)
        self.burst_calls = burst_calls
        self.call_gap = call_gap
        self.idle_gap = idle_gap
        self.service = service
        self.window_s = window_s
        self._ids = actor_ids(actors)

    def actor_id(self, index: int) -> str:
        return self._ids[index]

    def snapshot_bytes(self, index: int) -> int:
        return self._bytes

    def arrivals(self, duration_s: float, seed: int) -> Iterator[ArrivalBatch]:
        rng = np.random.default_rng([seed, 0x574F524B])  # stream tag "WORK"
        next_burst = self._first_bursts(rng)
        carry: list[ArrivalBatch] = []
        start = 0.0
        while start < duration_s:
            end = min(start + self.window_s, duration_s)
            parts = carry
            while True:
                due = np.flatnonzero(next_burst < end)
                if due.size == 0:
                    break
                parts.append(self._bursts(rng, due, next_burst))
            batch = _concat(parts)
            now = batch.times < end
            yield _sorted(_select(batch, now))
            later = ~now & (batch.times < duration_s)
            carry = [_select(batch, later)] if later.any() else []
            start = end

    def _first_bursts(self, rng: np.random.Generator, pool: int = 8) -> np.ndarray:
        """When each actor's first burst starts: the residual of an idle gap in progress.

        A run that starts "in steady state" finds each actor inside some idle gap, and
        long gaps are more likely to be the one in progress (length bias). So draw the
        gap in progress with probability proportional to its length (from a pool of
        ``pool`` draws per actor), then a uniform point in it. A plain draw instead would
        put too many first bursts near t=0 and distort the start of every run.
        """
        candidates = self.idle_gap.sample_n(rng, pool * self.actors)
        weights = candidates / candidates.sum()
        in_progress = rng.choice(candidates, size=self.actors, p=weights)
        return rng.uniform(0.0, 1.0, self.actors) * in_progress

    def _bursts(
        self, rng: np.random.Generator, due: np.ndarray, next_burst: np.ndarray
    ) -> ArrivalBatch:
        """One burst for each actor in ``due``; moves their ``next_burst`` past it."""
        calls = np.maximum(1, np.rint(self.burst_calls.sample_n(rng, due.size))).astype(np.int64)
        total = int(calls.sum())
        first = np.cumsum(calls) - calls  # index of each burst's first call
        gaps = self.call_gap.sample_n(rng, total)
        gaps[first] = 0.0
        offsets = np.cumsum(gaps)
        offsets -= np.repeat(offsets[first], calls)
        times = np.repeat(next_burst[due], calls) + offsets
        last = first + calls - 1
        # At least 1 ms between bursts keeps time moving whatever the distributions say.
        next_burst[due] = times[last] + np.maximum(self.idle_gap.sample_n(rng, due.size), 1e-3)
        return ArrivalBatch(times, np.repeat(due, calls), self.service.sample_n(rng, total))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], base_dir: Path | None = None) -> BurstyWorkload:
        """Build from ``conf/workload/bursty.yaml``-shaped config."""

        def dist(key: str) -> Distribution:
            return from_config(cfg.get(key), f"workload.{key}", base_dir)

        actors = cfg.get("actors")
        if isinstance(actors, bool) or not isinstance(actors, int):
            raise ValueError(f"workload.actors: must be an integer >= 1 (got {actors!r})")
        return cls(
            actors=actors,
            snapshot_mib=float(cfg.get("snapshot_mib", 0)),
            burst_calls=dist("burst_calls"),
            call_gap=dist("call_gap"),
            idle_gap=dist("idle_gap"),
            service=dist("service"),
            template=str(cfg.get("template", "agent")),
            window_s=float(cfg.get("window_s", 60.0)),
            initial=str(cfg.get("initial", "snapshot")),
        )


def _concat(parts: list[ArrivalBatch]) -> ArrivalBatch:
    if not parts:
        empty = np.empty(0)
        return ArrivalBatch(empty, np.empty(0, dtype=np.int64), empty)
    return ArrivalBatch(
        np.concatenate([p.times for p in parts]),
        np.concatenate([p.actors for p in parts]),
        np.concatenate([p.service_s for p in parts]),
    )


def _select(batch: ArrivalBatch, mask: np.ndarray) -> ArrivalBatch:
    return ArrivalBatch(batch.times[mask], batch.actors[mask], batch.service_s[mask])


def _sorted(batch: ArrivalBatch) -> ArrivalBatch:
    order = np.lexsort((batch.actors, batch.times))  # by time, ties by actor: deterministic
    return ArrivalBatch(batch.times[order], batch.actors[order], batch.service_s[order])
