"""The bursty workload generator and the explicit schedule."""

from __future__ import annotations

import numpy as np
import pytest

from sim.distributions import Fixed, LogNormal, Uniform
from workloads.bursty import BurstyWorkload
from workloads.schedule import ScheduledWorkload


def bursty(**kw):
    args = dict(
        actors=50,
        snapshot_mib=8,
        burst_calls=LogNormal(5, 0.5),
        call_gap=Uniform(0.1, 2.0),
        idle_gap=LogNormal(60, 1.2),
        service=LogNormal(0.2, 0.5),
        window_s=30.0,
    )
    args.update(kw)
    return BurstyWorkload(**args)


def flat(workload, duration, seed):
    batches = list(workload.arrivals(duration, seed))
    return tuple(
        np.concatenate([getattr(b, f) for b in batches]) for f in ("times", "actors", "service_s")
    )


def test_same_seed_same_requests_other_seed_other_requests():
    a, b, c = flat(bursty(), 600, 1), flat(bursty(), 600, 1), flat(bursty(), 600, 2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert len(a[0]) != len(c[0]) or not np.array_equal(a[0], c[0])


def test_arrivals_are_sorted_and_inside_the_run():
    times, actors, service = flat(bursty(), 600, 0)
    assert len(times) > 500
    assert (np.diff(times) >= 0).all()
    assert times.min() >= 0 and times.max() < 600
    assert set(np.unique(actors)) <= set(range(50))
    assert (service > 0).all()


def test_bursts_have_the_configured_shape():
    # 3 calls 0.5 s apart, then 100 s idle: per actor, gaps go 0.5, 0.5, 100.
    wl = bursty(burst_calls=Fixed(3), call_gap=Fixed(0.5), idle_gap=Fixed(100.0), actors=5)
    times, actors, _ = flat(wl, 1000, 0)
    for actor in range(5):
        t = times[actors == actor]
        gaps = np.diff(t)
        assert len(t) >= 27
        small = np.isclose(gaps, 0.5)
        assert np.isclose(gaps[~small], 100.0).all()  # last call -> next burst: the idle gap
        assert small.sum() == pytest.approx(2 * (~small).sum(), abs=2)


def test_actor_ids_are_dns_labels_and_snapshots_sized():
    wl = bursty(actors=250)
    assert wl.actor_id(0) == "a000" and wl.actor_id(249) == "a249"
    assert wl.snapshot_bytes(7) == 8 << 20


def test_scheduled_workload_sorts_stably_and_cuts_at_the_duration():
    wl = ScheduledWorkload([5.0, 1.0, 1.0, 20.0], [2, 0, 1, 0], 0.1)
    (batch,) = wl.arrivals(10.0, seed=0)
    assert batch.times.tolist() == [1.0, 1.0, 5.0]
    assert batch.actors.tolist() == [0, 1, 2]
    assert wl.actors == 3
    with pytest.raises(ValueError, match="actor_count"):
        ScheduledWorkload([0.0], [4], 0.1, actor_count=2)


def test_the_run_starts_in_steady_state_not_with_a_burst_of_bursts():
    # Each actor starts inside an idle gap drawn length-biased; a plain draw put twice
    # the steady load into the first five minutes.
    wl = bursty(actors=20_000, idle_gap=LogNormal(300, 1.2), window_s=60.0)
    times, _, _ = flat(wl, 3600, 0)
    per_5_min = np.histogram(times, bins=np.arange(0, 3601, 300))[0]
    steady = per_5_min[4:].mean()
    assert abs(per_5_min[0] - steady) < 0.05 * steady, per_5_min


def test_initial_state_is_configurable():
    assert bursty().initial_snapshot
    assert not bursty(initial="cold").initial_snapshot
    with pytest.raises(ValueError, match=r"workload\.initial"):
        bursty(initial="warm")
