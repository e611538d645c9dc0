"""The part of a real backend that talks to the controller, whatever runs the workers.

The same :class:`control.controller.Controller` as in the simulator decides. A real
backend reports events to it with real (monotonic) timestamps and carries out its
commands; this base class does everything that does not touch a sandbox: the router's
side (admission, completions, acknowledged requests, connections that failed), timers,
background tasks, losses and the metric records. A subclass carries out ``Restore``,
``Checkpoint``, ``StopSandbox``, ``DropActor`` and ``RetireWorker`` on its workers, and
the lifecycle a run needs (``prepare``, ``open``, ``close``, ``golden_image``,
``add_actor``, ``sample``): :class:`backends.local.driver.LocalBackend` (runsc in process,
or through worker agents) and :class:`backends.kube.backend.KubeBackend` (worker pods).
This class is the real backends' common interface; ``backends/protocol.py`` has the
config side.

Everything runs on one asyncio loop, so the controller is called from one thread.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.state import ControlState, LossRow, WakeRow
from control.controller import Controller
from control.messages import (
    Abandon,
    ActorDeleted,
    AdminResult,
    Checkpoint,
    Command,
    Correction,
    DeliverWake,
    DropActor,
    Event,
    Forward,
    ProvisionFailed,
    ProvisionWorkers,
    RecoverRequested,
    Reject,
    RequestArrived,
    RequestFinished,
    Restore,
    ResumeRequested,
    RetireWorker,
    SetTimer,
    StateLost,
    StopSandbox,
    SuspendRequested,
    TimerFired,
    Upload,
    UploadFinished,
    WakeScheduled,
)
from control.metrics import ActivationRow, CheckpointRow, RequestRow, SampleRow
from control.model import ActorState

log = logging.getLogger("actormux.controlplane")
TIME_WAIT_S = 61.0  # netstack keeps a TIME_WAIT this long after the actor closed first


@dataclass(frozen=True)
class GoldenImage:
    """A sealed checkpoint of a freshly started actor of ``template``: new actors can
    start from (a copy of) it, so their first activation is a restore."""

    template: str
    bytes: int
    location: str  # where the backend keeps it: a directory, or a snapshot URI


@dataclass
class MeasuredParts:
    """What a real activation or checkpoint measured of its parts while it ran (the rest
    of its time is the restore, or the checkpoint): the control plane's part (an
    activation's writes of its generation and sandbox; a checkpoint's fence check), the
    snapshot's transfer (fetching and checking it; describing and publishing it), and
    whether an activation's snapshot was on the worker's node already (``cache_hit``).
    """

    control_plane_s: float = 0.0
    transfer_s: float = 0.0
    cache_hit: bool = True


@dataclass
class Admission:
    """The controller's answer to a request, as the router receives it."""

    request: int
    decision: Forward | Reject
    arrived_s: float
    decided_s: float


@dataclass
class Records:
    """Rows of the metrics tables (``control/metrics.py``) as the run goes."""

    requests: list[RequestRow] = field(default_factory=list)
    activations: list[ActivationRow] = field(default_factory=list)
    checkpoints: list[CheckpointRow] = field(default_factory=list)
    samples: list[SampleRow] = field(default_factory=list)
    losses: list[LossRow] = field(default_factory=list)
    # actor -> [(sandbox, alive from, alive until)]: the driver's own view of lifetimes
    lifetimes: dict[str, list[list[Any]]] = field(default_factory=dict)


