"""Actors, workers and the actor lifecycle state machine."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ActorState(StrEnum):
    """Lifecycle states of an actor (an agent session).

    A new actor starts SUSPENDED with no snapshot (cold); its first activation is a
    cold start from its template, later ones restore its latest snapshot. FAILED
    means its snapshot cannot be restored: it serves nothing until an operator
    decides where it continues from (or deletes it).
    """

    SUSPENDED = "suspended"
    RESUMING = "resuming"
    RUNNING = "running"
    SUSPENDING = "suspending"
    FAILED = "failed"


class IllegalTransitionError(RuntimeError):
    """An actor was asked to move between two states the lifecycle does not connect."""


_ALLOWED: dict[ActorState, frozenset[ActorState]] = {
    # SUSPENDED -> FAILED: the backend found its snapshot missing.
    ActorState.SUSPENDED: frozenset({ActorState.RESUMING, ActorState.FAILED}),
    # RESUMING -> SUSPENDED: a failed or abandoned activation; the snapshot is intact.
    # RESUMING -> FAILED: the snapshot itself cannot be restored.
    ActorState.RESUMING: frozenset({ActorState.RUNNING, ActorState.SUSPENDED, ActorState.FAILED}),
    # RUNNING -> SUSPENDED: its sandbox died; it goes on from its last snapshot.
    ActorState.RUNNING: frozenset({ActorState.SUSPENDING, ActorState.SUSPENDED}),
    # SUSPENDING -> RUNNING: the driver declined the checkpoint; the sandbox is untouched.
    ActorState.SUSPENDING: frozenset({ActorState.SUSPENDED, ActorState.RUNNING}),
    # FAILED -> SUSPENDED: an operator chose the snapshot it continues from.
    ActorState.FAILED: frozenset({ActorState.SUSPENDED}),
}


def check_transition(actor_id: str, old: ActorState, new: ActorState) -> None:
    """Raise :class:`IllegalTransitionError` unless ``old -> new`` is a lifecycle edge."""
    if new not in _ALLOWED[old]:
        raise IllegalTransitionError(f"actor {actor_id!r}: illegal transition {old} -> {new}")


@dataclass(slots=True)
class Actor:
    """A stateful agent session. At most one worker hosts it at a time.

    ``snapshot_version`` is 0 until the first successful checkpoint (the actor is
    cold); each checkpoint writes version ``snapshot_version + 1``. ``generation``
    counts activations (the fencing token of the newest one). ``failure`` is the last
    thing that went wrong with it, for operators; ``op`` is the operation the
    controller waits for while it is RESUMING or SUSPENDING. ``owner`` is the tenant
    it belongs to ("" for none). ``paused_on`` names the node that holds its newest
    snapshot when that snapshot was paused (kept there only, not uploaded).
    """

    id: str
    template: str
    snapshot_bytes: int
    owner: str = ""
    state: ActorState = ActorState.SUSPENDED
    worker: str | None = None
    snapshot_version: int = 0
    generation: int = 0
    inflight: int = 0
    last_used: float = 0.0
    state_since: float = 0.0
    idle_generation: int = 0
    suspend_requested: bool = False
    op: int | None = None
    attempts: int = 0  # failed activations in a row
    retry_at: float | None = None  # a retry of its activation is scheduled
    declines: int = 0  # declined checkpoints in a row
    checkpoint_not_before: float = 0.0
    overdue: bool = False  # its checkpoint passed its deadline
    failure: str | None = None
    paused_on: str | None = None  # the node holding its newest snapshot, if only there
    upload_op: int | None = None  # the upload of its paused snapshot under way


@dataclass(slots=True)
class Worker:
    """A sandbox slot on a node that runs at most one actor at a time.

    A quarantined worker is out of the pool until the driver confirms it is clean
    (its ``quarantined`` text says why).
    """

    id: str
    node: str
    actor: str | None = None
    released_at: float = 0.0
    draining: bool = False
    quarantined: str | None = None
    quarantined_since: float = 0.0
