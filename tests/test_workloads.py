"""The agent session model, load shapes and plans."""

from __future__ import annotations

import numpy as np
import pytest

from sim.distributions import Fixed, LogNormal, Uniform
from workloads.agent import AgentWorkload, zipf_rates
from workloads.base import concat
from workloads.plan import Plan
from workloads.shapes import Diurnal, FlashCrowd, TimeWarp, Waves, shape_from_config


def agent(**kw):
    args = dict(
        actors=50,
        snapshot_mib=Fixed(8),
        calls_per_turn=LogNormal(5, 0.5),
        call_gap=Uniform(0.1, 2.0),
        think_time=LogNormal(60, 1.2),
        service=LogNormal(0.2, 0.5),
        window_s=30.0,
    )
    args.update(kw)
    return AgentWorkload(**args)


def flat(workload, duration, seed):
    run = workload.start(duration, seed)
    return run.population, concat(list(run.batches))


def test_same_seed_same_requests_other_seed_other_requests():
    (_, a), (_, b), (_, c) = flat(agent(), 600, 1), flat(agent(), 600, 1), flat(agent(), 600, 2)
    for f in ("times", "actors", "service_s"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert len(a) != len(c) or not np.array_equal(a.times, c.times)


def test_arrivals_are_sorted_and_inside_the_run():
    pop, batch = flat(agent(), 600, 0)
    assert len(batch) > 500
    assert (np.diff(batch.times) >= 0).all()
    assert batch.times.min() >= 0 and batch.times.max() < 600
    assert set(np.unique(batch.actors)) <= set(range(50))
    assert (batch.service_s > 0).all()
    assert pop.ids[0] == "a00" and pop.ids[49] == "a49"
    assert (pop.snapshot_bytes == 8 << 20).all() and (pop.snapshot_version == 1).all()


def test_turns_have_the_configured_shape():
    # 3 calls 0.5 s apart taking 0.1 s each, then 100 s of thinking: per actor the gaps
    # go 0.5, 0.5, 100.1 (the think time starts when the turn's last call is done).
    wl = agent(
        calls_per_turn=Fixed(3), call_gap=Fixed(0.5), think_time=Fixed(100.0),
        service=Fixed(0.1), actors=5,
    )  # fmt: skip
    _, batch = flat(wl, 1000, 0)
    for actor in range(5):
        gaps = np.diff(batch.times[batch.actors == actor])
        small = np.isclose(gaps, 0.5)
        assert len(gaps) >= 26
        assert np.isclose(gaps[~small], 100.1).all()
        assert small.sum() == pytest.approx(2 * (~small).sum(), abs=2)


def test_the_run_starts_in_steady_state_not_with_a_burst_of_turns():
    # Each actor starts inside a think time drawn length-biased; a plain draw put twice
    # the steady load into the first five minutes.
    wl = agent(actors=20_000, think_time=LogNormal(300, 1.2), window_s=60.0)
    _, batch = flat(wl, 3600, 0)
    per_5_min = np.histogram(batch.times, bins=np.arange(0, 3601, 300))[0]
    steady = per_5_min[4:].mean()
    assert abs(per_5_min[0] - steady) < 0.05 * steady, per_5_min


def test_zipf_popularity_makes_low_ranks_busier():
    rates = zipf_rates(100, 1.0)
    assert rates.mean() == pytest.approx(1.0) and rates[0] == pytest.approx(
        100 / sum(1 / np.arange(1, 101))
    )
    _, batch = flat(agent(actors=100, popularity_zipf=1.0), 3600, 0)
    counts = np.bincount(batch.actors, minlength=100)
    assert counts[:10].sum() > 3 * counts[-10:].sum() * 10 / 10
    _, flat_batch = flat(agent(actors=100), 3600, 0)
    flat_counts = np.bincount(flat_batch.actors, minlength=100)
    assert counts[:10].sum() > 2 * flat_counts[:10].sum()


def test_open_population_sessions_arrive_run_their_turns_and_leave():
    wl = agent(
        population="open", session_rate_per_s=0.2, turns_per_session=Fixed(3),
        calls_per_turn=Fixed(2), think_time=Fixed(20.0), call_gap=Fixed(1.0), service=Fixed(0.1),
    )  # fmt: skip
    pop, batch = flat(wl, 2000, 4)
    n = len(pop)
    assert 300 < n < 500  # Poisson, mean 400
    assert (pop.snapshot_version == 0).all()  # new sessions are cold
    assert (np.diff(pop.created_s) >= 0).all()
    per_actor = np.bincount(batch.actors, minlength=n)
    finished = pop.created_s < 2000 - 3 * 21.2  # room for 3 turns
    assert (per_actor[finished] == 6).all()  # 3 turns x 2 calls, then gone
    first = {}
    for t, a in zip(batch.times, batch.actors, strict=True):
        first.setdefault(a, t)
    assert all(first[a] == pytest.approx(pop.created_s[a]) for a in first)


def test_waves_wake_the_configured_number_of_actors_at_once():
    shape = Waves(start_s=30, period_s=60, count=3, size=8)
    wl = agent(actors=250, think_time=LogNormal(3600, 0.5), shape=shape)
    _, batch = flat(wl, 300, 0)
    for t in (30.0, 90.0, 150.0):
        at = batch.actors[batch.times == t]
        assert len(np.unique(at)) == 8, t  # 8 distinct actors begin a turn exactly then
    assert not (batch.times == 210.0).any()  # only 3 waves


def test_flash_crowd_multiplies_the_rate_during_its_window():
    shape = FlashCrowd(start_s=1200, duration_s=600, multiplier=4.0)
    wl = agent(actors=5000, think_time=LogNormal(120, 0.8), shape=shape)
    _, batch = flat(wl, 3000, 0)
    rate = lambda a, b: ((batch.times >= a) & (batch.times < b)).sum() / (b - a)  # noqa: E731
    before, during, after = rate(600, 1200), rate(1400, 1800), rate(2400, 3000)
    assert during / before == pytest.approx(4.0, rel=0.15)
    assert after / before == pytest.approx(1.0, rel=0.1)


def test_diurnal_load_peaks_at_the_configured_time():
    shape = Diurnal(period_s=2400, amplitude=0.8, peak_s=1800)
    wl = agent(actors=3000, think_time=LogNormal(60, 0.5), shape=shape)
    _, batch = flat(wl, 4800, 0)
    hist, edges = np.histogram(batch.times, bins=np.arange(0, 4801, 200))
    peak = edges[np.argmax(hist[:12])]  # within the first period
    trough = edges[np.argmin(hist[:12])]
    assert abs(peak + 100 - 1800) <= 200 and abs(trough + 100 - 600) <= 200
    assert hist.max() / hist.min() > 4  # (1 + 0.8) / (1 - 0.8) = 9 at the extremes


def test_time_warp_is_the_identity_for_steady_and_inverts():
    warp = TimeWarp(FlashCrowd(100, 50, 3.0), 400)
    t = np.array([0.0, 50, 120, 300, 500])
    np.testing.assert_allclose(warp.inverse(warp.forward(t)), t, atol=1e-9)
    assert warp.advance(np.array([100.0]), np.array([30.0]))[0] == pytest.approx(110.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("waves(start_s=0, period_s=60)", "waves takes exactly"),
        ("tsunami()", "unknown 'tsunami'; allowed: steady, waves, flash_crowd, diurnal"),
        ("diurnal(period_s=100, amplitude=1.5, peak_s=0)", "0 <= amplitude < 1"),
        ("flash_crowd(start_s=0, duration_s=10, multiplier=0)", "multiplier > 0"),
    ],
)
def test_bad_shapes_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        shape_from_config(text)


