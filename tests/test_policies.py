"""Unit tests of the policies beyond the three baseline families: one behaviour each,
driven through the pure controller (events in, commands out)."""

from __future__ import annotations

import pytest
from controller_kit import MB, activate, make, only

from control.controller import ProtocolError
from control.messages import (
    ActivationFinished,
    Checkpoint,
    CheckpointFinished,
    Forward,
    PrewarmTimer,
    ProvisionWorkers,
    Reject,
    RequestArrived,
    RequestFinished,
    Restore,
    RetireWorker,
    ScaleTick,
    SetTimer,
    TimerFired,
    WorkerAdded,
)
from control.model import Actor, ActorState
from control.policies import (
    AfterEachRequest,
    Demand,
    DemandScaler,
    EvictThenWait,
    GreedyDual,
    HybridHistogram,
    KeepNewest,
    KeepRunning,
    Lazy,
    Load,
    ParkAndRetry,
    PredictivePrewarm,
)
from experiments.runs.build import ConfigError, build
from experiments.runs.runner import make_simulation, simulate
from sim.snapshots import StoredSnapshots

# ------------------------------------------------------------ admission: park and retry


def park_three(admission, *, owners=None):
    """One worker busy with ``a``; requests 2, 3, 4 for b, c, d: their commands."""
    ctl = make(admission=admission, suspension=Lazy(), actors="abcd", owners=owners)
    activate(ctl, 1, "a", 1.0)
    return ctl, [ctl.handle(RequestArrived(r, actor, 2.0), 2.0) for r, actor in
                 ((2, "b"), (3, "c"), (4, "d"))]  # fmt: skip


def test_park_sheds_beyond_its_queue_bound_at_once_and_keeps_what_it_parked():
    ctl, (b, c, d) = park_three(ParkAndRetry(30.0, max_queue=2))
    assert only(b, SetTimer).at == 7.0  # parked; the router's 5 s bound the 30 s wait
    assert only(c, SetTimer)
    assert d == [Reject(4, "d", 503, "overloaded: the queue for workers is full")]
    assert ctl.queue() == ["b", "c"]
    # A second request for a parked actor joins it: the bound counts actors, not requests.
    assert only(ctl.handle(RequestArrived(5, "b", 2.5), 2.5), SetTimer)
    assert ctl.waiting_requests("b") == 2


def test_park_with_max_queue_zero_sheds_everything_that_would_wait():
    _, (b, _, _) = park_three(ParkAndRetry(30.0, max_queue=0))
    assert only(b, Reject).status == 503


def test_park_budgets_parked_actors_per_owner_and_exempts_actors_without_one():
    owners = {"b": "t0", "c": "t0", "d": "t1"}
    ctl, (b, c, d) = park_three(ParkAndRetry(30.0, per_caller=1), owners=owners)
    assert only(b, SetTimer) and only(d, SetTimer)
    assert c == [Reject(3, "c", 429, "owner 't0' has 1 actors parked")]
    # When b leaves the queue (it got the worker), t0 may park another actor.
    ckpt = only(ctl.handle(RequestFinished(1), 3.0), Checkpoint)  # a evicted for the queue
    assert only(ctl.handle(CheckpointFinished(ckpt.op), 3.2), Restore).actor == "b"
    assert only(ctl.handle(RequestArrived(6, "c", 3.3), 3.3), SetTimer)
    assert ctl.queue() == ["d", "c"]
    # No owner, no budget.
    unowned, (b, c, d) = park_three(ParkAndRetry(30.0, per_caller=1))
    assert unowned.queue() == ["b", "c", "d"]


@pytest.mark.parametrize(
    ("order", "lifo_over", "first"),
    [("fifo", None, "b"), ("lifo", None, "d"), ("adaptive", 2, "d"), ("adaptive", 3, "b")],
)
def test_park_gives_the_freed_worker_to_the_oldest_or_the_newest_parked_actor(
    order, lifo_over, first
):
    ctl, _ = park_three(ParkAndRetry(30.0, order=order, lifo_over=lifo_over))
    assert ctl.queue() == ["b", "c", "d"]
    ckpt = only(ctl.handle(RequestFinished(1), 3.0), Checkpoint)
    assert only(ctl.handle(CheckpointFinished(ckpt.op), 3.2), Restore).actor == first


