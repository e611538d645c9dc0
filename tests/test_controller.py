"""Unit tests of the pure controller: one scenario per behaviour, events in, commands out."""

from __future__ import annotations

import pytest
from controller_kit import MB, activate, make, only

from control.controller import Controller, ProtocolError, RecoverySettings
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
    DeadlineSweep,
    DropActor,
    Forward,
    IdleTimer,
    Observed,
    ObservedSandbox,
    ObservedSnapshot,
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
    SetTimer,
    SnapshotCached,
    StateLost,
    StopSandbox,
    SuspendRequested,
    TimerFired,
    WorkerAdded,
    WorkerLost,
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


def test_first_request_cold_starts_then_forwards():
    ctl = make()
    restore, fwd = activate(ctl, 1, "a", 1.0)
    assert restore == Restore("a", "w0", "n0", 0, 10 * MB, op=restore.op, generation=1)
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
    assert cmds == [Forward(2, "a", "w0", False, 0.0, 0.0, generation=1)]


def test_after_each_request_checkpoints_and_restores_latest_snapshot():
    ctl = make()
    activate(ctl, 1, "a", 1.0)
    ckpt = only(ctl.handle(RequestFinished(1), 2.0), Checkpoint)
    assert ckpt == Checkpoint("a", "w0", "n0", 1, 10 * MB, op=ckpt.op, generation=1)
    assert ctl.actor("a").state is ActorState.SUSPENDING
    ctl.handle(CheckpointFinished(ckpt.op), 2.2)
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
    fwds = ctl.handle(ActivationFinished(only(cmds, Restore).op), 1.4)
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
    restore = only(ctl.handle(CheckpointFinished(ckpt.op), 2.2), Restore)
    assert restore.actor == "b"
    fwd = only(ctl.handle(ActivationFinished(restore.op), 2.5), Forward)
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
    assert only(ctl.handle(ActivationFinished(restore.op), 7.0), Checkpoint)


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
    restore = only(ctl.handle(CheckpointFinished(ckpt.op), 3.2), Restore)
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
    ckpt = only(ctl.handle(RequestFinished(1), 2.0), Checkpoint)
    assert only(ctl.handle(RequestArrived(2, "a", 2.05), 2.05), SetTimer)
    restore = only(ctl.handle(CheckpointFinished(ckpt.op), 2.2), Restore)
    assert restore.version == 1
    fwd = only(ctl.handle(ActivationFinished(restore.op), 2.5), Forward)
    # Waiting for the checkpoint is activation time, not admission-queue time.
    assert fwd.activated and fwd.queue_s == 0.0 and fwd.activation_s == pytest.approx(0.45)


def test_failed_checkpoint_keeps_previous_snapshot_and_reports_the_loss():
    ctl = make()
    activate(ctl, 1, "a", 1.0)
    ckpt = only(ctl.handle(RequestFinished(1), 2.0), Checkpoint)
    cmds = ctl.handle(CheckpointFinished(ckpt.op, CheckpointOutcome.LOST, "runsc: boom"), 2.2)
    assert cmds == [StateLost("a", 1, 0, "runsc: boom")]
    assert ctl.actor("a").snapshot_version == 0
    assert ctl.stats.failed_checkpoints == ctl.stats.lost_states == 1
    assert ctl.free_workers == 1


def test_failed_activation_is_retried_with_backoff_then_rejects_with_502():
    ctl = make(timeout=30.0)
    restore = only(ctl.handle(RequestArrived(1, "a", 1.0), 1.0), Restore)
    failed = ActivationOutcome.FAILED
    retry = only(ctl.handle(ActivationFinished(restore.op, failed, "x"), 1.5), SetTimer)
    assert retry.timer == RetryActivation("a", 1) and retry.at == pytest.approx(1.75)
    assert ctl.actor("a").state is ActorState.SUSPENDED and ctl.free_workers == 1
    again = only(ctl.handle(TimerFired(retry.timer), 1.75), Restore)
    assert again.generation == restore.generation + 1  # a new activation, a new fence
    retry = only(ctl.handle(ActivationFinished(again.op, failed, "x"), 2.0), SetTimer)
    assert retry.at == pytest.approx(2.5)  # backoff doubled
    third = only(ctl.handle(TimerFired(retry.timer), 2.5), Restore)
    cmds = ctl.handle(ActivationFinished(third.op, failed, "x"), 2.7)
    assert cmds == [Reject(1, "a", 502, "activation failed")]  # 3 attempts: give up
    assert ctl.stats.activation_retries == 2 and ctl.stats.failed_activations == 3
    assert ctl.actor("a").failure == "activation failed: x"