def test_initial_state_is_configurable():
    pop, _ = flat(agent(initial="cold"), 10, 0)
    assert (pop.snapshot_version == 0).all()
    with pytest.raises(ValueError, match=r"workload\.initial"):
        agent(initial="warm")


def test_plan_round_trips_and_replays_exactly(tmp_path):
    plan = Plan.materialize(agent(), 300, 7)
    plan.save(tmp_path / "p.npz")
    back = Plan.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(back.times, plan.times)
    np.testing.assert_array_equal(back.actors, plan.actors)
    assert back.population.ids == plan.population.ids and back.seed == 7
    (replayed,) = back.start(300, seed=99).batches
    np.testing.assert_array_equal(replayed.times, plan.times)
    per_actor = plan.actor_requests()
    assert sum(len(r) for r in per_actor) == len(plan)
    assert all((plan.actors[r] == i).all() for i, r in enumerate(per_actor))


def test_plan_from_schedule_sorts_stably_and_cuts_at_the_duration():
    plan = Plan.from_schedule([5.0, 1.0, 1.0, 20.0], [2, 0, 1, 0], 0.1)
    (batch,) = plan.start(10.0, seed=0).batches
    assert batch.times.tolist() == [1.0, 1.0, 5.0]
    assert batch.actors.tolist() == [0, 1, 2]
    assert len(plan.population) == 3
    with pytest.raises(ValueError, match="actor_count"):
        Plan.from_schedule([0.0], [4], 0.1, actor_count=2)
