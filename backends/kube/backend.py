"""The control plane on Kubernetes: the same controller, worker pods run by worker agents.

:class:`KubeBackend` is a :class:`backends.controlplane.ControlPlane` whose

* leadership comes from a ``coordination.k8s.io`` Lease (``lease.py``): it waits to
  lead, renews in the background, and stops acting the moment it cannot (a control
  plane that lost its Lease never carries out another command);
* state is in Redis (``backends/state/redis_state.py``), every write fenced by the
  Lease's token: a deposed leader's writes are refused (:class:`Deposed`) and it stops;
* workers are the ready pods of a StatefulSet (``pool.py``): a pod that becomes ready
  is ``WorkerAdded``, one that goes away is ``WorkerLost`` (its actors are lost since
  their last snapshot, and reported as such);
* activations, checkpoints and stops are orders to each pod's agent over HTTP, with op
  ids unique to this run, so retries are carried out once; snapshots go to and from the
  object store (``s3://``, ``gs://``, or ``file://`` for tests) by the agents;
* actor traffic goes from the router to the pod's forwarding port (``forward.py`` in
  the agent), never through the Kubernetes API, which is used for leadership and pool
  changes only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backends.agent import transfer
from backends.agent.api import Activate, Outcome, Stop
from backends.agent.api import Checkpoint as CheckpointOrder
from backends.agent.client import AgentClient, AgentRefused, AgentUnreachable, observe_agents
from backends.controlplane import ControlPlane, GoldenImage, MeasuredParts
from backends.gvisor.httpclient import ActorHTTPError
from backends.gvisor.names import check_actor_id, check_owner, sandbox_id
from backends.gvisor.probe import wait_ready
from backends.kube.api import KubeAPIs, connect
from backends.kube.lease import LeaseElector, LeaseSettings
from backends.kube.pool import Change, PodPool, PoolChange, PoolSettings, WorkerPod
from backends.state import Deposed, StaleGeneration
from backends.state.redis_state import RedisState
from control.controller import Controller
from control.messages import (
    ActivationFinished,
    ActivationOutcome,
    ActorCreated,
    Checkpoint,
    CheckpointFinished,
    CheckpointOutcome,
    Observed,
    ObservedSnapshot,
    Restore,
    SandboxStopped,
    StopSandbox,
    WorkerAdded,
    WorkerLost,
)

log = logging.getLogger("actormux.kube")
DIRTY_SETTLE_S = 1.5  # as in the local backend: let abandoned handshakes play out


@dataclass(frozen=True)
class KubeSettings:
    """Where the cluster's parts are and how long to wait."""

    namespace: str
    identity: str  # this control plane's name on the Lease (its pod name)
    redis_url: str
    snapshots: str  # the snapshot root URI: s3://bucket/prefix, gs://..., file://...
    agent_token: str
    api_host: str | None = None  # None: in-cluster config, else the kubeconfig
    statefulset: str = "actormux-worker"
    lease: str = "actormux-controller"
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    lead_timeout_s: float = 120.0  # give up waiting to lead after this
    storage_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    templates: tuple[str, ...] = ("counter", "agent")
    instance: int = 0  # the agents' instance: part of every sandbox id
    request_timeout_s: float = 60.0
    sample_interval_s: float = 1.0
    observe_interval_s: float = 2.0
    checkpoint_settle_s: float = 0.02
    require_fsync: bool = True  # Redis must fsync every write (see redis_state.py)
    workers: int | None = None  # scale the StatefulSet to this at prepare (None: leave it)
    workers_timeout_s: float = 600.0  # for that many worker pods to become ready
    state_namespace: str | None = None  # the Redis namespace (None: ``namespace``)
    resume_on_every_request: bool = False  # the router asks the controller every time


@dataclass
class _Worker:
    pod: WorkerPod
    client: AgentClient
    forward: tuple[str, int]


