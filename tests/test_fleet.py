"""The fleet-scale parts of the model: control-plane shards on a consistent-hash ring,
the snapshot store's throughput, what each resource's utilization says, and how long
wake-ups wait."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_sim import LATENCY, fixed, latency, run

from control.hashring import HashRing
from control.policies import FailFast, IdleTimeout, LruPlacement
from experiments.runs.build import build
from experiments.runs.runner import simulate
from sim.latency import latency_from_config
from workloads.plan import Plan

ACTORS = [f"a{i}" for i in range(20_000)]
ROOT = Path(__file__).resolve().parent.parent


def test_a_ring_spreads_actors_evenly_and_the_same_way_in_every_process():
    ring = HashRing(8, vnodes=64)
    owners = [ring.shard_of(a) for a in ACTORS]
    counts = collections.Counter(owners)
    assert sorted(counts) == list(range(8))
    assert max(counts.values()) / min(counts.values()) < 1.6  # 64 points each
    assert owners == [HashRing(8, vnodes=64).shard_of(a) for a in ACTORS]  # stable
    # another process, another string-hash salt: the same owners (BLAKE2b, not hash())
    script = (
        "from control.hashring import HashRing; r = HashRing(8, vnodes=64); "
        "print([r.shard_of(f'a{i}') for i in range(200)])"
    )
    other = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        cwd=ROOT,
        check=True,
    )
    assert other.stdout.strip() == str(owners[:200])
    assert {HashRing(1).shard_of(a) for a in ACTORS[:100]} == {0}


def test_adding_a_shard_moves_only_the_actors_it_takes():
    before, after = HashRing(8), HashRing(9)
    moved = [a for a in ACTORS if before.shard_of(a) != after.shard_of(a)]
    assert all(after.shard_of(a) == 8 for a in moved)  # only onto the new shard
    assert 0.05 < len(moved) / len(ACTORS) < 0.2  # about 1/9


@pytest.mark.parametrize("bad", [{"shards": 0}, {"shards": 1.5}, {"vnodes": 0}])
def test_bad_shard_settings_are_refused_naming_the_field(bad):
    cfg = {**LATENCY, "control_plane": {**LATENCY["control_plane"], **bad}}
    with pytest.raises(ValueError, match=rf"latency\.control_plane\.{next(iter(bad))}"):
        latency_from_config(cfg)
    with pytest.raises(ValueError, match=r"latency\.store\.mib_per_s"):
        latency_from_config({**LATENCY, "store": {"mib_per_s": -1}})


def test_shards_queue_apart_so_one_hot_shard_waits_while_another_idles():
    # 40 actors call at once, one server per shard, 50 ms a call: with one shard they
    # all queue on it; with four, each queues only behind the actors of its own shard.
    wl = Plan.from_schedule([0.0] * 40, list(range(40)), 0.01)
    policies = (LruPlacement(), IdleTimeout(60), FailFast())
    one = run(wl, latency(control_plane__servers=1, control_plane__service=fixed(0.05)),
              workers=40, policies=policies)  # fmt: skip
    four = run(wl, latency(control_plane__servers=1, control_plane__service=fixed(0.05),
                           control_plane__shards=4), workers=40, policies=policies)  # fmt: skip
    assert sorted(one.requests["control_plane_s"]) == pytest.approx(
        [0.05 * k for k in range(1, 41)]
    )
    ring = HashRing(4)
    per_shard = collections.Counter(ring.shard_of(a) for a in four.requests["actor"])
    # the slowest call waited behind the others of the busiest shard only
    assert max(four.requests["control_plane_s"]) == pytest.approx(0.05 * max(per_shard.values()))
    mean, busiest = four.resources["control_plane"], four.resources["control_plane_busiest_shard"]
    assert busiest == pytest.approx(0.05 * max(per_shard.values()) / four.duration_s)
    assert mean == pytest.approx(0.05 * 40 / 4 / four.duration_s)


def test_the_store_caps_transfers_when_it_is_slower_than_the_links():
    # 4 nodes download a 16 MiB snapshot each at once over 100 MiB/s links: 0.16 s alone;
    # through a 200 MiB/s store shared by the four: 64 MiB / 200 MiB/s = 0.32 s.
    wl = Plan.from_schedule([0.0] * 4 + [10.0] * 4, list(range(4)) * 2, 0.01)
    free = run(wl, latency(), workers=4, nodes=4).activations
    capped = run(wl, latency(store={"mib_per_s": 200}), workers=4, nodes=4)
    fetched = ~free["cold"]
    np.testing.assert_allclose(free["download_s"][fetched], 0.16)
    np.testing.assert_allclose(capped.activations["download_s"][~capped.activations["cold"]], 0.32)
    assert 0 < capped.resources["store"] < 1
    assert run(wl, latency(), workers=4, nodes=4).resources["store"] is None


def test_a_fleet_run_reports_its_wake_up_waits_and_the_utilization_of_each_resource(
    compose_cfg,
):
    spec = build(compose_cfg(
        "experiment=fleet", "workload.actors=2000", "cluster.workers=200", "cluster.nodes=20",
        "duration_s=120", "warmup_s=20", "wakeups.period_s=20", "wakeups.jitter_s=2",
    ))  # fmt: skip
    summary = simulate(spec).summary
    waits, used = summary["wakeup_wait_s"], summary["resources"]
    assert waits["p50"] <= waits["p95"] <= waits["p99"] <= waits["max"]
    assert summary["policy_actions"]["wakeups_delivered"] > 5000  # ~100 per second
    assert set(used) == {
        "control_plane",
        "control_plane_busiest_shard",
        "node_cpu",
        "node_cpu_busiest",
        "node_link",
        "node_link_busiest",
        "store",
        "workers",
    }
    assert all(0 <= share <= 1.05 for share in used.values())
    assert used["control_plane_busiest_shard"] >= used["control_plane"]
    assert used["node_link_busiest"] >= used["node_link"] > 0
    assert used["store"] > 0
