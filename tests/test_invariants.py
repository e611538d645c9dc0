"""Property tests: the controller's invariants hold over random event sequences.

A Hypothesis state machine plays a driver under every combination of the three policy
families. The driver keeps its own *truth* (which sandbox really runs on which
worker, which snapshot is really committed) and misbehaves the way real drivers and
machines do: it finishes outstanding work in a random order, with random outcomes
(failed and unusable restores, declined and lost checkpoints), drops completions
and forwarded requests altogether, sends completions twice, late or for operations
that never existed, lets sandboxes die silently, loses whole workers, and reports
observed state from its truth. After every step it checks:

* an actor is on at most one worker and a worker hosts at most one actor, the
  actor<->worker links agree, and the worker counts add up (free + occupied +
  quarantined-empty = all);
* an actor holds a worker exactly when it is RESUMING, RUNNING or SUSPENDING;
* a checkpoint is only ordered for an actor with no request of its current
  activation in flight, and carries that activation's generation;
* generations only grow; every Forward goes to the actor's current generation;
* a queued actor is SUSPENDED and has a request waiting for it; a bounded queue
  (park and retry) holds at most its bound, and per owner at most its budget;
* no request is ended twice.

At teardown it delivers everything that was not dropped, fires every timer and
reports the truth once more, until nothing changes; then every request has ended
exactly once, no actor is RESUMING, and every worker is free, quarantined with a
reason, or hosts an actor whose sandbox really runs there.
"""

from __future__ import annotations

import itertools

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from control.controller import Controller, RecoverySettings
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
    Correction,
    DeliverWake,
    DropActor,
    Forward,
    Observed,
    ObservedSandbox,
    ObservedSnapshot,
    ProvisionFailed,
    ProvisionWorkers,
    RecoverRequested,
    Reject,
    RequestArrived,
    RequestFinished,
    Restore,
    ResumeRequested,
    RetireWorker,
    SandboxStopped,
    ScaleTick,
    SetTimer,
    SnapshotCached,
    SnapshotEvicted,
    StateLost,
    StopSandbox,
    SuspendRequested,
    TimerFired,
    Upload,
    UploadFinished,
    WakeScheduled,
    WorkerAdded,
    WorkerLost,
    WorkerRemoved,
)
from control.model import ActorState
from control.policies import (
    AfterEachRequest,
    DemandScaler,
    EvictThenWait,
    FailFast,
    GreedyDual,
    HybridHistogram,
    IdleTimeout,
    KeepRunning,
    Lazy,
    LruPlacement,
    ParkAndRetry,
    PauseFirst,
    PredictivePrewarm,
    QueueWithDeadline,
    RandomPlacement,
    SnapshotLocalityPlacement,
)
from control.timers import TimerSettings

PLACEMENTS = [lambda: RandomPlacement(3), LruPlacement, SnapshotLocalityPlacement]
SUSPENSIONS = [
    AfterEachRequest,
    lambda: IdleTimeout(2.0),
    Lazy,
    lambda: HybridHistogram(ttl_s=1.0, min_samples=1, min_prewarm_s=0.02, first_bin_s=0.01),
    GreedyDual,
    lambda: PredictivePrewarm(min_gap_s=0.02, hold_s=1.0, min_history=1),
    lambda: KeepRunning(AfterEachRequest(), count=2),
]
ADMISSIONS = [
    FailFast,
    lambda: QueueWithDeadline(1.5),
    lambda: EvictThenWait(3.0),
    lambda: ParkAndRetry(2.0, max_queue=3, per_caller=1, order="adaptive", lifo_over=0),
    lambda: ParkAndRetry(2.5, per_caller=1, order="lifo", evict=False),
]
SCALINGS = [
    lambda: None,
    lambda: DemandScaler(max_workers=5, warm_buffer=1, interval_s=1.0, down_delay_s=2.0),
]
LOCALITIES = [
    lambda: None,
    lambda: PauseFirst(wait_s=0.3, upload_after_s=2.0),
    lambda: PauseFirst(wait_s=0.0, upload_after_s=None, pause_below_s=1.0, alpha=0.5),
]
TIMERS = TimerSettings(lead_s=0.3, wait_s=3.0, max_pending=2, max_after_s=20.0)
ACTORS = [f"a{i}" for i in range(5)]
NODES = ["n0", "n1"]
HOLDS_WORKER = {ActorState.RESUMING, ActorState.RUNNING, ActorState.SUSPENDING}
RECOVERY = RecoverySettings(
    activation_deadline_s=3.0,
    checkpoint_deadline_s=5.0,
    forward_deadline_s=8.0,
    retry_backoff_s=0.2,
    checkpoint_retry_s=0.5,
    checkpoint_retry_max_s=2.0,
)