def test_operator_suspend_is_immediate_when_idle_and_deferred_when_busy():
    ctl = make(workers=("w0", "w1"), suspension=Lazy())
    activate(ctl, 1, "a", 1.0)
    cmds = ctl.handle(SuspendRequested("a"), 1.5)
    assert cmds == [AdminResult("a", True, "will suspend when idle")]
    ckpt = only(ctl.handle(RequestFinished(1), 2.0), Checkpoint)
    assert ckpt.actor == "a"
    ctl.handle(CheckpointFinished(ckpt.op), 2.2)
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
    ctl.handle(ActivationFinished(only(cmds, Restore).op), 1.3)
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
    assert ctl.handle(CheckpointFinished(ckpt.op), 3.1) == [RetireWorker("w0")]
    assert ctl.workers() == []


def test_snapshot_locality_prefers_node_caching_the_snapshot():
    ctl = make(
        placement=SnapshotLocalityPlacement(),
        workers=("w0", "w1", "w2"),
        nodes=("n0", "n1", "n2"),
    )
    activate(ctl, 1, "a", 1.0)
    ckpt = only(ctl.handle(RequestFinished(1), 2.0), Checkpoint)
    ctl.handle(CheckpointFinished(ckpt.op), 2.1)
    ctl.handle(SnapshotCached("a", "n2", 1), 2.1)
    restore, _ = activate(ctl, 2, "a", 3.0)
    assert restore.node == "n2"
    # A cache entry for an old version does not count.
    ckpt = only(ctl.handle(RequestFinished(2), 4.0), Checkpoint)
    ctl.handle(CheckpointFinished(ckpt.op), 4.1)
    assert ctl.nodes_holding(ctl.actor("a")) == []


def test_lru_placement_takes_the_worker_free_the_longest():
    ctl = make(workers=("w0", "w1", "w2"))
    restore, _ = activate(ctl, 1, "a", 1.0)
    assert restore.worker == "w0"
    ckpt = only(ctl.handle(RequestFinished(1), 2.0), Checkpoint)
    ctl.handle(CheckpointFinished(ckpt.op), 2.1)  # w0 is now the most recently used
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
    with pytest.raises(ValueError, match="backwards"):
        ctl.handle(RequestFinished(1), 0.5)
    with pytest.raises(ProtocolError):
        ctl.handle(RequestArrived(1, "a", 1.6), 1.6)  # same request id twice


