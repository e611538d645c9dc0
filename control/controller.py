"""The controller: a pure state machine from events to commands.

A driver calls :meth:`Controller.handle` with an event and the current time and
carries out the returned commands. The controller never reads a clock, does no I/O
and keeps no global state, so the simulator (virtual time) and the real backends
(wall-clock time) run exactly the same decisions.

Guarantees (checked by the property tests in ``tests/test_invariants.py``):

* an actor is on at most one worker, and a worker hosts at most one actor;
* every request ends exactly once: either one :class:`Reject`, or one
  :class:`Forward` followed by the driver's :class:`RequestFinished`;
* an actor is checkpointed only with no request in flight (the driver must still
  close its connections first; see the local backend).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from control.messages import (
    ActivationFinished,
    ActorCreated,
    ActorDeleted,
    AdminResult,
    Checkpoint,
    CheckpointFinished,
    Command,
    DropActor,
    Event,
    Forward,
    IdleTimer,
    Reject,
    RequestArrived,
    RequestDeadline,
    RequestFinished,
    Restore,
    ResumeRequested,
    RetireWorker,
    SetTimer,
    SnapshotCached,
    SnapshotEvicted,
    SuspendRequested,
    TimerFired,
    WorkerAdded,
    WorkerRemoved,
)
from control.model import Actor, ActorState, Worker, check_transition
from control.policies.base import (
    AdmissionDecision,
    AdmissionPolicy,
    PlacementPolicy,
    Refuse,
    SuspensionPolicy,
    Wait,
)

SUSPENDED = ActorState.SUSPENDED
RESUMING = ActorState.RESUMING
RUNNING = ActorState.RUNNING
SUSPENDING = ActorState.SUSPENDING


class ProtocolError(RuntimeError):
    """The driver reported an event that contradicts the controller's state."""


class _Phase(Enum):
    PENDING = 1
    FORWARDED = 2


class _Request:
    __slots__ = ("actor", "id", "phase", "queue_s", "received_at")

    def __init__(self, request_id: int, actor: str, received_at: float) -> None:
        self.id = request_id
        self.actor = actor
        self.received_at = received_at
        self.queue_s = 0.0  # time spent with its actor in the queue for a free worker
        self.phase = _Phase.PENDING


