"""The controller: a pure state machine from events to commands.

A driver calls :meth:`Controller.handle` with an event and the current time and
carries out the returned commands. The controller never reads a clock, does no I/O
and keeps no global state, so the simulator (virtual time) and the real backends
(wall-clock time) run exactly the same decisions.

It does not trust the driver to complete every command exactly once:

* every operation (restore, checkpoint, stop) has an id, and only the completion of
  the operation the controller waits for is applied; late, duplicate and unknown
  completions are ignored and counted (``stats.stale_completions``);
* every activation has a generation (fencing token) that goes with its sandbox, its
  snapshot and every request forwarded to it;
* operations have deadlines (:class:`RecoverySettings`). An activation that overruns
  is abandoned: its sandbox is stopped, its worker quarantined until the driver
  confirms that, and the activation retried with backoff, then failed with a reason.
  A checkpoint that overruns cannot be abandoned without losing state, so its actor
  is marked overdue (requests get 503 at once) and its worker quarantined until the
  checkpoint ends or the backend's observed state says how it ended. A forwarded
  request with no answer by its deadline is abandoned (the driver cuts it);
* backends report observed state (:class:`Observed`) and the controller converges to
  it: a sandbox that died is declared lost (from its last snapshot), a sandbox it does
  not expect is stopped, a newer snapshot is adopted, a missing one fails the actor.

Guarantees (checked by the property tests in ``tests/test_invariants.py``):

* an actor is on at most one worker, and a worker hosts at most one actor;
* every request ends exactly once: either one :class:`Reject`, or one
  :class:`Forward` followed by the driver's :class:`RequestFinished` or the
  controller's :class:`Abandon`;
* an actor is checkpointed only with no request in flight (the driver must still
  close its connections first; see the local backend);
* whatever completions are dropped, duplicated, reordered or late, every actor
  leaves RESUMING, and every worker ends up free or quarantined with a reason.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from control.messages import (
    Abandon,
    ActivationFinished,
    ActivationOutcome,
    ActorCreated,
    ActorDeleted,
    AdminResult,
    Checkpoint,
    CheckpointFinished,
    CheckpointOutcome,
    Command,
    Correction,
    DeadlineSweep,
    DeliverWake,
    DropActor,
    Event,
    Forward,
    IdleTimer,
    Observed,
    PrewarmTimer,
    ProvisionFailed,
    ProvisionWorkers,
    RecoverRequested,
    Reject,
    RequestArrived,
    RequestDeadline,
    RequestFinished,
    Restore,
    ResumeRequested,
    RetireWorker,
    RetryActivation,
    SandboxStopped,
    ScaleTick,
    SetTimer,
    SnapshotCached,
    SnapshotEvicted,
    StateLost,
    StopSandbox,
    StrandedTimer,
    SuspendRequested,
    Tier,
    TimerFired,
    Upload,
    UploadFinished,
    UploadTimer,
    WakeDue,
    WakePrewarm,
    WakeScheduled,
    WorkerAdded,
    WorkerLost,
    WorkerRemoved,
)
from control.model import Actor, ActorState, Worker, check_transition
from control.policies.base import (
    AdmissionDecision,
    AdmissionPolicy,
    Demand,
    Load,
    LocalityPolicy,
    PlacementPolicy,
    Refuse,
    ScalingPolicy,
    SuspensionPolicy,
    Wait,
)
from control.recovery import RecoverySettings
from control.timers import TimerSettings

SUSPENDED = ActorState.SUSPENDED
RESUMING = ActorState.RESUMING
RUNNING = ActorState.RUNNING
SUSPENDING = ActorState.SUSPENDING
FAILED = ActorState.FAILED
UNAVAILABLE = "actor unavailable"  # what a client of a failed or stuck actor is told


class ProtocolError(RuntimeError):
    """The driver reported an event that contradicts the controller's state."""


class _Phase(Enum):
    PENDING = 1
    FORWARDED = 2


class _Request:
    __slots__ = ("actor", "generation", "id", "phase", "queue_s", "received_at", "worker")

    def __init__(self, request_id: int, actor: str, received_at: float) -> None:
        self.id = request_id
        self.actor = actor
        self.received_at = received_at
        self.queue_s = 0.0  # time spent with its actor in the queue for a free worker
        self.phase = _Phase.PENDING
        self.worker = ""  # where it was forwarded, to which activation
        self.generation = 0


class _OpKind(Enum):
    RESTORE = "restore"
    CHECKPOINT = "checkpoint"
    STOP = "stop"
    UPLOAD = "upload"


@dataclass(slots=True)
class _Op:
    id: int
    kind: _OpKind
    actor: str
    worker: str
    generation: int
    version: int  # a checkpoint: the version it writes
    deadline: float | None
    freeing: bool = False  # a checkpoint counted in Controller._freeing
    tier: Tier = Tier.REMOTE  # a checkpoint: where its snapshot stays


_STRANDED = Wait(deadline=None, evict=False)  # a paused actor waits for a worker on its node

# Entries of the deadline heap: (due, kind, key); kind 0 is an operation id, 1 a request.
_OP_DEADLINE, _FORWARD_DEADLINE = 0, 1


@dataclass
class ControllerStats:
    """Counters the controller keeps as it runs (all derived from events alone)."""

    events: int = 0
    activations: int = 0
    cold_starts: int = 0
    checkpoints: int = 0
    failed_activations: int = 0
    failed_checkpoints: int = 0  # checkpoints that lost their sandbox
    evictions: int = 0
    stale_completions: int = 0  # late, duplicate or unknown completions, ignored
    activation_deadlines: int = 0
    checkpoint_deadlines: int = 0
    declined_checkpoints: int = 0
    activation_retries: int = 0
    abandoned_requests: int = 0
    lost_states: int = 0  # activations whose memory was lost (StateLost)
    quarantines: int = 0
    corrections: int = 0  # changes made to match observed state
    workers_lost: int = 0
    prewarms: int = 0  # activations the suspension policy asked for ahead of a request
    workers_started: int = 0  # by the scaling policy
    workers_retired: int = 0  # by the scaling policy
    provision_failures: int = 0  # workers asked for that the driver could not start
    pauses: int = 0  # checkpoints kept on their node (tier LOCAL)
    uploads: int = 0  # paused snapshots uploaded (demoted, or for a stranded actor)
    failed_uploads: int = 0
    strandings: int = 0  # a paused actor needed a worker and its node had none free
    stranded_local: int = 0  # ... and then got one there
    wakeups_scheduled: int = 0
    wakeups_refused: int = 0  # unknown actor, too many pending, too far ahead
    wakeups_delivered: int = 0
    wake_prewarms: int = 0  # restores ahead of a wake-up (also counted in prewarms)


