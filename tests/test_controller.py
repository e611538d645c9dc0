"""Unit tests of the pure controller: one scenario per behaviour, events in, commands out."""

from __future__ import annotations

import pytest

from control.controller import Controller, ProtocolError
from control.messages import (
    ActivationFinished,
    ActorCreated,
    ActorDeleted,
    AdminResult,
    Checkpoint,
    CheckpointFinished,
    DropActor,
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
    SuspendRequested,
    TimerFired,
    WorkerAdded,
    WorkerRemoved,
)
from control.model import ActorState, IllegalTransitionError, check_transition
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

MB = 1 << 20


def make(
    *,
    placement=None,
    suspension=None,
    admission=None,
    workers=("w0",),
    actors=("a", "b", "c"),
    timeout=5.0,
    nodes=None,
):
    # Not `placement or ...`: a placement pool with no free worker has len() 0 and is falsy.
    ctl = Controller(
        LruPlacement() if placement is None else placement,
        AfterEachRequest() if suspension is None else suspension,
        FailFast() if admission is None else admission,
        router_timeout_s=timeout,
    )
    for i, w in enumerate(workers):
        ctl.handle(WorkerAdded(w, nodes[i] if nodes else "n0"), 0.0)
    for a in actors:
        ctl.handle(ActorCreated(a, "counter", 10 * MB), 0.0)
    return ctl


def only(cmds, kind):
    found = [c for c in cmds if isinstance(c, kind)]
    assert len(found) == 1, cmds
    return found[0]


def activate(ctl, request, actor, now, restore_s=0.3):
    """Send a request to a suspended actor, finish its activation ``restore_s`` later;
    return the Restore and the Forward."""
    restore = only(ctl.handle(RequestArrived(request, actor, now), now), Restore)
    done = now + restore_s
    return restore, only(ctl.handle(ActivationFinished(actor, restore.worker), done), Forward)


def test_first_request_cold_starts_then_forwards():
    ctl = make()
    restore, fwd = activate(ctl, 1, "a", 1.0)
    assert restore == Restore("a", "w0", "n0", 0, 10 * MB)
    assert restore.cold
    assert fwd.activated and fwd.worker == "w0"
    assert fwd.queue_s == 0.0 and fwd.activation_s == pytest.approx(0.3)
    assert ctl.actor("a").state is ActorState.RUNNING
    assert ctl.stats.cold_starts == 1


def test_actor_created_with_a_snapshot_restores_it_instead_of_cold_starting():
    ctl = make(actors=())
    ctl.handle(ActorCreated("old", "agent", 10 * MB, snapshot_version=4), 0.0)
    restore, _ = activate(ctl, 1, "old", 1.0)
    assert restore.version == 4 and not restore.cold
    assert ctl.stats.cold_starts == 0


def test_warm_request_is_forwarded_without_activation():
    ctl = make(suspension=Lazy())
    activate(ctl, 1, "a", 1.0)
    ctl.handle(RequestFinished(1), 2.0)
    cmds = ctl.handle(RequestArrived(2, "a", 3.0), 3.0)
    assert cmds == [Forward(2, "a", "w0", False, 0.0, 0.0)]


def test_after_each_request_checkpoints_and_restores_latest_snapshot():
    ctl = make()
    activate(ctl, 1, "a", 1.0)
    ckpt = only(ctl.handle(RequestFinished(1), 2.0), Checkpoint)
    assert ckpt == Checkpoint("a", "w0", "n0", 1, 10 * MB)
    assert ctl.actor("a").state is ActorState.SUSPENDING
    ctl.handle(CheckpointFinished("a", "w0"), 2.2)
    assert ctl.actor("a").state is ActorState.SUSPENDED
    restore, _ = activate(ctl, 2, "a", 3.0)
    assert restore.version == 1 and not restore.cold


def test_idle_timeout_sets_timer_and_stale_timer_is_ignored():
    ctl = make(suspension=IdleTimeout(10.0))
    activate(ctl, 1, "a", 1.0)
    timer = only(ctl.handle(RequestFinished(1), 2.0), SetTimer)
    assert timer.at == 12.0 and isinstance(timer.timer, IdleTimer)
    # A request in between makes that timer stale.
    assert isinstance(only(ctl.handle(RequestArrived(2, "a", 5.0), 5.0), Forward), Forward)
    second = only(ctl.handle(RequestFinished(2), 6.0), SetTimer)
    assert ctl.handle(TimerFired(timer.timer), 12.0) == []
    assert ctl.actor("a").state is ActorState.RUNNING
    assert only(ctl.handle(TimerFired(second.timer), 16.0), Checkpoint).actor == "a"


