"""The local backend's driver: the controller's commands carried out with real sandboxes.

The same :class:`control.controller.Controller` as in the simulator decides; this
module only reports events with real (monotonic) timestamps and carries out commands:

* ``Restore``: make sure no older sandbox of the actor is alive, fence (the actor's
  generation in SQLite becomes this activation's), check the snapshot against its
  manifest, put the worker's address back, ``runsc run`` (cold) or ``runsc restore``,
  probe ``/healthz`` (telling the actor its generation), report;
* ``Checkpoint``: the controller orders it only for an actor with no request in
  flight. The driver declines (the sandbox untouched, the controller retries later)
  while any connection to the actor is not verifiably closed, while an actor that
  saw a failed request does not answer, or when the snapshot disk lacks room for its
  memory; otherwise ``runsc checkpoint`` into a temporary directory and commit it
  to the store (``store.py``), fenced by generation, report;
* ``StopSandbox``: kill and remove that activation's sandbox, by container id;
* ``Forward``/``Reject``: answer the router, which is waiting on the request;
* ``StateLost``: record precisely which acknowledged requests are gone;
* ``SetTimer``: ``loop.call_later``.

Every restore and checkpoint reports back whatever goes wrong inside it. Blocking
work (SQLite, hashing, fsync, reading runsc's state) runs off the event loop. Every
few seconds the backend reports what it observes (live sandboxes, committed
snapshots) and the controller converges to it. No policy decision is made here;
everything runs on one asyncio loop, so the controller is called from one thread.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from backends.controlplane import ControlPlane, GoldenImage, MeasuredParts
from backends.gvisor import firewall, netns, tcpstate
from backends.gvisor.bundle import write_bundle
from backends.gvisor.catalog import Template, default_templates
from backends.gvisor.httpclient import ActorHTTPError
from backends.gvisor.names import (
    WorkerNames,
    check_actor_id,
    check_owner,
    parse_sandbox_id,
    sandbox_id,
)
from backends.gvisor.probe import wait_idle, wait_ready
from backends.gvisor.proc import CommandError
from backends.gvisor.rootfs import make_rootfs
from backends.gvisor.runsc import Runsc
from backends.local.db import StateDB
from backends.local.failpoints import failpoint
from backends.local.lock import DirectoryLock
from backends.local.recovery import RecoveryReport, recover
from backends.local.statedir import open_state_dir
from backends.local.store import SnapshotStore, SnapshotUnusable, write_requests
from backends.manifest import Snapshot
from backends.state import StaleGeneration
from control.controller import Controller
from control.messages import (
    ActivationFinished,
    ActivationOutcome,
    ActorCreated,
    AdminResult,
    Checkpoint,
    CheckpointFinished,
    CheckpointOutcome,
    Observed,
    ObservedSandbox,
    ObservedSnapshot,
    ProvisionFailed,
    RecoverRequested,
    Restore,
    SandboxStopped,
    StopSandbox,
    Upload,
    UploadFinished,
    WorkerAdded,
)
from control.model import ActorState
from control.policies import KeepNewest, RetentionPolicy

log = logging.getLogger("actormux.local")
NODE = "n0"  # one machine
MIB = 1 << 20
DIRTY_SETTLE_S = 1.5  # after re-verifying an actor that saw a failed connection


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
    activation_timeout_s: float = 20.0  # the readiness probe gives up after this
    checkpoint_settle_s: float = 0.02  # after the router's close, before checkpoint
    request_timeout_s: float = 60.0
    sample_interval_s: float = 1.0
    observe_interval_s: float = 2.0  # how often observed state is reported
    snapshot_reserve_mb: int = 64  # free space kept beyond a checkpoint's memory
    # which old snapshot versions the store deletes (policy/retention; the previous one
    # is what a repair falls back to)
    retention: RetentionPolicy = field(default_factory=lambda: KeepNewest(keep=2))
    runsc: str = "runsc"
    resume_on_every_request: bool = False
    # run each worker through a worker agent process (conf/backend/local.yaml: true;
    # settings made in code, as the tests' harness does, choose per test)
    worker_agents: bool = False


class LocalBackend(ControlPlane):
    """Real gVisor actors on ``settings.workers`` worker slots of this machine."""

    def __init__(self, settings: LocalSettings, controller: Controller) -> None:
        super().__init__(
            controller, request_timeout_s=settings.request_timeout_s,
            resume_on_every_request=settings.resume_on_every_request,
        )  # fmt: skip
        self.settings = settings
        self.workers = {
            w.worker_id: w
            for w in (WorkerNames(settings.instance, i) for i in range(settings.workers))
        }
        self.runsc = Runsc(settings.runtime_dir / "runsc", settings.runsc)
        self.templates: dict[str, Template] = default_templates(
            settings.python, settings.actor_port, settings.agent_state_mb
        )
        self.recovery = RecoveryReport()
        self.store: SnapshotStore
        self.state: StateDB
        self._locks: list[DirectoryLock] = []
        self._running: dict[str, str] = {}  # actor -> its serving sandbox
        self._sandboxes_of: dict[str, set[str]] = {}  # actor -> sandboxes maybe alive
        self._sandbox_worker: dict[str, str] = {}  # sandbox -> the worker it ran on
        self._provisioning: set[int] = set()  # slot indices being added

    # ------------------------------------------------------------ lifecycle

    async def prepare(self) -> None:
        """Take the instance, recover from a crash, then namespaces, bundles, directories.

        A second backend on the same run dir or state dir fails here
        (:class:`backends.local.lock.InstanceBusy`) before it changes anything.
        """
        settings = self.settings
        state_dir = open_state_dir(settings.state_dir)
        state_lock = DirectoryLock(state_dir, "state dir").acquire()
        try:
            run_lock = DirectoryLock(settings.runtime_dir, "backend instance run dir").acquire()
        except BaseException:
            state_lock.release()
            raise
        self._locks = [state_lock, run_lock]
        settings.runtime_dir.chmod(0o700)
        (settings.runtime_dir / "state_dir").write_text(f"{state_dir}\n")
        (settings.runtime_dir / "actor_port").write_text(f"{settings.actor_port}\n")
        for d in (settings.runtime_dir / "bundles", settings.runtime_dir / "logs"):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.store = SnapshotStore(state_dir / "snapshots", retention=settings.retention)
        self.state = StateDB(state_dir / "state.sqlite")
        await self._before_recovery()
        self.recovery = await recover(
            self.runsc, self.store, self.state, actor_port=settings.actor_port
        )
        self.records.losses.extend(self.state.losses())
        await asyncio.gather(*(netns.create(w) for w in self.workers.values()))
        await asyncio.to_thread(firewall.install, settings.instance, settings.actor_port)
        make_rootfs(settings.runtime_dir / "rootfs")
        for w in self.workers.values():
            for t in self.templates.values():
                self.write_bundle(t, w)
        await self._start_workers()

    async def _before_recovery(self) -> None:
        """Before recovery reads runsc's state: nothing else may be changing it."""

    async def _start_workers(self) -> None:
        """Start whatever runs the workers (runsc runs in-process: nothing to start)."""

    def write_bundle(self, template: Template, w: WorkerNames) -> Path:
        """The OCI bundle that runs ``template`` on worker ``w`` (minimal root, nobody)."""
        return write_bundle(
            self._bundle(template.name, w), args=template.args,
            env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"},
            netns_path=w.netns_path, rootfs=self.settings.runtime_dir / "rootfs",
            app_dir=template.directory,
        )  # fmt: skip

    def open(self) -> None:
        """Hand the actors the database knows (with the store's snapshots) and the
        workers to the controller; start sampling and observing."""
        for row in self.state.actors():
            version = self.store.latest(row.id)
            size = self.store.size(row.id, version) if version else 0
            self._dispatch(ActorCreated(row.id, row.template, size, version, row.generation,
                                        owner=row.owner))  # fmt: skip
        for w in self.workers.values():
            self._dispatch(WorkerAdded(w.worker_id, NODE))
        self._opened = True
        self._spawn(self.restore_wakes())
        self._loops = [
            asyncio.create_task(self._every(self.settings.sample_interval_s, self.sample)),
            asyncio.create_task(self._every(self.settings.observe_interval_s, self.observe)),
        ]
        gc_interval_s = self.settings.retention.gc_interval_s
        if gc_interval_s > 0:
            self._loops.append(asyncio.create_task(self._every(gc_interval_s, self._collect)))

    async def close(self, *, save: bool = True, timeout_s: float = 120.0) -> None:
        """Stop: with ``save``, checkpoint every running actor first; then tear down.
        A backend that never took its instance's locks owns nothing and touches nothing."""
        if not self._locks:
            return
        await self._wind_down(save=save, timeout_s=timeout_s)
        for actor, sandbox in list(self._running.items()):
            await self._kill(actor, sandbox)
        await self._close_workers()
        await asyncio.gather(*(netns.delete(w) for w in self.workers.values()))
        await asyncio.to_thread(firewall.remove, self.settings.instance)
        if hasattr(self, "state"):
            self.state.close()
        if not self.runsc.ids():  # nothing left in runsc's state: the run dir can go
            # Removed while its lock is still held: nobody can lock the old file after us.
            shutil.rmtree(self.settings.runtime_dir, ignore_errors=True)
        for lock in self._locks:
            lock.release()

    async def _close_workers(self) -> None:
        """Whatever runs the workers stops (nothing to stop when runsc runs in-process)."""

    async def _collect(self) -> None:
        """A snapshot garbage-collection sweep (policy/retention with gc_interval_s)."""
        await asyncio.to_thread(self.store.collect)

    # ------------------------------------------------------------ actors

    async def add_actor(
        self, actor: str, template: str, *, golden: GoldenImage | None = None, owner: str = ""
    ) -> None:
        """:meth:`create_actor`, for the admin API and runs."""
        self.create_actor(actor, template, golden=golden, owner=owner)

    def create_actor(
        self, actor: str, template: str, *, golden: GoldenImage | None = None, owner: str = ""
    ) -> None:
        """A new actor; with ``golden``, its first snapshot is that image, hard-linked,
        so its first activation is a restore."""
        check_actor_id(actor)
        check_owner(owner)
        if template not in self.templates:
            raise ValueError(f"unknown template {template!r}; allowed: {sorted(self.templates)}")
        if self.ctl.actor(actor) is not None or self.state.has_actor(actor):
            raise FileExistsError(f"actor {actor!r} already exists")
        if self.store.versions(actor):
            raise FileExistsError(f"snapshots of {actor!r} exist without an actor; delete them")
        version, size = 0, 0
        if golden is not None:
            directory = Path(golden.location)
            sealed = self.store.manifest_in(directory)
            if sealed is None:
                raise FileNotFoundError(f"no sealed golden image in {directory}")
            size = self.store.link(actor, 1, sealed, directory).bytes
            version = 1
        self.state.add_actor(actor, template, owner)
        if self._opened:
            self._dispatch(ActorCreated(actor, template, size, version, owner=owner))

    def recover_actor(self, actor: str, version: int) -> AdminResult:
        """An operator lets a failed actor go on from snapshot ``version`` (0: template);
        the snapshot must check out, and the loss is recorded."""
        known = self.ctl.actor(actor)
        if known is None:
            return AdminResult(actor, False, "unknown actor")
        if known.state is not ActorState.FAILED:
            return AdminResult(actor, False, f"actor is {known.state}, not failed")
        if version:
            try:
                self.store.verify(actor, version)
            except (SnapshotUnusable, ValueError) as e:
                return AdminResult(actor, False, str(e))
        was = known.snapshot_version
        newer = [self.store.manifest(actor, v) for v in self.store.versions(actor) if v > version]
        result = self.admin(RecoverRequested(actor, version))
        if result.ok:
            aside = self.store.set_aside(actor, version)
            why = f"an operator chose to go on from v{version} (was v{was})"
            if aside:
                why += f"; set aside for inspection: {', '.join(p.name for p in aside)}"
            # What the dropped versions held beyond v{version}: named by their manifests
            # (not known if a manifest is unreadable, or versions were pruned meanwhile).
            lost = [r for m in newer if m is not None for r in m.requests]
            known_all = (
                all(m is not None and m.requests_known for m in newer)
                and len(newer) == was - version
            )
            self._record_loss(actor, known.generation, version, why, lost, known=known_all)
        return result

    async def golden_image(self, template: str) -> GoldenImage:
        """A sealed checkpoint of a freshly started ``template`` actor (before any
        request), made on worker w0 before the controller owns the workers."""
        if self._opened:
            raise RuntimeError("golden images are made before open()")
        target = self.settings.runtime_dir / "golden" / template
        if target.is_dir():
            sealed = self.store.manifest_in(target)
            if sealed is not None:
                return GoldenImage(template, sealed.bytes, str(target))
            shutil.rmtree(target)
        w = self.workers["w0"]
        sandbox = f"golden_{template}_i{self.settings.instance}"
        await netns.restore_address(w)
        await self.runsc.delete(sandbox, w.netns_path)
        await self.runsc.run(sandbox, self._bundle(template, w), w.netns_path, self._log(sandbox))
        try:
            await self._probe(w)
            tmp = target.with_name(f".tmp-{template}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(mode=0o700, parents=True)
            await asyncio.sleep(self.settings.checkpoint_settle_s)
            await self.runsc.checkpoint(sandbox, tmp, w.netns_path)
            sealed = await asyncio.to_thread(self.store.seal, tmp, template)
            tmp.rename(target)
        finally:
            self.runsc.kill_process(sandbox)
            await self.runsc.delete(sandbox, w.netns_path)
        return GoldenImage(template, sealed.bytes, str(target))

    def address(self, worker: str) -> tuple[str, int]:
        """Where a worker's actor answers."""
        return self.workers[worker].actor_ip, self.settings.actor_port

    # ------------------------------------------------------------ commands

    async def _retire_worker(self, worker: str) -> None:
        await netns.delete(self.workers.pop(worker))

    async def _provision(self, number: int) -> None:
        """New worker slots for the scaling policy: a namespace (and its bundles, and its
        agent) each, numbered after the highest slot in use; nothing is ever shared with
        a slot being retired."""
        used = {int(w.worker_id.removeprefix("w")) for w in self.workers.values()}
        first = max(used, default=-1) + 1 + len(self._provisioning)
        indices = range(first, first + number)
        self._provisioning.update(indices)
        try:
            await asyncio.gather(*(self._add_worker(i) for i in indices))
        finally:
            self._provisioning.difference_update(indices)

    async def _add_worker(self, index: int) -> None:
        w = WorkerNames(self.settings.instance, index)
        try:
            await netns.create(w)
            for template in self.templates.values():
                self.write_bundle(template, w)
            await self._start_worker(w)
        except Exception as e:  # the slot is unusable: remove what was made of it
            log.error("worker %s did not start: %s", w.worker_id, e)
            await netns.delete(w)
            self._report(ProvisionFailed(1, f"{w.worker_id}: {e}"))
            return
        if self._stopped:
            await netns.delete(w)
            return
        self.workers[w.worker_id] = w
        self._report(WorkerAdded(w.worker_id, NODE, provisioned=True))

    async def _start_worker(self, w: WorkerNames) -> None:
        """Start whatever runs one new worker (nothing when runsc runs in-process)."""

    async def _upload(self, cmd: Upload) -> None:
        """One machine is one node: its snapshot store is node-local and every worker
        restores from it, so a paused snapshot is already where a restore anywhere reads
        it. Nothing moves; the version must be there (checked against its manifest)."""
        try:
            await asyncio.to_thread(self.store.verify, cmd.actor, cmd.version)
        except SnapshotUnusable as e:
            self._report(UploadFinished(cmd.op, ok=False, reason=str(e)))
            return
        self._report(UploadFinished(cmd.op))

    # ------------------------------------------------------------ restore

    async def _restore(self, cmd: Restore) -> None:
        outcome, reason = ActivationOutcome.FAILED, "activation did not finish"
        sandbox = self._sandbox_id(cmd.actor, cmd.generation)
        started = self.now()
        measured = MeasuredParts()
        try:
            outcome, reason = await self._restore_steps(cmd, sandbox, measured)
        except Exception as e:  # anything at all: the controller must hear of it
            log.exception("activation of %s on %s failed", cmd.actor, cmd.worker)
            reason = f"{type(e).__name__}: {e}"
        finally:
            seconds = self.now() - started
            ok = outcome is ActivationOutcome.OK
            if ok:
                self._running[cmd.actor] = sandbox
                self.record_activation(cmd, NODE, started, seconds, measured)
            elif not self._stopped:
                await self._kill(cmd.actor, sandbox)
            await self.state.offload(
                self.state.activation, sandbox, actor=cmd.actor, worker=cmd.worker,
                kind="cold" if cmd.cold else "restore", version=cmd.version,
                outcome=str(outcome), seconds=seconds,
            )  # fmt: skip
            self._report(ActivationFinished(cmd.op, outcome, reason))

    async def _restore_steps(
        self, cmd: Restore, sandbox: str, measured: MeasuredParts
    ) -> tuple[ActivationOutcome, str]:
        w = self.workers[cmd.worker]
        actor = self.ctl.actor(cmd.actor)
        if actor is None:
            return ActivationOutcome.FAILED, "actor no longer exists"
        await self._retire_older_sandboxes(cmd.actor)
        wrote_from = self.now()
        try:
            await self.state.offload(
                self.state.begin_activation,
                cmd.actor,
                cmd.generation,
                sandbox,
                w.worker_id,
                w.netns,
            )
        except StaleGeneration as e:
            return ActivationOutcome.FAILED, str(e)
        measured.control_plane_s = self.now() - wrote_from
        self._sandboxes_of.setdefault(cmd.actor, set()).add(sandbox)
        self._sandbox_worker[sandbox] = w.worker_id
        self.records.lifetimes.setdefault(cmd.actor, []).append([sandbox, self.now(), None])
        failed = await self._start_sandbox(cmd, sandbox, w, actor.template, measured)
        if failed is not None:
            return failed
        await self.state.offload(self.state.sandbox_running, sandbox)
        self._dirty.discard(cmd.actor)
        return ActivationOutcome.OK, ""

    async def _start_sandbox(
        self, cmd: Restore, sandbox: str, w: WorkerNames, template: str, measured: MeasuredParts
    ) -> tuple[ActivationOutcome, str] | None:
        """Start the sandbox (cold, or restored from the checked snapshot) and wait until
        it answers as its generation; None when it does, else why not. The snapshot is
        on this machine: checking it is its "download" (a cache hit)."""
        if not cmd.cold:
            checked_from = self.now()
            try:
                await asyncio.to_thread(self.store.verify, cmd.actor, cmd.version)
                measured.transfer_s = self.now() - checked_from
            except SnapshotUnusable as e:
                log.error("%s", e)
                return ActivationOutcome.UNUSABLE, str(e)
        await netns.restore_address(w)
        bundle = self._bundle(template, w)

        def crash_point() -> None:
            failpoint("restore.runsc_started")

        if cmd.cold:
            await self.runsc.run(sandbox, bundle, w.netns_path, self._log(sandbox),
                                 started=crash_point)  # fmt: skip
        else:
            image = self.store.path(cmd.actor, cmd.version)
            await self.runsc.restore(sandbox, image, bundle, w.netns_path, self._log(sandbox),
                                     started=crash_point)  # fmt: skip
        await self._probe(w, actor=cmd.actor, generation=cmd.generation)
        return None

    async def _retire_older_sandboxes(self, actor: str, wait_s: float = 5.0) -> None:
        """No two sandboxes of one actor may be alive at once: any older one still alive
        (an abandoned activation) is killed, by its id, and waited for."""
        older = self._sandboxes_of.get(actor, set())
        deadline = time.monotonic() + wait_s
        for sandbox in list(older):
            while await asyncio.to_thread(self.runsc.alive, sandbox):
                self.runsc.kill_process(sandbox)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"an older sandbox {sandbox} of {actor} will not die")
                await asyncio.sleep(0.02)
            older.discard(sandbox)

    # ------------------------------------------------------------ checkpoint

    async def _checkpoint(self, cmd: Checkpoint) -> None:
        started = self.now()
        sandbox = self._running.get(cmd.actor)
        outcome, reason, size = CheckpointOutcome.LOST, "checkpoint did not finish", 0
        measured = MeasuredParts()
        try:
            outcome, reason, size = await self._checkpoint_steps(cmd, sandbox, measured)
        except Exception as e:  # anything at all: the controller must hear of it
            log.exception("checkpoint of %s failed", cmd.actor)
            reason = f"{type(e).__name__}: {e}"
            if sandbox is not None and await asyncio.to_thread(self.runsc.alive, sandbox):
                outcome = CheckpointOutcome.DECLINED  # it was not touched: try again later
        finally:
            took = self.now() - started
            if outcome is not CheckpointOutcome.DECLINED and sandbox is not None:
                self._forget(cmd.actor, sandbox)
                if outcome is CheckpointOutcome.LOST:
                    self.runsc.kill_process(sandbox)
                    await self._cut_connections(sandbox)
                if outcome is CheckpointOutcome.OK:
                    self._acked.pop(cmd.actor, None)  # in the snapshot now
                    self.record_checkpoint(cmd, NODE, started, took, size=size, measured=measured)
                self._spawn(self._reap(cmd.actor, sandbox))
            elif outcome is CheckpointOutcome.DECLINED:
                log.warning("checkpoint of %s declined: %s", cmd.actor, reason)
            self._report(CheckpointFinished(cmd.op, outcome, reason, size))

    async def _checkpoint_steps(
        self, cmd: Checkpoint, sandbox: str | None, measured: MeasuredParts
    ) -> tuple[CheckpointOutcome, str, int]:
        if sandbox is None or sandbox != self._sandbox_id(cmd.actor, cmd.generation):
            return CheckpointOutcome.LOST, f"no sandbox of generation {cmd.generation}", 0
        w = self.workers[cmd.worker]
        if not await asyncio.to_thread(self.runsc.alive, sandbox):
            return CheckpointOutcome.LOST, "its sandbox died", 0
        why_not = await self._why_not_checkpoint(cmd.actor, cmd.generation, sandbox, w)
        if why_not is not None:
            return CheckpointOutcome.DECLINED, why_not, 0
        fenced_from = self.now()
        fence = await self.state.offload(self.state.generation, cmd.actor)
        measured.control_plane_s = self.now() - fenced_from
        if fence != cmd.generation:
            return CheckpointOutcome.LOST, f"generation {cmd.generation} is fenced by {fence}", 0
        await asyncio.sleep(self.settings.checkpoint_settle_s)  # the last FIN/ACK
        self.control_plane_calls += 1  # the Suspend call
        return await self._take_checkpoint(cmd, sandbox, w, measured)

    async def _take_checkpoint(
        self, cmd: Checkpoint, sandbox: str, w: WorkerNames, measured: MeasuredParts
    ) -> tuple[CheckpointOutcome, str, int]:
        """Checkpoint ``sandbox`` and commit the snapshot (the checks are done)."""
        tmp = self.store.begin(cmd.actor, cmd.version, cmd.generation)
        write_requests(tmp, tuple(self._acked.get(cmd.actor, ())))
        try:
            await self.runsc.checkpoint(
                sandbox, tmp, w.netns_path,
                started=lambda: failpoint("checkpoint.runsc_started"),
            )  # fmt: skip
        except CommandError as e:
            self.store.abort(tmp)
            with self._log(sandbox).open("a") as f:  # runsc's whole story, for the operator
                f.write(f"checkpoint failed:\n{e.stderr}\n")
            state = await self.runsc.state(sandbox, w.netns_path)
            if state is not None and state.get("status") == "running":
                return CheckpointOutcome.DECLINED, f"runsc checkpoint failed harmlessly: {e}", 0
            return CheckpointOutcome.LOST, f"runsc checkpoint failed: {e}", 0
        failpoint("checkpoint.before_commit")
        committed_from = self.now()
        snapshot = await self._commit(cmd, tmp)
        measured.transfer_s = self.now() - committed_from
        return CheckpointOutcome.OK, "", snapshot.bytes

    async def _why_not_checkpoint(
        self, actor: str, generation: int, sandbox: str, w: WorkerNames
    ) -> str | None:
        """Why checkpointing now could destroy the sandbox (None: it is safe)."""
        port = self.settings.actor_port
        until = self._closed_first.get(actor, 0.0)
        if self.now() < until:
            return f"it closed a connection first; its TIME_WAIT lasts {until - self.now():.0f} s"
        if actor in self._dirty:
            try:
                await self._probe(w, actor=actor, generation=generation, timeout_s=2.0)
            except (ActorHTTPError, TimeoutError) as e:
                return f"it does not answer after a failed request ({e})"
            # It answers. What the host cannot see may still be open inside it: the probe's
            # own connection finishing in a sandbox that was frozen until a moment ago, and
            # handshakes of connections abandoned meanwhile, which its netstack answers
            # (SYN-ACK, again after 1 s) and the host resets. Let those play out first.
            await asyncio.sleep(DIRTY_SETTLE_S)
            # And its own view: a connection reset while it was frozen can stay open in
            # its netstack (the host has no socket left to show it) until the actor
            # closes it; checkpointing it then destroys the sandbox (seen once in CI).
            if not await wait_idle(w.actor_ip, port, timeout_s=DIRTY_SETTLE_S):
                return "it still holds a connection open after a failed request"
            self._dirty.discard(actor)
        open_ = await tcpstate.open_connections(w.actor_ip, port)
        if open_:
            self._dirty.add(actor)
            return f"connections to it are not closed ({', '.join(open_)})"
        memory = await asyncio.to_thread(self.runsc.memory_bytes, sandbox) or 0
        need = memory + self.settings.snapshot_reserve_mb * MIB
        free = (await asyncio.to_thread(shutil.disk_usage, self.store.root)).free
        if free < need:
            return f"snapshot disk full: needs {need // MIB} MiB, {free // MIB} MiB free"
        return None

    async def _commit(self, cmd: Checkpoint, tmp: Path) -> Snapshot:
        """Commit the checkpoint in ``tmp``. Its image is the actor's only copy now, so a
        failing commit (a full disk) is retried, never dropped; the controller marks the
        actor overdue meanwhile."""
        delay = 0.5
        while True:
            try:
                return await asyncio.to_thread(
                    self.store.commit, cmd.actor, cmd.version, cmd.generation, tmp,
                    fence=cmd.generation, requests=tuple(self._acked.get(cmd.actor, ())),
                )  # fmt: skip
            except (FileExistsError, FileNotFoundError):
                raise  # not transient: the image stays in place for recovery to judge
            except OSError as e:  # a full or failing disk: worth waiting for
                log.error("commit of %s v%d failed (%s); retrying", cmd.actor, cmd.version, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # ------------------------------------------------------------ sandboxes

    def _sandbox_id(self, actor: str, generation: int) -> str:
        """The container id of activation ``generation`` of ``actor``."""
        return sandbox_id(actor, generation, self.settings.instance)

    async def _stop_sandbox(self, cmd: StopSandbox) -> None:
        """Kill and remove the sandbox of an abandoned activation, then report it."""
        try:
            sandbox = self._sandbox_id(cmd.actor, cmd.generation)
            # Ended on purpose: a restart need not report it. Its state is not needed (an
            # abandoned activation never served; a stray one is not the actor's), or its
            # loss is recorded already: the controller emits StateLost before this
            # StopSandbox, and the database's single writer keeps that order.
            await self.state.offload(self.state.sandbox_stopping, sandbox)
            await self._kill(cmd.actor, sandbox)
        finally:
            self._report(SandboxStopped(cmd.op))

    async def _kill(self, actor: str, sandbox: str) -> None:
        """Kill and remove ``sandbox`` now (its state is not needed)."""
        self._forget(actor, sandbox)
        self.runsc.kill_process(sandbox)
        await self._cut_connections(sandbox)
        await self._reap(actor, sandbox)

    async def _cut_connections(self, sandbox: str) -> None:
        """The host's sockets to a sandbox that ended abnormally are destroyed before its
        worker hosts another one (they would block that one's checkpoints)."""
        worker = self._sandbox_worker.pop(sandbox, None)
        if worker is not None and worker in self.workers:
            ip, port = self.address(worker)
            await asyncio.to_thread(tcpstate.destroy_connections, ip, port)

    def _forget(self, actor: str, sandbox: str) -> None:
        """``sandbox`` no longer serves ``actor``."""
        if self._running.get(actor) == sandbox:
            del self._running[actor]
        for life in self.records.lifetimes.get(actor, []):
            if life[0] == sandbox and life[2] is None:
                life[2] = self.now()

    async def _reap(self, actor: str, sandbox: str) -> None:
        """Remove a sandbox that is stopped or killed from runsc and the database."""
        netns_name = await self.state.offload(self.state.netns_of, sandbox)
        if netns_name is not None:
            path = f"/var/run/netns/{netns_name}"
            await self.runsc.kill(sandbox, path)
            await self.runsc.delete(sandbox, path)
        if not await asyncio.to_thread(self.runsc.alive, sandbox):
            self._sandboxes_of.get(actor, set()).discard(sandbox)
        await self.state.offload(self.state.sandbox_stopped, sandbox)

    async def _drop(self, actor: str) -> None:
        await asyncio.to_thread(self.store.drop, actor)
        await self.state.offload(self.state.delete_actor, actor)
        self._acked.pop(actor, None)

    async def _probe(
        self, w: WorkerNames, *, actor: str = "", generation: int = 0,
        timeout_s: float | None = None,
    ) -> None:  # fmt: skip
        """Wait until the actor on ``w`` answers ``/healthz`` (as activation
        ``generation`` of ``actor``)."""
        limit = self.settings.activation_timeout_s if timeout_s is None else timeout_s
        await wait_ready(
            w.actor_ip, self.settings.actor_port, actor=actor, generation=generation,
            timeout_s=limit,
        )  # fmt: skip

    # ------------------------------------------------------------ observed state

    async def observe(self) -> None:
        """Report which sandboxes are alive where, and the committed snapshots."""
        taken = self.now()
        seen = await asyncio.to_thread(self._live_sandboxes)
        if seen is None or self._stopped:
            return  # runsc's state could not be read whole: report nothing this time
        snapshots = tuple(ObservedSnapshot(a, self.store.latest(a)) for a in self.store.actors())
        self._dispatch(Observed(taken, seen, snapshots))

    def _live_sandboxes(self) -> tuple[ObservedSandbox, ...] | None:
        workers = {w.netns_path: w.worker_id for w in self.workers.values()}
        containers = self.runsc.containers()
        if containers is None:
            return None
        found = []
        for container in containers:
            parsed = parse_sandbox_id(container.id)
            if parsed is None or parsed[2] != self.settings.instance:
                continue
            worker = workers.get(container.netns_path or "")
            if worker is not None and self.runsc.alive(container.id):
                found.append(ObservedSandbox(parsed[0], worker, parsed[1]))
        return tuple(found)

    # ------------------------------------------------------------ records

    def _bundle(self, template: str, w: WorkerNames) -> Path:
        return self.settings.runtime_dir / "bundles" / f"{template}-{w.worker_id}"

    def _log(self, sandbox: str) -> Path:
        return self.settings.runtime_dir / "logs" / f"{sandbox}.log"

    def snapshot_bytes(self) -> tuple[int, int]:
        """The store is on this machine: every stored snapshot is on the workers' node."""
        stored = self.store.total_bytes()
        return stored, stored
