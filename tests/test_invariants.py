"""Property tests: the controller's invariants hold over random event sequences.

A Hypothesis state machine plays a driver that finishes outstanding work (restores,
checkpoints, forwarded requests, timers) in a random order, adds and removes workers,
and reports cache changes, under every combination of the three policy families.
After every step it checks:

* an actor is on at most one worker and a worker hosts at most one actor, and the
  actor<->worker links agree;
* an actor holds a worker exactly when it is RESUMING, RUNNING or SUSPENDING;
* a checkpoint is only ordered for an actor with no forwarded request in flight;
* a queued actor is SUSPENDED and has a request waiting for it;
* no request is ended twice.

At teardown it drains all outstanding work and checks every request ended exactly once.
"""

from __future__ import annotations

import itertools

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from control.controller import Controller
from control.messages import (
    ActivationFinished,
    ActorCreated,
    ActorDeleted,
    AdminResult,
    Checkpoint,
    CheckpointFinished,
    DropActor,
    Forward,
    Reject,
    RequestArrived,
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
from control.model import ActorState
from control.policies import (
    AfterEachRequest,
    EvictThenWait,
    FailFast,
    IdleTimeout,
    Lazy,
    LruPlacement,
    QueueWithDeadline,
    RandomPlacement,
    SnapshotLocalityPlacement,
)

PLACEMENTS = [lambda: RandomPlacement(3), LruPlacement, SnapshotLocalityPlacement]
SUSPENSIONS = [AfterEachRequest, lambda: IdleTimeout(2.0), Lazy]
ADMISSIONS = [FailFast, lambda: QueueWithDeadline(1.5), lambda: EvictThenWait(3.0)]
ACTORS = [f"a{i}" for i in range(5)]
NODES = ["n0", "n1"]
HOLDS_WORKER = {ActorState.RESUMING, ActorState.RUNNING, ActorState.SUSPENDING}


class ControllerMachine(RuleBasedStateMachine):
    """A random driver of the controller."""

    @initialize(
        placement=st.sampled_from(PLACEMENTS),
        suspension=st.sampled_from(SUSPENSIONS),
        admission=st.sampled_from(ADMISSIONS),
        workers=st.integers(1, 4),
    )
    def setup(self, placement, suspension, admission, workers):
        self.ctl = Controller(placement(), suspension(), admission(), router_timeout_s=4.0)
        self.now = 0.0
        self.request_ids = itertools.count()
        self.worker_ids = itertools.count()
        self.restores: list[Restore] = []
        self.checkpoints: list[Checkpoint] = []
        self.forwarded: list[Forward] = []
        self.timers: list[SetTimer] = []
        self.arrived: set[int] = set()
        self.ended: dict[int, str] = {}
        self.retired: set[str] = set()
        for actor in ACTORS:
            self.send(ActorCreated(actor, "t", 1000))
        for _ in range(workers):
            self.add_worker()

    # ------------------------------------------------------------ the driver

    def send(self, event):
        for cmd in self.ctl.handle(event, self.now):
            self.carry_out(cmd)

    def carry_out(self, cmd):
        if isinstance(cmd, Restore):
            assert all(r.actor != cmd.actor for r in self.restores), "two restores of one actor"
            assert all(r.worker != cmd.worker for r in self.restores), "two restores on a worker"
            self.restores.append(cmd)
        elif isinstance(cmd, Checkpoint):
            busy = [f for f in self.forwarded if f.actor == cmd.actor]
            assert not busy, f"checkpoint of {cmd.actor} with requests in flight: {busy}"
            self.checkpoints.append(cmd)
        elif isinstance(cmd, Forward):
            assert cmd.request in self.arrived and cmd.request not in self.ended
            assert all(f.request != cmd.request for f in self.forwarded), "forwarded twice"
            assert self.ctl.actor(cmd.actor).worker == cmd.worker
            assert cmd.queue_s >= 0 and cmd.activation_s >= 0
            self.forwarded.append(cmd)
        elif isinstance(cmd, Reject):
            assert cmd.request not in self.ended, f"request {cmd.request} ended twice"
            assert all(f.request != cmd.request for f in self.forwarded), "rejected after forward"
            self.ended[cmd.request] = cmd.outcome
        elif isinstance(cmd, SetTimer):
            self.timers.append(cmd)
        elif isinstance(cmd, RetireWorker):
            assert self.ctl.worker(cmd.worker) is None
            self.retired.add(cmd.worker)
        elif isinstance(cmd, DropActor):
            assert self.ctl.actor(cmd.actor) is None
            assert all(r.actor != cmd.actor for r in self.restores + self.checkpoints)
        elif isinstance(cmd, AdminResult):
            pass
        else:  # pragma: no cover - a new command type must be handled here
            raise AssertionError(f"unexpected command {cmd!r}")

    def tick(self, dt):
        self.now += dt

    # ------------------------------------------------------------ rules

    @rule(actor=st.sampled_from(ACTORS), dt=st.floats(0, 1.0))
    def request_arrives(self, actor, dt):
        self.tick(dt)
        rid = next(self.request_ids)
        self.arrived.add(rid)
        self.send(RequestArrived(rid, actor, self.now))

    @rule(actor=st.sampled_from(["ghost", *ACTORS]))
    def request_arrives_late(self, actor):
        """A request that spent long in the control-plane queue before reaching us."""
        rid = next(self.request_ids)
        self.arrived.add(rid)
        self.send(RequestArrived(rid, actor, self.now - 5.0))

    @precondition(lambda self: self.restores)
    @rule(data=st.data(), ok=st.sampled_from([True, True, True, False]), dt=st.floats(0, 0.5))
    def restore_finishes(self, data, ok, dt):
        cmd = self.restores.pop(data.draw(st.integers(0, len(self.restores) - 1)))
        self.tick(dt)
        self.send(ActivationFinished(cmd.actor, cmd.worker, ok))

    @precondition(lambda self: self.checkpoints)
    @rule(data=st.data(), ok=st.sampled_from([True, True, True, False]), dt=st.floats(0, 0.5))
    def checkpoint_finishes(self, data, ok, dt):
        cmd = self.checkpoints.pop(data.draw(st.integers(0, len(self.checkpoints) - 1)))
        self.tick(dt)
        self.send(CheckpointFinished(cmd.actor, cmd.worker, ok))
        if ok and data.draw(st.booleans()):
            self.send(SnapshotCached(cmd.actor, cmd.node, cmd.version))

    @precondition(lambda self: self.forwarded)
    @rule(data=st.data(), dt=st.floats(0, 0.5))
    def request_finishes(self, data, dt):
        cmd = self.forwarded.pop(data.draw(st.integers(0, len(self.forwarded) - 1)))
        self.tick(dt)
        self.ended[cmd.request] = "ok"
        self.send(RequestFinished(cmd.request))

    @precondition(lambda self: self.timers)
    @rule()
    def next_timer_fires(self):
        self.timers.sort(key=lambda t: t.at)
        cmd = self.timers.pop(0)
        self.now = max(self.now, cmd.at)
        self.send(TimerFired(cmd.timer))

    @rule()
    def add_worker(self):
        wid = f"w{next(self.worker_ids)}"
        self.send(WorkerAdded(wid, NODES[len(wid) % 2]))

    @rule(data=st.data())
    def remove_worker(self, data):
        workers = self.ctl.workers()
        if len(workers) > 1:
            self.send(WorkerRemoved(data.draw(st.sampled_from(workers)).id))

    @rule(actor=st.sampled_from(ACTORS), node=st.sampled_from(NODES))
    def cache_evicts(self, actor, node):
        known = self.ctl.actor(actor)
        self.send(SnapshotEvicted(actor, node, known.snapshot_version if known else 1))

    @rule(actor=st.sampled_from(ACTORS), op=st.sampled_from(["suspend", "resume", "delete"]))
    def operator_acts(self, actor, op):
        event = {"suspend": SuspendRequested, "resume": ResumeRequested, "delete": ActorDeleted}
        before = len(self.restores) + len(self.checkpoints)
        cmds = self.ctl.handle(event[op](actor), self.now)
        results = [c for c in cmds if isinstance(c, AdminResult)]
        assert len(results) == 1, cmds  # exactly one answer per operator request
        for cmd in cmds:
            self.carry_out(cmd)
        assert len(self.restores) + len(self.checkpoints) - before <= 1

    # ------------------------------------------------------------ invariants

    @invariant()
    def one_actor_per_worker_and_one_worker_per_actor(self):
        if not hasattr(self, "ctl"):
            return
        hosts = {}
        for actor in self.ctl.actors():
            assert (actor.worker is not None) == (actor.state in HOLDS_WORKER), actor
            if actor.worker is not None:
                assert actor.worker not in hosts, f"{actor.worker} hosts two actors"
                hosts[actor.worker] = actor.id
                assert self.ctl.worker(actor.worker).actor == actor.id
        for worker in self.ctl.workers():
            if worker.actor is not None:
                assert hosts.get(worker.id) == worker.actor
        assert self.ctl.occupied_workers == len(hosts)
        assert self.ctl.free_workers + len(hosts) == len(self.ctl.workers())
        assert self.ctl.waiting_actors == 0 or self.ctl.free_workers == 0
        for actor_id in self.ctl.queue():
            assert self.ctl.actor(actor_id).state is ActorState.SUSPENDED
            assert self.ctl.waiting_requests(actor_id) > 0, f"{actor_id} queued for nothing"

    @invariant()
    def outstanding_work_matches_states(self):
        if not hasattr(self, "ctl"):
            return
        for cmd in self.restores:
            assert self.ctl.actor(cmd.actor).state is ActorState.RESUMING
        for cmd in self.checkpoints:
            assert self.ctl.actor(cmd.actor).state is ActorState.SUSPENDING
        resuming = sum(a.state is ActorState.RESUMING for a in self.ctl.actors())
        assert resuming == len(self.restores)

    def teardown(self):
        if not hasattr(self, "ctl"):
            return
        for _ in range(10_000):
            if self.forwarded:
                cmd = self.forwarded.pop(0)
                self.ended[cmd.request] = "ok"
                self.send(RequestFinished(cmd.request))
            elif self.restores:
                cmd = self.restores.pop(0)
                self.send(ActivationFinished(cmd.actor, cmd.worker))
            elif self.checkpoints:
                cmd = self.checkpoints.pop(0)
                self.send(CheckpointFinished(cmd.actor, cmd.worker))
            elif self.timers:
                self.next_timer_fires()
            else:
                break
        assert self.ctl.open_requests == 0
        assert set(self.ended) == self.arrived, "some request never ended"


ControllerMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None
)
TestControllerInvariants = ControllerMachine.TestCase
