"""The local backend's driver: the controller's commands carried out with real sandboxes.

The same :class:`control.controller.Controller` as in the simulator decides; this
module only reports events with real (monotonic) timestamps and carries out commands:

* ``Restore``: put the worker's address back, ``runsc run`` (cold, from the template)
  or ``runsc restore`` (from the actor's latest snapshot), probe ``/healthz``, report;
* ``Checkpoint``: the controller orders it only for an actor with no request in
  flight, and the router closes every connection to an actor itself, first, before it
  reports the request finished; after a short settle for the last FIN/ACK,
  ``runsc checkpoint`` into a temporary directory, rename it into the store, report;
* ``Forward``/``Reject``: answer the router, which is waiting on the request;
* ``SetTimer``: ``loop.call_later``.

No policy decision is made here. Everything runs on one asyncio loop, so the
controller is only ever called from one thread.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.local import netns
from backends.local.bundle import write_bundle
from backends.local.db import StateDB
from backends.local.httpclient import ActorHTTPError, request
from backends.local.names import WorkerNames, check_actor_id
from backends.local.runsc import Runsc
from backends.local.store import SnapshotStore
from control.controller import Controller
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
    DropActor,
    Event,
    Forward,
    Reject,
    RequestArrived,
    RequestFinished,
    Restore,
    ResumeRequested,
    RetireWorker,
    SandboxStopped,
    SetTimer,
    StateLost,
    StopSandbox,
    SuspendRequested,
    TimerFired,
    WorkerAdded,
)
from control.model import ActorState

log = logging.getLogger("actormux.local")
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
NODE = "n0"  # one machine


@dataclass(frozen=True)
class Template:
    """How to start an actor of a kind: the program run inside the sandbox."""

    name: str
    args: tuple[str, ...]


def agent_template_name(state_mb: int) -> str:
    """The name of the agent template with ``state_mb`` MiB of state."""
    return f"agent-{state_mb}"


def default_templates(
    python: str, port: int, agent_state_mb: int | Sequence[int]
) -> dict[str, Template]:
    """``counter``, ``agent`` (state: the first of ``agent_state_mb``) and ``agent-<MiB>``
    for each size (see ``backends/local/templates``): sizes that differ between actors
    make a snapshot's size, and so its dependence on size, measurable."""
    sizes = [agent_state_mb] if isinstance(agent_state_mb, int) else list(agent_state_mb)
    if not sizes:
        raise ValueError("agent_state_mb: give at least one size")

    def agent(name: str, mb: int) -> Template:
        return Template(name, (python, str(TEMPLATE_DIR / "agent.py"), str(port), str(mb)))

    return {
        "counter": Template("counter", (python, str(TEMPLATE_DIR / "counter.py"), str(port))),
        "agent": agent("agent", sizes[0]),
        **{agent_template_name(mb): agent(agent_template_name(mb), mb) for mb in sizes},
    }


@dataclass
class LocalSettings:
    """Where the backend keeps things and how long it waits."""

    state_dir: Path  # SQLite and snapshots: survives restarts
    runtime_dir: Path  # runsc state, bundles, logs: gone with `actormux cleanup`
    instance: int = 0
    workers: int = 8
    actor_port: int = 8080
    python: str = "/usr/bin/python3"
    agent_state_mb: int | tuple[int, ...] = 16  # several: actors take them in turn
    activation_timeout_s: float = 20.0
    checkpoint_settle_s: float = 0.02  # after the router's close, before checkpoint
    request_timeout_s: float = 60.0
    sample_interval_s: float = 1.0
    runsc: str = "runsc"
    resume_on_every_request: bool = False


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

    requests: list[tuple[Any, ...]] = field(default_factory=list)
    activations: list[tuple[Any, ...]] = field(default_factory=list)
    checkpoints: list[tuple[Any, ...]] = field(default_factory=list)
    samples: list[tuple[Any, ...]] = field(default_factory=list)
    # actor -> [(sandbox, alive from, alive until)]: to detect double activations
    lifetimes: dict[str, list[list[Any]]] = field(default_factory=dict)