class KubeBackend(ControlPlane):
    """See the module docstring."""

    def __init__(
        self, settings: KubeSettings, controller: Controller, *, apis: KubeAPIs | None = None
    ) -> None:
        super().__init__(
            controller, request_timeout_s=settings.request_timeout_s,
            resume_on_every_request=settings.resume_on_every_request,
        )  # fmt: skip
        self.settings = settings
        self.apis = apis
        self.state: RedisState
        self.elector: LeaseElector
        self.pool: PodPool
        self.workers: dict[str, _Worker] = {}
        self._run = secrets.token_hex(4)
        self._running: dict[str, tuple[str, int]] = {}  # actor -> (worker, generation)
        self._snapshots: dict[str, tuple[int, int]] = {}  # actor -> (version, bytes)
        self._pool_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready_pods: list[WorkerPod] = []  # the ready pods prepare saw
        self.saved_on_takeover: dict[str, int] = {}  # actor -> snapshot version saved

    # ------------------------------------------------------------ lifecycle

    async def prepare(self) -> None:
        """Connect, wait to lead, claim the state with the Lease's token."""
        settings = self.settings
        self.apis = self.apis or connect(settings.api_host)
        self.elector = LeaseElector(self.apis.coordination, LeaseSettings(
            settings.namespace, settings.lease, settings.identity,
            settings.lease_duration_s, settings.renew_deadline_s,
        ))  # fmt: skip
        deadline = self.now() + settings.lead_timeout_s
        leadership = await asyncio.to_thread(self.elector.try_lead)
        while leadership is None:
            if self.now() > deadline:
                raise TimeoutError(f"{settings.identity} did not become leader in time")
            await asyncio.sleep(settings.lease_duration_s / 5)
            leadership = await asyncio.to_thread(self.elector.try_lead)
        self.state = RedisState(
            settings.redis_url, namespace=settings.state_namespace or settings.namespace,
            token=leadership.token, require_fsync=settings.require_fsync,
        )  # fmt: skip
        await self.state.offload(self.state.claim)
        self.records.losses.extend(await self.state.offload(self.state.losses))
        pool_settings = PoolSettings(settings.namespace, settings.statefulset)
        self.pool = PodPool(self.apis.core, self.apis.apps, pool_settings)
        if settings.workers is not None:
            await asyncio.to_thread(self.pool.scale, settings.workers)
            self._ready_pods = await self._wait_for_pods(pool_settings, settings.workers)
        else:
            self._ready_pods = await self._wait_for_pods(pool_settings, 0)
        await self._save_what_runs(self._ready_pods)

    async def _save_what_runs(self, pods: list[WorkerPod]) -> None:
        """Before this control plane serves: checkpoint every sandbox an earlier one
        left running on the worker pods (a crashed or deposed leader's, with updates it
        acknowledged since the actor's last snapshot), and stop the ones no stored actor
        owns (older activations, deleted actors). A sandbox that cannot be saved is
        stopped and its loss reported, never silently replaced by an older snapshot."""
        owners = {row.id: row.generation for row in await self.state.offload(self.state.actors)}
        for pod in pods:
            client = AgentClient(pod.url, self.settings.agent_token, give_up_s=10.0)
            try:
                views = (await client.state()).sandboxes
                for view in views:
                    if owners.get(view.actor) == view.generation:
                        await self._save_left_running(client, pod, view.actor, view.generation)
                    else:
                        await client.order(Stop(self._op(f"stop-left-{view.sandbox}"),
                                                view.actor, view.generation))  # fmt: skip
                        log.warning("stopped %s on %s: no stored actor owns it", view.sandbox,
                                    pod.name)  # fmt: skip
            except (AgentUnreachable, AgentRefused) as e:
                log.error("worker %s's agent cannot say what runs there: %s", pod.name, e)
            finally:
                await client.close()

    async def _save_left_running(
        self, client: AgentClient, pod: WorkerPod, actor: str, generation: int
    ) -> None:
        published = await asyncio.to_thread(transfer.published, self.settings.snapshots, actor,
                                            self.settings.storage_options)  # fmt: skip
        version = max(published, default=0) + 1
        destination = transfer.snapshot_uri(self.settings.snapshots, actor, version)
        sandbox = sandbox_id(actor, generation, self.settings.instance)
        result = None
        for attempt in range(6):
            await asyncio.sleep(DIRTY_SETTLE_S * attempt)  # let abandoned connections end
            result = await client.order(CheckpointOrder(
                self._op(f"save-{actor}-g{generation}-{attempt}"), actor, generation, version,
                destination))  # fmt: skip
            if result.outcome is not Outcome.DECLINED:
                break
        if result is not None and result.outcome is Outcome.OK:
            await self._write(self.state.sandbox_stopped, sandbox)
            self.saved_on_takeover[actor] = version
            log.warning("saved %s (generation %d), left running on %s, as v%d", actor,
                        generation, pod.name, version)  # fmt: skip
            return
        reason = "left running by an earlier control plane, and it could not be saved"
        if result is not None:
            reason += f" ({result.outcome}: {result.reason})"
        await client.order(Stop(self._op(f"stop-unsaved-{sandbox}"), actor, generation))
        await self._write(self.state.sandbox_stopped, sandbox)
        self._record_loss(actor, generation, version - 1, reason, known=False)

    async def _wait_for_pods(self, pool_settings: PoolSettings, count: int) -> list[WorkerPod]:
        """The ready worker pods, once there are ``count`` (listed apart from the pool,
        which must see them as new when it starts)."""
        listing = PodPool(self.pool.core, self.pool.apps, pool_settings)
        deadline = self.now() + self.settings.workers_timeout_s
        while True:
            await asyncio.to_thread(listing.resync)
            if len(listing.workers) >= count:
                return sorted(listing.workers.values(), key=lambda w: w.name)
            if self.now() > deadline:
                raise TimeoutError(
                    f"{len(listing.workers)} of {count} worker pods ready after "
                    f"{self.settings.workers_timeout_s:g} s"
                )
            await asyncio.sleep(1.0)

    def open(self) -> None:
        """Hand the stored actors to the controller; start following the pool, renewing
        the Lease, sampling and observing."""
        self._loop = asyncio.get_running_loop()
        for row in self.state.actors():
            found = transfer.published(self.settings.snapshots, row.id,
                                       self.settings.storage_options)  # fmt: skip
            version = max(found, default=0)
            if version:
                self._snapshots[row.id] = (version, found[version])
            self._dispatch(ActorCreated(row.id, row.template, found.get(version, 0), version,
                                        row.generation, owner=row.owner))  # fmt: skip
        self._opened = True
        self._spawn(self.restore_wakes())
        self._pool_thread = threading.Thread(
            target=self.pool.run, args=(self._pool_changed,), name="pod-watch", daemon=True
        )
        self._pool_thread.start()
        self._loops = [
            asyncio.create_task(self._every(self.settings.sample_interval_s, self.sample)),
            asyncio.create_task(self._every(self.settings.observe_interval_s, self.observe)),
            asyncio.create_task(self._every(self.settings.lease_duration_s / 3, self._renew)),
        ]

    async def close(self, *, save: bool = True, timeout_s: float = 120.0) -> None:
        """Stop: with ``save`` (and still leading), checkpoint every running actor first;
        then let go of the pool, the agents, the Lease and Redis."""
        await self._wind_down(save=save and not self.deposed.is_set(), timeout_s=timeout_s)
        if hasattr(self, "pool"):
            self.pool.close()
        if self._pool_thread is not None:
            await asyncio.to_thread(self._pool_thread.join, 30)
        for worker in list(self.workers.values()):
            await worker.client.close()
        self.workers.clear()
        if hasattr(self, "elector") and not self.deposed.is_set():
            await asyncio.to_thread(self.elector.release)
        if hasattr(self, "state"):
            self.state.close()

    def _depose(self, why: str) -> None:
        if not self.deposed.is_set():
            log.critical("%s stops acting as leader: %s", self.settings.identity, why)
            self.deposed.set()
        self._stopped = True  # no command is carried out from now on

    async def _renew(self) -> None:
        if self.deposed.is_set():
            return
        await asyncio.to_thread(self.elector.try_lead)
        if not self.elector.leads():
            self._depose("the Lease could not be renewed")

    async def _write(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A state write; a refusal for an old token deposes this control plane."""
        try:
            return await self.state.offload(fn, *args, **kwargs)
        except Deposed as e:
            self._depose(str(e))
            raise

    # ------------------------------------------------------------ workers

    def _pool_changed(self, change: PoolChange) -> None:
        """From the pod-watch thread: hand the change to the event loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._spawn, self._apply(change))

    async def _apply(self, change: PoolChange) -> None:
        name = change.worker.name
        if change.change is Change.REMOVED:
            if name in self.workers and not self._stopped:
                self._dispatch(WorkerLost(name, f"pod {name} ({change.worker.uid}) is gone"))
            return
        client = AgentClient(change.worker.url, self.settings.agent_token, give_up_s=10.0)
        try:
            state = await client.state()
        except (AgentUnreachable, AgentRefused) as e:
            log.error("worker %s is ready but its agent does not answer: %s", name, e)
            await client.close()
            return
        if not state.forward_address:
            log.error("worker %s's agent does not forward actor traffic; ignored", name)
            await client.close()
            return
        port = int(state.forward_address.rsplit(":", 1)[1])
        if self.pool.workers.get(name) != change.worker or self._stopped:
            await client.close()  # it changed again meanwhile
            return
        self.workers[name] = _Worker(change.worker, client, (change.worker.host, port))
        self._dispatch(WorkerAdded(name, name))

    async def _retire_worker(self, worker: str) -> None:
        gone = self.workers.pop(worker, None)
        if gone is not None:
            await gone.client.close()

    def address(self, worker: str) -> tuple[str, int]:
        """Where the router sends a worker's actor traffic: its agent's forwarder."""
        return self.workers[worker].forward

    def _op(self, name: str | int) -> str:
        return f"{self._run}-{name}"

    # ------------------------------------------------------------ actors

    def _check_template(self, template: str) -> None:
        if template not in self.settings.templates:
            raise ValueError(f"unknown template {template!r}; allowed: {self.settings.templates}")

    async def add_actor(
        self, actor: str, template: str, *, golden: GoldenImage | None = None, owner: str = ""
    ) -> None:
        """A new actor: cold (its first activation starts from its template), or, with
        ``golden``, starting from a copy of that image made in the object store."""
        check_actor_id(actor)
        check_owner(owner)
        self._check_template(template)
        if self.ctl.actor(actor) is not None:
            raise FileExistsError(f"actor {actor!r} already exists")
        size, version = 0, 0
        if golden is not None:
            destination = transfer.snapshot_uri(self.settings.snapshots, actor, 1)
            copied = await asyncio.to_thread(
                transfer.copy, golden.location, destination, actor=actor, version=1,
                options=self.settings.storage_options,
            )  # fmt: skip
            size, version = copied.bytes, 1
            self._snapshots[actor] = (version, size)
        await self._write(self.state.add_actor, actor, template, owner)
        if self._opened:
            self._dispatch(ActorCreated(actor, template, size, version, owner=owner))

    async def golden_image(self, template: str) -> GoldenImage:
        """A checkpoint of a fresh ``template`` actor, made through the first worker
        pod's agent before :meth:`open` and kept under ``<snapshots>/.golden/<run>``."""
        if self._opened:
            raise RuntimeError("golden images are made before open()")
        self._check_template(template)
        if not self._ready_pods:
            raise RuntimeError("golden images need worker pods: set KubeSettings.workers")
        pod = self._ready_pods[0]
        client = AgentClient(pod.url, self.settings.agent_token, give_up_s=30.0)
        actor = f"golden-{template}"
        uri = transfer.snapshot_uri(f"{self.settings.snapshots}/.golden/{self._run}", actor, 1)
        try:
            started = await client.order(Activate(self._op(f"golden-{template}"), actor, 1,
                                                  template))  # fmt: skip
            if started.outcome is not Outcome.OK:
                raise RuntimeError(f"golden {template} did not start: {started.reason}")
            for attempt in range(5):
                await asyncio.sleep(DIRTY_SETTLE_S * attempt)
                result = await client.order(CheckpointOrder(
                    self._op(f"golden-{template}-{attempt}"), actor, 1, 1, uri))  # fmt: skip
                if result.outcome is not Outcome.DECLINED:
                    break
            if result.outcome is not Outcome.OK:
                raise RuntimeError(f"golden {template} checkpoint: {result.reason}")
        finally:
            await client.close()
        return GoldenImage(template, result.bytes, uri)

    async def _drop(self, actor: str) -> None:
        await self._write(self.state.delete_actor, actor)
        self._acked.pop(actor, None)
        self._snapshots.pop(actor, None)

    # ------------------------------------------------------------ commands

    async def _restore(self, cmd: Restore) -> None:
        outcome, reason = ActivationOutcome.FAILED, "activation did not finish"
        started = self.now()
        measured = MeasuredParts()
        try:
            outcome, reason = await self._restore_steps(cmd, measured)
        except Deposed:
            return  # no report: this control plane no longer acts
        except Exception as e:  # anything at all: the controller must hear of it
            log.exception("activation of %s on %s failed", cmd.actor, cmd.worker)
            reason = f"{type(e).__name__}: {e}"
        seconds = self.now() - started
        sandbox = f"{cmd.actor}_g{cmd.generation}"
        if outcome is ActivationOutcome.OK:
            self._running[cmd.actor] = (cmd.worker, cmd.generation)
            self.records.lifetimes.setdefault(cmd.actor, []).append([sandbox, started, None])
            self.record_activation(cmd, cmd.worker, started, seconds, measured)
        self._report(ActivationFinished(cmd.op, outcome, reason))

    async def _restore_steps(
        self, cmd: Restore, measured: MeasuredParts
    ) -> tuple[ActivationOutcome, str]:
        actor = self.ctl.actor(cmd.actor)
        worker = self.workers.get(cmd.worker)
        if actor is None or worker is None:
            return ActivationOutcome.FAILED, "the actor or its worker is gone"
        sandbox = sandbox_id(cmd.actor, cmd.generation, self.settings.instance)
        wrote_from = self.now()
        try:
            await self._write(self.state.begin_activation, cmd.actor, cmd.generation, sandbox,
                              cmd.worker, worker.pod.uid)  # fmt: skip
        except StaleGeneration as e:
            return ActivationOutcome.FAILED, str(e)
        measured.control_plane_s = self.now() - wrote_from
        snapshot = None
        if not cmd.cold:
            snapshot = transfer.snapshot_uri(self.settings.snapshots, cmd.actor, cmd.version)
        order = Activate(self._op(cmd.op), cmd.actor, cmd.generation, actor.template, snapshot,
                         cmd.version)  # fmt: skip
        result = await worker.client.order(order)
        if result.outcome is Outcome.OK:
            measured.transfer_s, measured.cache_hit = result.transfer_s, result.cache_hit
            await self._write(self.state.sandbox_running, sandbox)
            self._dirty.discard(cmd.actor)
            return ActivationOutcome.OK, ""
        await self._write(self.state.sandbox_stopped, sandbox)
        if result.outcome is Outcome.UNUSABLE:
            return ActivationOutcome.UNUSABLE, result.reason
        return ActivationOutcome.FAILED, f"{result.outcome}: {result.reason}"

    async def _checkpoint(self, cmd: Checkpoint) -> None:
        started = self.now()
        outcome, reason, size = CheckpointOutcome.LOST, "checkpoint did not finish", 0
        measured = MeasuredParts()
        try:
            outcome, reason, size = await self._checkpoint_steps(cmd, measured)
        except Deposed:
            return
        except (AgentUnreachable, AgentRefused) as e:  # the worker's fate is the pool's
            log.error("checkpoint of %s on %s: %s", cmd.actor, cmd.worker, e)
            outcome, reason = CheckpointOutcome.DECLINED, str(e)
        except Exception as e:
            log.exception("checkpoint of %s failed", cmd.actor)
            outcome, reason = CheckpointOutcome.DECLINED, f"{type(e).__name__}: {e}"
        took = self.now() - started
        if outcome is not CheckpointOutcome.DECLINED:
            if self._running.get(cmd.actor) == (cmd.worker, cmd.generation):
                del self._running[cmd.actor]
            for life in self.records.lifetimes.get(cmd.actor, []):
                if life[0] == f"{cmd.actor}_g{cmd.generation}" and life[2] is None:
                    life[2] = self.now()
            if outcome is CheckpointOutcome.OK:
                self._acked.pop(cmd.actor, None)
                self._snapshots[cmd.actor] = (cmd.version, size)
                self.record_checkpoint(cmd, cmd.worker, started, took, size=size, measured=measured)
        else:
            log.warning("checkpoint of %s declined: %s", cmd.actor, reason)
        self._report(CheckpointFinished(cmd.op, outcome, reason, size))

    async def _checkpoint_steps(
        self, cmd: Checkpoint, measured: MeasuredParts
    ) -> tuple[CheckpointOutcome, str, int]:
        worker = self.workers.get(cmd.worker)
        if worker is None or self._running.get(cmd.actor) != (cmd.worker, cmd.generation):
            return CheckpointOutcome.LOST, f"no sandbox of generation {cmd.generation}", 0
        until = self._closed_first.get(cmd.actor, 0.0)
        if self.now() < until:
            return CheckpointOutcome.DECLINED, "it closed a connection first (TIME_WAIT)", 0
        if cmd.actor in self._dirty:
            host, port = worker.forward
            try:
                await wait_ready(host, port, actor=cmd.actor, generation=cmd.generation,
                                 timeout_s=2.0)  # fmt: skip
            except (ActorHTTPError, TimeoutError) as e:
                return CheckpointOutcome.DECLINED, f"it does not answer ({e})", 0
            await asyncio.sleep(DIRTY_SETTLE_S)
            self._dirty.discard(cmd.actor)
        fenced_from = self.now()
        fence = await self.state.offload(self.state.generation, cmd.actor)
        measured.control_plane_s = self.now() - fenced_from
        if fence != cmd.generation:
            return CheckpointOutcome.LOST, f"generation {cmd.generation} is fenced by {fence}", 0
        await asyncio.sleep(self.settings.checkpoint_settle_s)
        self.control_plane_calls += 1
        destination = transfer.snapshot_uri(self.settings.snapshots, cmd.actor, cmd.version)
        order = CheckpointOrder(self._op(cmd.op), cmd.actor, cmd.generation, cmd.version,
                                destination, tuple(self._acked.get(cmd.actor, ())))  # fmt: skip
        result = await worker.client.order(order)
        sandbox = sandbox_id(cmd.actor, cmd.generation, self.settings.instance)
        if result.outcome is Outcome.OK:
            measured.transfer_s = result.transfer_s
            await self._write(self.state.sandbox_stopped, sandbox)
            return CheckpointOutcome.OK, "", result.bytes
        if result.outcome is Outcome.DECLINED:
            return CheckpointOutcome.DECLINED, result.reason, 0
        await self._write(self.state.sandbox_stopped, sandbox)
        return CheckpointOutcome.LOST, f"{result.outcome}: {result.reason}", 0

    async def _stop_sandbox(self, cmd: StopSandbox) -> None:
        sandbox = sandbox_id(cmd.actor, cmd.generation, self.settings.instance)
        try:
            await self._write(self.state.sandbox_stopping, sandbox)
            worker = self.workers.get(cmd.worker)
            if worker is not None:
                await worker.client.order(Stop(self._op(f"stop{cmd.op}"), cmd.actor,
                                               cmd.generation))  # fmt: skip
            await self._write(self.state.sandbox_stopped, sandbox)
        except Deposed:
            return
        except (AgentUnreachable, AgentRefused) as e:
            log.error("stopping %s on %s: %s", sandbox, cmd.worker, e)
        if self._running.get(cmd.actor) == (cmd.worker, cmd.generation):
            del self._running[cmd.actor]
        self._report(SandboxStopped(cmd.op))

    # ------------------------------------------------------------ observing

    async def observe(self) -> None:
        """What every worker's agent says runs there; nothing if any cannot say."""
        taken = self.now()
        seen = await observe_agents([(name, w.client) for name, w in self.workers.items()])
        if seen is None or self._stopped:
            return
        snapshots = tuple(ObservedSnapshot(a, v) for a, (v, _) in self._snapshots.items())
        self._dispatch(Observed(taken, seen, snapshots))

    def snapshot_bytes(self) -> tuple[int, int]:
        """Stored in the object store; none cached (an agent downloads the snapshot it
        restores and removes it with the sandbox)."""
        return sum(size for _, size in self._snapshots.values()), 0