def test_adaptive_order_turns_lifo_when_more_actors_wait_than_there_are_workers():
    policy = ParkAndRetry(30.0, order="adaptive")  # lifo_over: the number of workers
    assert not policy.serve_newest_first(Load(8, 0, False, workers=8, freeing=0))
    assert policy.serve_newest_first(Load(9, 0, False, workers=8, freeing=0))


def test_a_parked_request_ends_with_504_at_its_bound_and_its_actor_leaves_the_queue():
    ctl, (b, _, _) = park_three(ParkAndRetry(3.0, per_caller=1), owners={"b": "t0"})
    timer = only(b, SetTimer)
    assert timer.at == 5.0
    assert only(ctl.handle(TimerFired(timer.timer), 5.0), Reject).status == 504
    assert ctl.queue() == ["c", "d"]
    assert only(ctl.handle(RequestArrived(7, "b", 5.1), 5.1), SetTimer)  # t0's budget is back


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 5, "max_queue": -1}, "max_queue"),
        ({"timeout_s": 5, "max_queue": 2.5}, "max_queue"),
        ({"timeout_s": 5, "per_caller": 0}, "per_caller"),
        ({"timeout_s": 5, "order": "random"}, "order"),
        ({"timeout_s": 5, "evict": "yes"}, "evict"),
        ({"timeout_s": 5, "lifo_over": True}, "lifo_over"),
    ],
)
def test_park_rejects_bad_settings_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ParkAndRetry(**kwargs)


# ------------------------------------------------------------ keep-alive


def idle_gaps(policy, actor, gaps, *, start=0.0):
    """Let ``actor`` go idle and come back after each of ``gaps``; returns the time of
    the last request (the actor is busy again)."""
    now = start
    for gap in gaps:
        policy.suspend_at(actor, now)
        now += gap
        policy.on_request(actor, now)
    return now


def an_actor(actor_id="a", mib=16):
    return Actor(actor_id, "agent", mib * MB)


def test_hybrid_histogram_uses_its_ttl_while_the_histogram_is_thin():
    policy = HybridHistogram(ttl_s=7.0, min_samples=5)
    actor = an_actor()
    now = idle_gaps(policy, actor, [60.0] * 4)
    assert policy.windows("a") is None
    assert policy.suspend_at(actor, now + 1) == now + 8.0
    assert policy.prewarm_at(actor, now + 1.5) is None


def test_hybrid_histogram_unloads_at_once_and_prewarms_before_a_long_regular_idle_time():
    policy = HybridHistogram(min_samples=5, margin=0.1)
    actor = an_actor()
    now = idle_gaps(policy, actor, [60.0] * 6)
    prewarm, keep_alive = policy.windows("a")
    # Bin edges grow by 1.25: the head is a lower edge below 60 s, the tail an upper one.
    assert 60 / 1.25 * 0.9 <= prewarm <= 60 * 0.9
    assert 60 * 1.1 <= keep_alive <= 60 * 1.25 * 1.1
    assert policy.suspend_at(actor, now) == now  # a long idle time is due: unload now
    assert policy.prewarm_at(actor, now + 0.5) == pytest.approx(now + prewarm)
    # Pre-warmed and idle again: kept warm until the keep-alive window ends.
    assert policy.suspend_at(actor, now + prewarm + 0.4) == pytest.approx(now + keep_alive)
    assert policy.prewarm_at(actor, now + keep_alive + 0.5) is None  # once per idle time


def test_hybrid_histogram_keeps_an_actor_with_short_idle_times_warm_to_the_tail():
    policy = HybridHistogram(min_samples=5, max_keep_alive_s=600.0)
    actor = an_actor()
    now = idle_gaps(policy, actor, [1.0, 1.2, 0.8, 1.5, 2.0, 1.1])
    prewarm, keep_alive = policy.windows("a")
    assert prewarm < 5.0 and 2.0 * 1.1 <= keep_alive <= 2.0 * 1.25 * 1.1
    assert policy.suspend_at(actor, now) == pytest.approx(now + keep_alive)
    assert policy.prewarm_at(actor, now + keep_alive + 0.3) is None  # evicted: on demand