class LocalBackend:
    """Real gVisor actors on ``settings.workers`` worker slots of this machine."""

    def __init__(self, settings: LocalSettings, controller: Controller) -> None:
        self.s = settings
        self.ctl = controller
        self.workers = {
            w.worker_id: w
            for w in (WorkerNames(settings.instance, i) for i in range(settings.workers))
        }
        self.runsc = Runsc(settings.runtime_dir / "runsc", settings.runsc)
        self.store = SnapshotStore(settings.state_dir / "snapshots")
        self.db = StateDB(settings.state_dir / "state.sqlite")
        self.templates = default_templates(
            settings.python, settings.actor_port, settings.agent_state_mb
        )
        self.records = Records()
        self.control_plane_calls = 0
        self._t0 = time.monotonic()
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future[Forward | Reject]] = {}
        self._running: dict[str, str] = {}  # actor -> its sandbox
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sampler: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._opened = False
        self._stopped = False  # closing: no new sandbox work, no timers

    # ------------------------------------------------------------ lifecycle

    def now(self) -> float:
        """Seconds since the backend started (monotonic)."""
        return time.monotonic() - self._t0

    async def prepare(self) -> None:
        """Namespaces, bundles and directories; save sandboxes a previous run left behind."""
        for d in (self.s.runtime_dir / "bundles", self.s.runtime_dir / "logs"):
            d.mkdir(parents=True, exist_ok=True)
        await self._recover()
        await asyncio.gather(*(netns.create(w) for w in self.workers.values()))
        for w in self.workers.values():
            for t in self.templates.values():
                write_bundle(
                    self._bundle(t.name, w), args=t.args, env={"PATH": "/usr/bin:/bin",
                    "PYTHONUNBUFFERED": "1"}, netns_path=w.netns_path,
                )  # fmt: skip
        self.db.set_workers([(w.worker_id, w.netns, w.actor_ip) for w in self.workers.values()])

    def open(self) -> None:
        """Hand the actors the database knows and the workers to the controller."""
        for row in self.db.actors():
            self._dispatch(
                ActorCreated(
                    row.id,
                    row.template,
                    self._nominal_bytes(row.id, row.snapshot_version),
                    row.snapshot_version,
                )
            )
        for w in self.workers.values():
            self._dispatch(WorkerAdded(w.worker_id, NODE))
        self._opened = True
        self._sampler = asyncio.create_task(self._sample_forever())

    async def close(self, *, save: bool = True, timeout_s: float = 120.0) -> None:
        """Stop: with ``save``, checkpoint every running actor first; then tear down."""
        if self._sampler is not None:
            self._sampler.cancel()
        if save and self._opened:
            for actor in list(self._running):
                self._dispatch(SuspendRequested(actor))
            deadline = time.monotonic() + timeout_s
            while (self._running or self._tasks) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        self._stopped = True
        for handle in self._timers:
            handle.cancel()
        await self._drain_tasks()
        for actor, sandbox in list(self._running.items()):
            await self._destroy(actor, sandbox)
        await asyncio.gather(*(netns.delete(w) for w in self.workers.values()))
        self.db.close()
        if not self.runsc.ids():  # nothing left in runsc's state: the run dir can go
            shutil.rmtree(self.s.runtime_dir, ignore_errors=True)

    async def _drain_tasks(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _recover(self) -> None:
        """Sandboxes the database thinks may still run (the last run crashed): checkpoint
        the ones that do into the store, so no acknowledged state is lost; drop the rest."""
        for row in self.db.live_sandboxes():
            path = f"/var/run/netns/{row.netns}"
            state = await self.runsc.state(row.id, path) if Path(path).exists() else None
            if state and state.get("status") == "running":
                versions = self.store.versions(row.actor)
                version = (versions[-1] if versions else 0) + 1
                tmp = self.store.begin(row.actor, version)
                try:
                    await self.runsc.checkpoint(row.id, tmp, path)
                    self.store.commit(row.actor, version, tmp)
                    self.db.snapshot_committed(
                        row.actor, version, self.store.size(row.actor, version)
                    )
                    log.warning("recovered %s from a running sandbox as v%d", row.actor, version)
                except Exception:
                    self.store.abort(tmp)
                    log.exception("could not save sandbox %s of %s", row.id, row.actor)
            if Path(path).exists():
                await self.runsc.kill(row.id, path)
                await self.runsc.delete(row.id, path)
            self.db.sandbox_stopped(row.id)

    # ------------------------------------------------------------ actors

    def create_actor(self, actor: str, template: str, *, golden: Path | None = None) -> None:
        """A new actor; with ``golden``, its first snapshot is that template image
        (hard-linked), so its first activation is a restore instead of a cold start."""
        check_actor_id(actor)
        if template not in self.templates:
            raise ValueError(f"unknown template {template!r}; allowed: {sorted(self.templates)}")
        if self.ctl.actor(actor) is not None or any(r.id == actor for r in self.db.actors()):
            raise FileExistsError(f"actor {actor!r} already exists")
        version = 0
        if golden is not None:
            self.store.link(actor, 1, golden)
            version = 1
        self.db.add_actor(actor, template, version)
        if version:
            self.db.snapshot_committed(actor, 1, self.store.size(actor, 1))
        if self._opened:
            self._dispatch(
                ActorCreated(actor, template, self._nominal_bytes(actor, version), version)
            )

    def _nominal_bytes(self, actor: str, version: int) -> int:
        return self.store.size(actor, version) if version else 0

    def admin(self, event: SuspendRequested | ResumeRequested | ActorDeleted) -> AdminResult:
        """Carry out an operator's request and return the controller's answer."""
        for cmd in self._dispatch(event):
            if isinstance(cmd, AdminResult):
                return cmd
        raise RuntimeError(f"no answer to {event!r}")  # pragma: no cover

    async def golden_image(self, template: str) -> Path:
        """A checkpoint of a freshly started ``template`` actor (before any request),
        made on worker w0 before the controller owns the workers."""
        if self._opened:
            raise RuntimeError("golden images are made before open()")
        target = self.s.runtime_dir / "golden" / template
        if target.is_dir() and any(target.iterdir()):
            return target
        w = self.workers["w0"]
        sandbox = f"golden-{template}-{self.s.instance}"
        await netns.restore_address(w)
        await self.runsc.delete(sandbox, w.netns_path)
        await self.runsc.run(sandbox, self._bundle(template, w), w.netns_path, self._log(sandbox))
        try:
            await self._probe(w)
            tmp = target.with_name(f".tmp-{template}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            await asyncio.sleep(self.s.checkpoint_settle_s)
            await self.runsc.checkpoint(sandbox, tmp, w.netns_path)
            tmp.rename(target)
        finally:
            await self.runsc.kill(sandbox, w.netns_path)
            await self.runsc.delete(sandbox, w.netns_path)
        return target

    # ------------------------------------------------------------ requests (router)

    async def admit(self, actor: str) -> Admission:
        """Hand a request to the controller and wait for its decision."""
        rid = next(self._ids)
        arrived = self.now()
        future: asyncio.Future[Forward | Reject] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        if self.s.resume_on_every_request or not self.ctl.is_running(actor):
            self.control_plane_calls += 1
        self._dispatch(RequestArrived(rid, actor, arrived))
        decided = self.now()
        decision = await future
        return Admission(rid, decision, arrived, decided)

    def finished(self, rid: int) -> None:
        """The router has the response and has closed the actor connection."""
        self._dispatch(RequestFinished(rid))

    def address(self, worker: str) -> tuple[str, int]:
        """Where a worker's actor answers."""
        return self.workers[worker].actor_ip, self.s.actor_port

    # ------------------------------------------------------------ commands

    def _dispatch(self, event: Event) -> list[Command]:
        cmds = self.ctl.handle(event, self.now())
        for cmd in cmds:
            if isinstance(cmd, Forward | Reject):
                future = self._waiting.pop(cmd.request, None)
                if future is not None and not future.done():
                    future.set_result(cmd)
            elif self._stopped:
                continue  # shutting down: the sandboxes are being removed wholesale
            elif isinstance(cmd, SetTimer):
                self._set_timer(cmd)
            elif isinstance(cmd, Restore):
                self._spawn(self._restore(cmd))
            elif isinstance(cmd, Checkpoint):
                self._spawn(self._checkpoint(cmd))
            elif isinstance(cmd, DropActor):
                self.store.drop(cmd.actor)
                self.db.delete_actor(cmd.actor)
            elif isinstance(cmd, RetireWorker):
                self._spawn(netns.delete(self.workers.pop(cmd.worker)))
            elif isinstance(cmd, StopSandbox):
                self._spawn(self._stop_sandbox(cmd))
            elif isinstance(cmd, StateLost | Correction | Abandon):
                log.warning("%s", cmd)
            # AdminResult: returned to the caller of admin()
        return cmds

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

    async def _restore(self, cmd: Restore) -> None:
        w = self.workers[cmd.worker]
        actor = self.ctl.actor(cmd.actor)
        assert actor is not None
        sandbox = self._sandbox_id(cmd.actor, cmd.generation)
        started = self.now()
        ok = True
        self.db.sandbox_started(sandbox, cmd.actor, w.worker_id, w.netns)
        self.records.lifetimes.setdefault(cmd.actor, []).append([sandbox, started, None])
        try:
            await netns.restore_address(w)
            bundle = self._bundle(actor.template, w)
            if cmd.cold:
                await self.runsc.run(sandbox, bundle, w.netns_path, self._log(sandbox))
            else:
                image = self.store.path(cmd.actor, cmd.version)
                await self.runsc.restore(sandbox, image, bundle, w.netns_path, self._log(sandbox))
            await self._probe(w)
        except Exception:
            log.exception("activation of %s on %s failed", cmd.actor, w.worker_id)
            ok = False
        seconds = self.now() - started
        self.db.activation(
            sandbox, actor=cmd.actor, worker=w.worker_id, kind="cold" if cmd.cold else "restore",
            version=cmd.version, ok=ok, secs=seconds,
        )  # fmt: skip
        if ok:
            self._running[cmd.actor] = sandbox
        else:
            await self._destroy(cmd.actor, sandbox)
        self.records.activations.append(
            (cmd.actor, w.worker_id, NODE, started, cmd.cold, True, cmd.snapshot_bytes, 0.0,
             0.0, seconds, seconds)
        )  # fmt: skip
        outcome = ActivationOutcome.OK if ok else ActivationOutcome.FAILED
        self._dispatch(ActivationFinished(cmd.op, outcome))

    async def _checkpoint(self, cmd: Checkpoint) -> None:
        w = self.workers[cmd.worker]
        sandbox = self._running[cmd.actor]
        started = self.now()
        self.control_plane_calls += 1  # the Suspend call
        await asyncio.sleep(self.s.checkpoint_settle_s)  # let the last FIN/ACK complete
        tmp = self.store.begin(cmd.actor, cmd.version)
        ok = True
        size = 0
        try:
            await self.runsc.checkpoint(sandbox, tmp, w.netns_path)
            self.store.commit(cmd.actor, cmd.version, tmp)
            size = self.store.size(cmd.actor, cmd.version)
            self.db.snapshot_committed(cmd.actor, cmd.version, size)
        except Exception:
            log.exception("checkpoint of %s failed: its sandbox is lost", cmd.actor)
            self.store.abort(tmp)
            ok = False
        took = self.now() - started
        # The sandbox has stopped (or died). Its process takes ~1.5 s more to exit and
        # `runsc delete` waits for that; a new sandbox can meanwhile start in the same
        # worker namespace (measured: 10/10 restores correct), so the worker is
        # released now and the stopped sandbox reaped in the background.
        self._forget(cmd.actor, sandbox)
        self._spawn(self._reap(sandbox, kill=not ok))
        self.records.checkpoints.append(
            (cmd.actor, w.worker_id, NODE, started, size, 0.0, took, 0.0, took)
        )
        outcome = CheckpointOutcome.OK if ok else CheckpointOutcome.LOST
        self._dispatch(CheckpointFinished(cmd.op, outcome, snapshot_bytes=size))

    def _sandbox_id(self, actor: str, generation: int) -> str:
        """The container id of activation ``generation`` of ``actor``."""
        return f"{actor}_g{generation}_i{self.s.instance}"

    async def _stop_sandbox(self, cmd: StopSandbox) -> None:
        """Kill and remove the sandbox of an abandoned activation, then report it."""
        try:
            await self._destroy(cmd.actor, self._sandbox_id(cmd.actor, cmd.generation))
        finally:
            self._dispatch(SandboxStopped(cmd.op))

    async def _destroy(self, actor: str, sandbox: str) -> None:
        """Kill and remove ``sandbox`` now."""
        self._forget(actor, sandbox)
        await self._reap(sandbox, kill=True)

    def _forget(self, actor: str, sandbox: str) -> None:
        """``sandbox`` no longer serves ``actor`` (its lifetime ends now)."""
        if self._running.get(actor) == sandbox:
            del self._running[actor]
        for life in self.records.lifetimes.get(actor, []):
            if life[0] == sandbox and life[2] is None:
                life[2] = self.now()

    async def _reap(self, sandbox: str, *, kill: bool) -> None:
        """Remove a sandbox from runsc (killing it first if it may still run)."""
        path = self._netns_of(sandbox)
        if path is not None:
            if kill:
                await self.runsc.kill(sandbox, path)
            await self.runsc.delete(sandbox, path)
        self.db.sandbox_stopped(sandbox)

    def _netns_of(self, sandbox: str) -> str | None:
        for row in self.db.conn.execute("SELECT netns FROM sandboxes WHERE id=?", (sandbox,)):
            return f"/var/run/netns/{row[0]}"
        return None

    async def _probe(self, w: WorkerNames) -> None:
        """Wait until the actor answers ``/healthz`` (connection refused while it starts)."""
        deadline = time.monotonic() + self.s.activation_timeout_s
        while True:
            try:
                response = await request(w.actor_ip, self.s.actor_port, "GET", "/healthz",
                                         timeout=2.0)  # fmt: skip
                if response.status == 200:
                    return
            except ActorHTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"actor on {w.worker_id} not ready in {self.s.activation_timeout_s} s"
                )
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------ records

    def _bundle(self, template: str, w: WorkerNames) -> Path:
        return self.s.runtime_dir / "bundles" / f"{template}-{w.worker_id}"

    def _log(self, sandbox: str) -> Path:
        return self.s.runtime_dir / "logs" / f"{sandbox}.log"

    async def _sample_forever(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.s.sample_interval_s)

    def sample(self) -> None:
        """Append one row to the samples table."""
        counts = self.ctl.state_counts()
        stored = self.store.total_bytes()
        self.records.samples.append(
            (
                self.now(), len(self.ctl.workers()), self.ctl.occupied_workers,
                counts[ActorState.SUSPENDED], counts[ActorState.RESUMING],
                counts[ActorState.RUNNING], counts[ActorState.SUSPENDING],
                self.ctl.waiting_actors, self.ctl.open_requests, 0, 0, stored, stored, 0.0,
            )
        )  # fmt: skip

    def double_activations(self) -> int:
        """Times an actor had two sandboxes alive at once (must be 0)."""
        count = 0
        for lives in self.records.lifetimes.values():
            spans = sorted(
                (start, end if end is not None else float("inf")) for _, start, end in lives
            )
            count += sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
        return count
