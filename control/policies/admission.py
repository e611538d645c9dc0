"""Admission policies: what a request gets when its actor needs a worker and none is free."""

from __future__ import annotations

import math

from control.model import Actor
from control.policies.base import AdmissionDecision, Refuse, Wait


def _check_timeout(timeout_s: float) -> float:
    if not (isinstance(timeout_s, int | float) and math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s: must be a finite number > 0 (got {timeout_s!r})")
    return float(timeout_s)


class FailFast:
    """Reject at once with 503 (Agent Substrate: no queue)."""

    def admit(self, actor: Actor, now: float) -> AdmissionDecision:
        return Refuse(503, "no free worker")


class QueueWithDeadline:
    """Wait for a worker for up to ``timeout_s`` seconds, then 504 (Substrate #52)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = _check_timeout(timeout_s)

    def admit(self, actor: Actor, now: float) -> AdmissionDecision:
        return Wait(now + self.timeout_s, evict=False)


class EvictThenWait:
    """Suspend an idle actor to make room, and wait up to ``timeout_s`` for the worker."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = _check_timeout(timeout_s)

    def admit(self, actor: Actor, now: float) -> AdmissionDecision:
        return Wait(now + self.timeout_s, evict=True)
