"""Actors, workers and the actor lifecycle state machine."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ActorState(StrEnum):
    """Lifecycle states of an actor (an agent session).

    A new actor starts SUSPENDED with no snapshot (cold); its first activation is a
    cold start from its template, later ones restore its latest snapshot.
    """

    SUSPENDED = "suspended"
    RESUMING = "resuming"
    RUNNING = "running"
    SUSPENDING = "suspending"


class IllegalTransitionError(RuntimeError):
    """An actor was asked to move between two states the lifecycle does not connect."""


_ALLOWED: dict[ActorState, frozenset[ActorState]] = {
    ActorState.SUSPENDED: frozenset({ActorState.RESUMING}),
    # RESUMING -> SUSPENDED is a failed activation: the actor keeps its old snapshot.
    ActorState.RESUMING: frozenset({ActorState.RUNNING, ActorState.SUSPENDED}),
    ActorState.RUNNING: frozenset({ActorState.SUSPENDING}),
    ActorState.SUSPENDING: frozenset({ActorState.SUSPENDED}),
}


def check_transition(actor_id: str, old: ActorState, new: ActorState) -> None:
    """Raise :class:`IllegalTransitionError` unless ``old -> new`` is a lifecycle edge."""
    if new not in _ALLOWED[old]:
        raise IllegalTransitionError(f"actor {actor_id!r}: illegal transition {old} -> {new}")


@dataclass(slots=True)
class Actor:
    """A stateful agent session. At most one worker hosts it at a time.

    ``snapshot_version`` is 0 until the first successful checkpoint (the actor is
    cold); each checkpoint writes version ``snapshot_version + 1``.
    """

    id: str
    template: str
    snapshot_bytes: int
    state: ActorState = ActorState.SUSPENDED
    worker: str | None = None
    snapshot_version: int = 0
    inflight: int = 0
    last_used: float = 0.0
    idle_generation: int = 0
    suspend_requested: bool = False


@dataclass(slots=True)
class Worker:
    """A sandbox slot on a node that runs at most one actor at a time."""

    id: str
    node: str
    actor: str | None = None
    released_at: float = 0.0
    draining: bool = False