def test_hybrid_histogram_falls_back_to_its_ttl_when_most_idle_times_are_out_of_range():
    policy = HybridHistogram(ttl_s=3.0, min_samples=3, range_s=100.0)
    actor = an_actor()
    now = idle_gaps(policy, actor, [500.0, 500.0, 500.0, 50.0])
    assert policy.windows("a") is None
    assert policy.suspend_at(actor, now) == now + 3.0


def test_hybrid_histogram_caps_the_keep_alive_window():
    policy = HybridHistogram(min_samples=3, max_keep_alive_s=30.0, min_prewarm_s=1000.0)
    actor = an_actor()
    now = idle_gaps(policy, actor, [100.0] * 4)
    assert policy.windows("a")[1] == 30.0
    assert policy.suspend_at(actor, now) == now + 30.0


def finish_and_suspend(ctl, request, at):
    """End ``request`` at ``at``; fire the idle timer if the policy set one; finish the
    checkpoint 0.2 s later. Returns the commands of the checkpoint's end."""
    cmds = ctl.handle(RequestFinished(request), at)
    if not any(isinstance(c, Checkpoint) for c in cmds):
        timer = only(cmds, SetTimer)
        at = timer.at
        cmds = ctl.handle(TimerFired(timer.timer), at)
    return ctl.handle(CheckpointFinished(only(cmds, Checkpoint).op), at + 0.2)


def test_a_prewarm_restores_the_actor_on_a_free_worker_so_its_next_request_is_warm():
    policy = HybridHistogram(min_samples=3)
    ctl = make(suspension=policy, workers=("w0", "w1"))
    now = 0.0
    for request in range(1, 6):  # a call every ~60 s: learned idle times
        activate(ctl, request, "a", now)
        cmds = finish_and_suspend(ctl, request, now + 1.0)
        now += 61.0
    timer = only(cmds, SetTimer)
    assert isinstance(timer.timer, PrewarmTimer)
    idle_start = now - 61.0 + 1.0
    assert idle_start + 40 < timer.at < idle_start + 60  # before the next call is due
    restore = only(ctl.handle(TimerFired(timer.timer), timer.at), Restore)
    assert ctl.stats.prewarms == 1
    assert only(ctl.handle(ActivationFinished(restore.op), timer.at + 0.3), SetTimer)  # hold
    forward = only(ctl.handle(RequestArrived(99, "a", now), now), Forward)
    assert not forward.activated


def test_a_prewarm_never_evicts_queues_or_overtakes_and_a_stale_one_does_nothing():
    policy = PredictivePrewarm(min_gap_s=10.0)
    ctl = make(suspension=policy, admission=EvictThenWait(10.0), actors="abc")
    now = 0.0
    for request in range(1, 5):
        activate(ctl, request, "a", now)
        cmds = finish_and_suspend(ctl, request, now + 0.5)
        now += 30.0
    timer = only(cmds, SetTimer).timer
    assert isinstance(timer, PrewarmTimer)
    activate(ctl, 10, "b", now - 5.0)  # b holds the only worker; c waits for it
    assert only(ctl.handle(RequestArrived(11, "c", now - 4.0), now - 4.0), SetTimer)
    assert ctl.handle(TimerFired(timer), now - 2.0) == []  # no free worker: no pre-warm
    assert ctl.stats.prewarms == 0 and ctl.queue() == ["c"]
    # A request for a that comes first makes the timer stale.
    ctl2 = make(suspension=PredictivePrewarm(min_gap_s=10.0), workers=("w0", "w1"))
    for request in range(1, 5):
        activate(ctl2, request, "a", request * 30.0)
        cmds = finish_and_suspend(ctl2, request, request * 30.0 + 0.5)
    timer = only(cmds, SetTimer)
    activate(ctl2, 5, "a", timer.at - 1.0)
    assert ctl2.handle(TimerFired(timer.timer), timer.at) == []
    assert ctl2.stats.prewarms == 0


