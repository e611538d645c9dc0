"""The simulator end to end: conservation, latency/resource models, baselines."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from control.controller import Controller
from control.policies import (
    AfterEachRequest,
    FailFast,
    IdleTimeout,
    LruPlacement,
    QueueWithDeadline,
    RandomPlacement,
    SnapshotLocalityPlacement,
)
from experiments.runs.build import build
from experiments.runs.runner import simulate
from sim.engine import Simulation
from sim.latency import latency_from_config
from workloads.plan import Plan


def fixed(value):
    return {"kind": "fixed", "value": value}


# Deterministic latencies so the tests can reason about exact numbers.
LATENCY = {
    "restore": {"fixed": fixed(0.3), "mib_per_s": 1000, "ready": fixed(0.0)},
    "checkpoint": {"fixed": fixed(0.1), "mib_per_s": 1000},
    "cold_start": fixed(0.5),
    "transfer": {"first_byte": fixed(0.0)},
    "node": {"cpu_parallelism": 2.0, "link_mib_per_s": 100, "cache_mib": 0},
    "control_plane": {"servers": 4, "service": fixed(0.0)},
}


def latency(**changes):
    cfg = copy.deepcopy(LATENCY)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    return latency_from_config(cfg)


def run(workload, lat, *, workers=8, nodes=1, duration=60.0, policies=None, **kw):
    placement, suspension, admission = policies or (
        LruPlacement(),
        AfterEachRequest(),
        FailFast(),
    )
    ctl = Controller(placement, suspension, admission, router_timeout_s=kw.pop("timeout", 5.0))
    sim = Simulation(
        ctl, workload, lat, workers=workers, nodes=nodes, duration_s=duration, seed=0, **kw
    )
    return sim.run()


@pytest.mark.parametrize("preset", ["default", "substrate", "lazy"])
def test_every_request_ends_once_and_latencies_add_up(compose_cfg, preset):
    cfg = compose_cfg("experiment=oversub_250_on_8", f"policy={preset}", "duration_s=120")
    out = simulate(build(cfg))
    s, req = out.summary, out.result.requests
    assert s["requests"] > 300
    assert s["ok"] + s["rejected"] + s["timed_out"] == s["requests"]
    status = dict(zip(req["outcome"], req["status"], strict=False))
    ok = req["outcome"] == "ok"
    assert set(req["status"][ok]) == {200}
    assert set(req["status"][req["outcome"] == "timeout"]) <= {504}
    parts = (req["control_plane_s"] + req["queue_s"] + req["activation_s"] + req["service_s"])[ok]
    np.testing.assert_allclose(req["total_s"][ok], parts, atol=1e-9)
    assert status  # outcomes were recorded


def test_concurrent_restores_on_one_node_are_each_slower_than_one_alone():
    # 8 actors start cold at t=0, are checkpointed, and restore together at t=10.
    together = Plan.from_schedule([0.0] * 8 + [10.0] * 8, list(range(8)) * 2, 0.01)
    alone = Plan.from_schedule([0.0, 10.0], [0, 0], 0.01, actor_count=8)
    lat = latency(node__cache_mib=1000)
    restores = run(together, lat).activations
    single = run(alone, lat).activations
    warm = ~restores["cold"]
    assert warm.sum() == 8 and (~single["cold"]).sum() == 1
    one = single["restore_s"][~single["cold"]][0]
    assert one == pytest.approx(0.3 + 16 / 1000)  # fixed + size / rate
    assert (restores["restore_s"][warm] > one).all()
    assert restores["restore_s"][warm].max() == pytest.approx(8 / 2.0 * one)  # 2 CPUs shared


def test_a_lazy_restore_answers_after_its_eager_part_and_loads_the_rest_in_the_background():
    # One 16 MiB actor restores alone at t=10; with lazy_fraction 0.75 three quarters of
    # its size-dependent work come after it answers.
    alone = Plan.from_schedule([0.0, 10.0], [0, 0], 0.01, actor_count=8)
    eager = run(alone, latency(node__cache_mib=1000)).activations
    lazy = run(alone, latency(node__cache_mib=1000, restore__lazy_fraction=0.75)).activations
    assert eager["restore_s"][~eager["cold"]][0] == pytest.approx(0.3 + 16 / 1000)
    assert lazy["restore_s"][~lazy["cold"]][0] == pytest.approx(0.3 + 0.25 * 16 / 1000)
    # The deferred pages still take the node's CPU: 8 lazy restores at once slow each
    # other down, by less than eager ones.
    together = Plan.from_schedule([0.0] * 8 + [10.0] * 8, list(range(8)) * 2, 0.01)
    crowded = run(together, latency(node__cache_mib=1000, restore__lazy_fraction=0.75))
    warm = crowded.activations["restore_s"][~crowded.activations["cold"]]
    assert (warm > 0.3 + 0.25 * 16 / 1000).all() and warm.max() < 8 / 2.0 * (0.3 + 0.016)
    with pytest.raises(ValueError, match="lazy_fraction"):
        latency(restore__lazy_fraction=1.5)


def test_snapshot_downloads_share_the_node_link():
    # No cache: every restore downloads its 16 MiB snapshot over a 100 MiB/s link.
    together = Plan.from_schedule([0.0] * 4 + [10.0] * 4, list(range(4)) * 2, 0.01)
    alone = Plan.from_schedule([0.0, 10.0], [0, 0], 0.01, actor_count=4)
    lat = latency()
    shared = run(together, lat).activations
    single = run(alone, lat).activations
    assert single["download_s"][~single["cold"]][0] == pytest.approx(0.16)
    np.testing.assert_allclose(shared["download_s"][~shared["cold"]], 4 * 0.16)
    assert not shared["cache_hit"].any()


def test_control_plane_queue_adds_latency_when_saturated():
    # Substrate's router calls Resume for every request: 40 requests at once on 1 server.
    wl = Plan.from_schedule([0.0] + [5.0] * 40, [0] * 41, 0.01)
    lat = latency(control_plane__servers=1, control_plane__service=fixed(0.05))
    res = run(
        wl,
        lat,
        policies=(LruPlacement(), IdleTimeout(60), FailFast()),
        resume_on_every_request=True,
        sample_interval_s=0.5,
    )
    cp = res.requests["control_plane_s"]
    assert cp[0] == pytest.approx(0.05)
    assert sorted(cp[1:]) == pytest.approx([0.05 * k for k in range(1, 41)])
    assert res.control_plane_calls == 41
    assert res.samples["cp_queue"].max() > 0
    # Routed directly, warm requests skip the control plane.
    direct = run(wl, lat, policies=(LruPlacement(), IdleTimeout(60), FailFast()))
    assert (direct.requests["control_plane_s"][1:] == 0).all()
    assert direct.control_plane_calls == 1


def test_slow_activation_turns_into_504_at_the_router_timeout():
    wl = Plan.from_schedule([0.0], [0], 0.01)
    res = run(wl, latency(cold_start=fixed(8.0)), timeout=5.0)
    assert list(res.requests["outcome"]) == ["timeout"]
    assert res.requests["status"][0] == 504
    assert res.requests["total_s"][0] == pytest.approx(5.0)
    assert len(res.activations["total_s"]) == 1  # the activation itself still completed


def test_snapshot_locality_hits_the_node_cache_more_than_random(compose_cfg):
    # A light load (idle gaps of minutes) with after-request suspension leaves free
    # workers to choose from; on a saturated cluster each freed worker goes to the next
    # waiter and no placement policy has a choice to make. Open loop: in closed loop the
    # same settings saturate (each call of a turn waits for a restore after the previous
    # one's checkpoint; utilization 0.98, 64% of calls fail), and there is no choice.
    def hit_rate(placement):
        cfg = compose_cfg(
            "experiment=oversub_250_on_8",
            "workload.loop=open",
            f"policy/placement={placement}",
            "policy/suspension=after_request",
            "policy/admission=queue",
            "workload.think_time='lognormal(median=300, sigma=1.2)'",
            "cluster.nodes=4",
            "latency=substrate_gke",
            "latency.node.cache_mib=4096",
        )
        acts = simulate(build(cfg)).result.activations
        return acts["cache_hit"].mean(), acts["download_s"].mean()

    loc_hits, loc_download = hit_rate("locality")
    rnd_hits, rnd_download = hit_rate("random")
    assert loc_hits > 1.5 * rnd_hits  # measured: 0.69 vs 0.33
    assert loc_download < rnd_download


def test_substrate_nightly_case_shows_503s_and_none_with_enough_workers(compose_cfg):
    """Substrate's nightly '15 users on 10 workers, 50% oversubscribed' with its policies."""
    over = simulate(build(compose_cfg("experiment=substrate_nightly"))).summary
    enough = simulate(build(compose_cfg("experiment=substrate_nightly", "cluster.workers=15")))
    assert over["actors"] == 15 and over["workers"] == 10
    assert over["rejected"] > 0.05 * over["requests"]  # 503: no free worker
    assert enough.summary["rejected"] == 0 and enough.summary["timed_out"] == 0
    statuses = set(enough.result.requests["status"])
    assert statuses == {200}