def test_concurrent_requests_to_suspended_actor_cause_one_activation():
    ctl = make(workers=("w0", "w1"))
    cmds = []
    for r in range(20):
        cmds += ctl.handle(RequestArrived(r, "a", 1.0), 1.0)
    assert sum(isinstance(c, Restore) for c in cmds) == 1
    fwds = ctl.handle(ActivationFinished("a", "w0"), 1.4)
    assert [f.request for f in fwds] == list(range(20))
    assert all(isinstance(f, Forward) and f.activated for f in fwds)


def test_fail_fast_rejects_with_503_when_no_worker_is_free():
    ctl = make(admission=FailFast())
    activate(ctl, 1, "a", 1.0)
    cmds = ctl.handle(RequestArrived(2, "b", 1.5), 1.5)
    assert cmds == [Reject(2, "b", 503, "no free worker")]
    assert cmds[0].outcome == "rejected"


def test_queue_gets_the_next_free_worker_in_fifo_order():
    ctl = make(admission=QueueWithDeadline(3.0))
    activate(ctl, 1, "a", 1.0)
    t_b = only(ctl.handle(RequestArrived(2, "b", 1.5), 1.5), SetTimer)
    t_c = only(ctl.handle(RequestArrived(3, "c", 1.6), 1.6), SetTimer)
    assert t_b.at == 4.5 and t_c.at == 4.6  # queue deadline beats the 5 s router timeout
    ckpt = only(ctl.handle(RequestFinished(1), 2.0), Checkpoint)
    restore = only(ctl.handle(CheckpointFinished("a", ckpt.worker), 2.2), Restore)
    assert restore.actor == "b"
    fwd = only(ctl.handle(ActivationFinished("b", "w0"), 2.5), Forward)
    assert fwd.queue_s == pytest.approx(0.7) and fwd.activation_s == pytest.approx(0.3)
    # b's deadline is stale: it was forwarded.
    assert ctl.handle(TimerFired(t_b.timer), 4.5) == []
    # c is still queued: its deadline ends it with a 504.
    rej = only(ctl.handle(TimerFired(t_c.timer), 4.6), Reject)
    assert (rej.status, rej.outcome) == (504, "timeout")
    assert ctl.waiting_actors == 0


def test_router_timeout_ends_a_slow_activation_with_504():
    ctl = make(timeout=5.0)
    restore = only(ctl.handle(RequestArrived(1, "a", 1.0), 1.2), Restore)
    ctl_deadline = RequestDeadline(1)
    assert ctl.handle(TimerFired(ctl_deadline), 6.0) == [
        Reject(1, "a", 504, "timed out waiting for activation")
    ]
    # The activation still completes; the idle actor is then suspended by the policy.
    assert only(ctl.handle(ActivationFinished("a", restore.worker), 7.0), Checkpoint)


def test_request_already_past_router_deadline_is_rejected_on_arrival():
    ctl = make(timeout=5.0)
    assert ctl.handle(RequestArrived(1, "a", 0.0), 6.0)[0].status == 504


def test_lazy_keeps_actors_warm_and_evicts_lru_when_a_worker_is_needed():
    ctl = make(workers=("w0", "w1"), suspension=Lazy(), admission=EvictThenWait(10.0))
    activate(ctl, 1, "a", 1.0, restore_s=0.05)
    activate(ctl, 2, "b", 1.1)
    assert ctl.handle(RequestFinished(1), 2.0) == []  # a idle, kept warm
    assert ctl.handle(RequestFinished(2), 2.1) == []  # b idle, kept warm
    cmds = ctl.handle(RequestArrived(3, "c", 3.0), 3.0)
    ckpt = only(cmds, Checkpoint)
    assert ckpt.actor == "a"  # least recently used idle actor
    assert ctl.stats.evictions == 1
    restore = only(ctl.handle(CheckpointFinished("a", ckpt.worker), 3.2), Restore)
    assert (restore.actor, restore.worker) == ("c", ckpt.worker)
    assert ctl.actor("b").state is ActorState.RUNNING


def test_evict_then_wait_evicts_an_actor_when_it_becomes_idle():
    ctl = make(suspension=Lazy(), admission=EvictThenWait(10.0))
    activate(ctl, 1, "a", 1.0)  # a is busy: nothing to evict yet
    assert not any(isinstance(c, Checkpoint) for c in ctl.handle(RequestArrived(2, "b", 2), 2))
    assert only(ctl.handle(RequestFinished(1), 3.0), Checkpoint).actor == "a"


