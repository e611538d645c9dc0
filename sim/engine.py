"""The simulator: drives the pure controller in SimPy virtual time.

The workload's arrivals come in on SimPy's event queue; the controller decides; this
module carries out its commands with modeled latencies:

* a request reaches the router, calls the control plane (always, like Substrate,
  or only when its actor is not running; the shard that owns the actor when the
  control plane is sharded), then is handed to the controller;
* ``Restore``: download the snapshot unless the node caches it, restore it on the
  node's shared CPU, wait for readiness, report ``ActivationFinished``;
* ``Checkpoint``: a control-plane call, checkpoint on the node's CPU, cache it
  locally, upload it, report ``CheckpointFinished``; a paused one (tier LOCAL) is kept
  on its node, outside the cache's LRU, and not uploaded;
* ``Upload``: a paused snapshot crosses the node's link to the object store;
* ``DeliverWake``: a wake-up request for the actor (``wakeups`` schedules them);
* ``Forward``: the actor serves the request for its service time;
* ``SetTimer``: a call at that time (:func:`sim.clock.call_later`);
* ``StopSandbox``: done at once (``SandboxStopped``).

With a :class:`sim.faults.FaultModel`, restores fail, checkpoints lose their sandbox
and workers vanish at the configured rates, through the same events.

A transfer shares its node's link and, when ``latency.store_bytes_per_s`` is bounded,
the object store's throughput. Idle actors are records in the controller and slots in
the workload's arrays; no SimPy process exists per actor, and activations,
checkpoints and uploads in progress are chains of callbacks (the order SimPy
processes would give). Requests are recorded in typed columns that spill to disk
(:mod:`sim.records`). The run lasts ``duration_s`` of arrivals, then drains until
every request has ended (the router timeout bounds that).
"""

from __future__ import annotations

import functools
import gc
import math
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import simpy

from control.controller import Controller
from control.messages import (
    Abandon,
    ActivationFinished,
    ActivationOutcome,
    ActorCreated,
    AdminResult,
    Checkpoint,
    CheckpointFinished,
    CheckpointOutcome,
    Correction,
    DeliverWake,
    DropActor,
    Event,
    Forward,
    IdleTimer,
    ProvisionWorkers,
    Reject,
    RequestArrived,
    RequestFinished,
    Restore,
    RetireWorker,
    SandboxStopped,
    SetTimer,
    SnapshotCached,
    SnapshotEvicted,
    StateLost,
    StopSandbox,
    Tier,
    Timer,
    TimerFired,
    Upload,
    UploadFinished,
    WakeScheduled,
    WorkerAdded,
    WorkerLost,
)
from control.metrics import (
    OUTCOMES,
    SAMPLE_COLUMNS,
    ActivationRow,
    CheckpointRow,
    SampleRow,
    table,
    worker_utilization,
)
from control.model import ActorState
from control.policies import KeepNewest, RetentionPolicy
from sim.clock import call_first, call_later, run_until
from sim.distributions import Sampler
from sim.faults import FaultModel
from sim.latency import LatencyModel
from sim.records import OPEN, SPILL_ROWS, RequestLog, RowLog
from sim.resources import ByteLru, FluidShare, ShardedControlPlane
from sim.snapshots import StoredSnapshots
from workloads.base import Workload
from workloads.sessions import Call, ClientCounts, Scripts, SessionPlayer
from workloads.wakeups import WakeupSource

Table = dict[str, np.ndarray]
# Collect cyclic garbage less often while a run goes on. A run holds a million
# long-lived records (actors, snapshots, cache entries) that every older-generation
# pass walks again; with the default thresholds that was 25% of a 1,000,000-actor run
# (41 s -> 30.2 s for 120 s simulated, peak memory the same: a run makes little cyclic
# garbage). Young collections still run, every 100,000 allocations.
RUN_GC_THRESHOLD = (100_000, 50, 1000)
_OK, _REJECTED, _TIMEOUT = (OUTCOMES.index(o) for o in ("ok", "rejected", "timeout"))


@dataclass
class RunResult:
    """What one run produced: the four tables and the totals the summary needs."""

    requests: Table
    activations: Table
    checkpoints: Table
    samples: Table
    actors: int
    workers: int
    duration_s: float
    worker_utilization: float
    control_plane_calls: int
    events: int
    reliability: dict[str, int] = field(default_factory=dict)  # fault and recovery counters
    policy_actions: dict[str, int] = field(default_factory=dict)  # evictions, pre-warms
    provisioned_worker_s: float | None = None  # with autoscaling: the pool's integral
    later_uploads: int = 0  # bytes of paused snapshots uploaded after their checkpoint
    resources: dict[str, float | None] = field(default_factory=dict)  # utilization (binds?)


