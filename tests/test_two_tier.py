"""Two-tier locality through the pure controller: pause (the snapshot stays on its node)
or suspend (uploaded), stranded actors, delay scheduling and the fall-back upload."""

from __future__ import annotations

import pytest
from controller_kit import activate, make, only

from control.messages import (
    ActorDeleted,
    AdminResult,
    Checkpoint,
    CheckpointFinished,
    DeadlineSweep,
    RequestArrived,
    RequestFinished,
    Restore,
    SetTimer,
    StrandedTimer,
    SuspendRequested,
    Tier,
    TimerFired,
    Upload,
    UploadFinished,
    UploadTimer,
    WorkerRemoved,
)
from control.model import ActorState
from control.policies import AfterEachRequest, IdleTimeout, PauseFirst
from control.recovery import RecoverySettings
from experiments.runs.build import build
from experiments.runs.runner import simulate


def pause(**settings):
    return PauseFirst(**({"wait_s": 0.5, "upload_after_s": 60.0} | settings))


def two_nodes(locality, suspension=None, actors="abcd"):
    """Workers w0 on n0 and w1 on n1."""
    return make(
        workers=("w0", "w1"), nodes=("n0", "n1"), actors=actors, locality=locality,
        suspension=suspension or AfterEachRequest(),
    )  # fmt: skip


def occupy_n0(ctl, now):
    """With ``a`` paused on n0: b and c take both workers, b (on n1) is checkpointed, c
    keeps w0 busy with request 11 (returned)."""
    activate(ctl, 10, "b", now)
    activate(ctl, 11, "c", now + 0.4)
    checkpoint = only(ctl.handle(RequestFinished(10), now + 0.9), Checkpoint)
    ctl.handle(CheckpointFinished(checkpoint.op), now + 1.0)
    assert ctl.actor("c").worker == "w0" and ctl.free_workers == 1
    return 11


def serve_and_pause(ctl, request, actor, now):
    """A request for the suspended ``actor``: activate, answer, checkpoint (paused)."""
    restore, _ = activate(ctl, request, actor, now)
    checkpoint = only(ctl.handle(RequestFinished(request), now + 1.0), Checkpoint)
    cmds = ctl.handle(CheckpointFinished(checkpoint.op), now + 1.5)
    return restore, checkpoint, cmds


def test_a_paused_checkpoint_keeps_its_snapshot_on_its_node_and_plans_the_upload():
    ctl = two_nodes(pause())
    restore, checkpoint, cmds = serve_and_pause(ctl, 1, "a", 0.0)
    assert checkpoint.tier is Tier.LOCAL and checkpoint.node == restore.node == "n0"
    actor = ctl.actor("a")
    assert actor.paused_on == "n0" and actor.snapshot_version == 1
    timer = only(cmds, SetTimer)
    assert timer.timer == UploadTimer("a", 1) and timer.at == 61.5
    assert ctl.stats.pauses == 1


def test_without_a_locality_policy_every_checkpoint_uploads():
    ctl = two_nodes(None)
    _, checkpoint, _ = serve_and_pause(ctl, 1, "a", 0.0)
    assert checkpoint.tier is Tier.REMOTE and ctl.actor("a").paused_on is None


def test_a_paused_actor_is_restored_only_on_its_node_and_waits_there_while_another_is_free():
    ctl = two_nodes(pause())
    serve_and_pause(ctl, 1, "a", 0.0)  # a paused on n0
    busy = occupy_n0(ctl, 1.6)
    cmds = ctl.handle(RequestArrived(3, "a", 3.0), 3.0)
    assert not [c for c in cmds if isinstance(c, Restore)]  # w1 (on n1) is free but useless
    assert ctl.stranded() == {"n0": ["a"]}
    assert ctl.free_workers == 1 and ctl.stats.strandings == 1
    timers = [c for c in cmds if isinstance(c, SetTimer)]
    assert SetTimer(StrandedTimer("a", 1), 3.5) in timers
    # c's request ends, c is checkpointed; its worker goes to a (first in line on n0).
    checkpoint = only(ctl.handle(RequestFinished(busy), 4.0), Checkpoint)
    cmds = ctl.handle(CheckpointFinished(checkpoint.op), 4.2)
    restore = only(cmds, Restore)
    assert (restore.actor, restore.worker, restore.version) == ("a", "w0", 1)
    assert ctl.stranded() == {} and ctl.stats.stranded_local == 1
    # The delay timer is stale now: no upload.
    assert ctl.handle(TimerFired(StrandedTimer("a", 1)), 4.5) == []