def test_headline_default_policy_serves_250_on_8_where_substrates_fails(compose_cfg):
    """The demo's claim: at 250 actors on 8 workers the default policies fail almost no
    call of the agents' (closed-loop) scripts, where Substrate's fail more than one in
    ten even after retrying, with fewer activations."""
    default = simulate(build(compose_cfg("experiment=oversub_250_on_8"))).summary
    substrate = simulate(
        build(compose_cfg("experiment=oversub_250_on_8", "policy=substrate", "router=substrate"))
    ).summary
    for summary in (default, substrate):
        failed = summary["requests"] - summary["ok"]
        summary["failed_fraction"] = failed / summary["requests"]
    assert default["failed_fraction"] < 0.005
    assert substrate["failed_fraction"] > 0.10
    assert substrate["reliability"]["client_retries"] > 20 * max(
        1, default["reliability"]["client_retries"]
    )
    assert default["activations"] < substrate["activations"]


def test_headline_in_open_loop(compose_cfg):
    """The same claim on the open-loop plan (calls at planned times whatever the
    answers): no request fails with the default policies, under half the activations."""
    opened = ("experiment=oversub_250_on_8", "workload.loop=open")
    default = simulate(build(compose_cfg(*opened))).summary
    substrate = simulate(
        build(compose_cfg(*opened, "policy=substrate", "router=substrate"))
    ).summary
    assert default["requests"] == substrate["requests"]  # the same workload
    assert default["rejected"] == default["timed_out"] == 0
    assert substrate["rejected"] > 0.01 * substrate["requests"]
    assert default["activations"] < 0.5 * substrate["activations"]