class ControlPlane:
    """The controller's side of a real backend (see the module docstring)."""

    state: ControlState  # set by the subclass when it opens its state
    _running: dict[str, Any]  # actor -> what serves it (the subclass's record of it)

    def __init__(
        self, controller: Controller, *, request_timeout_s: float,
        resume_on_every_request: bool = False,
    ) -> None:  # fmt: skip
        self.ctl = controller
        self.request_timeout_s = request_timeout_s
        self.resume_on_every_request = resume_on_every_request
        self.records = Records()
        self.control_plane_calls = 0
        self._t0 = time.monotonic()
        self._ids = 0
        self._admission_s: dict[str, float] = {}  # actor -> its last admission's decision time
        self._waiting: dict[int, asyncio.Future[Forward | Reject]] = {}
        self._acked: dict[str, list[str]] = {}  # actor -> requests acked since its snapshot
        self._dirty: set[str] = set()  # actors that saw a failed connection since a probe
        self._closed_first: dict[str, float] = {}  # actor -> until when its TIME_WAIT lasts
        self._forwards: dict[tuple[str, int], set[asyncio.Future[Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._opened = False
        self._stopped = False  # closing: no new sandbox work, no timers
        # set when this control plane must stop acting (a cluster's deposed leader)
        self.deposed = asyncio.Event()
        # Sends a due wake-up to its actor as a request (the router sets it).
        self.wake_sender: Callable[[DeliverWake], Coroutine[Any, Any, None]] | None = None
        self.bad_wake_headers = 0  # wake-up headers from actors that were not a number
        self.restored_wakes = 0  # stored wake-ups a previous control plane left

    def now(self) -> float:
        """Seconds since the backend started (monotonic)."""
        return time.monotonic() - self._t0

    # ------------------------------------------------------------ what a subclass does

    async def prepare(self) -> None:
        """Take the state (and, on a cluster, the leadership) and the workers; recover
        what an earlier run left. The controller owns nothing yet."""
        raise NotImplementedError

    def open(self) -> None:
        """Hand the stored actors and the workers to the controller; start sampling and
        observing. Needs the running event loop."""
        raise NotImplementedError

    async def close(self, *, save: bool = True, timeout_s: float = 120.0) -> None:
        """Stop; with ``save``, checkpoint every running actor first."""
        raise NotImplementedError

    async def golden_image(self, template: str) -> GoldenImage:
        """A sealed checkpoint of a fresh ``template`` actor (made before :meth:`open`)."""
        raise NotImplementedError

    def snapshot_bytes(self) -> tuple[int, int]:
        """Bytes of snapshots in the store, and of those on the workers' nodes (cached)."""
        raise NotImplementedError

    def sample(self) -> None:
        """Append one row to ``records.samples``. A real backend has no control-plane
        queue or link models to sample: ``cp_queue``, ``cp_busy`` and the bandwidth are 0."""
        counts = self.ctl.state_counts()
        stored, cached = self.snapshot_bytes()
        self.records.samples.append(SampleRow(
            self.now(), len(self.ctl.workers()), self.ctl.occupied_workers,
            counts[ActorState.SUSPENDED], counts[ActorState.RESUMING],
            counts[ActorState.RUNNING], counts[ActorState.SUSPENDING],
            self.ctl.waiting_actors, self.ctl.open_requests, 0, 0, stored, cached, 0.0,
        ))  # fmt: skip

    def address(self, worker: str) -> tuple[str, int]:
        """Where a worker's actor answers."""
        raise NotImplementedError

    async def add_actor(
        self, actor: str, template: str, *, golden: GoldenImage | None = None, owner: str = ""
    ) -> None:
        """A new actor (``FileExistsError`` if taken, ``ValueError`` for a bad id or
        template); with ``golden``, its first snapshot is a copy of that image, so its
        first activation is a restore. ``owner``: its tenant (admission budgets)."""
        raise NotImplementedError

    def recover_actor(self, actor: str, version: int) -> AdminResult:
        """An operator lets a failed actor go on from snapshot ``version``."""
        return AdminResult(actor, False, "this backend cannot recover actors yet")

    async def _restore(self, cmd: Restore) -> None:
        raise NotImplementedError

    async def _checkpoint(self, cmd: Checkpoint) -> None:
        raise NotImplementedError

    async def _stop_sandbox(self, cmd: StopSandbox) -> None:
        raise NotImplementedError

    async def _drop(self, actor: str) -> None:
        raise NotImplementedError

    async def _retire_worker(self, worker: str) -> None:
        raise NotImplementedError

    async def _provision(self, number: int) -> None:
        """Start ``number`` new workers, each reported with ``WorkerAdded(provisioned=True)``
        (or ``ProvisionFailed``); a backend whose pool it does not grow refuses (its
        config refuses ``policy.scaling`` first)."""
        self._report(ProvisionFailed(number, "this backend does not add workers"))

    async def _upload(self, cmd: Upload) -> None:
        """Move a paused snapshot to remote storage; a backend with no node-local tier
        refuses (its config refuses ``policy.locality`` first)."""
        self._report(UploadFinished(cmd.op, ok=False, reason="no node-local tier here"))

    async def wait_for_workers(self, count: int, timeout_s: float) -> None:
        """Until the controller has ``count`` workers (a cluster's pods join as they
        become ready); ``TimeoutError`` after ``timeout_s``."""
        deadline = self.now() + timeout_s
        while len(self.ctl.workers()) < count:
            if self.now() > deadline:
                raise TimeoutError(
                    f"{len(self.ctl.workers())} of {count} workers joined in {timeout_s:g} s"
                )
            await asyncio.sleep(0.1)

    def admin(
        self, event: SuspendRequested | ResumeRequested | ActorDeleted | RecoverRequested
    ) -> AdminResult:
        """Carry out an operator's request and return the controller's answer."""
        for cmd in self._dispatch(event):
            if isinstance(cmd, AdminResult):
                return cmd
        raise RuntimeError(f"no answer to {event!r}")  # pragma: no cover

    # ------------------------------------------------------------ requests (router)

    async def admit(self, actor: str, *, wait_s: float | None = None) -> Admission:
        """Hand a request to the controller and wait for its decision (``wait_s``: how
        long it may wait for its actor, a wake-up's own bound; None: the router's)."""
        self._ids += 1
        rid = self._ids
        arrived = self.now()
        future: asyncio.Future[Forward | Reject] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        if self.resume_on_every_request or not self.ctl.is_running(actor):
            self.control_plane_calls += 1
            if self.resume_on_every_request:
                # Substrate's router calls Resume on every request: a round trip to the
                # control plane's state (its generation), which the request waits for
                await self.state.offload(self.state.generation, actor)
        self._dispatch(RequestArrived(rid, actor, arrived, wait_s))
        decided = self.now()
        self._admission_s[actor] = decided - arrived
        decision = await future
        return Admission(rid, decision, arrived, decided)

    def finished(self, rid: int) -> None:
        """The router has the response and has closed the actor connection."""
        self._dispatch(RequestFinished(rid))

    def acknowledged(self, actor: str, generation: int, request_id: str) -> None:
        """The router told a client that ``actor`` (activation ``generation``) did its
        request: it is lost if that activation is lost before its next snapshot."""
        current = self.ctl.actor(actor)
        if current is not None and current.generation == generation:
            self._acked.setdefault(actor, []).append(request_id)

    def connection_failed(self, actor: str, *, actor_closed_first: bool = False) -> None:
        """A connection to ``actor`` ended abnormally (the router reset it, or the actor
        closed first): no checkpoint until it is verified again."""
        self._dirty.add(actor)
        if actor_closed_first:
            self._closed_first[actor] = self.now() + TIME_WAIT_S

    def track_forward(self, actor: str, generation: int, forward: asyncio.Future[Any]) -> None:
        """A forward in flight to activation ``generation`` of ``actor``: cut if that
        activation is declared lost (its sandbox died; it will never answer)."""
        key = (actor, generation)
        self._forwards.setdefault(key, set()).add(forward)

        def done(_: asyncio.Future[Any]) -> None:
            forwards = self._forwards.get(key)
            if forwards is not None:
                forwards.discard(forward)
                if not forwards:
                    del self._forwards[key]

        forward.add_done_callback(done)

    def record_request(
        self, rid: int, actor: str, arrived: float, *, outcome: str, status: int,
        activated: bool, cp: float, queue: float = 0.0, activation: float = 0.0,
        service: float = 0.0, wake: bool = False,
    ) -> None:  # fmt: skip
        """One row of the requests table, as the router saw the request end."""
        total = self.now() - arrived
        self.records.requests.append(
            RequestRow(rid, actor, arrived, outcome, status, activated, cp, queue, activation,
                       service, total, wake)
        )  # fmt: skip

    async def schedule_wake(self, actor: str, after: str) -> bool:
        """``actor`` answered with ``X-Actormux-Wake-After: after`` (seconds): schedule
        it, durably (the state keeps it until it is delivered; the router acknowledges
        the answer only after this returns). The actor is not trusted: anything but a
        finite number > 0 is refused, and the controller bounds how many and how far
        ahead. True if scheduled."""
        try:
            seconds = float(after)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            self.bad_wake_headers += 1
            log.warning("%s asked for a wake-up after %r: not a number of seconds > 0",
                        actor, after[:40])  # fmt: skip
            return False
        limit = self.ctl.timers.max_after_s
        if seconds > limit:  # refused before anything is written
            self._dispatch(WakeScheduled(actor, self.now() + seconds))
            return False
        wake = await self._write(self.state.add_wake, actor, time.time() + seconds)
        return await self._schedule(WakeRow(wake, actor, time.time() + seconds))

    async def _schedule(self, row: WakeRow) -> bool:
        """Hand a stored wake-up to the controller; forget it if the controller refuses."""
        refused = self.ctl.stats.wakeups_refused
        at = self.now() + (row.at_unix - time.time())
        self._dispatch(WakeScheduled(row.actor, at, key=str(row.id)))
        if self.ctl.stats.wakeups_refused == refused:
            return True
        await self._write(self.state.remove_wake, row.id)
        return False

    async def restore_wakes(self) -> None:
        """After :meth:`open`: hand the controller the wake-ups a previous control plane
        stored and did not deliver (past ones come due at once)."""
        rows = await self.state.offload(self.state.wakes)
        self.restored_wakes = sum([await self._schedule(row) for row in rows])
        if rows:
            log.info("restored %d of %d stored wake-ups", self.restored_wakes, len(rows))

    async def wake_done(self, wake: DeliverWake) -> None:
        """The router sent a due wake-up to its actor (whatever the answer): forget it."""
        if wake.key.isdigit():
            await self._write(self.state.remove_wake, int(wake.key))

    async def _write(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A write to the state, off the event loop (a cluster's also checks the fence)."""
        return await self.state.offload(fn, *args, **kwargs)

    def record_activation(
        self, cmd: Restore, node: str, started: float, seconds: float, measured: MeasuredParts
    ) -> None:
        """One row of the activations table: ``cmd`` took ``seconds`` from ``started``.
        Its control-plane time is the admission that asked for it (as the simulator
        counts the Resume call) plus the writes it made; the restore is what the
        measured parts leave. As in the simulator, the row starts when the control
        plane is done (the download and restore follow)."""
        admission = self._admission_s.pop(cmd.actor, 0.0)
        self.records.activations.append(ActivationRow.of(
            cmd.actor, cmd.worker, node, started + measured.control_plane_s, cold=cmd.cold,
            cache_hit=measured.cache_hit and not cmd.cold, snapshot_bytes=cmd.snapshot_bytes,
            control_plane_s=admission + measured.control_plane_s, download_s=measured.transfer_s,
            restore_s=max(0.0, seconds - measured.control_plane_s - measured.transfer_s),
        ))  # fmt: skip

    def record_checkpoint(
        self, cmd: Checkpoint, node: str, started: float, seconds: float, *, size: int,
        measured: MeasuredParts,
    ) -> None:  # fmt: skip
        """One row of the checkpoints table: ``cmd`` took ``seconds`` from ``started``
        and made a snapshot of ``size`` bytes."""
        self.records.checkpoints.append(CheckpointRow.of(
            cmd.actor, cmd.worker, node, started, snapshot_bytes=size,
            control_plane_s=measured.control_plane_s,
            checkpoint_s=max(0.0, seconds - measured.control_plane_s - measured.transfer_s),
            upload_s=measured.transfer_s,
        ))  # fmt: skip

    # ------------------------------------------------------------ commands

    def _dispatch(self, event: Event) -> list[Command]:
        cmds = self.ctl.handle(event, self.now())
        for cmd in cmds:
            if isinstance(cmd, Forward | Reject):
                future = self._waiting.pop(cmd.request, None)
                if future is not None and not future.done():
                    future.set_result(cmd)
            elif isinstance(cmd, StateLost):
                self._record_loss(cmd.actor, cmd.generation, cmd.version, cmd.reason)
                for forward in list(self._forwards.get((cmd.actor, cmd.generation), ())):
                    forward.cancel()
            elif isinstance(cmd, Correction):
                log.warning("correction: %s %s: %s", cmd.actor, cmd.worker, cmd.detail)
            elif isinstance(cmd, Abandon):
                log.error("request %d to %s abandoned by the controller", cmd.request, cmd.actor)
                self.connection_failed(cmd.actor)
            elif self._stopped:
                continue  # shutting down: the sandboxes are being removed wholesale
            elif isinstance(cmd, SetTimer):
                self._set_timer(cmd)
            elif isinstance(cmd, Restore):
                self._spawn(self._restore(cmd))
            elif isinstance(cmd, Checkpoint):
                self._spawn(self._checkpoint(cmd))
            elif isinstance(cmd, StopSandbox):
                self._spawn(self._stop_sandbox(cmd))
            elif isinstance(cmd, Upload):
                self._spawn(self._upload(cmd))
            elif isinstance(cmd, ProvisionWorkers):
                self._spawn(self._provision(cmd.number))
            elif isinstance(cmd, DeliverWake):
                if self.wake_sender is not None:
                    self._spawn(self.wake_sender(cmd))
                else:
                    log.warning("wake-up of %s dropped: no router delivers it", cmd.actor)
            elif isinstance(cmd, DropActor):
                self._spawn(self._drop(cmd.actor))
            elif isinstance(cmd, RetireWorker):
                self._spawn(self._retire_worker(cmd.worker))
            # AdminResult: returned to the caller of admin()
        return cmds

    def _report(self, event: Event) -> None:
        """A completion from a background task (dropped while shutting down)."""
        if not self._stopped:
            self._dispatch(event)

    def _set_timer(self, cmd: SetTimer) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            if not self._stopped:
                self._dispatch(TimerFired(cmd.timer))

        handle = loop.call_later(max(0.0, cmd.at - self.now()), fire)
        self._timers.add(handle)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("backend task failed", exc_info=task.exception())

    async def _wind_down(self, *, save: bool, timeout_s: float) -> None:
        """The first half of closing: with ``save``, ask the controller to suspend every
        running actor and wait (up to ``timeout_s``) for that work to finish; then carry
        out no more commands, cancel timers and let background tasks finish."""
        for loop_task in self._loops:
            loop_task.cancel()
        if save and self._opened:
            deadline = self.now() + timeout_s
            while (self._running or self._tasks) and self.now() < deadline:
                for actor in list(self._running):
                    self._dispatch(SuspendRequested(actor))
                await asyncio.sleep(0.05)
        self._stopped = True
        for handle in self._timers:
            handle.cancel()
        await self._drain_tasks()

    async def _drain_tasks(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _every(self, interval_s: float, step: Any) -> None:
        while True:
            result = step()
            if asyncio.iscoroutine(result):
                await result
            await asyncio.sleep(interval_s)

    def _record_loss(
        self, actor: str, generation: int, version: int, reason: str,
        also: Sequence[str] = (), *, known: bool = True,
    ) -> None:  # fmt: skip
        """What ``actor`` acknowledged after snapshot ``version`` is gone: the requests of
        its current activation, and ``also`` (those of snapshots dropped with it)."""
        lost = (*also, *self._acked.pop(actor, ()))
        row = LossRow(actor, generation, version, reason, lost, known, time.time())
        self.records.losses.append(row)
        log.error(
            "%s: activation %d lost (%s); it goes on from v%d; %d acknowledged requests lost%s",
            actor, generation, reason, version, len(lost), f": {list(lost)}" if lost else "",
        )  # fmt: skip
        self._spawn(
            self.state.offload(
                self.state.record_loss, actor, generation, version, reason, lost, known=known
            )
        )

    def double_activations(self) -> int:
        """Times the driver itself had two sandboxes of one actor at once (the monitor,
        ``monitor.py``, checks the same independently of the driver)."""
        count = 0
        for lives in self.records.lifetimes.values():
            spans = sorted(
                (start, end if end is not None else float("inf")) for _, start, end in lives
            )
            count += sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
        return count