def test_a_stranded_actor_falls_back_to_an_upload_and_is_restored_anywhere():
    ctl = two_nodes(pause())
    serve_and_pause(ctl, 1, "a", 0.0)
    occupy_n0(ctl, 1.6)
    ctl.handle(RequestArrived(3, "a", 3.0), 3.0)
    upload = only(ctl.handle(TimerFired(StrandedTimer("a", 1)), 3.5), Upload)
    assert (upload.actor, upload.node, upload.version) == ("a", "n0", 1)
    restore = only(ctl.handle(UploadFinished(upload.op), 4.0), Restore)
    assert (restore.actor, restore.worker, restore.node) == ("a", "w1", "n1")
    assert ctl.actor("a").paused_on is None and ctl.stats.uploads == 1


def test_stranding_evicts_an_idle_actor_on_that_node_for_it():
    ctl = two_nodes(pause(), suspension=IdleTimeout(ttl_s=100.0))
    activate(ctl, 1, "a", 0.0)  # a on w0 (n0)
    activate(ctl, 9, "d", 0.35)  # d keeps w1 (n1) busy
    ctl.handle(RequestFinished(1), 0.7)  # a idle for 100 s
    # An operator suspends a (paused on n0), then b takes w0 and idles.
    checkpoint = only(ctl.handle(SuspendRequested("a"), 1.0), Checkpoint)
    ctl.handle(CheckpointFinished(checkpoint.op), 1.2)
    activate(ctl, 2, "b", 2.0)
    assert ctl.actor("b").worker == "w0"  # LRU gave b the worker a left
    ctl.handle(RequestFinished(2), 2.5)  # b idle on n0
    cmds = ctl.handle(RequestArrived(3, "a", 3.0), 3.0)
    evict = only(cmds, Checkpoint)
    assert evict.actor == "b" and ctl.stats.evictions == 1
    restore = only(ctl.handle(CheckpointFinished(evict.op), 3.4), Restore)
    assert (restore.actor, restore.worker) == ("a", "w0")


def test_requests_arriving_during_a_pause_resume_the_actor_in_place():
    ctl = two_nodes(pause())
    activate(ctl, 1, "a", 0.0)
    checkpoint = only(ctl.handle(RequestFinished(1), 1.0), Checkpoint)
    ctl.handle(RequestArrived(2, "a", 1.1), 1.1)  # waits for the checkpoint
    restore = only(ctl.handle(CheckpointFinished(checkpoint.op), 1.5), Restore)
    assert (restore.worker, restore.version) == (checkpoint.worker, 1)
    assert ctl.stats.strandings == 0


def test_an_idle_paused_snapshot_is_uploaded_later_but_not_once_the_actor_runs_again():
    ctl = two_nodes(pause())
    serve_and_pause(ctl, 1, "a", 0.0)
    upload = only(ctl.handle(TimerFired(UploadTimer("a", 1)), 61.5), Upload)
    ctl.handle(UploadFinished(upload.op), 62.0)
    assert ctl.actor("a").paused_on is None
    serve_and_pause(ctl, 2, "b", 70.0)
    activate(ctl, 3, "b", 80.0)  # b runs again: its upload timer is stale
    assert ctl.handle(TimerFired(UploadTimer("b", 1)), 131.5) == []


def test_a_failed_or_overdue_upload_is_retried_and_a_late_answer_ignored():
    ctl = two_nodes(pause())
    ctl.recovery = RecoverySettings(checkpoint_deadline_s=10.0)
    serve_and_pause(ctl, 1, "a", 0.0)
    occupy_n0(ctl, 1.6)
    ctl.handle(RequestArrived(3, "a", 3.0), 3.0)
    upload = only(ctl.handle(TimerFired(StrandedTimer("a", 1)), 3.5), Upload)
    cmds = ctl.handle(UploadFinished(upload.op, ok=False, reason="link down"), 3.6)
    retry = only(cmds, SetTimer)
    assert retry.timer == StrandedTimer("a", 1) and retry.at == pytest.approx(4.1)
    assert ctl.stats.failed_uploads == 1 and "link down" in ctl.actor("a").failure
    assert ctl.actor("a").paused_on == "n0"
    # Deleting it while an upload runs is refused.
    second = only(ctl.handle(TimerFired(StrandedTimer("a", 1)), 4.1), Upload)
    ctl.handle(RequestArrived(4, "d", 4.2), 4.2)  # d takes w1
    assert only(ctl.handle(ActorDeleted("a"), 4.3), AdminResult).ok is False
    stale = ctl.stats.stale_completions
    ctl.handle(UploadFinished(second.op), 4.5)
    assert ctl.actor("a").paused_on is None and ctl.stats.stale_completions == stale