def test_greedy_dual_evicts_the_lowest_priority_and_ages_the_rest_by_its_clock():
    policy = GreedyDual(restore_fixed_s=0.08, restore_s_per_mib=0.00054)
    hot, cold, big = an_actor("hot"), an_actor("cold"), an_actor("big", mib=512)
    for _ in range(5):
        policy.on_request(hot, 0.0)
    for actor in (cold, big):
        policy.on_request(actor, 0.0)
    for actor in (hot, cold, big):
        assert policy.suspend_at(actor, 1.0) is None  # warm until pressure
    # Per MiB, the 512 MiB actor's restore is cheapest: evicted first, in LRU order or not.
    assert policy.choose_victim([hot, cold, big]) is big
    assert policy.clock == pytest.approx((0.08 + 0.00054 * 512) / 512)
    assert policy.choose_victim([hot, cold]) is cold
    assert policy.choose_victim([hot]) is hot
    # Used once after the clock rose, an actor outranks one that aged since.
    policy.on_request(cold, 2.0)
    policy.suspend_at(cold, 2.0)
    assert policy.priority(cold) > policy.clock


def test_greedy_dual_with_a_ttl_also_suspends_idle_actors():
    assert GreedyDual(ttl_s=30.0).suspend_at(an_actor(), 5.0) == 35.0


def test_predictive_prewarm_restores_before_the_median_idle_time_and_holds_short_gaps():
    policy = PredictivePrewarm(lead_s=1.0, hold_s=5.0, min_gap_s=10.0)
    regular, bursty = an_actor("regular"), an_actor("bursty")
    now = idle_gaps(policy, regular, [30.0, 28.0, 400.0])
    assert policy.predicted_gap("regular") == 30.0
    assert policy.suspend_at(regular, now) == now
    assert policy.prewarm_at(regular, now + 0.5) == now + 29.0
    assert policy.suspend_at(regular, now + 29.5) == now + 35.0  # hold past the request
    then = idle_gaps(policy, bursty, [1.0, 2.0, 1.5])
    assert policy.suspend_at(bursty, then) == then + 5.0
    assert policy.prewarm_at(bursty, then + 5.5) is None
    fresh = an_actor("fresh")
    assert policy.suspend_at(fresh, 0.0) == 5.0 and policy.prewarm_at(fresh, 1.0) is None


@pytest.mark.parametrize(
    ("make_policy", "field"),
    [
        (lambda: HybridHistogram(ttl_s=-1), "ttl_s"),
        (lambda: HybridHistogram(head_percentile=101), "head_percentile"),
        (lambda: HybridHistogram(head_percentile=50, tail_percentile=10), "head_percentile"),
        (lambda: HybridHistogram(margin=1.0), "margin"),
        (lambda: HybridHistogram(min_samples=0), "min_samples"),
        (lambda: HybridHistogram(growth=1.0), "growth"),
        (lambda: HybridHistogram(range_s=0.05), "range_s"),
        (lambda: GreedyDual(restore_fixed_s=0, restore_s_per_mib=0), "restore_fixed_s"),
        (lambda: GreedyDual(ttl_s=float("nan")), "ttl_s"),
        (lambda: PredictivePrewarm(history=0), "history"),
        (lambda: PredictivePrewarm(min_gap_s=0), "min_gap_s"),
    ],
)
def test_keep_alive_policies_reject_bad_settings_naming_the_field(make_policy, field):
    with pytest.raises(ValueError, match=field):
        make_policy()


# ------------------------------------------------------------ snapshot retention


def test_keep_newest_deletes_all_but_the_newest_versions_and_keep_all_deletes_nothing():
    assert KeepNewest(keep=2).to_delete([3, 5, 6, 9]) == [3, 5]
    assert KeepNewest(keep=2).to_delete([6, 9]) == []
    assert KeepNewest(keep=None).to_delete(list(range(1, 1604))) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"keep": 0}, "keep"), ({"keep": 1.5}, "keep"), ({"gc_interval_s": -1}, "gc_interval_s")],
)
def test_keep_newest_rejects_bad_settings_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        KeepNewest(**kwargs)