def test_queueing_admission_turns_substrates_503s_into_waits(compose_cfg):
    cfg = compose_cfg("experiment=substrate_nightly", "policy/admission=queue")
    s = simulate(build(cfg)).summary
    assert s["rejected"] == 0
    assert s["timed_out"] < 0.01 * s["requests"]


def test_random_placement_differs_by_seed_but_not_within_one(compose_cfg):
    def summary(seed):
        cfg = compose_cfg("experiment=substrate_nightly", f"seed={seed}", "duration_s=60")
        s = simulate(build(cfg)).summary
        s.pop("wall_s")
        return s

    assert summary(3) == summary(3)
    assert summary(3) != summary(4)


def test_steady_state_runs_restore_snapshots_and_cold_runs_cold_start(compose_cfg):
    warm = simulate(build(compose_cfg("experiment=oversub_250_on_8", "duration_s=120")))
    cold = simulate(
        build(compose_cfg("experiment=oversub_250_on_8", "duration_s=120", "workload.initial=cold"))
    )
    assert warm.result.activations["cold"].sum() == 0
    assert warm.result.samples["snapshot_bytes_stored"][0] == 250 * (16 << 20)
    cold_acts = cold.result.activations
    first = {}
    for actor, is_cold in zip(cold_acts["actor"], cold_acts["cold"], strict=True):
        first.setdefault(actor, is_cold)
    assert all(first.values())  # every actor's first activation is a cold start
    assert cold_acts["cold"].sum() == len(first)  # and only its first