def test_an_upload_past_its_deadline_is_given_up_and_its_late_answer_counted_stale():
    ctl = two_nodes(pause())
    ctl.recovery = RecoverySettings(checkpoint_deadline_s=10.0)
    serve_and_pause(ctl, 1, "a", 0.0)
    ctl.handle(TimerFired(DeadlineSweep(11.0)), 11.0)  # the checkpoint's: nothing due
    cmds = ctl.handle(TimerFired(UploadTimer("a", 1)), 61.5)
    upload = only(cmds, Upload)
    sweep = [c for c in cmds if isinstance(c, SetTimer) and isinstance(c.timer, DeadlineSweep)]
    ctl.handle(TimerFired(sweep[0].timer), sweep[0].at)
    assert ctl.stats.failed_uploads == 1 and ctl.actor("a").upload_op is None
    stale = ctl.stats.stale_completions
    ctl.handle(UploadFinished(upload.op), 80.0)
    assert ctl.stats.stale_completions == stale + 1
    assert ctl.actor("a").paused_on == "n0"  # not trusted: it may be restored on n0 only


def test_a_draining_worker_uploads_instead_of_pausing():
    ctl = two_nodes(pause(), suspension=IdleTimeout(ttl_s=100.0))
    activate(ctl, 1, "a", 0.0)
    ctl.handle(RequestFinished(1), 0.5)
    checkpoint = only(ctl.handle(WorkerRemoved("w0"), 1.0), Checkpoint)
    assert checkpoint.tier is Tier.REMOTE


def test_pause_adaptive_pauses_only_actors_whose_idle_times_are_short():
    policy = PauseFirst(pause_below_s=10.0, alpha=0.5)
    ctl = two_nodes(policy)
    _, first, _ = serve_and_pause(ctl, 1, "a", 0.0)
    assert first.tier is Tier.REMOTE  # nothing learned yet
    _, second, _ = serve_and_pause(ctl, 2, "a", 5.0)  # back after 4 s idle
    assert second.tier is Tier.LOCAL
    _, third, _ = serve_and_pause(ctl, 3, "a", 100.0)  # then after 94 s: mean 49
    assert third.tier is Tier.REMOTE
    assert ctl.actor("a").state is ActorState.SUSPENDED and ctl.actor("a").paused_on is None


@pytest.mark.parametrize(
    "settings",
    [{"wait_s": -1}, {"upload_after_s": 0}, {"pause_below_s": float("nan")}, {"alpha": 1.5},
     {"wait_s": True}],
)  # fmt: skip
def test_pause_first_refuses_bad_settings(settings):
    with pytest.raises(ValueError, match=next(iter(settings))):
        PauseFirst(**settings)


def test_pausing_in_the_simulator_uploads_less_and_every_request_still_ends(compose_cfg):
    def run(locality):
        cfg = compose_cfg(
            "experiment=oversub_250_on_8", "duration_s=240", f"policy/locality={locality}"
        )
        return simulate(build(cfg)).summary

    suspended, paused = run("suspend"), run("pause")
    assert paused == run("pause") | {"wall_s": paused["wall_s"]}  # same seed, same summary
    moved = (suspended["snapshot_bytes_moved"], paused["snapshot_bytes_moved"])
    assert moved[1]["uploaded"] < 0.6 * moved[0]["uploaded"]
    actions = paused["policy_actions"]
    assert actions["pauses"] > 0 and actions["strandings"] > 0 and actions["uploads"] > 0
    assert actions["stranded_local"] <= actions["strandings"]
    assert suspended["policy_actions"]["pauses"] == 0
    for summary in (suspended, paused):
        assert summary["ok"] + summary["rejected"] + summary["timed_out"] == summary["requests"]