def test_the_simulated_store_holds_what_retention_keeps_and_sweeps_pile_up_between():
    at_commit = StoredSnapshots(KeepNewest(keep=2))
    swept = StoredSnapshots(KeepNewest(keep=1, gc_interval_s=60))
    for store in (at_commit, swept):
        for version in range(1, 6):
            store.put("a", version, 10 * version)
        store.put("b", 1, 7)
    assert at_commit.versions("a") == [4, 5] and at_commit.bytes == 40 + 50 + 7
    assert swept.bytes == 10 + 20 + 30 + 40 + 50 + 7
    swept.collect()
    assert swept.versions("a") == [5] and swept.bytes == 50 + 7
    assert swept.deleted_versions == 4


def test_without_gc_the_store_grows_with_every_checkpoint_in_a_simulated_run(compose_cfg):
    def stored(retention):
        cfg = compose_cfg("experiment=substrate_nightly", "duration_s=60",
                          f"policy/retention={retention}")  # fmt: skip
        output = simulate(build(cfg))
        return output.summary["snapshot_bytes_stored"], output.summary["snapshot_bytes_moved"]

    (kept_all, moved_all), (kept_two, moved_two) = stored("keep_all"), stored("keep_newest")
    assert moved_all == moved_two  # retention changes storage, not what runs
    assert kept_all["end"] > 2 * kept_two["end"]
    assert kept_all["end"] >= moved_all["uploaded"]  # every upload is still there


# ------------------------------------------------------------ scaling


def demand(workers, *, busy=0, idle=0, waiting=0, starting=0):
    return Demand(workers, starting, busy, idle, waiting, max(workers - busy - idle, 0))


def test_demand_scaler_scales_up_to_the_demand_at_once():
    scaler = DemandScaler(warm_buffer=2, max_workers=50)
    assert scaler.target(demand(8, busy=8, waiting=20), 0.0) == 30  # not to busy + 1
    assert scaler.target(demand(8, busy=8, waiting=60), 5.0) == 50  # bounded
    assert DemandScaler(keep_idle=True, warm_buffer=0).wanted(demand(8, busy=3, idle=5)) == 8


def test_demand_scaler_scales_down_slowly_after_the_window():
    scaler = DemandScaler(warm_buffer=1, down_delay_s=60.0, down_step=2, min_workers=2)
    assert scaler.target(demand(10, busy=9), 0.0) == 10
    # The burst is over: nothing goes while the last minute's peak still asks for 10.
    assert scaler.target(demand(10, busy=1), 30.0) == 10
    assert scaler.target(demand(10, busy=1), 59.0) == 10
    # Past the window: two at a time, down to what the window still saw.
    assert scaler.target(demand(10, busy=1), 61.0) == 8
    assert scaler.target(demand(8, busy=0), 200.0) == 6
    assert scaler.target(demand(3, busy=0), 300.0) == 2  # min_workers