def test_lifecycle_rejects_illegal_transitions():
    check_transition("a", ActorState.SUSPENDED, ActorState.RESUMING)
    for old, new in [
        (ActorState.SUSPENDED, ActorState.RUNNING),
        (ActorState.RUNNING, ActorState.RESUMING),
        (ActorState.RESUMING, ActorState.SUSPENDING),
        (ActorState.FAILED, ActorState.RESUMING),
        (ActorState.RUNNING, ActorState.FAILED),
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


# ---------------------------------------------------------------- faults and recovery


def fire_sweep(ctl, cmds, now):
    """Fire the DeadlineSweep timer among ``cmds`` at ``now``; return what it produced."""
    sweep = only(cmds, SetTimer)
    assert isinstance(sweep.timer, DeadlineSweep)
    return ctl.handle(TimerFired(sweep.timer), now)


def test_late_duplicate_and_unknown_completions_are_ignored_and_counted():
    ctl = make(workers=("w0", "w1"), suspension=Lazy())
    restore, _ = activate(ctl, 1, "a", 1.0)
    assert ctl.handle(ActivationFinished(restore.op), 1.5) == []  # duplicate
    assert ctl.handle(ActivationFinished(999), 1.5) == []  # unknown
    assert ctl.handle(CheckpointFinished(restore.op), 1.5) == []  # wrong kind
    assert ctl.handle(SandboxStopped(restore.op), 1.5) == []
    ctl.handle(RequestFinished(1), 2.0)
    assert ctl.handle(RequestFinished(1), 2.1) == []  # twice
    assert ctl.handle(RequestFinished(77), 2.1) == []  # never arrived
    assert ctl.stats.stale_completions == 6
    assert ctl.actor("a").state is ActorState.RUNNING and ctl.actor("a").inflight == 0


def test_each_activation_has_a_new_generation_that_its_forwards_and_checkpoint_carry():
    ctl = make(actors=())
    ctl.handle(ActorCreated("a", "counter", MB, snapshot_version=3, generation=41), 0.0)
    restore, fwd = activate(ctl, 1, "a", 1.0)
    assert restore.generation == fwd.generation == 42
    ckpt = only(ctl.handle(RequestFinished(1), 2.0), Checkpoint)
    assert (ckpt.generation, ckpt.version) == (42, 4)
    ctl.handle(CheckpointFinished(ckpt.op, snapshot_bytes=5 * MB), 2.1)
    assert ctl.actor("a").snapshot_bytes == 5 * MB  # the measured size replaces the estimate
    restore, fwd = activate(ctl, 2, "a", 3.0)
    assert restore.generation == fwd.generation == 43 and restore.version == 4


def test_an_overdue_activation_is_stopped_its_worker_quarantined_and_retried_elsewhere():
    recovery = RecoverySettings(activation_deadline_s=10.0)
    ctl = Controller(LruPlacement(), Lazy(), QueueWithDeadline(20.0), router_timeout_s=30.0,
                     recovery=recovery)  # fmt: skip
    for w in ("w0", "w1"):
        ctl.handle(WorkerAdded(w, "n0"), 0.0)
    ctl.handle(ActorCreated("a", "counter", MB), 0.0)
    cmds = ctl.handle(RequestArrived(1, "a", 1.0), 1.0)
    first = only(cmds, Restore)
    deadline = [c for c in cmds if isinstance(c, SetTimer) and isinstance(c.timer, DeadlineSweep)]
    assert deadline[0].at == 11.0
    out = ctl.handle(TimerFired(deadline[0].timer), 11.0)
    stop = only(out, StopSandbox)
    assert (stop.actor, stop.worker, stop.generation) == ("a", first.worker, first.generation)
    retry = only(out, SetTimer)
    assert retry.timer == RetryActivation("a", 1)
    assert ctl.worker(first.worker).quarantined and ctl.free_workers == 1
    second = only(ctl.handle(TimerFired(retry.timer), retry.at), Restore)
    assert second.worker != first.worker and second.generation == first.generation + 1
    # The abandoned restore completes late: ignored; the retried one serves the request.
    assert ctl.handle(ActivationFinished(first.op), 12.0) == []
    assert ctl.stats.stale_completions == 1
    assert only(ctl.handle(ActivationFinished(second.op), 12.1), Forward).generation == 2
    # The driver confirms the stuck sandbox is gone: its worker is back in the pool.
    assert ctl.handle(SandboxStopped(stop.op), 12.2) == []
    assert ctl.worker(first.worker).quarantined is None and ctl.free_workers == 1
    assert ctl.stats.activation_deadlines == 1 and ctl.stats.quarantines == 1


def test_an_overdue_checkpoint_refuses_requests_and_keeps_its_worker_until_it_ends():
    recovery = RecoverySettings(checkpoint_deadline_s=5.0)
    ctl = Controller(LruPlacement(), AfterEachRequest(), QueueWithDeadline(20.0),
                     router_timeout_s=30.0, recovery=recovery)  # fmt: skip
    ctl.handle(WorkerAdded("w0", "n0"), 0.0)
    ctl.handle(ActorCreated("a", "counter", MB), 0.0)
    restore = only(ctl.handle(RequestArrived(1, "a", 1.0), 1.0), Restore)
    ctl.handle(ActivationFinished(restore.op), 1.2)
    cmds = ctl.handle(RequestFinished(1), 2.0)
    ckpt = only(cmds, Checkpoint)
    sweep = only(cmds, SetTimer)  # the checkpoint's deadline is now the earliest one
    assert sweep.timer == DeadlineSweep(7.0)
    held = ctl.handle(RequestArrived(2, "a", 2.5), 2.5)  # waits for the checkpoint
    assert not any(isinstance(c, Reject) for c in held)
    out = ctl.handle(TimerFired(sweep.timer), 7.0)
    assert out == [Reject(2, "a", 503, "actor unavailable")]
    assert ctl.actor("a").overdue and ctl.worker("w0").quarantined
    assert only(ctl.handle(RequestArrived(3, "a", 8.0), 8.0), Reject).status == 503
    # The checkpoint was only slow: its completion still counts, and frees the worker.
    ctl.handle(CheckpointFinished(ckpt.op), 9.0)
    assert ctl.actor("a").snapshot_version == 1 and not ctl.actor("a").overdue
    assert ctl.worker("w0").quarantined is None and ctl.free_workers == 1


def test_a_declined_checkpoint_keeps_the_actor_running_and_retries_after_a_backoff():
    ctl = make(workers=("w0",), suspension=IdleTimeout(1.0))
    activate(ctl, 1, "a", 1.0)
    timer = only(ctl.handle(RequestFinished(1), 2.0), SetTimer)
    ckpt = only(ctl.handle(TimerFired(timer.timer), 3.0), Checkpoint)
    # A request arrives meanwhile: it waits for the checkpoint.
    assert not any(isinstance(c, Reject) for c in ctl.handle(RequestArrived(2, "a", 3.05), 3.05))
    declined = CheckpointOutcome.DECLINED
    out = ctl.handle(CheckpointFinished(ckpt.op, declined, "connections still open"), 3.1)
    fwd = only(out, Forward)  # the actor never stopped: serve the held request at once
    assert fwd.request == 2 and fwd.generation == ckpt.generation
    assert ctl.actor("a").state is ActorState.RUNNING
    retry = only(ctl.handle(RequestFinished(2), 3.2), SetTimer)
    assert retry.at == pytest.approx(4.1)  # not before checkpoint_retry_s (1 s) has passed
    policy_timer = only(ctl.handle(TimerFired(retry.timer), 4.1), SetTimer)
    ckpt2 = only(ctl.handle(TimerFired(policy_timer.timer), policy_timer.at), Checkpoint)
    out = ctl.handle(CheckpointFinished(ckpt2.op, declined, "again"), 5.2)
    assert only(out, SetTimer).at == pytest.approx(7.2)  # backoff doubled
    assert ctl.stats.declined_checkpoints == 2 and ctl.actor("a").declines == 2


def test_a_declined_actor_is_not_evicted_again_at_once():
    ctl = make(workers=("w0",), suspension=Lazy(), admission=EvictThenWait(10.0))
    activate(ctl, 1, "a", 1.0)
    ctl.handle(RequestFinished(1), 1.5)
    ckpt = only(ctl.handle(RequestArrived(2, "b", 2.0), 2.0), Checkpoint)
    out = ctl.handle(CheckpointFinished(ckpt.op, CheckpointOutcome.DECLINED, "busy"), 2.1)
    assert not any(isinstance(c, Checkpoint) for c in out)  # no tight decline loop
    retry = only(out, SetTimer)
    assert only(ctl.handle(TimerFired(retry.timer), retry.at), Checkpoint).actor == "a"


def test_a_forward_that_never_reports_back_is_abandoned_at_its_deadline():
    recovery = RecoverySettings(forward_deadline_s=60.0)
    ctl = Controller(LruPlacement(), AfterEachRequest(), FailFast(), router_timeout_s=5.0,
                     recovery=recovery)  # fmt: skip
    ctl.handle(WorkerAdded("w0", "n0"), 0.0)
    ctl.handle(ActorCreated("a", "counter", MB), 0.0)
    restore = only(ctl.handle(RequestArrived(1, "a", 1.0), 1.0), Restore)
    fwd_cmds = ctl.handle(ActivationFinished(restore.op), 1.3)
    assert only(fwd_cmds, Forward).request == 1
    out = ctl.handle(TimerFired(DeadlineSweep(31.0)), 31.0)  # the restore's: stale now
    out += ctl.handle(TimerFired(DeadlineSweep(61.3)), 61.3)
    assert only(out, Abandon) == Abandon(1, "a", "w0")
    assert only(out, Checkpoint).actor == "a"  # it is idle now
    assert ctl.handle(RequestFinished(1), 62.0) == []  # the late answer is stale
    assert ctl.stats.abandoned_requests == 1 and ctl.open_requests == 0


def test_an_unusable_snapshot_fails_the_actor_until_an_operator_recovers_it():
    ctl = make(actors=("b",))
    ctl.handle(ActorCreated("a", "counter", MB, snapshot_version=5), 0.0)
    restore = only(ctl.handle(RequestArrived(1, "a", 1.0), 1.0), Restore)
    why = "snapshot v5 of a is corrupt (checkpoint.img: sha256 mismatch)"
    out = ctl.handle(ActivationFinished(restore.op, ActivationOutcome.UNUSABLE, why), 1.2)
    assert out == [Reject(1, "a", 503, "actor unavailable")]
    actor = ctl.actor("a")
    assert actor.state is ActorState.FAILED and actor.failure == why and ctl.free_workers == 1
    assert only(ctl.handle(RequestArrived(2, "a", 2.0), 2.0), Reject).status == 503
    assert not only(ctl.handle(ResumeRequested("a"), 2.0), AdminResult).ok
    result = only(ctl.handle(RecoverRequested("a", 4), 3.0), AdminResult)
    assert result.ok and "v4" in result.detail
    assert only(ctl.handle(RequestArrived(3, "a", 3.0), 3.0), Restore).version == 4
    assert ctl.handle(RecoverRequested("b", 1), 3.0) == [
        AdminResult("b", False, "actor is suspended, not failed")
    ]


def test_observed_state_declares_a_dead_sandbox_lost_and_stops_strays():
    ctl = make(workers=("w0", "w1", "w2"), suspension=Lazy())
    activate(ctl, 1, "a", 1.0)  # a on w0, generation 1
    ctl.handle(RequestFinished(1), 1.5)
    seen = Observed(
        taken_at=2.0,
        sandboxes=(ObservedSandbox("b", "w1", 7),),  # a is gone; b was never asked for
        snapshots=(),
    )
    out = ctl.handle(seen, 2.1)
    assert only(out, StateLost) == StateLost("a", 1, 0, "its sandbox is gone")
    stops = {(s.actor, s.worker, s.generation) for s in out if isinstance(s, StopSandbox)}
    assert stops == {("a", "w0", 1), ("b", "w1", 7)}
    assert sum(isinstance(c, Correction) for c in out) == 2 == ctl.stats.corrections
    assert ctl.actor("a").state is ActorState.SUSPENDED
    assert ctl.quarantined_workers == 2 and ctl.free_workers == 1
    # A second report of the same stray does not stop it twice.
    assert not any(isinstance(c, StopSandbox) for c in ctl.handle(seen, 2.2))
    for stop in (s for s in out if isinstance(s, StopSandbox)):
        ctl.handle(SandboxStopped(stop.op), 2.5)
    assert ctl.quarantined_workers == 0 and ctl.free_workers == 3


def test_observations_older_than_a_change_are_not_acted_on():
    ctl = make(workers=("w0",), suspension=Lazy())
    activate(ctl, 1, "a", 1.0)  # running since 1.3
    assert ctl.handle(Observed(1.0, (), ()), 1.5) == []  # taken before it ran
    assert ctl.actor("a").state is ActorState.RUNNING


def test_observed_snapshots_are_adopted_or_fail_an_actor_whose_snapshot_vanished():
    ctl = make(actors=())
    ctl.handle(ActorCreated("a", "counter", MB, snapshot_version=2), 0.0)
    ctl.handle(ActorCreated("b", "counter", MB, snapshot_version=2), 0.0)
    out = ctl.handle(Observed(1.0, (), (ObservedSnapshot("a", 3), ObservedSnapshot("b", 1))), 1.0)
    assert ctl.actor("a").snapshot_version == 3  # a newer one (e.g. committed by a crash)
    b = ctl.actor("b")  # never silently replaced by an older one
    assert b.state is ActorState.FAILED and "v2 is missing" in b.failure
    assert len([c for c in out if isinstance(c, Correction)]) == 2


def test_observed_state_settles_an_overdue_checkpoint_whose_completion_was_dropped():
    for found, committed in ((1, True), (0, False)):
        recovery = RecoverySettings(checkpoint_deadline_s=5.0)
        ctl = Controller(LruPlacement(), AfterEachRequest(), FailFast(), router_timeout_s=5.0,
                         recovery=recovery)  # fmt: skip
        ctl.handle(WorkerAdded("w0", "n0"), 0.0)
        ctl.handle(ActorCreated("a", "counter", MB), 0.0)
        restore = only(ctl.handle(RequestArrived(1, "a", 1.0), 1.0), Restore)
        ctl.handle(ActivationFinished(restore.op), 1.2)
        ckpt = only(ctl.handle(RequestFinished(1), 2.0), Checkpoint)
        ctl.handle(TimerFired(DeadlineSweep(7.0)), 7.0)
        assert ctl.actor("a").overdue
        snapshots = (ObservedSnapshot("a", found),) if found else ()
        out = ctl.handle(Observed(8.0, (), snapshots), 8.0)
        assert ctl.actor("a").state is ActorState.SUSPENDED
        assert ctl.actor("a").snapshot_version == found
        assert any(isinstance(c, StateLost) for c in out) is not committed
        assert ctl.free_workers == 1
        assert ctl.handle(CheckpointFinished(ckpt.op), 9.0) == []  # too late now


def test_a_lost_worker_takes_its_actor_back_to_its_snapshot_and_leaves_the_pool():
    ctl = make(workers=("w0", "w1"), suspension=Lazy(), admission=QueueWithDeadline(10.0))
    activate(ctl, 1, "a", 1.0)  # a on w0 with a request in flight
    restore_b = only(ctl.handle(RequestArrived(2, "b", 1.5), 1.5), Restore)  # b resuming on w1
    out = ctl.handle(WorkerLost("w0", "node died"), 2.0)
    assert only(out, StateLost).actor == "a" and RetireWorker("w0") in out
    assert ctl.worker("w0") is None and ctl.actor("a").state is ActorState.SUSPENDED
    assert ctl.handle(RequestFinished(1), 2.1) == []  # its activation is gone
    out = ctl.handle(WorkerLost("w1", "node died"), 2.2)
    retry = only(out, SetTimer)
    assert retry.timer == RetryActivation("b", 1)
    assert ctl.handle(ActivationFinished(restore_b.op), 2.3) == []  # stale
    ctl.handle(WorkerAdded("w2", "n1"), 2.4)
    assert only(ctl.handle(TimerFired(retry.timer), retry.at), Restore).worker == "w2"
    assert ctl.stats.workers_lost == 2 and ctl.stats.stale_completions == 1


def test_an_operators_suspend_survives_a_declined_checkpoint():
    ctl = make(workers=("w0",), suspension=Lazy())
    activate(ctl, 1, "a", 1.0)
    ctl.handle(RequestFinished(1), 1.5)  # idle; Lazy would keep it warm forever
    ckpt = only(ctl.handle(SuspendRequested("a"), 2.0), Checkpoint)
    out = ctl.handle(CheckpointFinished(ckpt.op, CheckpointOutcome.DECLINED, "frozen"), 2.1)
    retry = only(out, SetTimer)
    assert only(ctl.handle(TimerFired(retry.timer), retry.at), Checkpoint).actor == "a"
