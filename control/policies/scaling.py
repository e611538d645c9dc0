"""Scaling policies: how many workers the pool should have (a worker-pool autoscaler).

The controller asks every ``interval_s`` seconds with a :class:`Demand`; it starts new
workers (they join after the driver's start latency) or retires the surplus, free
workers first (on the nodes with the fewest workers, so machines empty whole and the
busy nodes keep their snapshot caches), then workers whose actors are idle.
"""

from __future__ import annotations

from collections import deque

from control.policies.base import Demand
from control.policies.checks import boolean, finite, integer


class DemandScaler:
    """Scale to the demand, not to the busy workers (which saturate at the pool size):
    ``busy + waiting + warm_buffer`` workers, within ``[min_workers, max_workers]``.

    Fast up: to the target at once. Slow down: to the largest target of the last
    ``down_delay_s`` seconds, at most ``down_step`` workers per decision, so a lull
    between bursts does not give away the workers the next burst needs. Idle warm
    actors count as demand only with ``keep_idle`` (keep-alive paid for by the pool).
    """

    def __init__(
        self,
        *,
        min_workers: int = 1,
        max_workers: int = 1000,
        warm_buffer: int = 2,
        interval_s: float = 5.0,
        down_delay_s: float = 60.0,
        down_step: int = 1,
        keep_idle: bool = False,
    ) -> None:
        self.min_workers = integer("min_workers", min_workers, 0)
        self.max_workers = integer("max_workers", max_workers, 1)
        if min_workers > max_workers:
            raise ValueError(f"min_workers: must be <= max_workers={max_workers}")
        self.warm_buffer = integer("warm_buffer", warm_buffer, 0)
        self.interval_s = finite("interval_s", interval_s)
        self.down_delay_s = finite("down_delay_s", down_delay_s, zero_ok=True)
        self.down_step = integer("down_step", down_step, 1)
        self.keep_idle = boolean("keep_idle", keep_idle)
        self._recent: deque[tuple[float, int]] = deque()  # (when, wanted), newest last

    def wanted(self, demand: Demand) -> int:
        """Workers the demand asks for now (before smoothing and bounds)."""
        idle = demand.idle if self.keep_idle else 0
        return demand.busy + idle + demand.waiting + self.warm_buffer

    def target(self, demand: Demand, now: float) -> int:
        """The pool size to have (the controller starts or retires the difference)."""
        wanted = min(max(self.wanted(demand), self.min_workers), self.max_workers)
        recent = self._recent
        while recent and recent[0][0] < now - self.down_delay_s:
            recent.popleft()
        while recent and recent[-1][1] <= wanted:
            recent.pop()  # a monotone deque: its front is the window's largest
        recent.append((now, wanted))
        if wanted >= demand.workers:
            return wanted
        return max(recent[0][1], demand.workers - self.down_step)