def test_a_scaled_controller_starts_workers_for_its_queue_and_retires_free_ones():
    scaler = DemandScaler(warm_buffer=0, interval_s=5.0, down_delay_s=0.0, down_step=5)
    ctl = make(workers=("w0",), admission=EvictThenWait(30.0), actors="abcd", nodes=("n0",))
    ctl.scaling = scaler
    # The first event arms the scaler.
    activate(ctl, 1, "a", 0.0)
    for r, actor in ((2, "b"), (3, "c"), (4, "d")):
        ctl.handle(RequestArrived(r, actor, 1.0), 1.0)
    tick = ScaleTick(5.0)
    cmds = ctl.handle(TimerFired(tick), 5.0)
    assert only(cmds, ProvisionWorkers).number == 3  # a busy, b c d waiting: 4 wanted
    assert ctl.starting_workers == 3 and ctl.stats.workers_started == 3
    restores = [
        only(ctl.handle(WorkerAdded(f"w{i + 1}", node, provisioned=True), 6.0), Restore)
        for i, node in enumerate(("n1", "n1", "n2"))
    ]
    assert [r.actor for r in restores] == ["b", "c", "d"]  # the new workers serve the queue
    for i, restore in enumerate(restores):
        at = 6.5 + i
        ctl.handle(ActivationFinished(restore.op), at)
        ckpt = only(ctl.handle(RequestFinished(i + 2), at + 0.2), Checkpoint)
        ctl.handle(CheckpointFinished(ckpt.op), at + 0.4)
    assert ctl.starting_workers == 0
    with pytest.raises(ProtocolError, match="none was asked for"):
        ctl.handle(WorkerAdded("w9", "n0", provisioned=True), 9.0)
    ctl.handle(CheckpointFinished(only(ctl.handle(RequestFinished(1), 9.0), Checkpoint).op), 9.1)
    # Nothing busy or waiting: the next decision retires all but min_workers (1).
    cmds = ctl.handle(TimerFired(ScaleTick(10.0)), 10.0)
    assert len([c for c in cmds if isinstance(c, RetireWorker)]) == 3
    assert len(ctl.workers()) == 1 and ctl.stats.workers_retired == 3
    # The pool's cost: 1 worker from 0 to 5 s, 4 (joined or starting) from 5 to 10 s.
    assert ctl.provisioned_worker_seconds(10.0) == pytest.approx(1 * 5.0 + 4 * 5.0)
    assert ctl.provisioned_worker_seconds(12.0) == pytest.approx(25.0 + 1 * 2.0)


def test_scale_down_takes_free_workers_from_the_emptiest_node_then_idle_actors():
    ctl = make(workers=("w0", "w1", "w2", "w3"), nodes=("n0", "n0", "n0", "n1"),
               suspension=Lazy(), admission=EvictThenWait(10.0))  # fmt: skip
    ctl.scaling = DemandScaler(warm_buffer=0, min_workers=0, down_delay_s=0.0, down_step=4)
    activate(ctl, 1, "a", 0.0)  # on w0 (LRU placement): busy, then idle and kept warm
    ctl.handle(RequestFinished(1), 1.0)
    cmds = ctl.handle(TimerFired(ScaleTick(5.0)), 5.0)
    retired = [c.worker for c in cmds if isinstance(c, RetireWorker)]
    assert retired[0] == "w3"  # the lone worker of node n1 first: the machine empties
    assert set(retired) == {"w1", "w2", "w3"}
    assert only(cmds, Checkpoint).actor == "a"  # its worker drains: the actor is saved
    assert ctl.stats.workers_retired == 4 and ctl.worker("w0").draining


def test_a_simulated_autoscaled_run_bills_the_pool_it_really_had(compose_cfg):
    cfg = compose_cfg("experiment=oversub_250_on_8", "duration_s=120", "policy/scaling=demand")
    summary = simulate(build(cfg)).summary
    seconds, actions = summary["worker_seconds"], summary["policy_actions"]
    assert actions["workers_started"] > 0
    assert seconds["provisioned"] != 8 * 120 and seconds["billed"] == seconds["provisioned"]
    assert summary["worker_utilization"] == pytest.approx(
        seconds["occupied"] / seconds["provisioned"]
    )


def test_the_autoscalers_workers_fill_the_nodes_and_new_nodes_join_when_all_are_full(
    compose_cfg,
):
    cfg = compose_cfg("experiment=oversub_250_on_8", "duration_s=120", "cluster.workers=4",
                      "cluster.nodes=2", "policy/scaling=demand")  # fmt: skip
    simulation = make_simulation(build(cfg))
    simulation.run()
    load = simulation.node_load()
    assert len(load) > 2  # nodes joined
    assert max(load.values()) <= 2  # none holds more than the 4 / 2 it started with
    assert sum(load.values()) == len(simulation.controller.workers()) + (
        simulation.controller.starting_workers
    )


