"""The controller's vocabulary: events in, commands out.

Events and commands are immutable ``NamedTuple``s: cheap to create (the simulator makes
millions), comparable, and printable. A driver (simulator or real backend) reports
what happened as events with the current time and carries out the commands.

Work that takes time is an *operation*: every :class:`Restore`, :class:`Checkpoint`
and :class:`StopSandbox` carries an operation id (``op``), and its completion event
names that id. The controller applies a completion only to the operation it is
waiting for; a late, duplicate or unknown completion is ignored and counted.

Every activation of an actor has a *generation* (a fencing token, increasing per
actor): the driver gives it to the sandbox it starts, stamps it on the snapshot that
sandbox produces, and sends it with every forwarded request, so a sandbox of an older
generation can neither commit a snapshot nor serve a request.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

# ---------------------------------------------------------------- timers


class IdleTimer(NamedTuple):
    """Fires when an idle actor's suspension time comes (stale if the generation moved on)."""

    actor: str
    generation: int


class RequestDeadline(NamedTuple):
    """Fires when a request still waiting for its actor must be given up (504)."""

    request: int


class DeadlineSweep(NamedTuple):
    """Fires at ``at``, the earliest deadline of an operation or forwarded request."""

    at: float


class RetryActivation(NamedTuple):
    """Fires when a failed activation of ``actor`` may be tried again (``attempt`` n)."""

    actor: str
    attempt: int


class ScaleTick(NamedTuple):
    """Fires when the scaling policy is consulted again."""

    at: float


class PrewarmTimer(NamedTuple):
    """Fires when the suspension policy wants the SUSPENDED ``actor`` restored ahead of its
    next request (stale if it was activated since: its generation moved on)."""

    actor: str
    generation: int


class WakeDue(NamedTuple):
    """Fires when a wake-up ``actor`` asked for comes due (stale if it was dropped)."""

    actor: str
    wake: int


class WakePrewarm(NamedTuple):
    """Fires ``lead_s`` before wake-up ``wake`` of ``actor``: restore it on a free worker."""

    actor: str
    wake: int


class StrandedTimer(NamedTuple):
    """Fires when ``actor``, paused on a node with no free worker, has waited long enough
    for one there: its snapshot is uploaded so that it can be restored anywhere."""

    actor: str
    version: int


class UploadTimer(NamedTuple):
    """Fires when the paused snapshot ``version`` of ``actor`` has been idle long enough
    to be uploaded (demoted from its node to remote storage)."""

    actor: str
    version: int


Timer = (
    IdleTimer
    | RequestDeadline
    | DeadlineSweep
    | RetryActivation
    | PrewarmTimer
    | ScaleTick
    | WakeDue
    | WakePrewarm
    | StrandedTimer
    | UploadTimer
)


class Tier(StrEnum):
    """Where a checkpoint keeps its snapshot.

    ``REMOTE`` (suspend): uploaded to remote storage, restorable on any node.
    ``LOCAL`` (pause): kept on the node that took it only, pinned in its cache: no
    upload, a fast restore there, and nowhere else until an :class:`Upload`.
    """

    REMOTE = "remote"
    LOCAL = "local"


# ---------------------------------------------------------------- outcomes


class ActivationOutcome(StrEnum):
    """How a restore or cold start ended."""

    OK = "ok"
    FAILED = "failed"  # this attempt failed; the snapshot is fine: try again
    UNUSABLE = "unusable"  # the snapshot cannot be restored (corrupt, missing): fail the actor


class CheckpointOutcome(StrEnum):
    """How a checkpoint ended."""

    OK = "ok"  # the snapshot is committed; the sandbox is gone
    DECLINED = "declined"  # not attempted, the sandbox is untouched and still running
    LOST = "lost"  # the sandbox is gone and its state since the last snapshot with it


# ---------------------------------------------------------------- events


class ActorCreated(NamedTuple):
    """An actor exists; it starts SUSPENDED.

    ``snapshot_version`` 0 means it is new and cold (its first activation is a cold
    start); a positive version registers an actor that already has that snapshot,
    e.g. one known to a restarted control plane or pre-warmed before a measurement.
    ``generation`` is the last activation generation it had (0 for a new actor), so
    generations keep increasing across restarts of the control plane. ``owner`` is who
    the actor belongs to (a tenant; admission may budget per owner); "" for none.
    """

    actor: str
    template: str
    snapshot_bytes: int
    snapshot_version: int = 0
    generation: int = 0
    owner: str = ""