def test_placement_policies_only_use_workers_that_exist():
    wl = Plan.from_schedule(np.linspace(0, 50, 200), np.arange(200) % 20, 0.2)
    res = run(
        wl,
        latency(),
        workers=6,
        nodes=3,
        policies=(RandomPlacement(1), AfterEachRequest(), QueueWithDeadline(5.0)),
    )
    assert set(res.activations["worker"]) <= {f"w{i}" for i in range(6)}
    node_of = dict(zip(res.activations["worker"], res.activations["node"], strict=True))
    assert all(node_of[w] == f"n{int(w[1:]) % 3}" for w in node_of)
    res2 = run(
        wl,
        latency(),
        workers=6,
        nodes=3,
        policies=(SnapshotLocalityPlacement(), AfterEachRequest(), QueueWithDeadline(5.0)),
    )
    assert res2.requests["outcome"].tolist().count("ok") == 200


# ---------------------------------------------------------------- injected faults


def test_faults_are_injected_through_the_controllers_events_and_every_request_ends(compose_cfg):
    cfg = compose_cfg(
        "experiment=oversub_250_on_8", "duration_s=300", "faults=chaos",
        "faults.restore_failure_rate=0.05", "faults.worker_loss_per_hour=6",
        "faults.checkpoint_failure_rate=0.02",
    )  # fmt: skip
    out = simulate(build(cfg))
    s, rel, req = out.summary, out.summary["reliability"], out.result.requests
    assert s["ok"] + s["rejected"] + s["timed_out"] == s["requests"]  # every request ended
    assert rel["injected_restore_failures"] == rel["failed_activations"] > 0
    assert rel["injected_checkpoint_failures"] == rel["failed_checkpoints"] > 0
    assert rel["injected_workers_lost"] == rel["workers_lost"] > 0
    # A failed or interrupted restore is retried while requests wait for it.
    interrupted = rel["failed_activations"] + rel["workers_lost"] + rel["activation_deadlines"]
    assert 0 < rel["activation_retries"] <= interrupted
    # A lost worker or a lost checkpoint takes an activation's memory with it.
    assert rel["lost_states"] >= rel["failed_checkpoints"]
    # Requests that were being served on a lost worker fail with 502.
    assert (req["status"] == 502).sum() > 0
    assert s["workers"] == 8  # replaced workers keep the pool's size in the summary


def test_runs_with_faults_are_deterministic_and_without_faults_unchanged(compose_cfg):
    base = ("experiment=oversub_250_on_8", "duration_s=120")
    chaos = (*base, "faults=chaos", "faults.worker_loss_per_hour=10")
    first, second = (simulate(build(compose_cfg(*chaos))).summary for _ in range(2))
    first.pop("wall_s"), second.pop("wall_s")
    assert first == second
    # faults=none draws nothing from the fault stream: the latency streams are untouched.
    plain = simulate(build(compose_cfg(*base))).summary
    none = simulate(build(compose_cfg(*base, "faults=none"))).summary
    assert plain["activation_latency_s"] == none["activation_latency_s"]
    assert plain["reliability"]["stale_completions"] == 0


def test_a_restore_failure_rate_of_one_fails_every_request_after_the_attempts():
    from sim.faults import FaultModel

    ctl = Controller(LruPlacement(), AfterEachRequest(), QueueWithDeadline(10.0),
                     router_timeout_s=10.0)  # fmt: skip
    plan = Plan.from_schedule([1.0, 1.0, 1.5], [0, 1, 0], 0.1, duration_s=10.0)
    sim = Simulation(
        ctl, plan, latency(), workers=2, nodes=1, duration_s=10.0, seed=0,
        faults=FaultModel(restore_failure_rate=1.0),
    )  # fmt: skip
    result = sim.run()
    assert list(result.requests["status"]) == [502, 502, 502]
    assert result.reliability["failed_activations"] == 2 * 3  # two actors, three attempts each
    assert result.reliability["activation_retries"] == 2 * 2
    assert len(result.activations["total_s"]) == 0  # failed activations are not latencies