class ControllerMachine(RuleBasedStateMachine):
    """A random, unreliable driver of the controller."""

    @initialize(
        placement=st.sampled_from(PLACEMENTS),
        suspension=st.sampled_from(SUSPENSIONS),
        admission=st.sampled_from(ADMISSIONS),
        workers=st.integers(1, 4),
        scaling=st.sampled_from(SCALINGS),
        locality=st.sampled_from(LOCALITIES),
    )
    def setup(self, placement, suspension, admission, workers, scaling, locality):  # noqa: PLR0917
        self.ctl = Controller(
            placement(), suspension(), admission(), router_timeout_s=4.0, recovery=RECOVERY,
            scaling=scaling(), locality=locality(), timers=TIMERS,
        )  # fmt: skip
        self.uploads: list[Upload] = []
        self.wakes: list[DeliverWake] = []
        self.delivered_wakes: set[tuple[str, int]] = set()
        self.provisioning = 0  # workers the controller asked for, not joined yet
        self.tearing_down = False
        self.now = 0.0
        self.request_ids = itertools.count()
        self.worker_ids = itertools.count()
        self.restores: list[Restore] = []
        self.checkpoints: list[Checkpoint] = []
        self.stops: list[StopSandbox] = []
        self.forwarded: list[Forward] = []
        self.timers: list[SetTimer] = []
        self.sent: list = []  # completions already delivered, to send again
        self.arrived: set[int] = set()
        self.ended: dict[int, str] = {}
        self.retired: set[str] = set()
        self.generations: dict[str, int] = {}
        # The driver's truth: what really runs where, and what is really committed.
        self.running: dict[str, tuple[str, int]] = {}  # worker -> (actor, generation)
        self.committed: dict[str, int] = {}  # actor -> newest committed snapshot
        for i, actor in enumerate(ACTORS):  # owners o0, o1 alternate; the last has none
            owner = f"o{i % 2}" if i < len(ACTORS) - 1 else ""
            self.send(ActorCreated(actor, "t", 1000, owner=owner))
        for _ in range(workers):
            self.add_worker()

    # ------------------------------------------------------------ the driver

    def send(self, event):
        for cmd in self.ctl.handle(event, self.now):
            self.carry_out(cmd)

    def carry_out(self, cmd):
        if isinstance(cmd, Restore):
            assert cmd.generation > self.generations.get(cmd.actor, 0), "generation went back"
            paused_on = self.ctl.actor(cmd.actor).paused_on
            assert paused_on in (None, cmd.node), f"{cmd.actor} paused on {paused_on}: {cmd}"
            self.generations[cmd.actor] = cmd.generation
            assert all(r.op != cmd.op for r in self.restores)
            self.restores.append(cmd)
            self.running[cmd.worker] = (cmd.actor, cmd.generation)  # the sandbox starts
        elif isinstance(cmd, Checkpoint):
            actor = self.ctl.actor(cmd.actor)
            assert cmd.generation == actor.generation, "checkpoint of a stale generation"
            mine = (cmd.actor, cmd.generation)
            busy = [f for f in self.forwarded if (f.actor, f.generation) == mine]
            assert not busy, f"checkpoint of {cmd.actor} with requests in flight: {busy}"
            self.checkpoints.append(cmd)
        elif isinstance(cmd, StopSandbox):
            self.stops.append(cmd)
        elif isinstance(cmd, Forward):
            assert cmd.request in self.arrived and cmd.request not in self.ended
            assert all(f.request != cmd.request for f in self.forwarded), "forwarded twice"
            actor = self.ctl.actor(cmd.actor)
            assert actor.worker == cmd.worker and actor.generation == cmd.generation
            assert cmd.queue_s >= 0 and cmd.activation_s >= 0
            self.forwarded.append(cmd)
        elif isinstance(cmd, Reject):
            self.end(cmd.request, cmd.outcome)
            assert all(f.request != cmd.request for f in self.forwarded), "rejected after forward"
        elif isinstance(cmd, Abandon):
            self.end(cmd.request, "abandoned")
            self.forwarded = [f for f in self.forwarded if f.request != cmd.request]
        elif isinstance(cmd, SetTimer):
            if not (self.tearing_down and isinstance(cmd.timer, ScaleTick)):
                self.timers.append(cmd)  # (the scaler stops at teardown)
        elif isinstance(cmd, ProvisionWorkers):
            assert cmd.number > 0
            self.provisioning += cmd.number
        elif isinstance(cmd, RetireWorker):
            assert self.ctl.worker(cmd.worker) is None
            self.retired.add(cmd.worker)
            self.running.pop(cmd.worker, None)  # torn down with whatever ran on it
        elif isinstance(cmd, DropActor):
            assert self.ctl.actor(cmd.actor) is None
            alive = [w for w, (a, _) in self.running.items() if a == cmd.actor]
            assert not alive, f"deleted {cmd.actor} while its sandbox runs on {alive}"
        elif isinstance(cmd, StateLost):
            assert self.ctl.actor(cmd.actor).state is not ActorState.RUNNING
        elif isinstance(cmd, Upload):
            actor = self.ctl.actor(cmd.actor)
            assert actor.paused_on == cmd.node and actor.upload_op == cmd.op
            self.uploads.append(cmd)
        elif isinstance(cmd, DeliverWake):
            assert (cmd.actor, cmd.wake) not in self.delivered_wakes, "a wake-up came twice"
            assert cmd.due <= self.now
            self.delivered_wakes.add((cmd.actor, cmd.wake))
            self.wakes.append(cmd)
        elif isinstance(cmd, AdminResult | Correction):
            pass
        else:  # pragma: no cover - a new command type must be handled here
            raise AssertionError(f"unexpected command {cmd!r}")

    def end(self, request, outcome):
        assert request not in self.ended, f"request {request} ended twice"
        self.ended[request] = outcome

    def tick(self, dt):
        self.now += dt

    def deliver(self, event):
        self.sent.append(event)
        self.send(event)

    # The real effects of finishing work, whether or not the controller hears of it.
    def restore_ends(self, cmd, outcome):
        if outcome is not ActivationOutcome.OK and self.running.get(cmd.worker) == (
            cmd.actor, cmd.generation,
        ):  # fmt: skip
            del self.running[cmd.worker]

    def checkpoint_ends(self, cmd, outcome):
        if outcome is CheckpointOutcome.OK:
            self.committed[cmd.actor] = max(self.committed.get(cmd.actor, 0), cmd.version)
        if outcome is not CheckpointOutcome.DECLINED and self.running.get(cmd.worker) == (
            cmd.actor, cmd.generation,
        ):  # fmt: skip
            del self.running[cmd.worker]

    def stop_ends(self, cmd):
        if self.running.get(cmd.worker) == (cmd.actor, cmd.generation):
            del self.running[cmd.worker]

    # ------------------------------------------------------------ rules

    # Rules that always apply are few and do several things each: Hypothesis picks
    # among applicable rules about evenly, and the rules that finish outstanding work
    # must get their turn often enough for actors to go round their lifecycle.

    @rule(actor=st.sampled_from(["ghost", *ACTORS]), dt=st.floats(0, 1.0), late=st.booleans())
    def request_arrives(self, actor, dt, late):
        """A request; a late one spent long in the control-plane queue before reaching us."""
        self.tick(dt)
        rid = next(self.request_ids)
        self.arrived.add(rid)
        self.send(RequestArrived(rid, actor, self.now - (5.0 if late else 0.0)))

    @rule(actor=st.sampled_from(["ghost", *ACTORS]), ahead=st.floats(-1.0, 30.0))
    def actor_schedules_a_wakeup(self, actor, ahead):
        self.send(WakeScheduled(actor, self.now + ahead))

    @precondition(lambda self: self.wakes)
    @rule(dt=st.floats(0, 0.5))
    def wakeup_arrives(self, dt):
        """A delivered wake-up reaches the control plane as a request."""
        self.tick(dt)
        cmd = self.wakes.pop(0)
        rid = next(self.request_ids)
        self.arrived.add(rid)
        self.send(RequestArrived(rid, cmd.actor, self.now, wait_s=cmd.wait_s))

    @precondition(lambda self: self.uploads)
    @rule(data=st.data(), ok=st.booleans(), dt=st.floats(0, 0.5))
    def upload_ends(self, data, ok, dt):
        self.tick(dt)
        cmd = self.uploads.pop(data.draw(st.integers(0, len(self.uploads) - 1)))
        self.deliver(UploadFinished(cmd.op, ok=ok, reason="" if ok else "link down"))

    # One rule per outcome: Hypothesis chooses between rules far more evenly than
    # between the elements of a list, so every outcome really occurs.
    def finish_restore(self, data, outcome, dt):
        cmd = self.restores.pop(data.draw(st.integers(0, len(self.restores) - 1)))
        self.tick(dt)
        self.restore_ends(cmd, outcome)
        self.deliver(ActivationFinished(cmd.op, outcome, "test"))

    @precondition(lambda self: self.restores)
    @rule(data=st.data(), dt=st.floats(0, 0.5))
    def restore_succeeds(self, data, dt):
        self.finish_restore(data, ActivationOutcome.OK, dt)

    @precondition(lambda self: self.restores)
    @rule(data=st.data(), dt=st.floats(0, 0.5))
    def restore_fails(self, data, dt):
        self.finish_restore(data, ActivationOutcome.FAILED, dt)

    @precondition(lambda self: self.restores)
    @rule(data=st.data(), dt=st.floats(0, 0.5))
    def restore_finds_snapshot_unusable(self, data, dt):
        self.finish_restore(data, ActivationOutcome.UNUSABLE, dt)

    def finish_checkpoint(self, data, outcome, dt):
        cmd = self.checkpoints.pop(data.draw(st.integers(0, len(self.checkpoints) - 1)))
        self.tick(dt)
        self.checkpoint_ends(cmd, outcome)
        self.deliver(CheckpointFinished(cmd.op, outcome, "test"))
        if outcome is CheckpointOutcome.OK and data.draw(st.booleans()):
            self.send(SnapshotCached(cmd.actor, cmd.node, cmd.version))

    @precondition(lambda self: self.checkpoints)
    @rule(data=st.data(), dt=st.floats(0, 0.5))
    def checkpoint_succeeds(self, data, dt):
        self.finish_checkpoint(data, CheckpointOutcome.OK, dt)

    @precondition(lambda self: self.checkpoints)
    @rule(data=st.data(), dt=st.floats(0, 0.5))
    def checkpoint_is_declined(self, data, dt):
        self.finish_checkpoint(data, CheckpointOutcome.DECLINED, dt)

    @precondition(lambda self: self.checkpoints)
    @rule(data=st.data(), dt=st.floats(0, 0.5))
    def checkpoint_loses_its_sandbox(self, data, dt):
        self.finish_checkpoint(data, CheckpointOutcome.LOST, dt)

    @precondition(lambda self: self.stops)
    @rule(data=st.data())
    def stop_finishes(self, data):
        cmd = self.stops.pop(data.draw(st.integers(0, len(self.stops) - 1)))
        self.stop_ends(cmd)
        self.deliver(SandboxStopped(cmd.op))

    @precondition(lambda self: self.restores or self.checkpoints or self.stops or self.forwarded)
    @rule()
    def driver_makes_progress(self):
        """The oldest outstanding piece of work ends normally (so lifecycles go round)."""
        if self.forwarded:
            cmd = self.forwarded.pop(0)
            self.end(cmd.request, "ok")
            self.deliver(RequestFinished(cmd.request))
        elif self.restores:
            cmd = self.restores.pop(0)
            self.deliver(ActivationFinished(cmd.op))
        elif self.checkpoints:
            cmd = self.checkpoints.pop(0)
            self.checkpoint_ends(cmd, CheckpointOutcome.OK)
            self.deliver(CheckpointFinished(cmd.op))
        else:
            cmd = self.stops.pop(0)
            self.stop_ends(cmd)
            self.deliver(SandboxStopped(cmd.op))

    @precondition(lambda self: self.restores or self.checkpoints or self.stops)
    @rule(data=st.data(), restore_ok=st.booleans(), checkpoint_ok=st.booleans())
    def completion_is_dropped(self, data, restore_ok, checkpoint_ok):
        """The work happens, but the controller never hears of it."""
        kind = data.draw(st.sampled_from([k for k in ("r", "c", "s") if self.queue(k)]))
        queue = self.queue(kind)
        cmd = queue.pop(data.draw(st.integers(0, len(queue) - 1)))
        if kind == "r":
            failed = ActivationOutcome.FAILED
            self.restore_ends(cmd, ActivationOutcome.OK if restore_ok else failed)
        elif kind == "c":
            lost = CheckpointOutcome.LOST
            self.checkpoint_ends(cmd, CheckpointOutcome.OK if checkpoint_ok else lost)
        else:
            self.stop_ends(cmd)

    def queue(self, kind):
        return {"r": self.restores, "c": self.checkpoints, "s": self.stops}[kind]

    @rule(data=st.data(), op=st.integers(10_000, 10_010), kind=st.sampled_from("rcsq"))
    def bogus_completion_arrives(self, data, op, kind):
        """A completion sent again (late or duplicate), then one for work never ordered."""
        if self.sent:
            self.send(data.draw(st.sampled_from(self.sent)))
        event = {
            "r": ActivationFinished(op),
            "c": CheckpointFinished(op),
            "s": SandboxStopped(op),
            "q": RequestFinished(op),
        }[kind]
        self.send(event)

    @precondition(lambda self: self.forwarded)
    @rule(data=st.data(), dt=st.floats(0, 0.5))
    def request_finishes(self, data, dt):
        cmd = self.forwarded.pop(data.draw(st.integers(0, len(self.forwarded) - 1)))
        self.tick(dt)
        self.end(cmd.request, "ok")
        self.deliver(RequestFinished(cmd.request))

    @precondition(lambda self: self.forwarded)
    @rule(data=st.data())
    def forward_is_dropped(self, data):
        """The router lost the request: no RequestFinished ever comes (its deadline must)."""
        self.forwarded.pop(data.draw(st.integers(0, len(self.forwarded) - 1)))

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def sandbox_dies_silently(self, data):
        worker = data.draw(st.sampled_from(sorted(self.running)))
        del self.running[worker]

    @rule(actor=st.sampled_from(ACTORS), node=st.sampled_from(NODES))
    def backend_reports_what_it_sees(self, actor, node):
        """Observed state; and a node's cache drops a snapshot."""
        self.send(self.observation())
        known = self.ctl.actor(actor)
        self.send(SnapshotEvicted(actor, node, known.snapshot_version if known else 1))

    def observation(self):
        return Observed(
            self.now,
            tuple(ObservedSandbox(a, w, g) for w, (a, g) in sorted(self.running.items())),
            tuple(ObservedSnapshot(a, v) for a, v in sorted(self.committed.items())),
        )

    @precondition(lambda self: self.timers)
    @rule()
    def next_timer_fires(self):
        self.timers.sort(key=lambda t: t.at)
        cmd = self.timers.pop(0)
        self.now = max(self.now, cmd.at)
        self.send(TimerFired(cmd.timer))

    def add_worker(self, *, provisioned=False):
        wid = f"w{next(self.worker_ids)}"
        self.send(WorkerAdded(wid, NODES[len(wid) % 2], provisioned=provisioned))

    @precondition(lambda self: getattr(self, "provisioning", 0) > 0)
    @rule()
    def provisioned_worker_joins(self):
        """A worker the scaling policy asked for has started and joins."""
        self.provisioning -= 1
        self.add_worker(provisioned=True)

    @precondition(lambda self: getattr(self, "provisioning", 0) > 0)
    @rule()
    def provisioned_worker_fails_to_start(self):
        """The driver could not start a worker it was asked for."""
        self.provisioning -= 1
        self.send(ProvisionFailed(1, "no room"))

    @rule(data=st.data(), change=st.sampled_from(["add", "remove", "lose"]))
    def pool_changes(self, data, change):
        """A worker joins, is removed (drains), or vanishes with what ran on it."""
        workers = self.ctl.workers()
        if change == "add" or len(workers) < 2:
            self.add_worker()
            return
        worker = data.draw(st.sampled_from(workers)).id
        if change == "remove":
            self.send(WorkerRemoved(worker))
        else:
            self.running.pop(worker, None)
            self.send(WorkerLost(worker, "test"))

    @rule(
        actor=st.sampled_from(ACTORS),
        op=st.sampled_from(["suspend", "resume", "delete", "recover"]),
    )
    def operator_acts(self, actor, op):
        if op == "recover":
            event = RecoverRequested(actor, self.committed.get(actor, 0))
        else:
            kinds = {"suspend": SuspendRequested, "resume": ResumeRequested, "delete": ActorDeleted}
            event = kinds[op](actor)
        before = len(self.restores) + len(self.checkpoints)
        cmds = self.ctl.handle(event, self.now)
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
        quarantined_empty = 0
        for worker in self.ctl.workers():
            if worker.actor is not None:
                assert hosts.get(worker.id) == worker.actor
            elif worker.quarantined is not None:
                quarantined_empty += 1
        assert self.ctl.occupied_workers == len(hosts)
        total = self.ctl.free_workers + len(hosts) + quarantined_empty
        assert total == len(self.ctl.workers())
        assert self.ctl.waiting_actors == 0 or self.ctl.free_workers == 0
        for node, stranded in self.ctl.stranded().items():  # the queue's rule, per node
            free_there = [
                w.id for w in self.ctl.workers()
                if w.node == node and w.actor is None and w.quarantined is None
            ]  # fmt: skip
            assert not free_there, f"{stranded} wait on {node} where {free_there} are free"
            for actor_id in stranded:
                actor = self.ctl.actor(actor_id)
                assert actor.state is ActorState.SUSPENDED and actor.paused_on == node, actor
                assert self.ctl.waiting_requests(actor_id) > 0, f"{actor_id} stranded for nothing"
                assert actor_id not in self.ctl.queue()
        for actor_id in self.ctl.queue():
            assert self.ctl.actor(actor_id).paused_on is None, "a paused actor in the queue"
            assert self.ctl.actor(actor_id).state is ActorState.SUSPENDED
            assert self.ctl.waiting_requests(actor_id) > 0, f"{actor_id} queued for nothing"
        policy = self.ctl.admission
        if isinstance(policy, ParkAndRetry):
            queue = self.ctl.queue()
            assert policy.max_queue is None or len(queue) <= policy.max_queue
            if policy.per_caller is not None:
                owners = [self.ctl.actor(a).owner for a in queue]
                for owner in set(owners) - {""}:
                    assert owners.count(owner) <= policy.per_caller, (owner, queue)

    @invariant()
    def the_controller_waits_for_the_workers_it_asked_for(self):
        if hasattr(self, "ctl"):
            assert self.ctl.starting_workers == self.provisioning

    @invariant()
    def operations_match_states(self):
        if not hasattr(self, "ctl"):
            return
        for actor in self.ctl.actors():
            if actor.state in (ActorState.RESUMING, ActorState.SUSPENDING):
                assert actor.op is not None and self.ctl.is_current(actor.op), actor
            else:
                assert actor.op is None, actor

    # ------------------------------------------------------------ teardown

    def teardown(self):
        if not hasattr(self, "ctl"):
            return
        self.tearing_down = True
        self.timers = [t for t in self.timers if not isinstance(t.timer, ScaleTick)]
        while self.provisioning:
            self.provisioned_worker_joins()
        for _ in range(10_000):
            if self.forwarded:
                cmd = self.forwarded.pop(0)
                self.end(cmd.request, "ok")
                self.send(RequestFinished(cmd.request))
            elif self.restores:
                cmd = self.restores.pop(0)
                self.send(ActivationFinished(cmd.op))
            elif self.checkpoints:
                cmd = self.checkpoints.pop(0)
                self.checkpoint_ends(cmd, CheckpointOutcome.OK)
                self.send(CheckpointFinished(cmd.op))
            elif self.stops:
                cmd = self.stops.pop(0)
                self.stop_ends(cmd)
                self.send(SandboxStopped(cmd.op))
            elif self.uploads:
                self.send(UploadFinished(self.uploads.pop(0).op))
            elif self.wakes:
                self.wakeup_arrives(0.0)
            elif self.timers:
                self.next_timer_fires()
            else:
                self.now += 1.0
                before = (self.ctl.stats.corrections, len(self.stops))
                self.send(self.observation())
                if (self.ctl.stats.corrections, len(self.stops)) == before:
                    break
        assert self.ctl.open_requests == 0
        assert set(self.ended) == self.arrived, "some request never ended"
        for actor in self.ctl.actors():
            assert actor.state is not ActorState.RESUMING, actor
            assert actor.state is not ActorState.SUSPENDING or actor.overdue, actor
        for worker in self.ctl.workers():
            if worker.actor is None or worker.quarantined is not None:
                continue  # free, or quarantined with a reason
            actor = self.ctl.actor(worker.actor)
            assert self.running.get(worker.id) == (actor.id, actor.generation), (
                f"{worker.id} is said to host {actor} but runs {self.running.get(worker.id)}"
            )


ControllerMachine.TestCase.settings = settings(
    max_examples=400, stateful_step_count=80, deadline=None
)
TestControllerInvariants = ControllerMachine.TestCase