class RequestArrived(NamedTuple):
    """A request for ``actor`` reached the control plane.

    ``arrived_at`` is when it reached the router; the router's timeout counts from then,
    or ``wait_s`` when given (a wake-up has no client waiting: it may wait longer).
    """

    request: int
    actor: str
    arrived_at: float
    wait_s: float | None = None


class ActivationFinished(NamedTuple):
    """The :class:`Restore` operation ``op`` ended."""

    op: int
    outcome: ActivationOutcome = ActivationOutcome.OK
    reason: str = ""


class RequestFinished(NamedTuple):
    """A forwarded request got its response from the actor (or failed at the driver)."""

    request: int


class CheckpointFinished(NamedTuple):
    """The :class:`Checkpoint` operation ``op`` ended; ``snapshot_bytes`` is the size of
    the snapshot it wrote (0: unknown, keep the previous estimate)."""

    op: int
    outcome: CheckpointOutcome = CheckpointOutcome.OK
    reason: str = ""
    snapshot_bytes: int = 0


class UploadFinished(NamedTuple):
    """The :class:`Upload` operation ``op`` ended (``ok``: the snapshot is remote now)."""

    op: int
    ok: bool = True
    reason: str = ""


class WakeScheduled(NamedTuple):
    """``actor`` asks to be woken at time ``at`` (a timer, or work it set itself): the
    controller delivers it then as :class:`DeliverWake`, and restores the actor ahead of
    it when a worker is free. ``key`` is the driver's own name for it (e.g. the row that
    keeps it across restarts), handed back with the delivery."""

    actor: str
    at: float
    key: str = ""


class SandboxStopped(NamedTuple):
    """The :class:`StopSandbox` operation ``op`` ended: that sandbox is gone."""

    op: int


class TimerFired(NamedTuple):
    """A timer set by a :class:`SetTimer` command came due."""

    timer: Timer


class WorkerAdded(NamedTuple):
    """A worker slot joined the pool (``provisioned``: one the controller asked for with
    :class:`ProvisionWorkers`)."""

    worker: str
    node: str
    provisioned: bool = False


class ProvisionFailed(NamedTuple):
    """``number`` of the workers asked for with :class:`ProvisionWorkers` will not join."""

    number: int
    reason: str


class WorkerRemoved(NamedTuple):
    """A worker slot should leave the pool (it drains first if it hosts an actor)."""

    worker: str


class WorkerLost(NamedTuple):
    """A worker vanished with whatever ran on it (a node or pod died)."""

    worker: str
    reason: str


class SnapshotCached(NamedTuple):
    """``node``'s local cache now holds ``version`` of ``actor``'s snapshot."""

    actor: str
    node: str
    version: int


class SnapshotEvicted(NamedTuple):
    """``node``'s local cache dropped ``version`` of ``actor``'s snapshot."""

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
    """An operator asks to delete the SUSPENDED (or FAILED) ``actor`` and its snapshots."""

    actor: str


class RecoverRequested(NamedTuple):
    """An operator accepts that a FAILED actor continues from snapshot ``version``
    (0: start over from its template); the driver has checked that version."""

    actor: str
    version: int


class ObservedSandbox(NamedTuple):
    """A sandbox the backend saw alive: activation ``generation`` of ``actor`` on ``worker``."""

    actor: str
    worker: str
    generation: int


class ObservedSnapshot(NamedTuple):
    """The newest committed snapshot of ``actor`` the backend found."""

    actor: str
    version: int


class Observed(NamedTuple):
    """What the backend saw at time ``taken_at``: every live sandbox on every worker,
    and the newest committed snapshot of every actor that has one. The controller
    converges to it (level-triggered) and records each correction."""

    taken_at: float
    sandboxes: tuple[ObservedSandbox, ...]
    snapshots: tuple[ObservedSnapshot, ...]


