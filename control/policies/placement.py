"""Placement policies: which free worker an actor is activated on."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from control.model import Actor, Worker
from control.policies.base import SnapshotLocator


class RandomPlacement:
    """A uniformly random free worker (Agent Substrate: shuffle free workers, take the first).

    The pool is a list with an index map, so add, discard and choose are O(1). The
    random stream comes from ``seed`` alone, so a run is reproducible.
    """

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng([seed, 0x504C4143])  # stream tag "PLAC"
        self._workers: list[Worker] = []
        self._index: dict[str, int] = {}

    def add(self, worker: Worker) -> None:
        if worker.id in self._index:
            raise ValueError(f"worker {worker.id!r} is already free")
        self._index[worker.id] = len(self._workers)
        self._workers.append(worker)

    def discard(self, worker: Worker) -> None:
        i = self._index.pop(worker.id)
        last = self._workers.pop()
        if last.id != worker.id:
            self._workers[i] = last
            self._index[last.id] = i

    def choose(self, actor: Actor, snapshots: SnapshotLocator) -> Worker | None:
        if not self._workers:
            return None
        worker = self._workers[int(self._rng.integers(len(self._workers)))]
        self.discard(worker)
        return worker

    def __len__(self) -> int:
        return len(self._workers)


class LruPlacement:
    """The free worker that has been free the longest (least recently used)."""

    def __init__(self) -> None:
        self._free: OrderedDict[str, Worker] = OrderedDict()

    def add(self, worker: Worker) -> None:
        if worker.id in self._free:
            raise ValueError(f"worker {worker.id!r} is already free")
        self._free[worker.id] = worker

    def discard(self, worker: Worker) -> None:
        del self._free[worker.id]

    def choose(self, actor: Actor, snapshots: SnapshotLocator) -> Worker | None:
        if not self._free:
            return None
        return self._free.popitem(last=False)[1]

    def __len__(self) -> int:
        return len(self._free)


class SnapshotLocalityPlacement:
    """Prefer a free worker on a node whose local cache holds the actor's snapshot.

    Among such nodes the most recent holder wins; within a node, and when no holder
    has a free worker, the least recently used free worker is taken. A cache hit
    saves the snapshot download (Substrate issues #52, #276).
    """

    def __init__(self) -> None:
        self._free: OrderedDict[str, Worker] = OrderedDict()
        self._by_node: dict[str, OrderedDict[str, Worker]] = {}

    def add(self, worker: Worker) -> None:
        if worker.id in self._free:
            raise ValueError(f"worker {worker.id!r} is already free")
        self._free[worker.id] = worker
        self._by_node.setdefault(worker.node, OrderedDict())[worker.id] = worker

    def discard(self, worker: Worker) -> None:
        del self._free[worker.id]
        del self._by_node[worker.node][worker.id]

    def choose(self, actor: Actor, snapshots: SnapshotLocator) -> Worker | None:
        if not self._free:
            return None
        for node in snapshots.nodes_holding(actor):
            pool = self._by_node.get(node)
            if pool:
                worker = next(iter(pool.values()))
                self.discard(worker)
                return worker
        worker = next(iter(self._free.values()))
        self.discard(worker)
        return worker

    def __len__(self) -> int:
        return len(self._free)