@dataclass
class ControllerStats:
    """Counters the controller keeps as it runs (all derived from events alone)."""

    events: int = 0
    activations: int = 0
    cold_starts: int = 0
    checkpoints: int = 0
    failed_activations: int = 0
    failed_checkpoints: int = 0
    evictions: int = 0


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
    ) -> None:
        if not router_timeout_s > 0:
            raise ValueError(f"router_timeout_s: must be > 0 (got {router_timeout_s!r})")
        self.placement = placement
        self.suspension = suspension
        self.admission = admission
        self.router_timeout_s = float(router_timeout_s)
        self.stats = ControllerStats()

        self._actors: dict[str, Actor] = {}
        self._workers: dict[str, Worker] = {}
        self._requests: dict[int, _Request] = {}
        self._pending: dict[str, list[_Request]] = {}  # actor -> requests waiting for it
        self._idle: OrderedDict[str, Actor] = OrderedDict()  # running, no requests; LRU first
        # Actors queued for a free worker, FIFO: actor -> (evict for it?, queued since).
        self._waiting: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self._evict_demand = 0  # waiting actors whose admission asked for eviction
        self._freeing = 0  # checkpoints in progress that will return a worker to the pool
        self._cached: dict[str, dict[str, int]] = {}  # actor -> node -> cached version
        self._counts = dict.fromkeys(ActorState, 0)
        self._now = float("-inf")
        self._occupied = 0
        self._occupied_area = 0.0
        self._occupied_since = 0.0

        self._handlers: dict[type, Callable[[Any, float, list[Command]], None]] = {
            ActorCreated: self._on_actor_created,
            RequestArrived: self._on_request_arrived,
            ActivationFinished: self._on_activation_finished,
            RequestFinished: self._on_request_finished,
            CheckpointFinished: self._on_checkpoint_finished,
            TimerFired: self._on_timer,
            WorkerAdded: self._on_worker_added,
            WorkerRemoved: self._on_worker_removed,
            SnapshotCached: self._on_snapshot_cached,
            SnapshotEvicted: self._on_snapshot_evicted,
            SuspendRequested: self._on_suspend_requested,
            ResumeRequested: self._on_resume_requested,
            ActorDeleted: self._on_actor_deleted,
        }

    # ------------------------------------------------------------ public API

    def handle(self, event: Event, now: float) -> list[Command]:
        """Apply ``event`` at time ``now`` and return the commands to carry out, in order."""
        if now < self._now:
            raise ValueError(f"time went backwards: {now} < {self._now} ({event!r})")
        self._now = now
        self.stats.events += 1
        out: list[Command] = []
        try:
            handler = self._handlers[type(event)]
        except KeyError:
            raise TypeError(f"not a controller event: {event!r}") from None
        handler(event, now, out)
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
    def waiting_actors(self) -> int:
        """Actors queued for a free worker."""
        return len(self._waiting)

    def queue(self) -> list[str]:
        """Actors waiting for a free worker, first in line first."""
        return list(self._waiting)

    def waiting_requests(self, actor_id: str) -> int:
        """Requests held for ``actor_id`` until it is ready."""
        return len(self._pending.get(actor_id, ()))

    @property
    def open_requests(self) -> int:
        """Requests received and not yet ended (waiting or forwarded)."""
        return len(self._requests)

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

    # ------------------------------------------------------------ event handlers

    def _on_actor_created(self, ev: ActorCreated, now: float, out: list[Command]) -> None:
        if ev.actor in self._actors:
            raise ValueError(f"actor {ev.actor!r} already exists")
        if ev.snapshot_bytes < 0 or ev.snapshot_version < 0:
            raise ValueError(f"actor {ev.actor!r}: snapshot_bytes and version must be >= 0")
        self._actors[ev.actor] = Actor(
            ev.actor,
            ev.template,
            ev.snapshot_bytes,
            snapshot_version=ev.snapshot_version,
            last_used=now,
        )
        self._counts[SUSPENDED] += 1

    def _on_request_arrived(self, ev: RequestArrived, now: float, out: list[Command]) -> None:
        if ev.request in self._requests:
            raise ProtocolError(f"request {ev.request} arrived twice")
        actor = self._actors.get(ev.actor)
        if actor is None:
            out.append(Reject(ev.request, ev.actor, 404, "unknown actor"))
            return
        req = _Request(ev.request, actor.id, now)
        if actor.state is RUNNING:
            self._requests[req.id] = req
            self._forward(req, actor, now, out, warm=True)
            return
        deadline = ev.arrived_at + self.router_timeout_s
        if now >= deadline:
            out.append(Reject(req.id, actor.id, 504, "router timeout before activation"))
            return
        if actor.state is SUSPENDED:
            decision = self._acquire_worker(actor, now, out)
            if isinstance(decision, Refuse):
                out.append(Reject(req.id, actor.id, decision.status, decision.reason))
                return
            if decision is not None and decision.deadline is not None:
                deadline = min(deadline, decision.deadline)
        # RESUMING, SUSPENDING, or SUSPENDED and now resuming or waiting: hold the request.
        self._requests[req.id] = req
        self._pending.setdefault(actor.id, []).append(req)
        out.append(SetTimer(RequestDeadline(req.id), deadline))
        self._evict_for_waiters(out)

    def _on_activation_finished(
        self, ev: ActivationFinished, now: float, out: list[Command]
    ) -> None:
        actor = self._expect(ev.actor, RESUMING, ev.worker, ev)
        if ev.ok:
            self._set_state(actor, RUNNING)
            actor.last_used = now
            pending = self._pending.pop(actor.id, ())
            for req in pending:
                self._forward(req, actor, now, out)
            if not pending:
                self._became_idle(actor, now, out)
            return
        self.stats.failed_activations += 1
        worker = self._workers[ev.worker]
        self._set_state(actor, SUSPENDED)
        self._unbind(actor, worker, now)
        for req in self._pending.pop(actor.id, ()):
            del self._requests[req.id]
            out.append(Reject(req.id, actor.id, 502, "activation failed"))
        self._release(worker, now, out)

    def _on_request_finished(self, ev: RequestFinished, now: float, out: list[Command]) -> None:
        req = self._requests.get(ev.request)
        if req is None or req.phase is not _Phase.FORWARDED:
            raise ProtocolError(f"request {ev.request} finished but was not forwarded")
        del self._requests[ev.request]
        actor = self._actors[req.actor]
        actor.inflight -= 1
        actor.last_used = now
        if actor.inflight == 0:
            self._became_idle(actor, now, out)

    def _on_checkpoint_finished(
        self, ev: CheckpointFinished, now: float, out: list[Command]
    ) -> None:
        actor = self._expect(ev.actor, SUSPENDING, ev.worker, ev)
        worker = self._workers[ev.worker]
        if not worker.draining:
            self._freeing -= 1
        if ev.ok:
            actor.snapshot_version += 1
        else:
            # The sandbox is gone with its memory: the actor falls back to its last snapshot.
            self.stats.failed_checkpoints += 1
        self._set_state(actor, SUSPENDED)
        self._unbind(actor, worker, now)
        self._release(worker, now, out)
        if actor.id in self._pending and actor.id not in self._waiting:
            # Requests arrived while it was being checkpointed: it needs a worker again.
            # If it must queue, they keep their router deadlines (set on arrival).
            decision = self._acquire_worker(actor, now, out)
            if isinstance(decision, Refuse):
                for req in self._pending.pop(actor.id):
                    del self._requests[req.id]
                    out.append(Reject(req.id, actor.id, decision.status, decision.reason))
            self._evict_for_waiters(out)

    def _on_timer(self, ev: TimerFired, now: float, out: list[Command]) -> None:
        timer = ev.timer
        if isinstance(timer, IdleTimer):
            actor = self._actors.get(timer.actor)
            if (
                actor is not None
                and actor.idle_generation == timer.generation
                and actor.id in self._idle
            ):
                self._checkpoint(actor, out)
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

    def _on_worker_added(self, ev: WorkerAdded, now: float, out: list[Command]) -> None:
        if ev.worker in self._workers:
            raise ValueError(f"worker {ev.worker!r} already exists")
        worker = Worker(ev.worker, ev.node, released_at=now)
        self._workers[worker.id] = worker
        self._release(worker, now, out)

    def _on_worker_removed(self, ev: WorkerRemoved, now: float, out: list[Command]) -> None:
        worker = self._workers.get(ev.worker)
        if worker is None or worker.draining:
            return
        if worker.actor is None:
            self.placement.discard(worker)
            del self._workers[worker.id]
            out.append(RetireWorker(worker.id))
            return
        worker.draining = True
        actor = self._actors[worker.actor]
        if actor.state is SUSPENDING:
            self._freeing -= 1  # its worker will retire instead of returning to the pool
        elif actor.id in self._idle:
            self._checkpoint(actor, out)
        # RESUMING or busy RUNNING: checkpointed when it next becomes idle.

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

    def _on_suspend_requested(self, ev: SuspendRequested, now: float, out: list[Command]) -> None:
        actor = self._actors.get(ev.actor)
        if actor is None:
            out.append(AdminResult(ev.actor, False, "unknown actor"))
        elif actor.state in (SUSPENDED, SUSPENDING):
            out.append(AdminResult(actor.id, True, f"already {actor.state}"))
        elif actor.id in self._idle:
            self._checkpoint(actor, out)
            out.append(AdminResult(actor.id, True, "suspending"))
        else:  # resuming, or serving requests: suspend as soon as it is idle
            actor.suspend_requested = True
            out.append(AdminResult(actor.id, True, "will suspend when idle"))

    def _on_resume_requested(self, ev: ResumeRequested, now: float, out: list[Command]) -> None:
        actor = self._actors.get(ev.actor)
        if actor is None:
            out.append(AdminResult(ev.actor, False, "unknown actor"))
            return
        if actor.state is not SUSPENDED or actor.id in self._waiting:
            where = "waiting for a worker" if actor.id in self._waiting else actor.state
            out.append(AdminResult(actor.id, True, f"already {where}"))
            return
        worker = self.placement.choose(actor, self)
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
        if actor.state is not SUSPENDED or actor.id in self._pending:
            out.append(AdminResult(actor.id, False, f"actor is {actor.state}; suspend it first"))
            return
        del self._actors[actor.id]
        self._cached.pop(actor.id, None)
        self._counts[SUSPENDED] -= 1
        out.append(DropActor(actor.id))
        out.append(AdminResult(actor.id, True, "deleted"))

    # ------------------------------------------------------------ mechanics

    def _expect(self, actor_id: str, state: ActorState, worker_id: str, ev: Event) -> Actor:
        actor = self._actors.get(actor_id)
        if actor is None or actor.state is not state or actor.worker != worker_id:
            where = None if actor is None else (actor.state, actor.worker)
            raise ProtocolError(f"{ev!r} does not match the actor's state {where}")
        return actor

    def _set_state(self, actor: Actor, new: ActorState) -> None:
        check_transition(actor.id, actor.state, new)
        self._counts[actor.state] -= 1
        self._counts[new] += 1
        actor.state = new

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
            return self.admission.admit(actor, now)
        worker = self.placement.choose(actor, self)
        if worker is not None:
            self._activate(actor, worker, now, out)
            return None
        decision = self.admission.admit(actor, now)
        if isinstance(decision, Wait):
            self._waiting[actor.id] = (decision.evict, now)
            if decision.evict:
                self._evict_demand += 1
        return decision

    def _leave_queue(self, actor_id: str, now: float) -> None:
        entry = self._waiting.pop(actor_id, None)
        if entry is None:
            return
        evict, since = entry
        if evict:
            self._evict_demand -= 1
        for req in self._pending.get(actor_id, ()):
            req.queue_s = now - max(since, req.received_at)

    def _activate(self, actor: Actor, worker: Worker, now: float, out: list[Command]) -> None:
        if worker.actor is not None or actor.worker is not None:
            raise ProtocolError(f"cannot place {actor.id!r} on {worker.id!r}: already bound")
        self._set_state(actor, RESUMING)
        actor.worker = worker.id
        worker.actor = actor.id
        self._occupancy_changes(now, +1)
        self.stats.activations += 1
        if actor.snapshot_version == 0:
            self.stats.cold_starts += 1
        out.append(
            Restore(actor.id, worker.id, worker.node, actor.snapshot_version, actor.snapshot_bytes)
        )

    def _forward(
        self, req: _Request, actor: Actor, now: float, out: list[Command], *, warm: bool = False
    ) -> None:
        if actor.inflight == 0:
            self._idle.pop(actor.id, None)
            actor.idle_generation += 1  # any idle timer is now stale
        actor.inflight += 1
        req.phase = _Phase.FORWARDED
        worker = self._host(actor).id
        if warm:
            out.append(Forward(req.id, actor.id, worker, False, 0.0, 0.0))
            return
        activation_s = now - req.received_at - req.queue_s
        out.append(Forward(req.id, actor.id, worker, True, req.queue_s, activation_s))

    def _became_idle(self, actor: Actor, now: float, out: list[Command]) -> None:
        if self._host(actor).draining or actor.suspend_requested:
            self._checkpoint(actor, out)
            return
        actor.idle_generation += 1
        self._idle[actor.id] = actor
        self._evict_for_waiters(out)
        if actor.id not in self._idle:
            return  # it was just evicted
        at = self.suspension.suspend_at(actor, now)
        if at is None:
            return
        if at <= now:
            self._checkpoint(actor, out)
        else:
            out.append(SetTimer(IdleTimer(actor.id, actor.idle_generation), at))

    def _checkpoint(self, actor: Actor, out: list[Command]) -> None:
        worker = self._host(actor)
        self._idle.pop(actor.id, None)
        actor.idle_generation += 1
        actor.suspend_requested = False
        self._set_state(actor, SUSPENDING)
        if not worker.draining:
            self._freeing += 1
        self.stats.checkpoints += 1
        out.append(
            Checkpoint(
                actor.id, worker.id, worker.node, actor.snapshot_version + 1, actor.snapshot_bytes
            )
        )

    def _evict_for_waiters(self, out: list[Command]) -> None:
        while self._evict_demand > self._freeing and self._idle:
            victim = self.suspension.choose_victim(self._idle.values())
            if victim is None:
                return
            if victim.id not in self._idle:
                raise ProtocolError(f"suspension policy chose a non-idle victim {victim.id!r}")
            self.stats.evictions += 1
            self._checkpoint(victim, out)

    def _release(self, worker: Worker, now: float, out: list[Command]) -> None:
        """``worker`` has no actor any more: retire it, or give it to the queue or the pool."""
        if worker.draining:
            del self._workers[worker.id]
            out.append(RetireWorker(worker.id))
            return
        worker.released_at = now
        self.placement.add(worker)
        while self._waiting and len(self.placement):
            actor_id = next(iter(self._waiting))
            self._leave_queue(actor_id, now)
            actor = self._actors[actor_id]
            chosen = self.placement.choose(actor, self)
            if chosen is None:
                raise ProtocolError(
                    f"placement policy chose no worker although {len(self.placement)} are free"
                )
            self._activate(actor, chosen, now, out)

    def _host(self, actor: Actor) -> Worker:
        if actor.worker is None:
            raise ProtocolError(f"actor {actor.id!r} ({actor.state}) has no worker")
        return self._workers[actor.worker]
