"""Scaling policies: how many workers the pool should have (a worker-pool autoscaler).

The controller asks every ``interval_s`` seconds with a :class:`Demand`; it starts new
workers (they join after the driver's start latency) or retires the surplus, free
workers first (on the nodes with the fewest workers, so machines empty whole and the
busy nodes keep their snapshot caches), then workers whose actors are idle.
"""

from __future__ import annotations

import math
from collections import deque

from control.policies.base import Demand


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
        counts = (("min_workers", min_workers, 0), ("max_workers", max_workers, 1),
                  ("warm_buffer", warm_buffer, 0), ("down_step", down_step, 1))  # fmt: skip
        for name, value, low in counts:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: must be an integer >= {low} (got {value!r})")
        if min_workers > max_workers:
            raise ValueError(f"min_workers: must be <= max_workers={max_workers}")
        for name, number, zero_ok in (("interval_s", interval_s, False),
                                      ("down_delay_s", down_delay_s, True)):  # fmt: skip
            ok = isinstance(number, int | float) and not isinstance(number, bool)
            if not ok or not math.isfinite(number) or number < 0 or (number == 0 and not zero_ok):
                bound = ">= 0" if zero_ok else "> 0"
                raise ValueError(f"{name}: must be a finite number {bound} (got {number!r})")
        if not isinstance(keep_idle, bool):
            raise ValueError(f"keep_idle: must be true or false (got {keep_idle!r})")
        self.min_workers = min_workers
        self.max_workers = max_workers
        self.warm_buffer = warm_buffer
        self.interval_s = float(interval_s)
        self.down_delay_s = float(down_delay_s)
        self.down_step = down_step
        self.keep_idle = keep_idle
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
