"""Shared resources of the simulated cluster.

* :class:`FluidShare`: processor sharing. Concurrent jobs split a capacity equally
  (each capped at a per-job maximum). A node's link to the object store (bytes/s
  shared by concurrent transfers) and a node's CPU for restores and checkpoints
  (measured here: 8 concurrent restores each ~3.6x slower, ~2x throughput) are both
  this model with different numbers.
* :class:`ServerPool`: N servers with a FIFO queue, for the control-plane API.
* :class:`ShardedControlPlane`: several such pools, actors spread over them by
  consistent hashing.
* :class:`ByteLru`: a node-local snapshot cache bounded in bytes, least recently used
  out first.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import simpy

from control.hashring import HashRing
from sim.clock import call_later

_EPS = 1e-9


class FluidShare:
    """Processor sharing over ``capacity`` units of work per second.

    With ``n`` jobs running each progresses at ``min(per_job_cap, capacity / n)``.
    :meth:`run` returns an event that succeeds when that job's ``work`` is done.
    Each start or finish reschedules a single wake-up for the next completion, so
    the cost per change is O(jobs on this resource).
    """

    def __init__(
        self, env: simpy.Environment, capacity: float, per_job_cap: float = math.inf
    ) -> None:
        if not capacity > 0:
            raise ValueError(f"capacity must be > 0 (got {capacity})")
        if not per_job_cap > 0:
            raise ValueError(f"per_job_cap must be > 0 (got {per_job_cap})")
        self.env = env
        self.capacity = float(capacity)
        self.per_job_cap = float(per_job_cap)
        self._jobs: dict[simpy.Event, float] = {}  # event -> remaining work
        self._last = env.now
        self._version = 0
        self.work_done = 0.0

    @property
    def active(self) -> int:
        """Jobs in progress."""
        return len(self._jobs)

    @property
    def rate_per_job(self) -> float:
        """Current rate of each job (0 when idle)."""
        n = len(self._jobs)
        return 0.0 if n == 0 else min(self.per_job_cap, self.capacity / n)

    @property
    def throughput(self) -> float:
        """Total rate in use right now."""
        return self.rate_per_job * len(self._jobs)

    def utilization(self, duration_s: float) -> float:
        """The share of the capacity used from time 0 until now, over ``duration_s``."""
        self._advance()  # count the work done up to now
        return self.work_done / (self.capacity * duration_s) if duration_s > 0 else 0.0

    def run(self, work: float) -> simpy.Event:
        """Start a job of ``work`` units; the event succeeds when it is done."""
        done = self.env.event()
        if work <= 0:
            done.succeed()
            return done
        self._advance()
        self._jobs[done] = float(work)
        self._reschedule()
        return done

    def _advance(self) -> None:
        now = self.env.now
        if self._jobs and now > self._last:
            progress = self.rate_per_job * (now - self._last)
            for job in self._jobs:
                self._jobs[job] -= progress
            self.work_done += progress * len(self._jobs)
        self._last = now

    def _reschedule(self) -> None:
        self._version += 1
        if not self._jobs:
            return
        delay = max(0.0, min(self._jobs.values()) / self.rate_per_job)
        version = self._version
        call_later(self.env, delay, lambda _ev: self._wake(version))

    def _wake(self, version: int) -> None:
        if version != self._version:
            return  # superseded by a later start or finish
        self._advance()
        rate = self.rate_per_job
        finished = [job for job, left in self._jobs.items() if left <= _EPS * max(1.0, rate)]
        for job in finished:
            del self._jobs[job]
        self._reschedule()
        for job in finished:
            job.succeed()


class ServerPool:
    """``servers`` identical servers in front of one FIFO queue.

    :meth:`call` returns an event that succeeds when the call has been served
    (queueing plus a service time drawn from ``service``).
    """

    def __init__(self, env: simpy.Environment, servers: int, service: Callable[[], float]) -> None:
        if servers < 1:
            raise ValueError(f"servers must be >= 1 (got {servers})")
        self.env = env
        self.servers = servers
        self._service = service
        self._queue: deque[simpy.Event] = deque()
        self.busy = 0
        self.calls = 0
        self.busy_s = 0.0  # server-seconds of service started so far

    @property
    def queue_length(self) -> int:
        """Calls waiting for a server."""
        return len(self._queue)

    def call(self) -> simpy.Event:
        """Make one call; the event succeeds when it has been served."""
        self.calls += 1
        done = self.env.event()
        if self.busy < self.servers:
            self.busy += 1
            self._serve(done)
        else:
            self._queue.append(done)
        return done

    def _serve(self, done: simpy.Event) -> None:
        service = self._service()
        self.busy_s += service
        call_later(self.env, service, lambda _ev: self._finish(done))

    def _finish(self, done: simpy.Event) -> None:
        if self._queue:
            self._serve(self._queue.popleft())
        else:
            self.busy -= 1
        done.succeed()


class ShardedControlPlane:
    """The control-plane API as ``shards`` independent server pools (API servers, each
    with ``servers`` servers and its own queue); an actor's calls go to the shard that
    owns it on a consistent-hash ring (:class:`control.hashring.HashRing`). One shard is
    one :class:`ServerPool`, exactly. Service times come from one shared stream, in the
    order calls are served."""

    def __init__(
        self, env: simpy.Environment, shards: int, servers: int, service: Callable[[], float],
        vnodes: int = 64,
    ) -> None:  # fmt: skip
        self.ring = HashRing(shards, vnodes)
        self.pools = [ServerPool(env, servers, service) for _ in range(shards)]
        self.servers = servers

    def call(self, actor: str) -> simpy.Event:
        """Call the shard that owns ``actor``; the event succeeds when served."""
        return self.pools[self.ring.shard_of(actor)].call()

    @property
    def calls(self) -> int:
        return sum(pool.calls for pool in self.pools)

    @property
    def queue_length(self) -> int:
        return sum(pool.queue_length for pool in self.pools)

    @property
    def busy(self) -> int:
        return sum(pool.busy for pool in self.pools)

    def utilization(self, duration_s: float) -> tuple[float, float]:
        """Busy share of all servers, and of the busiest shard's, over ``duration_s``."""
        if duration_s <= 0:
            return 0.0, 0.0
        shares = [pool.busy_s / (self.servers * duration_s) for pool in self.pools]
        return sum(shares) / len(shares), max(shares)


