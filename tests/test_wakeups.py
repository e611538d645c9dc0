"""Wake-ups actors schedule (timers) through the pure controller, and in the simulator."""

from __future__ import annotations

import math

import pytest
from controller_kit import activate, make, only

from control.messages import (
    ActivationFinished,
    ActorDeleted,
    AdminResult,
    Checkpoint,
    CheckpointFinished,
    DeliverWake,
    IdleTimer,
    RequestArrived,
    RequestDeadline,
    RequestFinished,
    Restore,
    SetTimer,
    TimerFired,
    WakeDue,
    WakePrewarm,
    WakeScheduled,
)
from control.policies import AfterEachRequest, IdleTimeout, QueueWithDeadline
from control.timers import TimerSettings
from experiments.runs.build import ConfigError, build
from experiments.runs.runner import simulate
from workloads.wakeups import WakeupSource


def timers_of(cmds):
    return {type(c.timer).__name__: c for c in cmds if isinstance(c, SetTimer)}


def test_a_wakeup_restores_the_actor_ahead_on_a_free_worker_and_is_delivered_when_due():
    ctl = make(timers=TimerSettings(lead_s=2.0, wait_s=45.0))
    set_timers = timers_of(ctl.handle(WakeScheduled("a", 100.0), 10.0))
    due, ahead = set_timers["WakeDue"], set_timers["WakePrewarm"]
    assert due.at == 100.0 and ahead.at == 98.0
    assert ctl.pending_wakeups("a") == [100.0]
    restore = only(ctl.handle(TimerFired(ahead.timer), 98.0), Restore)
    assert restore.actor == "a" and ctl.stats.wake_prewarms == 1 == ctl.stats.prewarms
    ctl.handle(ActivationFinished(restore.op), 98.4)
    wake = only(ctl.handle(TimerFired(due.timer), 100.0), DeliverWake)
    assert (wake.actor, wake.due, wake.wait_s) == ("a", 100.0, 45.0)
    assert ctl.pending_wakeups("a") == [] and ctl.stats.wakeups_delivered == 1
    # The wake-up request finds its actor running: forwarded at once.
    cmds = ctl.handle(RequestArrived(7, "a", 100.0, wait_s=wake.wait_s), 100.0)
    assert not [c for c in cmds if isinstance(c, Restore)]


def test_a_delivered_wakeup_may_wait_its_own_bound_not_the_router_timeout():
    ctl = make(timers=TimerSettings(wait_s=45.0), admission=QueueWithDeadline(timeout_s=100.0))
    activate(ctl, 1, "b", 0.0)  # the only worker is busy
    cmds = ctl.handle(RequestArrived(2, "a", 1.0, wait_s=45.0), 1.0)
    assert only(cmds, SetTimer).at == 46.0
    # A client request under the same conditions gets the router's 5 s.
    assert only(ctl.handle(RequestArrived(3, "c", 1.0), 1.0), SetTimer).at == 6.0


def test_a_wakeup_pre_warm_never_takes_a_busy_worker_and_the_wakeup_still_comes():
    ctl = make()
    activate(ctl, 1, "b", 0.0)
    set_timers = timers_of(ctl.handle(WakeScheduled("a", 10.0), 1.0))
    assert ctl.handle(TimerFired(set_timers["WakePrewarm"].timer), 9.0) == []
    assert only(ctl.handle(TimerFired(set_timers["WakeDue"].timer), 10.0), DeliverWake)


@pytest.mark.parametrize(
    "actor, at, why",
    [("nobody", 10.0, "unknown"), ("a", 1e9, "too far ahead"), ("a", math.nan, "not a time")],
)
def test_wakeups_an_actor_may_not_have_are_refused(actor, at, why):
    ctl = make(timers=TimerSettings(max_after_s=3600.0))
    assert ctl.handle(WakeScheduled(actor, at), 1.0) == [], why
    assert ctl.stats.wakeups_refused == 1 and ctl.stats.wakeups_scheduled == 0


def test_an_actor_cannot_flood_the_timers():
    ctl = make(timers=TimerSettings(max_pending=3))
    for i in range(5):
        ctl.handle(WakeScheduled("a", 100.0 + i), 1.0)
    assert ctl.stats.wakeups_scheduled == 3 and ctl.stats.wakeups_refused == 2
    assert len(ctl.pending_wakeups("a")) == 3


def test_a_wakeup_in_the_past_is_due_at_once():
    ctl = make()
    set_timers = timers_of(ctl.handle(WakeScheduled("a", 0.5), 2.0))
    assert set_timers["WakeDue"].at == 2.0 and "WakePrewarm" not in set_timers
    assert ctl.stats.wake_prewarms == 1  # the worker was free: restored now


