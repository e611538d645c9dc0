"""The controller's vocabulary: events in, commands out.

Events and commands are immutable ``NamedTuple``s: cheap to create (the simulator makes
millions), comparable, and printable. A driver (simulator or real backend) reports
what happened as events with the current time and carries out the commands.
"""

from __future__ import annotations

from typing import NamedTuple

# ---------------------------------------------------------------- timers


class IdleTimer(NamedTuple):
    """Fires when an idle actor's suspension time comes (stale if the generation moved on)."""

    actor: str
    generation: int


class RequestDeadline(NamedTuple):
    """Fires when a request still waiting for its actor must be given up (504)."""

    request: int


Timer = IdleTimer | RequestDeadline

# ---------------------------------------------------------------- events


class ActorCreated(NamedTuple):
    """An actor exists; it starts SUSPENDED.

    ``snapshot_version`` 0 means it is new and cold (its first activation is a cold
    start); a positive version registers an actor that already has that snapshot,
    e.g. one known to a restarted control plane or pre-warmed before a measurement.
    """

    actor: str
    template: str
    snapshot_bytes: int
    snapshot_version: int = 0


class RequestArrived(NamedTuple):
    """A request for ``actor`` reached the control plane.

    ``arrived_at`` is when it reached the router; the router's timeout counts from then.
    """

    request: int
    actor: str
    arrived_at: float


class ActivationFinished(NamedTuple):
    """A restore or cold start of ``actor`` on ``worker`` ended (``ok`` or failed)."""

    actor: str
    worker: str
    ok: bool = True


class RequestFinished(NamedTuple):
    """A forwarded request got its response from the actor."""

    request: int


class CheckpointFinished(NamedTuple):
    """A checkpoint of ``actor`` ended. A failed checkpoint destroys the sandbox's state."""

    actor: str
    worker: str
    ok: bool = True


class TimerFired(NamedTuple):
    """A timer set by a :class:`SetTimer` command came due."""

    timer: Timer


class WorkerAdded(NamedTuple):
    """A worker slot joined the pool."""

    worker: str
    node: str


class WorkerRemoved(NamedTuple):
    """A worker slot should leave the pool (it drains first if it hosts an actor)."""

    worker: str


class SnapshotCached(NamedTuple):
    """``node``'s local cache now holds ``version`` of ``actor``'s snapshot."""

    actor: str
    node: str
    version: int


class SuspendRequested(NamedTuple):
    """An operator asks to suspend ``actor`` (now if idle, else when its requests end)."""

    actor: str


class ResumeRequested(NamedTuple):
    """An operator asks to activate ``actor`` now, without a request (fails if no worker)."""

    actor: str


class ActorDeleted(NamedTuple):
    """An operator asks to delete the SUSPENDED ``actor`` and its snapshots."""

    actor: str


class SnapshotEvicted(NamedTuple):
    """``node``'s local cache dropped ``version`` of ``actor``'s snapshot."""

    actor: str
    node: str
    version: int


Event = (
    ActorCreated
    | RequestArrived
    | ActivationFinished
    | RequestFinished
    | CheckpointFinished
    | TimerFired
    | WorkerAdded
    | WorkerRemoved
    | SnapshotCached
    | SnapshotEvicted
    | SuspendRequested
    | ResumeRequested
    | ActorDeleted
)

# ---------------------------------------------------------------- commands


class Restore(NamedTuple):
    """Start ``actor`` on ``worker``: from snapshot ``version``, or cold when version is 0."""

    actor: str
    worker: str
    node: str
    version: int
    snapshot_bytes: int

    @property
    def cold(self) -> bool:
        """True when there is no snapshot yet: start from the template."""
        return self.version == 0


class Checkpoint(NamedTuple):
    """Checkpoint the idle ``actor`` on ``worker`` as snapshot ``version``, then free the worker."""

    actor: str
    worker: str
    node: str
    version: int
    snapshot_bytes: int


class Forward(NamedTuple):
    """Send the request to the actor's worker.

    ``activated`` is true when the request had to wait for its actor to be activated;
    ``queue_s`` is the time it waited for a free worker and ``activation_s`` the rest
    of its wait (checkpoint in progress, restore), both from when the control plane
    received it.
    """

    request: int
    actor: str
    worker: str
    activated: bool
    queue_s: float
    activation_s: float


class Reject(NamedTuple):
    """End the request without serving it, with an HTTP status and a reason."""

    request: int
    actor: str
    status: int
    reason: str

    @property
    def outcome(self) -> str:
        """``"timeout"`` for a 504, ``"rejected"`` for anything else."""
        return "timeout" if self.status == 504 else "rejected"


class SetTimer(NamedTuple):
    """Deliver ``TimerFired(timer)`` at time ``at`` (a stale timer is ignored)."""

    timer: Timer
    at: float


class RetireWorker(NamedTuple):
    """A removed worker is now empty and may be torn down."""

    worker: str


class DropActor(NamedTuple):
    """A deleted actor is gone: its snapshots and records may be removed."""

    actor: str


class AdminResult(NamedTuple):
    """The answer to an operator's request (suspend, resume, delete)."""

    actor: str
    ok: bool
    detail: str


Command = (
    Restore | Checkpoint | Forward | Reject | SetTimer | RetireWorker | DropActor | AdminResult
)