class _Node:
    __slots__ = ("cache", "cpu", "id", "link", "paused")

    def __init__(self, env: simpy.Environment, node_id: str, latency: LatencyModel) -> None:
        self.id = node_id
        self.cpu = FluidShare(env, latency.cpu_parallelism, per_job_cap=1.0)
        self.link = FluidShare(env, latency.link_bytes_per_s)
        self.cache = ByteLru(latency.cache_bytes)
        self.paused: dict[str, tuple[int, int]] = {}  # actor -> (version, bytes), pinned


class Simulation:
    """One simulated run of a controller under a workload on a modeled cluster.

    ``workers`` are spread round-robin over ``nodes`` (ids ``w0..``, ``n0..``). With
    ``resume_on_every_request`` the router calls the control plane for every request
    (Agent Substrate); otherwise only for actors that are not running. ``progress``,
    if given, is called with the simulated time at every sample. ``retention`` decides
    which old snapshot versions the object store deletes (default: only the newest kept).
    ``wakeups``: which actors wake themselves, how often (:mod:`workloads.wakeups`).
    ``spill_rows``: requests held in memory before ended ones go to disk
    (:mod:`sim.records`).
    """

    def __init__(
        self,
        controller: Controller,
        workload: Workload,
        latency: LatencyModel,
        *,
        workers: int,
        nodes: int,
        duration_s: float,
        seed: int,
        resume_on_every_request: bool = False,
        sample_interval_s: float = 1.0,
        progress: Callable[[float], None] | None = None,
        faults: FaultModel | None = None,
        retention: RetentionPolicy | None = None,
        wakeups: WakeupSource | None = None,
        spill_rows: int = SPILL_ROWS,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers: must be >= 1 (got {workers})")
        if not 1 <= nodes <= workers:
            raise ValueError(f"nodes: must be between 1 and workers={workers} (got {nodes})")
        if not duration_s > 0:
            raise ValueError(f"duration_s: must be > 0 (got {duration_s})")
        if not sample_interval_s > 0:
            raise ValueError(f"sample_interval_s: must be > 0 (got {sample_interval_s})")
        self.env = simpy.Environment()
        self.controller = controller
        self.workload = workload
        self.latency = latency
        self.workers = workers
        self.duration_s = float(duration_s)
        self.seed = seed
        self.resume_on_every_request = resume_on_every_request
        self.sample_interval_s = sample_interval_s
        self._progress = progress
        self.faults = faults or FaultModel()
        # Faults draw from a stream of their own: a run without faults draws nothing
        # from it, and the latency streams are the same with and without faults.
        self._fault_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x464C54]))
        self._injected = {"restore_failures": 0, "checkpoint_failures": 0, "workers_lost": 0}
        self._serving: dict[str, set[int]] = {}  # worker -> requests it is serving
        self._broken: set[int] = set()  # requests whose worker was lost while serving
        self._next_worker = workers

        # One independent stream per latency component: changing how often one is
        # drawn does not shift the others.
        # (spawn(n) children are the same for any n: adding a stream shifts no other.)
        streams = np.random.SeedSequence([seed, 0x4C4154]).spawn(7)  # tag "LAT"

        def sampler(dist: Any, stream: np.random.SeedSequence) -> Sampler:
            return Sampler(dist, np.random.default_rng(stream))

        self._restore_fixed = sampler(latency.restore_fixed, streams[0])
        self._ready = sampler(latency.restore_ready, streams[1])
        self._checkpoint_fixed = sampler(latency.checkpoint_fixed, streams[2])
        self._cold_start = sampler(latency.cold_start, streams[3])
        self._first_byte = sampler(latency.transfer_first_byte, streams[4])
        self._worker_start = sampler(latency.worker_start, streams[6])
        self.cp = ShardedControlPlane(
            self.env, latency.cp_shards, latency.cp_servers,
            sampler(latency.cp_service, streams[5]), latency.cp_vnodes,
        )  # fmt: skip
        self._store = (  # the snapshot store's throughput, when it is bounded
            FluidShare(self.env, latency.store_bytes_per_s)
            if math.isfinite(latency.store_bytes_per_s) else None
        )  # fmt: skip
        self._nodes = {f"n{i}": _Node(self.env, f"n{i}", latency) for i in range(nodes)}
        self._worker_node = {f"w{i}": f"n{i % nodes}" for i in range(workers)}
        # Workers per node, and how many a node takes: the autoscaler's new workers go to
        # a node with room, and a new node joins when every node is full.
        self._node_load = dict.fromkeys(self._nodes, 0)
        for node in self._worker_node.values():
            self._node_load[node] += 1
        self._per_node = -(-workers // nodes)

        self._run = workload.start(self.duration_s, seed)
        self._player: SessionPlayer | None = None
        self._calls: dict[int, Call] = {}  # closed loop: request id -> the call it is
        # closed loop with a client timeout: request id -> (actor, script call), and when
        # the actor was done (or will be) with each script call it started
        self._call_of: dict[int, tuple[int, int]] = {}
        self._done_at: dict[tuple[int, int], float] = {}
        self.population = self._run.population
        self._ids = self.population.ids
        self._created = bytearray(len(self._ids))  # actors the controller knows
        self._log = RequestLog(spill_rows)
        self._activations = RowLog(ActivationRow)
        self._checkpoints = RowLog(CheckpointRow)
        self._samples: list[SampleRow] = []
        self._idle_timers: dict[str, tuple[IdleTimer, float]] = {}  # actor -> newest, due
        self._idle_wakeups: dict[str, float] = {}  # actor -> when its wake-up is scheduled
        self._last_cp: dict[str, float] = {}  # actor -> control-plane time of its last request
        self.snapshots = StoredSnapshots(retention or KeepNewest(keep=1))
        self.wakeups = wakeups or WakeupSource()
        self._jitter = self.wakeups.jitter_stream(seed)
        self._index_of: dict[str, int] = {}  # actors that wake themselves -> index
        self._wake_rids: dict[int, float] = {}  # wake-up request id -> how long it may wait
        self._paused_on: dict[str, str] = {}  # actor -> node holding its paused snapshot
        self._later_uploads = 0
        self._open = 0
        self._arrival_iter: Iterator[tuple[float, int, float]] = iter(())
        self._due_arrival: tuple[float, int, float] | None = None  # waited for
        self._arrivals_done = False
        self._done = self.env.event()
        self._end_snapshot: tuple[float, int, float] | None = None
        self._resources: dict[str, float | None] = {}
        self._exec: dict[type, Callable[[Any], object]] = {
            Forward: self._do_forward,
            Reject: self._do_reject,
            SetTimer: self._do_set_timer,
            Restore: self._do_restore,
            Checkpoint: self._do_checkpoint,
            Upload: self._do_upload,
            DeliverWake: self._do_wake,
            StopSandbox: self._do_stop,
            RetireWorker: self._do_retire,
            ProvisionWorkers: self._do_provision,
            DropActor: lambda cmd: None,  # the simulator sends no operator requests
            AdminResult: lambda cmd: None,
            Abandon: lambda cmd: None,  # never: the simulator ends every forward
            StateLost: lambda cmd: None,  # counted by the controller
            Correction: lambda cmd: None,
        }

    # ------------------------------------------------------------ running

    def node_load(self) -> dict[str, int]:
        """Workers (joined or starting) on each node, nodes the autoscaler added too."""
        return dict(self._node_load)

    def run(self) -> RunResult:
        """Run to the end of the arrivals, drain, and return the records."""
        with _fewer_collections():
            try:
                return self._run_all()
            finally:
                self._log.close()  # spilled rows of a run that failed

    def _run_all(self) -> RunResult:
        for worker, node in self._worker_node.items():
            self._dispatch(WorkerAdded(worker, node))
        for i in np.flatnonzero(self.population.created_s <= 0).tolist():
            self._create(i)
        if self._run.sessions is not None:
            self.env.process(self._sessions(self._run.sessions))
        else:
            self._arrival_iter = self._arrival_stream()
            call_first(self.env, self._arrivals)
        self.env.process(self._sampler())
        if self.snapshots.retention.gc_interval_s > 0:
            self.env.process(self._snapshot_gc())
        if self.faults.worker_loss_per_hour > 0:
            self.env.process(self._worker_losses())
        self._first_wakeups()
        run_until(self.env, self._done)
        if self._open:
            raise RuntimeError(f"{self._open} requests never ended")  # pragma: no cover
        assert self._end_snapshot is not None
        occupied_s, cp_calls, provisioned_s = self._end_snapshot
        scaled = self.controller.scaling is not None
        return RunResult(
            requests=self._request_table(),
            activations=self._activations.table(),
            checkpoints=self._checkpoints.table(),
            samples=table(SAMPLE_COLUMNS, self._samples),
            actors=len(self._ids),
            workers=self.workers,
            duration_s=self.duration_s,
            worker_utilization=(
                occupied_s / provisioned_s if scaled and provisioned_s > 0
                else worker_utilization(occupied_s, self.workers, self.duration_s)
            ),
            provisioned_worker_s=provisioned_s if scaled else None,
            control_plane_calls=cp_calls,
            events=self.controller.stats.events,
            reliability=reliability_counters(
                self.controller, self._injected,
                self._player.counts if self._player is not None else None,
            ),
            policy_actions=policy_actions(self.controller),
            later_uploads=self._later_uploads,
            resources=self._resources,
        )  # fmt: skip

    def _create(self, index: int) -> None:
        """Register actor ``index`` with the controller (its snapshot, if any, is stored)."""
        pop, actor = self.population, self._ids[index]
        size, version = int(pop.snapshot_bytes[index]), int(pop.snapshot_version[index])
        self._created[index] = 1
        owner = pop.owners[index] if pop.owners is not None else ""
        self._dispatch(ActorCreated(actor, pop.template, size, version, owner=owner))
        if version:  # in the object store, not yet in any node's cache
            self.snapshots.put(actor, version, size)

    def _dispatch(self, event: Event) -> None:
        for cmd in self.controller.handle(event, self.env.now):
            self._exec[type(cmd)](cmd)

    def _arrival_stream(self) -> Iterator[tuple[float, int, float]]:
        for batch in self._run.batches:
            yield from zip(
                batch.times.tolist(), batch.actors.tolist(), batch.service_s.tolist(), strict=True
            )

    def _arrivals(self, _event: object = None) -> None:
        """Open loop: deliver the arrivals due now, then come back at the next one (a
        callback, not a process: the same order, ~2 µs less per arrival)."""
        env, due = self.env, self._due_arrival
        if due is not None:
            self._due_arrival = None
            self._arrive(due[1], due[2])
        for arrival in self._arrival_iter:
            if arrival[0] > env.now:
                self._due_arrival = arrival
                call_later(env, arrival[0] - env.now, self._arrivals)
                return
            self._arrive(arrival[1], arrival[2])
        if env.now < self.duration_s:
            call_later(env, self.duration_s - env.now, lambda _event: self._arrivals_end())
        else:
            self._arrivals_end()

    def _arrivals_end(self) -> None:
        self._end_snapshot = (
            self.controller.occupied_worker_seconds(self.env.now),
            self.cp.calls,
            self.controller.provisioned_worker_seconds(self.env.now),
        )
        self._resources = self._utilization()
        self._arrivals_done = True
        self._check_done()

    def _sessions(self, scripts: Scripts) -> Generator[simpy.Event, Any, None]:
        """Closed loop: each actor's next call goes out after its previous answer (plus
        the model's time), or after a backoff when it failed (``workloads/sessions.py``)."""
        self._player = SessionPlayer(scripts)
        for call in self._player.first_calls():
            self._schedule_call(call)
        yield self.env.timeout(self.duration_s)
        self._arrivals_end()

    def _schedule_call(self, call: Call) -> None:
        def send(_ev: simpy.Event) -> None:
            if self._arrivals_done:
                return
            player = self._player
            assert player is not None and player.policy is not None
            player.sent(call)
            rid = self._arrive(call.actor, call.service_s, call)
            if player.policy.timeout_s > 0:
                call_later(self.env, player.policy.timeout_s, lambda _ev: self._client_timeout(rid))

        call_later(self.env, max(0.0, call.at - self.env.now), send)

    def _client_timeout(self, rid: int) -> None:
        """The agent stops waiting for request ``rid`` (it goes on in the system)."""
        call = self._calls.pop(rid, None)
        if call is None or self._arrivals_done:
            return  # answered in time
        assert self._player is not None
        self._player.counts.timeouts += 1
        following = self._player.answered(call, self.env.now, False)
        if following is not None:
            self._schedule_call(following)

    def _service_of(self, rid: int) -> float:
        """How long the actor takes on request ``rid``: its service time, or for a
        resent call the actor had started, nothing more than the first attempt's rest
        (same request id: answered from what it did) or all of it again (a new id)."""
        log = self._log
        service = float(log.service[rid - log.base])
        key = self._call_of.pop(rid, None)
        if key is None:
            return service
        now, done_at = self.env.now, self._done_at.get(key)
        player = self._player
        assert player is not None and player.policy is not None
        if done_at is None:
            self._done_at[key] = now + service
        elif player.policy.resend == "same_id":
            player.counts.duplicates_suppressed += 1
            service = max(0.0, done_at - now)
            log.service[rid - log.base] = service
        else:
            player.counts.duplicates_applied += 1
        return service

    def _sampler(self) -> Generator[simpy.Event, Any, None]:
        while True:
            self._sample()
            if self._progress is not None:
                self._progress(self.env.now)
            yield self.env.timeout(self.sample_interval_s)

    def _snapshot_gc(self) -> Generator[simpy.Event, Any, None]:
        while True:
            yield self.env.timeout(self.snapshots.retention.gc_interval_s)
            self.snapshots.collect()

    def _check_done(self) -> None:
        if self._arrivals_done and self._open == 0 and not self._done.triggered:
            self._done.succeed()

    # ------------------------------------------------------------ requests

    def _arrive(
        self, actor_index: int, service: float, call: Call | None = None,
        *, wake_wait_s: float | None = None,
    ) -> int:  # fmt: skip
        """A request arrives (closed loop: as script ``call``; a wake-up with
        ``wake_wait_s``); its id. It may be forwarded at once, so everything about it is
        recorded before it is delivered."""
        if not self._created[actor_index]:  # a session arriving: its actor exists from now
            self._create(actor_index)
        rid = self._log.add(self.env.now, actor_index, service, wake=wake_wait_s is not None)
        if wake_wait_s is not None:
            self._wake_rids[rid] = wake_wait_s
        if call is not None:
            self._calls[rid] = call
            assert self._player is not None and self._player.policy is not None
            if self._player.policy.timeout_s > 0:
                self._call_of[rid] = (call.actor, call.index)
        self._open += 1
        actor = self._ids[actor_index]
        if self.resume_on_every_request or not self.controller.is_running(actor):
            self.cp.call(actor).callbacks.append(lambda _ev: self._deliver(rid, actor))
        else:
            self._deliver(rid, actor)
        return rid

    def _deliver(self, rid: int, actor: str) -> None:
        log = self._log
        row = rid - log.base
        arrived = log.arrival[row]
        cp_s = self.env.now - arrived
        log.cp[row] = cp_s
        self._last_cp[actor] = cp_s
        self._dispatch(RequestArrived(rid, actor, arrived, self._wake_rids.pop(rid, None)))

    def _do_forward(self, cmd: Forward) -> None:
        log, rid = self._log, cmd.request
        row = rid - log.base
        log.queue[row] = cmd.queue_s
        log.activation[row] = cmd.activation_s
        log.activated[row] = cmd.activated
        worker = cmd.worker
        if self.faults.worker_loss_per_hour > 0:
            self._serving.setdefault(worker, set()).add(rid)
        service = self._service_of(rid) if self._call_of else log.service[row]
        call_later(self.env, service, lambda _ev: self._finish(rid, worker))

    def _finish(self, rid: int, worker: str) -> None:
        if rid in self._broken:  # its worker died while serving it
            self._broken.discard(rid)
            self._end(rid, _REJECTED, 502)
        else:
            self._end(rid, _OK, 200)
            serving = self._serving.get(worker)
            if serving is not None:
                serving.discard(rid)
        self._dispatch(RequestFinished(rid))
        self._check_done()

    def _do_reject(self, cmd: Reject) -> None:
        self._end(cmd.request, _TIMEOUT if cmd.outcome == "timeout" else _REJECTED, cmd.status)
        self._check_done()

    def _end(self, rid: int, outcome: int, status: int) -> None:
        log = self._log
        row = rid - log.base
        if row < 0 or log.outcome[row] != OPEN:
            raise RuntimeError(f"request {rid} ended twice")
        log.outcome[row] = outcome
        log.status[row] = status
        log.total[row] = self.env.now - log.arrival[row]
        self._open -= 1
        if log.wake[row] and not self._arrivals_done:  # the actor sets its next wake-up
            jitter = self.wakeups.jitter_s * (2 * self._jitter.random() - 1)
            wake = WakeScheduled(
                self._ids[log.actor[row]], self.env.now + self.wakeups.period_s + jitter
            )
            # After the commands being carried out now, not in between them.
            call_later(self.env, 0, lambda _ev: self._dispatch(wake))
        call = self._calls.pop(rid, None)
        if call is not None:  # closed loop: the answer lets the agent go on
            assert self._player is not None
            following = self._player.answered(call, self.env.now, outcome == _OK)
            if following is not None:
                self._schedule_call(following)

    def _do_set_timer(self, cmd: SetTimer) -> None:
        timer: Timer = cmd.timer
        if isinstance(timer, IdleTimer):
            self._set_idle_timer(timer, cmd.at)
            return
        delay = max(0.0, cmd.at - self.env.now)
        call_later(self.env, delay, lambda _ev: self._dispatch(TimerFired(timer)))

    def _set_idle_timer(self, timer: IdleTimer, at: float) -> None:
        """One wake-up per actor, re-armed lazily.

        Each call in a burst arms a new idle timer and makes the previous one stale (the
        controller ignores an older generation). Only the newest can be live, so only it
        is kept: when the scheduled wake-up fires early it re-arms for the newest time.
        """
        entry = self._idle_timers.get(timer.actor)
        self._idle_timers[timer.actor] = (timer, at)
        if entry is None or at < self._idle_wakeups[timer.actor]:
            self._arm_idle_wakeup(timer.actor, at)

    def _arm_idle_wakeup(self, actor: str, at: float) -> None:
        self._idle_wakeups[actor] = at
        delay = max(0.0, at - self.env.now)
        call_later(self.env, delay, lambda _ev: self._idle_wakeup(actor, at))

    def _idle_wakeup(self, actor: str, scheduled: float) -> None:
        if self._idle_wakeups.get(actor) != scheduled:
            return  # an earlier wake-up was armed after this one
        timer, at = self._idle_timers[actor]
        if at > self.env.now:
            self._arm_idle_wakeup(actor, at)
            return
        del self._idle_timers[actor], self._idle_wakeups[actor]
        self._dispatch(TimerFired(timer))

    # ------------------------------------------------------------ lifecycle work

    def _do_stop(self, cmd: StopSandbox) -> None:
        op = cmd.op
        call_later(self.env, 0, lambda _ev: self._dispatch(SandboxStopped(op)))

    def _worker_losses(self) -> Generator[simpy.Event, Any, None]:
        """Workers vanish at random (a Poisson process over the pool); each is replaced
        by a new worker on the same node after ``worker_replacement_s``."""
        rate_per_s = self.faults.worker_loss_per_hour * self.workers / 3600.0
        while True:
            yield self.env.timeout(float(self._fault_rng.exponential(1.0 / rate_per_s)))
            live = [w.id for w in self.controller.workers()]
            if not live:
                continue
            lost = live[int(self._fault_rng.integers(len(live)))]
            node = self._worker_node[lost]
            self._injected["workers_lost"] += 1
            self._broken.update(self._serving.pop(lost, ()))
            self._dispatch(WorkerLost(lost, "injected worker loss"))
            self.env.process(self._replace_worker(node))

    def _replace_worker(self, node: str) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(self.faults.worker_replacement_s)
        worker = f"w{self._next_worker}"
        self._next_worker += 1
        self._worker_node[worker] = node
        self._dispatch(WorkerAdded(worker, node))

    def _do_provision(self, cmd: ProvisionWorkers) -> None:
        """New workers, each on the least loaded node with room (a new node when all are
        full: a cluster autoscaler), joining after its start time."""
        for _ in range(cmd.number):
            worker = f"w{self._next_worker}"
            node = min(self._node_load, key=self._node_load.__getitem__)  # first of the least
            if self._node_load[node] >= self._per_node:
                node = f"n{len(self._nodes)}"
                self._nodes[node] = _Node(self.env, node, self.latency)
                self._node_load[node] = 0
            self._node_load[node] += 1
            self._next_worker += 1
            self._worker_node[worker] = node
            joined = functools.partial(self._joined, WorkerAdded(worker, node, provisioned=True))
            call_later(self.env, self._worker_start(), joined)

    def _do_retire(self, cmd: RetireWorker) -> None:
        self._node_load[self._worker_node[cmd.worker]] -= 1

    def _joined(self, event: WorkerAdded, _timeout: simpy.Event) -> None:
        self._dispatch(event)

    def _injected_failure(self, rate: float, kind: str) -> bool:
        if rate <= 0 or self._fault_rng.random() >= rate:
            return False
        self._injected[kind] += 1
        return True

    # Restores, checkpoints and uploads are chains of callbacks, not SimPy processes: a
    # process's first step runs where call_first puts it, and each "yield event" is a
    # callback on that event, so the order of everything is the same (bench core is
    # bit-identical), without a generator and two bookkeeping events per operation.

    def _do_restore(self, cmd: Restore) -> None:
        call_first(self.env, lambda _ev: self._restore(cmd))

    def _restore(self, cmd: Restore) -> None:
        """Download the snapshot unless the node has it, then restore."""
        node, start = self._nodes[cmd.node], self.env.now
        if cmd.cold:
            self._restore_on_cpu(cmd, node, start, cache_hit=False)
        elif node.paused.get(cmd.actor, (0, 0))[0] == cmd.version or node.cache.hit(
            cmd.actor, cmd.version
        ):
            self._restore_on_cpu(cmd, node, start, cache_hit=True)
        else:

            def fetched() -> None:
                self._cache_put(node, cmd.actor, cmd.version, cmd.snapshot_bytes)
                self._restore_on_cpu(cmd, node, start, cache_hit=False)

            self._transfer(node, cmd.snapshot_bytes, fetched)

    def _restore_on_cpu(self, cmd: Restore, node: _Node, start: float, *, cache_hit: bool) -> None:
        env = self.env
        download_s = env.now - start
        restored_from = env.now
        deferred = 0.0
        if cmd.cold:
            work = self._cold_start()
        else:
            work, deferred = self.latency.restore_split(self._restore_fixed(), cmd.snapshot_bytes)

        def ended(_ev: object = None) -> None:
            restore_s = env.now - restored_from
            if not self.controller.is_current(cmd.op):  # its worker was lost meanwhile
                self._dispatch(ActivationFinished(cmd.op))  # late: ignored and counted
                return
            if self._injected_failure(self.faults.restore_failure_rate, "restore_failures"):
                failed = ActivationOutcome.FAILED
                self._dispatch(ActivationFinished(cmd.op, failed, "injected restore failure"))
                return
            cp_s = self._last_cp.get(cmd.actor, 0.0)
            self._activations.append(ActivationRow.of(
                cmd.actor, cmd.worker, cmd.node, start, cold=cmd.cold, cache_hit=cache_hit,
                snapshot_bytes=cmd.snapshot_bytes, control_plane_s=cp_s,
                download_s=download_s, restore_s=restore_s,
            ))  # fmt: skip
            self._dispatch(ActivationFinished(cmd.op))

        def restored(_ev: object) -> None:
            if deferred > 0:  # a lazy restore: the rest of the pages load in the background
                node.cpu.run(deferred)
            ready = self._ready()
            if ready > 0:
                call_later(env, ready, ended)
            else:
                ended()

        node.cpu.run(work).callbacks.append(restored)

    def _do_checkpoint(self, cmd: Checkpoint) -> None:
        call_first(self.env, lambda _ev: self._checkpoint(cmd))

    def _checkpoint(self, cmd: Checkpoint) -> None:
        """The Suspend call, the checkpoint on the node's CPU, then (suspend) the upload or
        (pause) the snapshot kept on the node."""
        env, node = self.env, self._nodes[cmd.node]
        start = env.now

        def suspended(_ev: object) -> None:
            checkpoint_from = env.now

            def done(upload_from: float) -> None:
                self._checkpoints.append(CheckpointRow.of(
                    cmd.actor, cmd.worker, cmd.node, start, snapshot_bytes=cmd.snapshot_bytes,
                    control_plane_s=checkpoint_from - start,
                    checkpoint_s=upload_from - checkpoint_from, upload_s=env.now - upload_from,
                    tier=str(cmd.tier),
                ))  # fmt: skip
                self._dispatch(CheckpointFinished(cmd.op, snapshot_bytes=cmd.snapshot_bytes))

            def checkpointed(_ev: object) -> None:
                if not self.controller.is_current(cmd.op):  # its worker was lost meanwhile
                    self._dispatch(CheckpointFinished(cmd.op))  # late: ignored and counted
                    return
                if self._injected_failure(
                    self.faults.checkpoint_failure_rate, "checkpoint_failures"
                ):
                    lost = CheckpointOutcome.LOST
                    self._dispatch(CheckpointFinished(cmd.op, lost, "injected checkpoint failure"))
                    return
                upload_from = env.now
                self._unpause(cmd.actor)  # a newer snapshot supersedes a paused one
                if cmd.tier is Tier.LOCAL:  # paused: kept on this node only, pinned
                    node.paused[cmd.actor] = (cmd.version, cmd.snapshot_bytes)
                    self._paused_on[cmd.actor] = node.id
                    done(upload_from)
                    return
                self._cache_put(node, cmd.actor, cmd.version, cmd.snapshot_bytes)

                def uploaded() -> None:
                    self.snapshots.put(cmd.actor, cmd.version, cmd.snapshot_bytes)
                    done(upload_from)

                self._transfer(node, cmd.snapshot_bytes, uploaded)

            work = self.latency.checkpoint_work(self._checkpoint_fixed(), cmd.snapshot_bytes)
            node.cpu.run(work).callbacks.append(checkpointed)

        self.cp.call(cmd.actor).callbacks.append(suspended)  # the Suspend call: lock, mark

    def _unpause(self, actor: str) -> None:
        node = self._paused_on.pop(actor, None)
        if node is not None:
            del self._nodes[node].paused[actor]

    def _do_upload(self, cmd: Upload) -> None:
        call_first(self.env, lambda _ev: self._upload(cmd))

    def _upload(self, cmd: Upload) -> None:
        """Upload a paused snapshot from its node; it stays cached there (evictable now)."""
        node = self._nodes[cmd.node]

        def uploaded() -> None:
            self._later_uploads += cmd.snapshot_bytes
            self.snapshots.put(cmd.actor, cmd.version, cmd.snapshot_bytes)
            if node.paused.get(cmd.actor, (0, 0))[0] == cmd.version:
                self._unpause(cmd.actor)
                self._cache_put(node, cmd.actor, cmd.version, cmd.snapshot_bytes)
            self._dispatch(UploadFinished(cmd.op))

        self._transfer(node, cmd.snapshot_bytes, uploaded)

    # ------------------------------------------------------------ wake-ups

    def _first_wakeups(self) -> None:
        """Each actor that wakes itself schedules its first wake-up at the start."""
        chosen, first = self.wakeups.plan(len(self._ids), self.seed)
        for index, at in zip(chosen.tolist(), first.tolist(), strict=True):
            if not self._created[index]:
                self._create(index)
            self._index_of[self._ids[index]] = index
            self._dispatch(WakeScheduled(self._ids[index], at))

    def _do_wake(self, cmd: DeliverWake) -> None:
        if self._arrivals_done:
            return  # the run is over: no new work
        index = self._index_of[cmd.actor]
        self._arrive(index, self.wakeups.service_s, wake_wait_s=cmd.wait_s)

    def _transfer(self, node: _Node, size: int, then: Callable[[], None]) -> None:
        """Move ``size`` bytes over the node's link (and through the store, when it is
        bounded: as long as the slower of the two shares), then call ``then``."""

        def send(_ev: object = None) -> None:
            if self._store is None:
                node.link.run(size).callbacks.append(lambda _ev: then())
            else:
                both = self.env.all_of([node.link.run(size), self._store.run(size)])
                both.callbacks.append(lambda _ev: then())

        first_byte = self._first_byte()
        if first_byte > 0:
            call_later(self.env, first_byte, send)
        else:
            send()

    def _cache_put(self, node: _Node, actor: str, version: int, size: int) -> None:
        stored, evicted = node.cache.put(actor, version, size)
        for old_actor, old_version in evicted:
            self._dispatch(SnapshotEvicted(old_actor, node.id, old_version))
        if stored:
            self._dispatch(SnapshotCached(actor, node.id, version))

    # ------------------------------------------------------------ records

    def _utilization(self) -> dict[str, float | None]:
        """How busy each modelled resource was until now (the end of the arrivals), as a
        share of its capacity: the control plane (all servers, and its busiest shard),
        the nodes' CPUs and links (mean and busiest node), the snapshot store (None when
        unbounded) and the workers. The one nearest 1 is what binds."""
        duration = self.env.now
        if duration <= 0:
            return {}
        cp_mean, cp_hottest = self.cp.utilization(duration)

        def shares(resources: list[FluidShare]) -> tuple[float, float]:
            used = [resource.utilization(duration) for resource in resources]
            return sum(used) / len(used), max(used)

        cpu_mean, cpu_max = shares([node.cpu for node in self._nodes.values()])
        link_mean, link_max = shares([node.link for node in self._nodes.values()])
        store = shares([self._store])[0] if self._store is not None else None
        occupied, _, provisioned = self._end_snapshot or (0.0, 0, 0.0)
        return {
            "control_plane": cp_mean,
            "control_plane_busiest_shard": cp_hottest,
            "node_cpu": cpu_mean,
            "node_cpu_busiest": cpu_max,
            "node_link": link_mean,
            "node_link_busiest": link_max,
            "store": store,
            "workers": occupied / provisioned if provisioned > 0 else None,
        }

    def _sample(self) -> None:
        ctl, counts = self.controller, self.controller.state_counts()
        self._samples.append(
            SampleRow(
                self.env.now,
                len(ctl.workers()),
                ctl.occupied_workers,
                counts[ActorState.SUSPENDED],
                counts[ActorState.RESUMING],
                counts[ActorState.RUNNING],
                counts[ActorState.SUSPENDING],
                ctl.waiting_actors,
                self._open,
                self.cp.queue_length,
                self.cp.busy,
                self.snapshots.bytes,
                sum(n.cache.used for n in self._nodes.values()),
                sum(n.link.throughput for n in self._nodes.values()),
            )
        )

    def _request_table(self) -> Table:
        return self._log.table(self._ids)


@contextmanager
def _fewer_collections() -> Generator[None, None, None]:
    """The garbage collector's thresholds set to :data:`RUN_GC_THRESHOLD` meanwhile."""
    before = gc.get_threshold()
    gc.set_threshold(*RUN_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def policy_actions(controller: Controller) -> dict[str, int]:
    """What the policies did on their own: evictions (suspensions to make room),
    pre-warms (activations ahead of a request), workers the scaling policy started and
    retired."""
    stats = controller.stats
    return {
        "evictions": stats.evictions,
        "prewarms": stats.prewarms,
        "workers_started": stats.workers_started,
        "workers_retired": stats.workers_retired,
        "pauses": stats.pauses,
        "uploads": stats.uploads,
        "strandings": stats.strandings,
        "stranded_local": stats.stranded_local,
        "wakeups_scheduled": stats.wakeups_scheduled,
        "wakeups_delivered": stats.wakeups_delivered,
        "wakeups_refused": stats.wakeups_refused,
        "wake_prewarms": stats.wake_prewarms,
    }


def reliability_counters(
    controller: Controller, injected: dict[str, int], client: ClientCounts | None = None
) -> dict[str, int]:
    """Injected faults (``injected_*``), the controller's fault and recovery counters,
    and what closed-loop clients did about failures (``client_*``; 0 in open loop)."""
    counts = client or ClientCounts()
    stats = asdict(controller.stats)
    keys = (
        "failed_activations", "failed_checkpoints", "stale_completions",
        "activation_deadlines", "checkpoint_deadlines", "declined_checkpoints",
        "activation_retries", "abandoned_requests", "lost_states", "quarantines",
        "corrections", "workers_lost",
    )  # fmt: skip
    return {
        **{f"injected_{k}": v for k, v in injected.items()},
        **{k: stats[k] for k in keys},
        "client_retries": counts.retries,
        "client_gave_up": counts.gave_up,
        "client_turns_cut": counts.turns_cut,
        "client_timeouts": counts.timeouts,
        "client_duplicates_suppressed": counts.duplicates_suppressed,
        "client_duplicates_applied": counts.duplicates_applied,
    }
