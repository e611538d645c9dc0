"""The workload interface the simulator (and later Locust) consumes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ArrivalBatch:
    """Requests in time order: arrival times, actor indices and service times at the actor."""

    times: NDArray[np.float64]
    actors: NDArray[np.int64]
    service_s: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.times.size)


class Workload(Protocol):
    """A population of actors and the requests sent to them.

    ``arrivals`` yields batches whose times are sorted within and across batches and
    lie in ``[0, duration_s)``; the same seed yields the same requests.
    """

    name: str
    actors: int
    template: str
    initial_snapshot: bool  # actors start with a snapshot (steady state), else cold

    def actor_id(self, index: int) -> str:
        """The id of actor ``index`` (a DNS label: lowercase letters, digits, '-')."""
        ...

    def snapshot_bytes(self, index: int) -> int:
        """Size of actor ``index``'s snapshot."""
        ...

    def arrivals(self, duration_s: float, seed: int) -> Iterator[ArrivalBatch]:
        """The requests of one run, in time order."""
        ...


def actor_ids(count: int, prefix: str = "a") -> list[str]:
    """Zero-padded ids ``a000 .. a249`` for ``count`` actors."""
    width = len(str(max(count - 1, 0)))
    return [f"{prefix}{i:0{width}d}" for i in range(count)]