class ByteLru:
    """A cache of snapshot versions bounded by total bytes; least recently used out first."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0 (got {capacity_bytes})")
        self.capacity = capacity_bytes
        self.used = 0
        self._items: OrderedDict[Any, tuple[int, int]] = OrderedDict()  # key -> (version, bytes)

    def __len__(self) -> int:
        return len(self._items)

    def hit(self, key: Any, version: int) -> bool:
        """True if ``version`` of ``key`` is cached (and mark it recently used)."""
        item = self._items.get(key)
        if item is None or item[0] != version:
            return False
        self._items.move_to_end(key)
        return True

    def put(self, key: Any, version: int, size: int) -> tuple[bool, list[tuple[Any, int]]]:
        """Cache ``version`` of ``key`` (replacing an older version).

        Returns whether it was stored, and the ``(key, version)`` entries evicted
        (a replaced older version of ``key`` included) to make room.
        """
        evicted: list[tuple[Any, int]] = []
        old = self._items.pop(key, None)
        if old is not None:
            self.used -= old[1]
            if old[0] != version:
                evicted.append((key, old[0]))
        if size > self.capacity:
            return False, evicted
        while self.used + size > self.capacity:
            victim, (v, b) = self._items.popitem(last=False)
            self.used -= b
            evicted.append((victim, v))
        self._items[key] = (version, size)
        self.used += size
        return True, evicted