Event = (
    ActorCreated
    | RequestArrived
    | ActivationFinished
    | RequestFinished
    | CheckpointFinished
    | SandboxStopped
    | UploadFinished
    | WakeScheduled
    | TimerFired
    | WorkerAdded
    | ProvisionFailed
    | WorkerRemoved
    | WorkerLost
    | SnapshotCached
    | SnapshotEvicted
    | SuspendRequested
    | ResumeRequested
    | ActorDeleted
    | RecoverRequested
    | Observed
)

# ---------------------------------------------------------------- commands


class Restore(NamedTuple):
    """Start ``actor`` on ``worker``: from snapshot ``version``, or cold when version is 0.

    Answer with ``ActivationFinished(op)``. The sandbox is activation ``generation``.
    """

    actor: str
    worker: str
    node: str
    version: int
    snapshot_bytes: int
    op: int = 0
    generation: int = 0

    @property
    def cold(self) -> bool:
        """True when there is no snapshot yet: start from the template."""
        return self.version == 0


class Checkpoint(NamedTuple):
    """Checkpoint the idle ``actor`` (activation ``generation``) on ``worker`` as
    snapshot ``version``, then free the worker. Answer with ``CheckpointFinished(op)``.
    ``tier``: upload the snapshot (suspend) or keep it on ``node`` only (pause)."""

    actor: str
    worker: str
    node: str
    version: int
    snapshot_bytes: int
    op: int = 0
    generation: int = 0
    tier: Tier = Tier.REMOTE


class Upload(NamedTuple):
    """Upload the paused snapshot ``version`` of ``actor`` from ``node`` to remote
    storage (then it may be restored anywhere). Answer with ``UploadFinished(op)``."""

    actor: str
    node: str
    version: int
    snapshot_bytes: int
    op: int


class DeliverWake(NamedTuple):
    """Wake-up ``wake`` of ``actor`` (the driver's ``key``), due at ``due``, is due: send
    the actor a request (it may wait ``wait_s`` for its activation)."""

    actor: str
    wake: int
    due: float
    wait_s: float
    key: str = ""


class StopSandbox(NamedTuple):
    """Make sure the sandbox of activation ``generation`` of ``actor`` on ``worker`` is
    gone (kill it if it runs: its state is not needed). Answer with ``SandboxStopped(op)``."""

    actor: str
    worker: str
    generation: int
    reason: str
    op: int


class Forward(NamedTuple):
    """Send the request to the actor's worker, to activation ``generation``.

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
    generation: int = 0


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


class Abandon(NamedTuple):
    """A forwarded request outlived its deadline: the controller counts it as ended.
    The driver must cut its connection to the actor (a reset, never a half-close)."""

    request: int
    actor: str
    worker: str


class SetTimer(NamedTuple):
    """Deliver ``TimerFired(timer)`` at time ``at`` (a stale timer is ignored)."""

    timer: Timer
    at: float


class ProvisionWorkers(NamedTuple):
    """Start ``number`` new workers; each joins with ``WorkerAdded(provisioned=True)``."""

    number: int


class RetireWorker(NamedTuple):
    """A removed worker is now empty and may be torn down."""

    worker: str


class DropActor(NamedTuple):
    """A deleted actor is gone: its snapshots and records may be removed."""

    actor: str


class StateLost(NamedTuple):
    """Activation ``generation`` of ``actor`` is gone with its memory: the actor goes on
    from snapshot ``version`` (0: its template). Whatever it acknowledged after that
    snapshot is lost; the driver reports exactly which requests that was."""

    actor: str
    generation: int
    version: int
    reason: str


class Correction(NamedTuple):
    """The controller changed its view to match what the backend observed."""

    actor: str
    worker: str
    detail: str


class AdminResult(NamedTuple):
    """The answer to an operator's request (suspend, resume, delete, recover)."""

    actor: str
    ok: bool
    detail: str


Command = (
    Restore
    | Checkpoint
    | Upload
    | DeliverWake
    | StopSandbox
    | Forward
    | Reject
    | Abandon
    | SetTimer
    | RetireWorker
    | ProvisionWorkers
    | DropActor
    | StateLost
    | Correction
    | AdminResult
)