class Controller:
    """Multiplexes actors onto workers under pluggable policies.

    ``router_timeout_s`` bounds how long a request may wait, from its arrival at the
    router, for its actor to become ready (Substrate's router gives up after 5 s);
    every waiting request therefore ends. Admission policies may set a shorter deadline.
    """

    def __init__(
        self,
        placement: PlacementPolicy,
        suspension: SuspensionPolicy,
        admission: AdmissionPolicy,
        *,
        router_timeout_s: float,
        recovery: RecoverySettings | None = None,
        scaling: ScalingPolicy | None = None,
        locality: LocalityPolicy | None = None,
        timers: TimerSettings | None = None,
    ) -> None:
        if not router_timeout_s > 0:
            raise ValueError(f"router_timeout_s: must be > 0 (got {router_timeout_s!r})")
        self.placement = placement
        self.suspension = suspension
        self.admission = admission
        self.router_timeout_s = float(router_timeout_s)
        self.recovery = recovery or RecoverySettings()
        self.scaling = scaling
        self.locality = locality
        self.timers = timers or TimerSettings()
        self.stats = ControllerStats()

        self._actors: dict[str, Actor] = {}
        self._workers: dict[str, Worker] = {}
        self._requests: dict[int, _Request] = {}
        self._pending: dict[str, list[_Request]] = {}  # actor -> requests waiting for it
        self._idle: OrderedDict[str, Actor] = OrderedDict()  # running, no requests; LRU first
        # Actors queued for a free worker, FIFO: actor -> (evict for it?, queued since).
        self._waiting: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self._evict_demand = 0  # waiting actors whose admission asked for eviction
        self._owner_waiting: dict[str, int] = {}  # owner -> its actors in the queue
        self._freeing = 0  # checkpoints in progress that will return a worker to the pool
        self._cached: dict[str, dict[str, int]] = {}  # actor -> node -> cached version
        self._counts = dict.fromkeys(ActorState, 0)
        self._now = float("-inf")
        self._occupied = 0
        self._occupied_area = 0.0
        self._occupied_since = 0.0
        self._ops: dict[int, _Op] = {}
        self._op_ids = 0
        self._stops: dict[tuple[str, str, int], int] = {}  # (worker, actor, generation) -> op
        self._pooled: set[str] = set()  # workers in the placement policy's free pool
        self._deadlines: list[tuple[float, int, int]] = []
        self._sweep_at: float | None = None
        self._starting = 0  # workers asked for (ProvisionWorkers) that have not joined
        self._scale_armed = False
        self._pool_area = 0.0  # integral of the pool (joined and starting) over time
        self._pool_since = 0.0
        # Paused actors waiting for a worker on the node holding their snapshot:
        # node -> actor -> stranded since; and actor -> node.
        self._stranded: dict[str, OrderedDict[str, float]] = {}
        self._stranded_on: dict[str, str] = {}
        # actor -> wake id -> (due time, the driver's key)
        self._wakes: dict[str, dict[int, tuple[float, str]]] = {}
        self._wake_ids = 0

        self._handlers: dict[type, Callable[[Any, float, list[Command]], None]] = {
            ActorCreated: self._on_actor_created,
            RequestArrived: self._on_request_arrived,
            ActivationFinished: self._on_activation_finished,
            RequestFinished: self._on_request_finished,
            CheckpointFinished: self._on_checkpoint_finished,
            SandboxStopped: self._on_sandbox_stopped,
            UploadFinished: self._on_upload_finished,
            WakeScheduled: self._on_wake_scheduled,
            TimerFired: self._on_timer,
            WorkerAdded: self._on_worker_added,
            ProvisionFailed: self._on_provision_failed,
            WorkerRemoved: self._on_worker_removed,
            WorkerLost: self._on_worker_lost,
            SnapshotCached: self._on_snapshot_cached,
            SnapshotEvicted: self._on_snapshot_evicted,
            SuspendRequested: self._on_suspend_requested,
            ResumeRequested: self._on_resume_requested,
            ActorDeleted: self._on_actor_deleted,
            RecoverRequested: self._on_recover_requested,
            Observed: self._on_observed,
        }

    # ------------------------------------------------------------ public API

    def handle(self, event: Event, now: float) -> list[Command]:
        """Apply ``event`` at time ``now`` and return the commands to carry out, in order."""
        if now < self._now:
            raise ValueError(f"time went backwards: {now} < {self._now} ({event!r})")
        self._now = now
        self.stats.events += 1
        self._pool_area += (len(self._workers) + self._starting) * (now - self._pool_since)
        self._pool_since = now
        out: list[Command] = []
        try:
            handler = self._handlers[type(event)]
        except KeyError:
            raise TypeError(f"not a controller event: {event!r}") from None
        handler(event, now, out)
        if self.scaling is not None and not self._scale_armed:
            self._scale_armed = True
            out.append(
                SetTimer(ScaleTick(now + self.scaling.interval_s), now + self.scaling.interval_s)
            )
        return out

    def actor(self, actor_id: str) -> Actor | None:
        """The actor record (read-only by convention), or None if unknown."""
        return self._actors.get(actor_id)

    def worker(self, worker_id: str) -> Worker | None:
        """The worker record (read-only by convention), or None if unknown."""
        return self._workers.get(worker_id)

    def actors(self) -> Sequence[Actor]:
        """All actors, in creation order."""
        return list(self._actors.values())

    def workers(self) -> Sequence[Worker]:
        """All workers, in the order they were added."""
        return list(self._workers.values())

    def is_running(self, actor_id: str) -> bool:
        """True when the actor is RUNNING (a router may skip the control plane for it)."""
        actor = self._actors.get(actor_id)
        return actor is not None and actor.state is RUNNING

    def is_current(self, op: int) -> bool:
        """True while the controller waits for operation ``op`` to complete."""
        return op in self._ops

    def state_counts(self) -> dict[ActorState, int]:
        """Number of actors in each lifecycle state."""
        return dict(self._counts)

    @property
    def free_workers(self) -> int:
        """Workers in the pool with no actor."""
        return len(self.placement)

    @property
    def occupied_workers(self) -> int:
        """Workers hosting an actor (resuming, running or suspending)."""
        return self._occupied

    @property
    def quarantined_workers(self) -> int:
        """Workers out of the pool until the driver confirms they are clean."""
        return sum(1 for w in self._workers.values() if w.quarantined is not None)

    @property
    def waiting_actors(self) -> int:
        """Actors queued for a free worker."""
        return len(self._waiting)

    def queue(self) -> list[str]:
        """Actors waiting for a free worker, first in line first."""
        return list(self._waiting)

    def stranded(self) -> dict[str, list[str]]:
        """Paused actors waiting for a worker on their node: node -> actors, first first."""
        return {node: list(queue) for node, queue in self._stranded.items()}

    def pending_wakeups(self, actor_id: str) -> list[float]:
        """When ``actor_id``'s scheduled wake-ups are due, soonest first."""
        return sorted(due for due, _ in self._wakes.get(actor_id, {}).values())

    def waiting_requests(self, actor_id: str) -> int:
        """Requests held for ``actor_id`` until it is ready."""
        return len(self._pending.get(actor_id, ()))

    @property
    def open_requests(self) -> int:
        """Requests received and not yet ended (waiting or forwarded)."""
        return len(self._requests)

    def provisioned_worker_seconds(self, now: float) -> float:
        """Integral of the pool (workers joined, draining or starting) up to ``now``:
        what the workers cost."""
        return self._pool_area + (len(self._workers) + self._starting) * (now - self._pool_since)

    @property
    def starting_workers(self) -> int:
        """Workers the scaling policy asked for that have not joined yet."""
        return self._starting

    def occupied_worker_seconds(self, now: float) -> float:
        """Integral of occupied workers over time, from time 0 up to ``now``."""
        return self._occupied_area + self._occupied * (now - self._occupied_since)

    def nodes_holding(self, actor: Actor) -> Sequence[str]:
        """Nodes whose cache holds ``actor``'s current snapshot, most recent first."""
        cached = self._cached.get(actor.id)
        if not cached or actor.snapshot_version == 0:
            return ()
        version = actor.snapshot_version
        return [node for node, v in reversed(cached.items()) if v == version]

    # ------------------------------------------------------------ requests

    def _on_actor_created(self, ev: ActorCreated, now: float, out: list[Command]) -> None:
        if ev.actor in self._actors:
            raise ValueError(f"actor {ev.actor!r} already exists")
        if min(ev.snapshot_bytes, ev.snapshot_version, ev.generation) < 0:
            raise ValueError(
                f"actor {ev.actor!r}: snapshot_bytes, version and generation must be >= 0"
            )
        self._actors[ev.actor] = Actor(
            ev.actor,
            ev.template,
            ev.snapshot_bytes,
            owner=ev.owner,
            snapshot_version=ev.snapshot_version,
            generation=ev.generation,
            last_used=now,
            state_since=now,
        )
        self._counts[SUSPENDED] += 1

    def _on_request_arrived(self, ev: RequestArrived, now: float, out: list[Command]) -> None:
        if ev.request in self._requests:
            raise ProtocolError(f"request {ev.request} arrived twice")
        actor = self._actors.get(ev.actor)
        if actor is None:
            out.append(Reject(ev.request, ev.actor, 404, "unknown actor"))
            return
        self.suspension.on_request(actor, now)
        if self.locality is not None:
            self.locality.on_request(actor, now)
        if actor.state is FAILED or (actor.state is SUSPENDING and actor.overdue):
            out.append(Reject(ev.request, actor.id, 503, UNAVAILABLE))
            return
        req = _Request(ev.request, actor.id, now)
        if actor.state is RUNNING:
            self._requests[req.id] = req
            self._forward(req, actor, now, out, warm=True)
            return
        deadline = ev.arrived_at + (self.router_timeout_s if ev.wait_s is None else ev.wait_s)
        if now >= deadline:
            out.append(Reject(req.id, actor.id, 504, "router timeout before activation"))
            return
        if actor.state is SUSPENDED and actor.retry_at is None:
            decision = self._acquire_worker(actor, now, out)
            if isinstance(decision, Refuse):
                out.append(Reject(req.id, actor.id, decision.status, decision.reason))
                return
            if decision is not None and decision.deadline is not None:
                deadline = min(deadline, decision.deadline)
        # RESUMING, SUSPENDING, or SUSPENDED and now resuming, queued or about to retry.
        self._requests[req.id] = req
        self._pending.setdefault(actor.id, []).append(req)
        out.append(SetTimer(RequestDeadline(req.id), deadline))
        self._evict_for_waiters(now, out)

    def _on_request_finished(self, ev: RequestFinished, now: float, out: list[Command]) -> None:
        req = self._requests.get(ev.request)
        if req is None or req.phase is not _Phase.FORWARDED:
            self.stats.stale_completions += 1  # never forwarded, or already ended
            return
        self._end_forwarded(req, now, out)

    def _end_forwarded(self, req: _Request, now: float, out: list[Command]) -> None:
        del self._requests[req.id]
        actor = self._actors.get(req.actor)
        if actor is None or actor.state is not RUNNING or actor.generation != req.generation:
            return  # its activation is gone already
        actor.inflight -= 1
        actor.last_used = now
        if actor.inflight == 0:
            self._became_idle(actor, now, out)

    # ------------------------------------------------------------ completions

    def _take_op(self, op_id: int, kind: _OpKind) -> _Op | None:
        """The operation a completion names, removed; None (counted) if it is stale."""
        op = self._ops.get(op_id)
        if op is None or op.kind is not kind:
            self.stats.stale_completions += 1
            return None
        del self._ops[op_id]
        if kind is _OpKind.UPLOAD:
            actor = self._actors[op.actor]
            if actor.upload_op != op.id:
                raise ProtocolError(f"operation {op} does not match actor {actor}")
            actor.upload_op = None
        elif kind is not _OpKind.STOP:
            actor = self._actors[op.actor]
            if actor.op != op.id or actor.worker != op.worker:
                raise ProtocolError(f"operation {op} does not match actor {actor}")
            actor.op = None
        return op

    def _on_activation_finished(
        self, ev: ActivationFinished, now: float, out: list[Command]
    ) -> None:
        op = self._take_op(ev.op, _OpKind.RESTORE)
        if op is None:
            return
        actor, worker = self._actors[op.actor], self._workers[op.worker]
        if ev.outcome is ActivationOutcome.OK:
            self._set_state(actor, RUNNING, now)
            actor.last_used = now
            actor.attempts = 0
            actor.failure = None
            pending = self._pending.pop(actor.id, ())
            for req in pending:
                self._forward(req, actor, now, out)
            if not pending:
                self._became_idle(actor, now, out)
            return
        self.stats.failed_activations += 1
        self._unbind(actor, worker, now)
        if ev.outcome is ActivationOutcome.UNUSABLE:
            self._fail(actor, ev.reason or "its snapshot cannot be restored", now, out)
        else:
            self._set_state(actor, SUSPENDED, now)
            self._activation_failed(actor, ev.reason or "activation failed", now, out)
        self._release(worker, now, out)

    def _on_checkpoint_finished(
        self, ev: CheckpointFinished, now: float, out: list[Command]
    ) -> None:
        op = self._take_op(ev.op, _OpKind.CHECKPOINT)
        if op is None:
            return
        actor, worker = self._actors[op.actor], self._workers[op.worker]
        self._stop_freeing(op)
        actor.overdue = False
        if ev.outcome is CheckpointOutcome.DECLINED:
            self.stats.declined_checkpoints += 1
            actor.declines += 1
            retry = self.recovery.checkpoint_retry_s * 2 ** (actor.declines - 1)
            actor.checkpoint_not_before = now + min(retry, self.recovery.checkpoint_retry_max_s)
            actor.failure = f"checkpoint declined: {ev.reason or 'no reason given'}"
            worker.quarantined = None
            self._set_state(actor, RUNNING, now)
            pending = self._pending.pop(actor.id, ())
            for req in pending:
                self._forward(req, actor, now, out)
            if not pending:
                self._became_idle(actor, now, out)
            self._evict_for_waiters(now, out)
            return
        committed = op.version if ev.outcome is CheckpointOutcome.OK else None
        why = ev.reason or "checkpoint failed"
        self._checkpoint_ended(
            actor, worker, now, out, committed=committed, size=ev.snapshot_bytes, reason=why,
            tier=op.tier,
        )  # fmt: skip

    def _checkpoint_ended(
        self,
        actor: Actor,
        worker: Worker,
        now: float,
        out: list[Command],
        *,
        committed: int | None,
        size: int,
        reason: str,
        tier: Tier = Tier.REMOTE,
    ) -> None:
        """``actor``'s checkpoint on ``worker`` is over: its snapshot ``committed`` as that
        version, or None: lost with the sandbox (back to the last snapshot). Either way
        the actor is SUSPENDED and the worker free. ``size``: the new snapshot's bytes
        (0: unknown). A paused snapshot (``tier`` LOCAL) stays on the worker's node."""
        if committed is not None:
            actor.snapshot_version = committed
            if size > 0:
                actor.snapshot_bytes = size
            actor.declines = 0
            actor.failure = None
            actor.paused_on = worker.node if tier is Tier.LOCAL else None
            if tier is Tier.LOCAL:
                self.stats.pauses += 1
                after = self.locality.upload_after_s if self.locality is not None else None
                if after is not None:
                    out.append(SetTimer(UploadTimer(actor.id, committed), now + after))
        else:
            self.stats.failed_checkpoints += 1
            self._state_lost(actor, reason, out)
        actor.suspend_requested = False
        actor.overdue = False
        self._set_state(actor, SUSPENDED, now)
        self._unbind(actor, worker, now)
        worker.quarantined = None
        if actor.paused_on == worker.node and actor.id in self._pending and not worker.draining:
            self._activate(actor, worker, now, out)  # requests came while it paused: resume
        else:
            self._release(worker, now, out)
            self._serve_pending(actor, now, out)
        if committed is not None and actor.id not in self._pending:
            at = self.suspension.prewarm_at(actor, now)
            if at is not None:
                out.append(SetTimer(PrewarmTimer(actor.id, actor.generation), max(at, now)))
            wake = self._next_wake(actor.id)
            if wake is not None and wake[1] - self.timers.lead_s <= now:
                self._wake_prewarm(actor, now, out)

    def _on_sandbox_stopped(self, ev: SandboxStopped, now: float, out: list[Command]) -> None:
        op = self._take_op(ev.op, _OpKind.STOP)
        if op is None:
            return
        self._stops.pop((op.worker, op.actor, op.generation), None)
        worker = self._workers.get(op.worker)
        if worker is not None:
            self._maybe_unquarantine(worker, now, out)

    # ------------------------------------------------------------ timers

    def _on_timer(self, ev: TimerFired, now: float, out: list[Command]) -> None:
        timer = ev.timer
        if isinstance(timer, IdleTimer):
            actor = self._actors.get(timer.actor)
            if (
                actor is None
                or actor.idle_generation != timer.generation
                or actor.state is not RUNNING
                or actor.inflight
            ):
                return  # stale
            if actor.id in self._idle:
                self._checkpoint(actor, now, out)  # its suspension time came
            else:
                self._became_idle(actor, now, out)  # a declined checkpoint's wait is over
            return
        if isinstance(timer, DeadlineSweep):
            self._sweep(timer.at, now, out)
            return
        if isinstance(timer, RetryActivation):
            self._retry_activation(timer, now, out)
            return
        if isinstance(timer, PrewarmTimer):
            self._prewarm(timer, now, out)
            return
        if isinstance(timer, ScaleTick):
            self._scale(now, out)
            return
        if isinstance(timer, WakeDue):
            self._wake_due(timer, now, out)
            return
        if isinstance(timer, WakePrewarm):
            actor = self._actors.get(timer.actor)
            if actor is not None and timer.wake in self._wakes.get(actor.id, ()):
                self._wake_prewarm(actor, now, out)
            return
        if isinstance(timer, StrandedTimer | UploadTimer):
            self._upload_timer(timer, now, out)
            return
        req = self._requests.get(timer.request)
        if req is None or req.phase is not _Phase.PENDING:
            return  # already forwarded or ended: a stale deadline
        del self._requests[req.id]
        pending = self._pending[req.actor]
        pending.remove(req)
        if not pending:
            del self._pending[req.actor]
            self._leave_queue(req.actor, now)
        out.append(Reject(req.id, req.actor, 504, "timed out waiting for activation"))

    def _scale(self, now: float, out: list[Command]) -> None:
        """Ask the scaling policy for the pool size; start or retire the difference."""
        assert self.scaling is not None
        staying = [w for w in self._workers.values() if not w.draining]
        idle = len(self._idle)
        demand = Demand(
            workers=len(staying) + self._starting, starting=self._starting,
            busy=self._occupied - idle, idle=idle, waiting=len(self._waiting),
            free=len(self.placement),
        )  # fmt: skip
        target = self.scaling.target(demand, now)
        if target > demand.workers:
            count = target - demand.workers
            self._starting += count
            self.stats.workers_started += count
            out.append(ProvisionWorkers(number=count))
        elif target < demand.workers:
            for worker in self._surplus(staying, demand.workers - target):
                self.stats.workers_retired += 1
                self._on_worker_removed(WorkerRemoved(worker.id), now, out)
        at = now + self.scaling.interval_s
        out.append(SetTimer(ScaleTick(at), at))

    def _surplus(self, staying: list[Worker], count: int) -> list[Worker]:
        """Up to ``count`` workers to retire: free ones first, from the nodes with the
        fewest workers (machines empty whole; busy nodes keep their caches), newest
        first; then those hosting the least recently used idle actors."""
        per_node: dict[str, int] = {}
        for w in staying:
            per_node[w.node] = per_node.get(w.node, 0) + 1
        order = {w.id: i for i, w in enumerate(staying)}
        free = [w for w in staying if w.id in self._pooled]
        free.sort(key=lambda w: (per_node[w.node], -order[w.id]))
        chosen = free[:count]
        for actor in self._idle.values():
            if len(chosen) >= count:
                break
            host = self._workers[actor.worker] if actor.worker else None
            if host is not None and not host.draining:
                chosen.append(host)
        return chosen

    def _prewarm(self, timer: PrewarmTimer, now: float, out: list[Command]) -> None:
        actor = self._actors.get(timer.actor)
        if actor is not None and actor.generation == timer.generation:
            self._try_prewarm(actor, now, out)

    def _try_prewarm(self, actor: Actor, now: float, out: list[Command]) -> bool:
        """Restore ``actor`` ahead of its next request, on a free worker only: a pre-warm
        never evicts, queues or overtakes an actor that waits. True if it started."""
        if (
            actor.state is not SUSPENDED
            or actor.id in self._pending
            or actor.retry_at is not None
            or self._waiting
        ):
            return False  # stale, or requests got there first
        worker = self._choose(actor)
        if worker is None:
            return False
        self.stats.prewarms += 1
        self._activate(actor, worker, now, out)
        return True

    # ------------------------------------------------------------ wake-ups

    def _on_wake_scheduled(self, ev: WakeScheduled, now: float, out: list[Command]) -> None:
        """``actor`` asks to be woken at ``ev.at``: deliver it then, restore it ahead."""
        actor = self._actors.get(ev.actor)
        wakes = self._wakes.get(ev.actor, {})
        limits = self.timers
        if (
            actor is None
            or actor.state is FAILED
            or len(wakes) >= limits.max_pending
            or not ev.at - now <= limits.max_after_s  # also refuses NaN
        ):
            self.stats.wakeups_refused += 1
            return
        due = max(ev.at, now)
        self._wake_ids += 1
        self._wakes.setdefault(actor.id, {})[self._wake_ids] = (due, ev.key)
        self.stats.wakeups_scheduled += 1
        out.append(SetTimer(WakeDue(actor.id, self._wake_ids), due))
        if due - limits.lead_s > now:
            out.append(SetTimer(WakePrewarm(actor.id, self._wake_ids), due - limits.lead_s))
        else:
            self._wake_prewarm(actor, now, out)

    def _next_wake(self, actor_id: str) -> tuple[int, float] | None:
        """``actor_id``'s soonest wake-up (id, due), if any."""
        wakes = self._wakes.get(actor_id)
        if not wakes:
            return None
        wake, (due, _) = min(wakes.items(), key=lambda item: (item[1][0], item[0]))
        return wake, due

    def _wake_prewarm(self, actor: Actor, now: float, out: list[Command]) -> None:
        if self._try_prewarm(actor, now, out):
            self.stats.wake_prewarms += 1

    def _wake_due(self, timer: WakeDue, now: float, out: list[Command]) -> None:
        wakes = self._wakes.get(timer.actor)
        entry = wakes.pop(timer.wake, None) if wakes is not None else None
        if entry is None:
            return  # stale: its actor was deleted
        if not wakes:
            del self._wakes[timer.actor]
        self.stats.wakeups_delivered += 1
        due, key = entry
        out.append(DeliverWake(timer.actor, timer.wake, due, self.timers.wait_s, key))

    # ------------------------------------------------------------ two tiers

    def _choose_on_node(self, node: str) -> Worker | None:
        """A free worker on ``node``, taken out of the pool; None if it has none."""
        for worker_id in self._pooled:
            worker = self._workers[worker_id]
            if worker.node == node:
                self._unpool(worker)
                return worker
        return None

    def _strand(self, actor: Actor, now: float, out: list[Command]) -> None:
        """The paused ``actor`` waits for a worker on its node: evict an idle actor there
        if there is one, and upload its snapshot if none frees within ``wait_s``."""
        node = actor.paused_on
        assert node is not None and self.locality is not None
        self._stranded.setdefault(node, OrderedDict())[actor.id] = now
        self._stranded_on[actor.id] = node
        self.stats.strandings += 1
        for victim in self._idle.values():
            if victim.worker is not None and self._workers[victim.worker].node == node:
                self.stats.evictions += 1
                self._checkpoint(victim, now, out)
                break
        version = actor.snapshot_version
        out.append(SetTimer(StrandedTimer(actor.id, version), now + self.locality.wait_s))

    def _leave_stranded(self, actor_id: str) -> None:
        node = self._stranded_on.pop(actor_id, None)
        if node is None:
            return
        queue = self._stranded[node]
        del queue[actor_id]
        if not queue:
            del self._stranded[node]

    def _upload_timer(
        self, timer: StrandedTimer | UploadTimer, now: float, out: list[Command]
    ) -> None:
        """A stranded actor waited long enough, or a paused snapshot idled long enough:
        upload the snapshot from its node."""
        actor = self._actors.get(timer.actor)
        if (
            actor is None
            or actor.paused_on is None
            or actor.snapshot_version != timer.version
            or actor.upload_op is not None
        ):
            return  # stale: uploaded, superseded, deleted, or under way
        if isinstance(timer, StrandedTimer) and actor.id not in self._stranded_on:
            return  # it got a worker on its node
        if isinstance(timer, UploadTimer) and actor.state is not SUSPENDED:
            return  # running again: its next checkpoint decides anew
        op = self._new_op(
            _OpKind.UPLOAD, actor=actor.id, worker="", generation=actor.generation,
            version=actor.snapshot_version, deadline=now + self.recovery.checkpoint_deadline_s,
            out=out,
        )  # fmt: skip
        actor.upload_op = op.id
        out.append(
            Upload(actor.id, actor.paused_on, actor.snapshot_version, actor.snapshot_bytes, op.id)
        )

    def _on_upload_finished(self, ev: UploadFinished, now: float, out: list[Command]) -> None:
        op = self._take_op(ev.op, _OpKind.UPLOAD)
        if op is None:
            return
        self._upload_ended(self._actors[op.actor], op, now, out, ok=ev.ok, reason=ev.reason)

    def _upload_ended(
        self, actor: Actor, op: _Op, now: float, out: list[Command], *, ok: bool, reason: str
    ) -> None:
        if not ok:
            self.stats.failed_uploads += 1
            actor.failure = f"upload of v{op.version} failed: {reason or 'no reason given'}"
            if actor.id in self._stranded_on and self.locality is not None:
                retry = max(self.locality.wait_s, self.recovery.retry_backoff_s)
                out.append(SetTimer(StrandedTimer(actor.id, op.version), now + retry))
            return
        self.stats.uploads += 1
        if actor.snapshot_version == op.version:
            actor.paused_on = None  # restorable anywhere now
        if actor.id in self._stranded_on:
            self._leave_stranded(actor.id)
            self._serve_pending(actor, now, out)

    def _watch(self, due: float, kind: int, key: int, out: list[Command]) -> None:
        heapq.heappush(self._deadlines, (due, kind, key))
        if self._sweep_at is None or due < self._sweep_at:
            self._sweep_at = due
            out.append(SetTimer(DeadlineSweep(due), due))

    def _sweep(self, at: float, now: float, out: list[Command]) -> None:
        if at != self._sweep_at:
            return  # an earlier sweep was armed since, or this one already ran
        self._sweep_at = None
        while self._deadlines and self._deadlines[0][0] <= now:
            due, kind, key = heapq.heappop(self._deadlines)
            if not self._still_due(due, kind, key):
                continue
            if kind == _OP_DEADLINE:
                op = self._ops[key]
                if op.kind is _OpKind.RESTORE:
                    self._activation_overdue(op, now, out)
                elif op.kind is _OpKind.UPLOAD:
                    del self._ops[op.id]  # a late completion is ignored and counted
                    actor = self._actors[op.actor]
                    actor.upload_op = None
                    self._upload_ended(actor, op, now, out, ok=False, reason="not finished in time")
                else:
                    self._checkpoint_overdue(op, now, out)
            else:
                req = self._requests[key]
                self.stats.abandoned_requests += 1
                out.append(Abandon(req.id, req.actor, req.worker))
                self._end_forwarded(req, now, out)
        while self._deadlines and not self._still_due(*self._deadlines[0]):
            heapq.heappop(self._deadlines)  # its operation or request ended meanwhile
        if self._deadlines and self._sweep_at is None:
            self._sweep_at = self._deadlines[0][0]
            out.append(SetTimer(DeadlineSweep(self._sweep_at), self._sweep_at))

    def _still_due(self, due: float, kind: int, key: int) -> bool:
        if kind == _OP_DEADLINE:
            op = self._ops.get(key)
            return op is not None and op.deadline == due
        req = self._requests.get(key)
        return req is not None and req.phase is _Phase.FORWARDED

    def _activation_overdue(self, op: _Op, now: float, out: list[Command]) -> None:
        """Give up on a restore: stop its sandbox, quarantine its worker, retry elsewhere."""
        self.stats.activation_deadlines += 1
        del self._ops[op.id]
        actor, worker = self._actors[op.actor], self._workers[op.worker]
        actor.op = None
        self._set_state(actor, SUSPENDED, now)
        self._unbind(actor, worker, now)
        limit = self.recovery.activation_deadline_s
        self._quarantine(
            worker, f"activation of {actor.id} (generation {op.generation}) overdue", now, out
        )
        self._stop(actor.id, worker, op.generation, "activation overdue", out)
        self._activation_failed(actor, f"not ready within {limit:g} s on {worker.id}", now, out)

    def _checkpoint_overdue(self, op: _Op, now: float, out: list[Command]) -> None:
        """A checkpoint overran: its state may still be saved, so nothing is killed. The
        actor refuses requests and its worker is out of the pool until it ends."""
        self.stats.checkpoint_deadlines += 1
        op.deadline = None
        actor, worker = self._actors[op.actor], self._workers[op.worker]
        actor.overdue = True
        limit = self.recovery.checkpoint_deadline_s
        actor.failure = f"checkpoint on {worker.id} not finished within {limit:g} s"
        self._stop_freeing(op)
        if worker.quarantined is None:
            self._quarantine(worker, f"checkpoint of {actor.id} overdue", now, out)
        for req in self._pending.pop(actor.id, ()):
            del self._requests[req.id]
            out.append(Reject(req.id, actor.id, 503, UNAVAILABLE))
        self._evict_for_waiters(now, out)

    def _retry_activation(self, timer: RetryActivation, now: float, out: list[Command]) -> None:
        actor = self._actors.get(timer.actor)
        if actor is None or actor.retry_at is None or timer.attempt != actor.attempts:
            return  # stale
        actor.retry_at = None
        if actor.state is not SUSPENDED or actor.id not in self._pending:
            return  # nobody waits for it any more
        self.stats.activation_retries += 1
        self._serve_pending(actor, now, out)

    # ------------------------------------------------------------ workers

    def _on_worker_added(self, ev: WorkerAdded, now: float, out: list[Command]) -> None:
        if ev.worker in self._workers:
            raise ValueError(f"worker {ev.worker!r} already exists")
        if ev.provisioned:
            if self._starting == 0:
                raise ProtocolError(
                    f"worker {ev.worker!r} joined as provisioned; none was asked for"
                )
            self._starting -= 1
        worker = Worker(ev.worker, ev.node, released_at=now)
        self._workers[worker.id] = worker
        self._release(worker, now, out)

    def _on_provision_failed(self, ev: ProvisionFailed, now: float, out: list[Command]) -> None:
        if ev.number < 1 or ev.number > self._starting:
            raise ProtocolError(f"{ev.number} provisioned workers failed; {self._starting} asked")
        self._starting -= ev.number
        self.stats.provision_failures += ev.number

    def _on_worker_removed(self, ev: WorkerRemoved, now: float, out: list[Command]) -> None:
        worker = self._workers.get(ev.worker)
        if worker is None or worker.draining:
            return
        if worker.id in self._pooled:
            self._unpool(worker)
            del self._workers[worker.id]
            out.append(RetireWorker(worker.id))
            return
        worker.draining = True  # retires once it is empty and clean
        if worker.actor is None:
            return
        actor = self._actors[worker.actor]
        if actor.state is SUSPENDING and actor.op is not None:
            self._stop_freeing(self._ops[actor.op])  # it retires instead of returning
        elif actor.id in self._idle:
            self._checkpoint(actor, now, out)
        # RESUMING or busy RUNNING: checkpointed when it next becomes idle.

    def _on_worker_lost(self, ev: WorkerLost, now: float, out: list[Command]) -> None:
        worker = self._workers.get(ev.worker)
        if worker is None:
            return
        self.stats.workers_lost += 1
        for key in [k for k in self._stops if k[0] == worker.id]:
            self._ops.pop(self._stops.pop(key), None)  # nothing left to stop there
        if worker.id in self._pooled:
            self._unpool(worker)
        if worker.actor is not None:
            actor = self._actors[worker.actor]
            if actor.state is RESUMING:
                if actor.op is not None:
                    del self._ops[actor.op]
                actor.op = None
                self._set_state(actor, SUSPENDED, now)
                self._unbind(actor, worker, now)
                self._activation_failed(actor, f"worker {worker.id} lost: {ev.reason}", now, out)
            else:
                why = f"worker {worker.id} lost: {ev.reason}"
                self._lose(actor, worker, why, now, out, worker_gone=True)
        del self._workers[worker.id]
        out.append(RetireWorker(worker.id))
        self._evict_for_waiters(now, out)

    def _quarantine(self, worker: Worker, reason: str, now: float, out: list[Command]) -> None:
        if worker.id in self._pooled:
            self._unpool(worker)  # a free worker leaves the pool
        worker.quarantined = reason
        worker.quarantined_since = now
        self.stats.quarantines += 1

    def _stop(
        self, actor: str, worker: Worker, generation: int, why: str, out: list[Command]
    ) -> None:
        key = (worker.id, actor, generation)
        if key in self._stops:
            return
        op = self._new_op(
            _OpKind.STOP, actor=actor, worker=worker.id, generation=generation, version=0,
            deadline=None, out=out,
        )  # fmt: skip
        self._stops[key] = op.id
        out.append(StopSandbox(actor, worker.id, generation, why, op.id))

    def _maybe_unquarantine(self, worker: Worker, now: float, out: list[Command]) -> None:
        """A quarantined worker with no actor and nothing left to stop is clean again."""
        if worker.quarantined is None or worker.actor is not None:
            return
        if any(key[0] == worker.id for key in self._stops):
            return
        worker.quarantined = None
        self._release(worker, now, out)

    # ------------------------------------------------------------ observed state

    def _on_observed(self, ev: Observed, now: float, out: list[Command]) -> None:
        seen = {(s.actor, s.worker, s.generation) for s in ev.sandboxes}
        seen_on = {s.worker for s in ev.sandboxes}
        # Sandboxes nobody asked for, or of an older activation: stop them.
        for sandbox in ev.sandboxes:
            worker = self._workers.get(sandbox.worker)
            if worker is None:
                continue
            actor = self._actors.get(sandbox.actor)
            if actor is not None and actor.state_since > ev.taken_at:
                continue  # it changed after the observation: look again next time
            if (
                actor is not None
                and actor.worker == worker.id
                and actor.generation == sandbox.generation
                and actor.state in (RESUMING, RUNNING, SUSPENDING)
            ):
                continue
            if (worker.id, sandbox.actor, sandbox.generation) in self._stops:
                continue
            self._correct(
                sandbox.actor, worker.id,
                f"stray sandbox of generation {sandbox.generation}: stopping it", out,
            )  # fmt: skip
            if worker.id in self._pooled:
                self._quarantine(worker, f"stray sandbox of {sandbox.actor}", now, out)
            self._stop(sandbox.actor, worker, sandbox.generation, "stray sandbox", out)
        # Actors the controller has on a worker whose sandbox is gone.
        snapshots = {s.actor: s.version for s in ev.snapshots}
        for worker in list(self._workers.values()):
            if worker.actor is None:
                if (
                    worker.quarantined is not None
                    and worker.quarantined_since < ev.taken_at
                    and worker.id not in seen_on
                ):
                    for key in [k for k in self._stops if k[0] == worker.id]:
                        self._ops.pop(self._stops.pop(key), None)
                    self._correct("", worker.id, "nothing runs on it: back in the pool", out)
                    self._maybe_unquarantine(worker, now, out)
                continue
            actor = self._actors[worker.actor]
            if (actor.id, worker.id, actor.generation) in seen or actor.state_since > ev.taken_at:
                continue
            if actor.state is RUNNING:
                self._correct(actor.id, worker.id, "its sandbox is gone", out)
                self._lose(actor, worker, "its sandbox is gone", now, out)
            elif actor.state is SUSPENDING and actor.overdue and actor.op is not None:
                op = self._ops.pop(actor.op)
                actor.op = None
                found = snapshots.get(actor.id, 0)
                committed = found if found >= op.version else None
                why = "checkpoint ended without a snapshot"
                detail = why if committed is None else f"checkpoint v{found} committed"
                self._correct(actor.id, worker.id, detail, out)
                self._checkpoint_ended(
                    actor, worker, now, out, committed=committed, size=0, reason=why
                )
        # Snapshots: adopt newer ones; a missing one fails the actor (never an older one).
        for actor in list(self._actors.values()):
            if actor.state is not SUSPENDED or actor.state_since > ev.taken_at:
                continue
            found = snapshots.get(actor.id, 0)
            if found > actor.snapshot_version:
                self._correct(actor.id, "", f"adopted snapshot v{found}", out)
                actor.snapshot_version = found
            elif found < actor.snapshot_version:
                why = f"snapshot v{actor.snapshot_version} is missing (newest found: v{found})"
                self._correct(actor.id, "", why, out)
                self._fail(actor, why, now, out)

    def _correct(self, actor: str, worker: str, detail: str, out: list[Command]) -> None:
        self.stats.corrections += 1
        out.append(Correction(actor, worker, detail))

    # ------------------------------------------------------------ cache

    def _on_snapshot_cached(self, ev: SnapshotCached, now: float, out: list[Command]) -> None:
        cached = self._cached.setdefault(ev.actor, {})
        cached.pop(ev.node, None)  # re-insert: most recent holder last
        cached[ev.node] = ev.version

    def _on_snapshot_evicted(self, ev: SnapshotEvicted, now: float, out: list[Command]) -> None:
        cached = self._cached.get(ev.actor)
        if cached is not None and cached.get(ev.node) == ev.version:
            del cached[ev.node]
            if not cached:
                del self._cached[ev.actor]

    # ------------------------------------------------------------ operators

    def _on_suspend_requested(self, ev: SuspendRequested, now: float, out: list[Command]) -> None:
        actor = self._actors.get(ev.actor)
        if actor is None:
            out.append(AdminResult(ev.actor, False, "unknown actor"))
        elif actor.state is FAILED:
            out.append(AdminResult(actor.id, False, f"actor failed: {actor.failure}"))
        elif actor.state in (SUSPENDED, SUSPENDING):
            out.append(AdminResult(actor.id, True, f"already {actor.state}"))
        elif actor.id in self._idle:
            actor.suspend_requested = True  # kept until a checkpoint ends: a decline retries
            self._checkpoint(actor, now, out)
            out.append(AdminResult(actor.id, True, "suspending"))
        else:  # resuming, serving requests, or waiting to retry a declined checkpoint
            actor.suspend_requested = True
            out.append(AdminResult(actor.id, True, "will suspend when idle"))

    def _on_resume_requested(self, ev: ResumeRequested, now: float, out: list[Command]) -> None:
        actor = self._actors.get(ev.actor)
        if actor is None:
            out.append(AdminResult(ev.actor, False, "unknown actor"))
            return
        if actor.state is FAILED:
            out.append(AdminResult(actor.id, False, f"actor failed: {actor.failure}"))
            return
        if actor.state is not SUSPENDED or actor.id in self._waiting or actor.retry_at:
            where = "waiting for a worker" if actor.id in self._waiting else actor.state
            out.append(AdminResult(actor.id, True, f"already {where}"))
            return
        worker = self._choose(actor)
        if worker is None:
            out.append(AdminResult(actor.id, False, "no free worker"))
            return
        self._activate(actor, worker, now, out)
        out.append(AdminResult(actor.id, True, f"resuming on {worker.id}"))

    def _on_actor_deleted(self, ev: ActorDeleted, now: float, out: list[Command]) -> None:
        actor = self._actors.get(ev.actor)
        if actor is None:
            out.append(AdminResult(ev.actor, False, "unknown actor"))
            return
        if actor.state not in (SUSPENDED, FAILED) or actor.id in self._pending:
            out.append(AdminResult(actor.id, False, f"actor is {actor.state}; suspend it first"))
            return
        stopping = [w for w, a, _ in self._stops if a == actor.id]
        if stopping:
            why = f"a sandbox of it on {stopping[0]} is still being stopped; try again"
            out.append(AdminResult(actor.id, False, why))
            return
        if actor.upload_op is not None:
            out.append(AdminResult(actor.id, False, "its snapshot is being uploaded; try again"))
            return
        self._leave_queue(actor.id, now)
        self._wakes.pop(actor.id, None)
        del self._actors[actor.id]
        self._cached.pop(actor.id, None)
        self._counts[actor.state] -= 1
        out.append(DropActor(actor.id))
        out.append(AdminResult(actor.id, True, "deleted"))

    def _on_recover_requested(self, ev: RecoverRequested, now: float, out: list[Command]) -> None:
        actor = self._actors.get(ev.actor)
        if actor is None:
            out.append(AdminResult(ev.actor, False, "unknown actor"))
            return
        if actor.state is not FAILED:
            out.append(AdminResult(actor.id, False, f"actor is {actor.state}, not failed"))
            return
        if ev.version < 0:
            out.append(AdminResult(actor.id, False, "version must be >= 0"))
            return
        old = actor.snapshot_version
        actor.snapshot_version = ev.version
        actor.failure = None
        actor.attempts = 0
        self._set_state(actor, SUSPENDED, now)
        start = f"snapshot v{ev.version}" if ev.version else "its template"
        out.append(AdminResult(actor.id, True, f"continues from {start} (was v{old})"))

    # ------------------------------------------------------------ mechanics

    def _new_op(
        self,
        kind: _OpKind,
        *,
        actor: str,
        worker: str,
        generation: int,
        version: int,
        deadline: float | None,
        out: list[Command],
    ) -> _Op:
        self._op_ids += 1
        op = _Op(self._op_ids, kind, actor, worker, generation, version, deadline)
        self._ops[op.id] = op
        if deadline is not None:
            self._watch(deadline, _OP_DEADLINE, op.id, out)
        return op

    def _stop_freeing(self, op: _Op) -> None:
        if op.freeing:
            op.freeing = False
            self._freeing -= 1

    def _set_state(self, actor: Actor, new: ActorState, now: float) -> None:
        check_transition(actor.id, actor.state, new)
        self._counts[actor.state] -= 1
        self._counts[new] += 1
        actor.state = new
        actor.state_since = now

    def _occupancy_changes(self, now: float, delta: int) -> None:
        self._occupied_area += self._occupied * (now - self._occupied_since)
        self._occupied_since = now
        self._occupied += delta

    def _unbind(self, actor: Actor, worker: Worker, now: float) -> None:
        actor.worker = None
        worker.actor = None
        self._occupancy_changes(now, -1)

    def _acquire_worker(
        self, actor: Actor, now: float, out: list[Command]
    ) -> AdmissionDecision | None:
        """Activate the SUSPENDED ``actor`` on a free worker, or ask admission what to do.

        Returns None when an activation started, else the admission decision; a
        :class:`Wait` puts the actor in the FIFO queue for the next free worker. While
        the queue is non-empty no worker is free, so a queued actor just asks admission
        for the new request's deadline.
        """
        if actor.id in self._waiting:
            return self.admission.admit(actor, now, self._load(actor, queued=True))
        if actor.id in self._stranded_on:
            return _STRANDED
        worker = self._choose(actor)
        if worker is not None:
            self._activate(actor, worker, now, out)
            return None
        if actor.paused_on is not None:
            self._strand(actor, now, out)
            return _STRANDED
        decision = self.admission.admit(actor, now, self._load(actor, queued=False))
        if isinstance(decision, Wait):
            self._waiting[actor.id] = (decision.evict, now)
            if decision.evict:
                self._evict_demand += 1
            if actor.owner:
                self._owner_waiting[actor.owner] = self._owner_waiting.get(actor.owner, 0) + 1
        return decision

    def _load(self, actor: Actor | None, *, queued: bool) -> Load:
        """What admission sees: the queue (and ``actor``'s owner's part of it), the pool."""
        owner = actor.owner if actor is not None else ""
        waiting = len(self._waiting) - (1 if queued else 0)
        owner_waiting = self._owner_waiting.get(owner, 0) - (1 if queued and owner else 0)
        owner_waiting = owner_waiting if owner else 0
        return Load(waiting, owner_waiting, queued, len(self._workers), self._freeing)

    def _serve_pending(self, actor: Actor, now: float, out: list[Command]) -> None:
        """The SUSPENDED ``actor`` has requests waiting and is in no queue: get it a worker."""
        if (
            actor.id not in self._pending
            or actor.id in self._waiting
            or actor.id in self._stranded_on
            or actor.retry_at
        ):
            return
        decision = self._acquire_worker(actor, now, out)
        if isinstance(decision, Refuse):
            # If it must queue, its requests keep their router deadlines (set on arrival).
            for req in self._pending.pop(actor.id):
                del self._requests[req.id]
                out.append(Reject(req.id, actor.id, decision.status, decision.reason))
        self._evict_for_waiters(now, out)

    def _leave_queue(self, actor_id: str, now: float) -> None:
        self._leave_stranded(actor_id)
        entry = self._waiting.pop(actor_id, None)
        if entry is None:
            return
        evict, since = entry
        if evict:
            self._evict_demand -= 1
        owner = self._actors[actor_id].owner
        if owner:
            left = self._owner_waiting[owner] - 1
            if left:
                self._owner_waiting[owner] = left
            else:
                del self._owner_waiting[owner]
        for req in self._pending.get(actor_id, ()):
            req.queue_s = now - max(since, req.received_at)

    def _activate(self, actor: Actor, worker: Worker, now: float, out: list[Command]) -> None:
        if worker.actor is not None or actor.worker is not None:
            raise ProtocolError(f"cannot place {actor.id!r} on {worker.id!r}: already bound")
        self._set_state(actor, RESUMING, now)
        actor.worker = worker.id
        worker.actor = actor.id
        actor.generation += 1
        self._occupancy_changes(now, +1)
        self.stats.activations += 1
        if actor.snapshot_version == 0:
            self.stats.cold_starts += 1
        op = self._new_op(
            _OpKind.RESTORE, actor=actor.id, worker=worker.id, generation=actor.generation,
            version=actor.snapshot_version, deadline=now + self.recovery.activation_deadline_s,
            out=out,
        )  # fmt: skip
        actor.op = op.id
        out.append(
            Restore(
                actor.id, worker.id, worker.node, actor.snapshot_version, actor.snapshot_bytes,
                op.id, actor.generation,
            )
        )  # fmt: skip

    def _activation_failed(self, actor: Actor, reason: str, now: float, out: list[Command]) -> None:
        """An activation of the SUSPENDED ``actor`` failed: retry with backoff while
        requests wait for it, up to the attempt limit; then they get 502."""
        actor.attempts += 1
        actor.failure = f"activation failed: {reason}"
        if actor.id not in self._pending:
            actor.attempts = 0  # nobody waits: the next request starts afresh
            return
        if actor.attempts >= self.recovery.max_activation_attempts:
            actor.attempts = 0
            for req in self._pending.pop(actor.id):
                del self._requests[req.id]
                out.append(Reject(req.id, actor.id, 502, "activation failed"))
            return
        at = now + self.recovery.retry_backoff_s * 2 ** (actor.attempts - 1)
        actor.retry_at = at
        out.append(SetTimer(RetryActivation(actor.id, actor.attempts), at))

    def _fail(self, actor: Actor, reason: str, now: float, out: list[Command]) -> None:
        """The SUSPENDED ``actor`` cannot be activated until an operator acts."""
        self._leave_queue(actor.id, now)
        actor.retry_at = None
        actor.attempts = 0
        actor.failure = reason
        self._set_state(actor, FAILED, now)
        for req in self._pending.pop(actor.id, ()):
            del self._requests[req.id]
            out.append(Reject(req.id, actor.id, 503, UNAVAILABLE))

    def _state_lost(self, actor: Actor, reason: str, out: list[Command]) -> None:
        self.stats.lost_states += 1
        actor.failure = (
            f"activation {actor.generation} lost ({reason}); "
            f"continues from snapshot v{actor.snapshot_version}"
        )
        out.append(StateLost(actor.id, actor.generation, actor.snapshot_version, reason))

    def _lose(
        self,
        actor: Actor,
        worker: Worker,
        reason: str,
        now: float,
        out: list[Command],
        *,
        worker_gone: bool = False,
    ) -> None:
        """The RUNNING or SUSPENDING ``actor``'s sandbox on ``worker`` is gone: it goes on
        from its last snapshot; the worker is quarantined until what is left is stopped."""
        if actor.op is not None:
            op = self._ops.pop(actor.op, None)
            if op is not None:
                self._stop_freeing(op)
            actor.op = None
        self._idle.pop(actor.id, None)
        actor.inflight = 0
        actor.overdue = False
        actor.suspend_requested = False
        self._state_lost(actor, reason, out)
        self._set_state(actor, SUSPENDED, now)
        generation = actor.generation
        self._unbind(actor, worker, now)
        if not worker_gone:
            self._quarantine(worker, f"{actor.id}'s sandbox lost", now, out)
            self._stop(actor.id, worker, generation, reason, out)
        self._serve_pending(actor, now, out)

    def _forward(
        self, req: _Request, actor: Actor, now: float, out: list[Command], *, warm: bool = False
    ) -> None:
        if actor.inflight == 0:
            self._idle.pop(actor.id, None)
            actor.idle_generation += 1  # any idle timer is now stale
        actor.inflight += 1
        req.phase = _Phase.FORWARDED
        worker = self._host(actor).id
        req.worker, req.generation = worker, actor.generation
        if self.recovery.forward_deadline_s is not None:
            self._watch(now + self.recovery.forward_deadline_s, _FORWARD_DEADLINE, req.id, out)
        if warm:
            out.append(Forward(req.id, actor.id, worker, False, 0.0, 0.0, actor.generation))
            return
        activation_s = now - req.received_at - req.queue_s
        out.append(
            Forward(req.id, actor.id, worker, True, req.queue_s, activation_s, actor.generation)
        )

    def _became_idle(self, actor: Actor, now: float, out: list[Command]) -> None:
        if now < actor.checkpoint_not_before:
            # A checkpoint was declined lately: wait before trying again, and stay out of
            # the idle pool meanwhile (else eviction would pick it again at once).
            actor.idle_generation += 1
            timer = IdleTimer(actor.id, actor.idle_generation)
            out.append(SetTimer(timer, actor.checkpoint_not_before))
            return
        if self._host(actor).draining or actor.suspend_requested:
            self._checkpoint(actor, now, out)
            return
        actor.idle_generation += 1
        self._idle[actor.id] = actor
        # Asked before eviction: a policy learns when the actor went idle either way.
        at = self.suspension.suspend_at(actor, now)
        wake = self._next_wake(actor.id)
        if at is not None and wake is not None and wake[1] - self.timers.lead_s <= at:
            # Due back before a restore would pay: hold it past the wake-up (a late
            # one too: suspending it now would only restore it again at once).
            at = max(wake[1], now) + self.timers.lead_s
        self._evict_for_waiters(now, out)
        if actor.id not in self._idle:
            return  # it was just evicted
        if at is None:
            return
        if at <= now:
            self._checkpoint(actor, now, out)
        else:
            out.append(SetTimer(IdleTimer(actor.id, actor.idle_generation), at))

    def _checkpoint(self, actor: Actor, now: float, out: list[Command]) -> None:
        worker = self._host(actor)
        self._idle.pop(actor.id, None)
        actor.idle_generation += 1
        self._set_state(actor, SUSPENDING, now)
        self.stats.checkpoints += 1
        op = self._new_op(
            _OpKind.CHECKPOINT, actor=actor.id, worker=worker.id, generation=actor.generation,
            version=actor.snapshot_version + 1,
            deadline=now + self.recovery.checkpoint_deadline_s, out=out,
        )  # fmt: skip
        actor.op = op.id
        if not worker.draining:
            op.freeing = True
            self._freeing += 1
        if self.locality is not None and not worker.draining:  # a leaving node uploads
            op.tier = self.locality.tier(actor, now)
        out.append(
            Checkpoint(
                actor.id, worker.id, worker.node, op.version, actor.snapshot_bytes, op.id,
                actor.generation, op.tier,
            )
        )  # fmt: skip

    def _evict_for_waiters(self, now: float, out: list[Command]) -> None:
        while self._evict_demand > self._freeing and self._idle:
            victim = self.suspension.choose_victim(self._idle.values())
            if victim is None:
                return
            if victim.id not in self._idle:
                raise ProtocolError(f"suspension policy chose a non-idle victim {victim.id!r}")
            self.stats.evictions += 1
            self._checkpoint(victim, now, out)

    def _release(self, worker: Worker, now: float, out: list[Command]) -> None:
        """``worker`` has no actor any more: retire it, or give it to the queue or the pool."""
        if worker.quarantined is not None:
            return  # back when the driver confirms it is clean
        if worker.draining:
            del self._workers[worker.id]
            out.append(RetireWorker(worker.id))
            return
        worker.released_at = now
        self.placement.add(worker)
        self._pooled.add(worker.id)
        stranded = self._stranded.get(worker.node)
        if stranded:  # a paused actor can use only this node's workers: it goes first
            actor_id = next(iter(stranded))
            self._leave_queue(actor_id, now)
            self._unpool(worker)
            self.stats.stranded_local += 1
            self._activate(self._actors[actor_id], worker, now, out)
            return
        while self._waiting and len(self.placement):
            newest = self.admission.serve_newest_first(self._load(None, queued=False))
            actor_id = next(reversed(self._waiting)) if newest else next(iter(self._waiting))
            self._leave_queue(actor_id, now)
            actor = self._actors[actor_id]
            chosen = self._choose(actor)
            if chosen is None:
                raise ProtocolError(
                    f"placement policy chose no worker although {len(self.placement)} are free"
                )
            self._activate(actor, chosen, now, out)

    def _choose(self, actor: Actor) -> Worker | None:
        if actor.paused_on is not None:
            return self._choose_on_node(actor.paused_on)
        worker = self.placement.choose(actor, self)
        if worker is not None:
            self._pooled.discard(worker.id)
        return worker

    def _unpool(self, worker: Worker) -> None:
        self.placement.discard(worker)
        self._pooled.discard(worker.id)

    def _host(self, actor: Actor) -> Worker:
        if actor.worker is None:
            raise ProtocolError(f"actor {actor.id!r} ({actor.state}) has no worker")
        return self._workers[actor.worker]
