"""Admission policies: what a request gets when its actor needs a worker and none is free,
and which queued actor the next free worker goes to."""

from __future__ import annotations

from control.model import Actor
from control.policies.base import AdmissionDecision, Load, Refuse, Wait
from control.policies.checks import boolean, finite, integer_or_none

QUEUE_ORDERS = ("fifo", "lifo", "adaptive")


class FailFast:
    """Reject at once with 503 (Agent Substrate: no queue)."""

    def admit(self, actor: Actor, now: float, load: Load) -> AdmissionDecision:
        return Refuse(503, "no free worker")

    def serve_newest_first(self, load: Load) -> bool:
        return False


class QueueWithDeadline:
    """Wait for a worker for up to ``timeout_s`` seconds, then 504 (Substrate #52)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = finite("timeout_s", timeout_s)

    def admit(self, actor: Actor, now: float, load: Load) -> AdmissionDecision:
        return Wait(now + self.timeout_s, evict=False)

    def serve_newest_first(self, load: Load) -> bool:
        return False


class EvictThenWait:
    """Suspend an idle actor to make room, and wait up to ``timeout_s`` for the worker."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = finite("timeout_s", timeout_s)

    def admit(self, actor: Actor, now: float, load: Load) -> AdmissionDecision:
        return Wait(now + self.timeout_s, evict=True)

    def serve_newest_first(self, load: Load) -> bool:
        return False


class ParkAndRetry:
    """Park the request and place its actor when a worker frees, within bounds; shed the
    rest at once instead of letting them time out (Substrate #52, #276).

    * a bounded wait: ``timeout_s`` (the router's timeout bounds it too);
    * a bounded queue: with ``max_queue`` actors parked, the next one is shed with 503;
    * per-caller budgets: an owner with ``per_caller`` actors parked gets 429 for the
      next one (actors without an owner are exempt);
    * ``evict``: also suspend idle actors to make room (as :class:`EvictThenWait`);
    * ``order``: which parked actor the next free worker goes to: ``fifo``, ``lifo``, or
      ``adaptive``: LIFO while more than ``lifo_over`` actors are parked (default: as
      many as there are workers), FIFO otherwise (adaptive LIFO, as in Facebook's
      queueing of overloaded services: under overload the oldest parked requests are
      the ones about to time out). Measured on closed-loop agents (README): LIFO helps
      when the wait bound is short and hurts when it is long, so FIFO is the default.
    """

    def __init__(
        self,
        timeout_s: float,
        *,
        max_queue: int | None = None,
        per_caller: int | None = None,
        evict: bool = True,
        order: str = "fifo",
        lifo_over: int | None = None,
    ) -> None:
        self.timeout_s = finite("timeout_s", timeout_s)
        self.max_queue = integer_or_none("max_queue", max_queue, 0)
        self.per_caller = integer_or_none("per_caller", per_caller, 1)
        self.lifo_over = integer_or_none("lifo_over", lifo_over, 0)
        if order not in QUEUE_ORDERS:
            raise ValueError(f"order: must be one of {', '.join(QUEUE_ORDERS)} (got {order!r})")
        self.evict = boolean("evict", evict)
        self.order = order

    def admit(self, actor: Actor, now: float, load: Load) -> AdmissionDecision:
        if not load.queued:  # a later request for a parked actor joins it
            if self.max_queue is not None and load.waiting >= self.max_queue:
                return Refuse(503, "overloaded: the queue for workers is full")
            if (
                self.per_caller is not None
                and actor.owner
                and load.owner_waiting >= self.per_caller
            ):
                return Refuse(429, f"owner {actor.owner!r} has {self.per_caller} actors parked")
        return Wait(now + self.timeout_s, evict=self.evict)

    def serve_newest_first(self, load: Load) -> bool:
        if self.order == "fifo":
            return False
        if self.order == "lifo":
            return True
        over = load.workers if self.lifo_over is None else self.lifo_over
        return load.waiting > over