def test_request_during_checkpoint_reactivates_after_it():
    ctl = make(workers=("w0", "w1"))
    activate(ctl, 1, "a", 1.0)
    only(ctl.handle(RequestFinished(1), 2.0), Checkpoint)
    assert only(ctl.handle(RequestArrived(2, "a", 2.05), 2.05), SetTimer)
    restore = only(ctl.handle(CheckpointFinished("a", "w0"), 2.2), Restore)
    assert restore.version == 1
    fwd = only(ctl.handle(ActivationFinished("a", restore.worker), 2.5), Forward)
    # Waiting for the checkpoint is activation time, not admission-queue time.
    assert fwd.activated and fwd.queue_s == 0.0 and fwd.activation_s == pytest.approx(0.45)


def test_failed_checkpoint_keeps_previous_snapshot():
    ctl = make()
    activate(ctl, 1, "a", 1.0)
    ctl.handle(RequestFinished(1), 2.0)
    ctl.handle(CheckpointFinished("a", "w0", ok=False), 2.2)
    assert ctl.actor("a").snapshot_version == 0
    assert ctl.stats.failed_checkpoints == 1
    assert ctl.free_workers == 1


def test_failed_activation_rejects_waiting_requests_with_502():
    ctl = make()
    ctl.handle(RequestArrived(1, "a", 1.0), 1.0)
    cmds = ctl.handle(ActivationFinished("a", "w0", ok=False), 1.5)
    assert cmds == [Reject(1, "a", 502, "activation failed")]
    assert ctl.actor("a").state is ActorState.SUSPENDED and ctl.free_workers == 1


def test_operator_suspend_is_immediate_when_idle_and_deferred_when_busy():
    ctl = make(workers=("w0", "w1"), suspension=Lazy())
    activate(ctl, 1, "a", 1.0)
    cmds = ctl.handle(SuspendRequested("a"), 1.5)
    assert cmds == [AdminResult("a", True, "will suspend when idle")]
    assert only(ctl.handle(RequestFinished(1), 2.0), Checkpoint).actor == "a"
    ctl.handle(CheckpointFinished("a", "w0"), 2.2)
    assert ctl.handle(SuspendRequested("a"), 2.5) == [AdminResult("a", True, "already suspended")]
    activate(ctl, 2, "b", 3.0)
    ctl.handle(RequestFinished(2), 3.5)  # idle, kept warm by Lazy
    cmds = ctl.handle(SuspendRequested("b"), 4.0)
    assert only(cmds, Checkpoint).actor == "b" and only(cmds, AdminResult).ok


def test_operator_resume_activates_without_a_request_or_says_why_not():
    ctl = make(suspension=Lazy())
    cmds = ctl.handle(ResumeRequested("a"), 1.0)
    assert only(cmds, Restore).actor == "a"
    assert only(cmds, AdminResult) == AdminResult("a", True, "resuming on w0")
    ctl.handle(ActivationFinished("a", "w0"), 1.3)
    assert ctl.actor("a").state is ActorState.RUNNING
    assert ctl.handle(ResumeRequested("b"), 2.0) == [AdminResult("b", False, "no free worker")]
    assert ctl.handle(ResumeRequested("zz"), 2.0) == [AdminResult("zz", False, "unknown actor")]


def test_operator_delete_only_removes_suspended_actors():
    ctl = make(suspension=Lazy())
    activate(ctl, 1, "a", 1.0)
    assert not only(ctl.handle(ActorDeleted("a"), 1.5), AdminResult).ok  # it is running
    assert ctl.handle(ActorDeleted("b"), 1.5) == [
        DropActor("b"),
        AdminResult("b", True, "deleted"),
    ]
    assert ctl.actor("b") is None
    assert ctl.handle(RequestArrived(2, "b", 2.0), 2.0)[0].status == 404
    assert ctl.state_counts()[ActorState.SUSPENDED] == 1  # only c


def test_unknown_actor_gets_404():
    assert make().handle(RequestArrived(1, "zz", 0.0), 0.0) == [
        Reject(1, "zz", 404, "unknown actor")
    ]