def test_an_idle_actor_due_back_soon_stays_running_through_its_wakeup():
    ctl = make(suspension=IdleTimeout(ttl_s=5.0), timers=TimerSettings(lead_s=2.0))
    activate(ctl, 1, "a", 0.0)
    ctl.handle(WakeScheduled("a", 6.0), 0.5)
    cmds = ctl.handle(RequestFinished(1), 1.0)  # suspend at 6.0; due back at 6.0
    idle = only(cmds, SetTimer)
    assert isinstance(idle.timer, IdleTimer) and idle.at == 8.0  # wake + lead
    # Without a wake-up the TTL alone decides.
    ctl2 = make(suspension=IdleTimeout(ttl_s=5.0), timers=TimerSettings(lead_s=2.0))
    activate(ctl2, 1, "a", 0.0)
    assert only(ctl2.handle(RequestFinished(1), 1.0), SetTimer).at == 6.0


def test_a_checkpoint_ending_just_before_a_wakeup_restores_at_once():
    ctl = make(suspension=AfterEachRequest(), timers=TimerSettings(lead_s=2.0))
    activate(ctl, 1, "a", 0.0)
    checkpoint = only(ctl.handle(RequestFinished(1), 1.0), Checkpoint)
    ctl.handle(WakeScheduled("a", 3.0), 1.1)  # the prewarm finds a SUSPENDING actor
    restore = only(ctl.handle(CheckpointFinished(checkpoint.op), 1.5), Restore)
    assert restore.version == 1 and ctl.stats.wake_prewarms == 1


def test_deleting_an_actor_drops_its_wakeups():
    ctl = make()
    set_timers = timers_of(ctl.handle(WakeScheduled("c", 50.0), 1.0))
    assert only(ctl.handle(ActorDeleted("c"), 2.0), AdminResult).ok
    assert ctl.handle(TimerFired(set_timers["WakeDue"].timer), 50.0) == []
    assert ctl.stats.wakeups_delivered == 0


def test_stale_wake_timers_do_nothing():
    ctl = make()
    assert ctl.handle(TimerFired(WakeDue("a", 99)), 1.0) == []
    assert ctl.handle(TimerFired(WakePrewarm("a", 99)), 1.0) == []
    assert ctl.handle(TimerFired(RequestDeadline(12345)), 1.0) == []


# ------------------------------------------------------------ source and config


def test_the_wakeup_source_is_seeded_and_refuses_bad_settings():
    source = WakeupSource(fraction=0.25, period_s=60.0, jitter_s=5.0)
    chosen, first = source.plan(400, seed=3)
    again, first_again = source.plan(400, seed=3)
    assert len(chosen) == 100 and (chosen == again).all() and (first == first_again).all()
    assert first.min() >= 0 and first.max() < 60.0
    assert (source.plan(400, seed=4)[0] != chosen).any()
    for bad in ({"fraction": 1.5}, {"period_s": 0}, {"jitter_s": 60.0}, {"service_s": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            WakeupSource(**({"period_s": 60.0} | bad))


@pytest.mark.parametrize(
    "override, field",
    [("wakeups.lead_s=-1", "lead_s"), ("wakeups.max_pending=0", "max_pending"),
     ("wakeups.fraction=2", "fraction"), ("+wakeups.bogus=1", "bogus"),
     ("backend=kind policy/locality=pause", "policy.locality")],
)  # fmt: skip
def test_bad_wakeup_and_locality_configs_name_the_field(compose_cfg, override, field):
    with pytest.raises(ConfigError, match=field):
        build(compose_cfg(*override.split()))


def test_simulated_wakeups_are_delivered_on_time_and_the_run_is_deterministic(compose_cfg):
    spec = build(compose_cfg(
        "experiment=oversub_250_on_8", "duration_s=240", "workload.actors=40", "cluster.workers=8",
        "wakeups.fraction=0.5", "wakeups.period_s=30", "wakeups.jitter_s=5",
    ))  # fmt: skip
    first, second = simulate(spec), simulate(spec)
    first.summary.pop("wall_s"), second.summary.pop("wall_s")
    assert first.summary == second.summary
    actions = first.summary["policy_actions"]
    # 20 actors waking every ~30 s for 240 s: about 8 each, 160 in all.
    assert 120 <= actions["wakeups_delivered"] <= 170
    requests = first.result.requests
    woken = requests["wake"]
    # Delivered after the arrivals ended: not played (at most one per actor).
    assert actions["wakeups_delivered"] - 20 <= woken.sum() <= actions["wakeups_delivered"]
    ok = requests["outcome"][woken] == "ok"
    assert ok.mean() > 0.95
    # Pre-warmed ahead of their due time, most wake-ups wait for no activation.
    assert (~requests["activated"][woken]).mean() > 0.5
    assert actions["wake_prewarms"] > 0
