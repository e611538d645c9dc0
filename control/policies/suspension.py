"""Suspension policies: when an idle actor gives its worker back."""

from __future__ import annotations

from collections.abc import Iterable

from control.model import Actor
from control.policies.checks import finite


def _least_recently_used(idle: Iterable[Actor]) -> Actor | None:
    return next(iter(idle), None)


class RestoreOnDemand:
    """For policies that learn nothing from requests and never pre-warm."""

    def on_request(self, actor: Actor, now: float) -> None:
        return None

    def prewarm_at(self, actor: Actor, now: float) -> float | None:
        return None


class AfterEachRequest(RestoreOnDemand):
    """Suspend as soon as the actor has no request in flight (Agent Executor's default)."""

    def suspend_at(self, actor: Actor, now: float) -> float | None:
        return now

    def choose_victim(self, idle: Iterable[Actor]) -> Actor | None:
        return _least_recently_used(idle)


class IdleTimeout(RestoreOnDemand):
    """Suspend an actor after ``ttl_s`` seconds without requests (a TTL; Substrate #424)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = finite("ttl_s", ttl_s, zero_ok=True)

    def suspend_at(self, actor: Actor, now: float) -> float | None:
        return now + self.ttl_s

    def choose_victim(self, idle: Iterable[Actor]) -> Actor | None:
        return _least_recently_used(idle)


class Lazy(RestoreOnDemand):
    """Keep idle actors warm; suspend the least recently used one only when a worker is
    needed (Substrate #707). Pair it with the evict-then-wait admission policy."""

    def suspend_at(self, actor: Actor, now: float) -> float | None:
        return None

    def choose_victim(self, idle: Iterable[Actor]) -> Actor | None:
        return _least_recently_used(idle)