def test_removing_workers_retires_free_ones_now_and_busy_ones_after_draining():
    ctl = make(workers=("w0", "w1"), suspension=Lazy())
    activate(ctl, 1, "a", 1.0)  # LRU puts a on w0
    assert ctl.handle(WorkerRemoved("w1"), 2.0) == [RetireWorker("w1")]
    assert ctl.handle(WorkerRemoved("w0"), 2.0) == []  # a is busy: drain first
    ckpt = only(ctl.handle(RequestFinished(1), 3.0), Checkpoint)
    assert ctl.handle(CheckpointFinished("a", ckpt.worker), 3.1) == [RetireWorker("w0")]
    assert ctl.workers() == []


def test_snapshot_locality_prefers_node_caching_the_snapshot():
    ctl = make(
        placement=SnapshotLocalityPlacement(),
        workers=("w0", "w1", "w2"),
        nodes=("n0", "n1", "n2"),
    )
    activate(ctl, 1, "a", 1.0)
    ckpt = only(ctl.handle(RequestFinished(1), 2.0), Checkpoint)
    ctl.handle(CheckpointFinished("a", ckpt.worker), 2.1)
    ctl.handle(SnapshotCached("a", "n2", 1), 2.1)
    restore, _ = activate(ctl, 2, "a", 3.0)
    assert restore.node == "n2"
    # A cache entry for an old version does not count.
    ckpt = only(ctl.handle(RequestFinished(2), 4.0), Checkpoint)
    ctl.handle(CheckpointFinished("a", ckpt.worker), 4.1)
    assert ctl.nodes_holding(ctl.actor("a")) == []


def test_lru_placement_takes_the_worker_free_the_longest():
    ctl = make(workers=("w0", "w1", "w2"))
    restore, _ = activate(ctl, 1, "a", 1.0)
    assert restore.worker == "w0"
    ctl.handle(RequestFinished(1), 2.0)
    ctl.handle(CheckpointFinished("a", "w0"), 2.1)  # w0 is now the most recently used
    assert activate(ctl, 2, "b", 3.0)[0].worker == "w1"
    assert activate(ctl, 3, "c", 4.0)[0].worker == "w2"


def test_random_placement_is_seeded_and_picks_only_free_workers():
    def placements(seed):
        ctl = make(
            placement=RandomPlacement(seed),
            workers=[f"w{i}" for i in range(8)],
            actors=[f"a{i}" for i in range(8)],
        )
        return [activate(ctl, i, f"a{i}", float(i))[0].worker for i in range(8)]

    first = placements(7)
    assert first == placements(7)
    assert sorted(first) == sorted(f"w{i}" for i in range(8))  # never the same worker twice
    assert any(placements(s) != first for s in range(1, 5))


def test_occupied_worker_seconds_integrates_occupancy():
    ctl = make(workers=("w0", "w1"), suspension=Lazy())
    activate(ctl, 1, "a", 1.0)  # occupied from t=1
    activate(ctl, 2, "b", 3.0)  # and a second from t=3
    assert ctl.occupied_worker_seconds(5.0) == pytest.approx(4.0 + 2.0)


def test_protocol_errors_and_time_going_backwards_raise():
    ctl = make()
    ctl.handle(RequestArrived(1, "a", 1.0), 1.0)
    with pytest.raises(ProtocolError):
        ctl.handle(ActivationFinished("a", "w9"), 1.5)
    with pytest.raises(ProtocolError):
        ctl.handle(RequestFinished(1), 1.5)  # never forwarded
    with pytest.raises(ValueError, match="backwards"):
        ctl.handle(RequestFinished(1), 0.5)
    with pytest.raises(ProtocolError):
        ctl.handle(RequestArrived(1, "a", 1.6), 1.6)  # same request id twice


def test_lifecycle_rejects_illegal_transitions():
    check_transition("a", ActorState.SUSPENDED, ActorState.RESUMING)
    for old, new in [
        (ActorState.SUSPENDED, ActorState.RUNNING),
        (ActorState.RUNNING, ActorState.RESUMING),
        (ActorState.SUSPENDING, ActorState.RUNNING),
        (ActorState.RESUMING, ActorState.SUSPENDING),
    ]:
        with pytest.raises(IllegalTransitionError, match="illegal transition"):
            check_transition("a", old, new)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: IdleTimeout(-1), "ttl_s"),
        (lambda: QueueWithDeadline(0), "timeout_s"),
        (lambda: EvictThenWait(float("inf")), "timeout_s"),
        (lambda: Controller(LruPlacement(), Lazy(), FailFast(), router_timeout_s=0), "router"),
    ],
)
def test_bad_policy_parameters_name_the_field(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()