def test_pod_per_actor_gives_every_actor_a_worker_and_bills_only_occupied_ones(compose_cfg):
    cfg = compose_cfg("experiment=oversub_250_on_8", "duration_s=60", "cluster=pod_per_actor",
                      "latency=pod_e2b", "workload.actors=40")  # fmt: skip
    spec = build(cfg)
    assert (spec.workers, spec.nodes, spec.billing) == (40, 40, "occupied")
    summary = simulate(spec).summary
    seconds = summary["worker_seconds"]
    assert seconds["billed"] == seconds["occupied"] < seconds["provisioned"]
    assert summary["timed_out"] == summary["rejected"] == 0  # a worker is always there


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["policy/scaling=demand", "backend=kind"], "simulator and the local backend only"),
        (["cluster=pod_per_actor", "backend=local"], "simulated baseline"),
        (["cluster.mode=elastic"], "cluster.mode: unknown"),
        (["policy/scaling=demand", "policy.scaling.min_workers=-1"], "min_workers"),
    ],
)
def test_scaling_and_cluster_modes_refuse_what_they_cannot_do(compose_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(compose_cfg("experiment=oversub_250_on_8", *overrides))


# ------------------------------------------------------------ keep N running


def test_keep_running_pins_the_most_requested_actors_and_the_pin_moves_with_popularity():
    policy = KeepRunning(AfterEachRequest(), count=2, actors=["vip"])
    hot, warm, cold, vip = (an_actor(a) for a in ("hot", "warm", "cold", "vip"))
    for actor, times in ((hot, 5), (warm, 3), (cold, 1)):
        for _ in range(times):
            policy.on_request(actor, 0.0)
    assert [policy.pinned(a) for a in ("hot", "warm", "cold", "vip")] == [True, True, False, True]
    assert policy.suspend_at(hot, 1.0) is None and policy.suspend_at(cold, 1.0) == 1.0
    assert policy.choose_victim([vip, hot, warm, cold]) is cold
    assert policy.choose_victim([vip, hot, warm]) is None  # only pinned ones idle
    assert policy.prewarm_at(hot, 2.0) == 2.0 and policy.prewarm_at(cold, 2.0) is None
    for _ in range(4):  # cold overtakes warm
        policy.on_request(cold, 3.0)
    assert policy.pinned("cold") and not policy.pinned("warm") and policy.pinned("vip")


def test_a_pinned_actor_stays_warm_through_the_controller_and_others_are_evicted():
    ctl = make(workers=("w0", "w1"), suspension=KeepRunning(Lazy(), count=1),
               admission=EvictThenWait(10.0))  # fmt: skip
    activate(ctl, 1, "a", 0.0)
    ctl.handle(RequestFinished(1), 0.5)
    ctl.handle(RequestArrived(2, "a", 1.0), 1.0)  # a: 2 requests, pinned
    ctl.handle(RequestFinished(2), 1.5)
    activate(ctl, 3, "b", 2.0)
    ctl.handle(RequestFinished(3), 2.5)
    # c needs a worker: b (not pinned) is evicted although a was used less recently.
    assert only(ctl.handle(RequestArrived(4, "c", 3.0), 3.0), Checkpoint).actor == "b"
    assert ctl.actor("a").state is ActorState.RUNNING


def test_pinning_as_many_actors_as_there_are_workers_is_warned_about(compose_cfg):
    def warnings(count):
        cfg = compose_cfg("experiment=oversub_250_on_8", "policy/suspension=keep_running",
                          f"policy.suspension.count={count}")  # fmt: skip
        return " ".join(build(cfg).warnings)

    assert "KeepRunning pins 8 actors on 8 workers" in warnings(8)
    assert "KeepRunning" not in warnings(2)


def test_workers_that_fail_to_start_are_no_longer_counted_as_starting():
    from control.messages import ProvisionFailed

    ctl = make(actors="a")
    ctl.scaling = DemandScaler(max_workers=4, warm_buffer=3, interval_s=1.0)
    cmds = ctl.handle(TimerFired(ScaleTick(1.0)), 1.0)
    # one worker, free: three wanted free, so two more
    assert only(cmds, ProvisionWorkers).number == 2 and ctl.starting_workers == 2
    ctl.handle(ProvisionFailed(1, "no room"), 1.5)
    assert ctl.starting_workers == 1 and ctl.stats.provision_failures == 1
    with pytest.raises(ProtocolError):
        ctl.handle(ProvisionFailed(2, "more than were asked for"), 1.6)
