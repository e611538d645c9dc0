"""Distributions from config, and the shared-resource models, checked in isolation."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from sim.distributions import Empirical, LogNormal, Pareto, Sampler, from_config
from sim.resources import ByteLru, FluidShare, ServerPool


def test_lognormal_median_and_pareto_minimum_hold_empirically():
    rng = np.random.default_rng(1)
    x = from_config({"kind": "lognormal", "median": 0.3, "sigma": 0.5}, "f").sample_n(rng, 200_000)
    assert np.median(x) == pytest.approx(0.3, rel=0.01)
    assert LogNormal(0.3, 0.5).mean == pytest.approx(x.mean(), rel=0.01)
    p = Pareto(5.0, 1.5).sample_n(rng, 100_000)
    assert p.min() >= 5.0 and p.mean() > 10  # heavy tail: mean 15


def test_sampler_matches_block_sampling_and_is_reproducible():
    dist = LogNormal(1.0, 1.0)
    a = Sampler(dist, np.random.default_rng(5), block=7)
    b = Sampler(dist, np.random.default_rng(5), block=7)
    drawn = [a() for _ in range(20)]
    assert drawn == [b() for _ in range(20)]
    assert drawn[:7] == dist.sample_n(np.random.default_rng(5), 7).tolist()


def test_empirical_reads_a_column_and_reports_bad_lines(tmp_path):
    good = tmp_path / "s.csv"
    good.write_text("run,restore_s\n1,0.3\n2,0.5\n")
    dist = from_config({"kind": "empirical", "path": "s.csv", "column": "restore_s"}, "f", tmp_path)
    assert isinstance(dist, Empirical) and set(dist.values) == {0.3, 0.5}
    bad = tmp_path / "bad.csv"
    bad.write_text("restore_s\n0.3\nslow\n")
    with pytest.raises(ValueError, match=r"bad\.csv:3: not a number"):
        from_config({"kind": "empirical", "path": str(bad)}, "f")
    with pytest.raises(ValueError, match=r"f\.column: 'x' not in"):
        from_config({"kind": "empirical", "path": str(good), "column": "x"}, "f")


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"kind": "gamma"}, "f.kind: unknown 'gamma'; allowed: fixed, uniform, lognormal"),
        ({"kind": "lognormal", "median": 0, "sigma": 1}, "f.median: must be > 0"),
        ({"kind": "lognormal", "median": 1, "sigma": -1}, "f.sigma: must be >= 0"),
        ({"kind": "uniform", "low": 2, "high": 1}, "low <= high"),
        ({"kind": "fixed", "value": -0.1}, "f.value: must be >= 0"),
        ({"kind": "fixed", "value": "fast"}, "f.value: must be a finite number"),
        ({"kind": "fixed"}, "f.value: missing"),
        ({"kind": "pareto", "minimum": 1, "alpha": 0}, "f.alpha: must be > 0"),
        ({"kind": "fixed", "value": 1, "sigma": 2}, "unexpected"),
        ({"kind": "empirical", "path": "/no/such.csv"}, "f.path: no such file"),
    ],
)
def test_impossible_distributions_name_the_field(cfg, message):
    with pytest.raises(ValueError, match=message):
        from_config(cfg, "f")


def _finish_times(resource_factory, jobs):
    """Start ``jobs`` as (start time, work) on one resource; return each finish time."""
    env = simpy.Environment()
    res = resource_factory(env)
    done = {}

    def job(i, start, work):
        yield env.timeout(start)
        yield res.run(work)
        done[i] = env.now

    for i, (start, work) in enumerate(jobs):
        env.process(job(i, start, work))
    env.run()
    return [done[i] for i in range(len(jobs))]


def test_eight_concurrent_restores_are_each_slower_but_more_in_total():
    def cpu(env):
        return FluidShare(env, capacity=2.2, per_job_cap=1.0)

    alone = _finish_times(cpu, [(0, 0.33)])[0]
    together = _finish_times(cpu, [(0, 0.33)] * 8)
    assert alone == pytest.approx(0.33)
    assert all(t > alone for t in together)
    assert max(together) / alone == pytest.approx(8 / 2.2)  # each ~3.6x slower
    assert 8 * alone / max(together) == pytest.approx(2.2)  # throughput 2.2x one alone


def test_link_bandwidth_is_shared_by_concurrent_transfers():
    def link(env):
        return FluidShare(env, capacity=100.0)  # bytes/s

    # b starts halfway through a: both run at 50 B/s until a is done.
    assert _finish_times(link, [(0, 100), (0.5, 100)]) == pytest.approx([1.5, 2.0])
    assert _finish_times(link, [(0, 100)]) == pytest.approx([1.0])


def test_server_pool_queues_calls_beyond_its_servers():
    env = simpy.Environment()
    pool = ServerPool(env, servers=2, service=lambda: 1.0)
    ends = []
    for _ in range(5):
        pool.call().callbacks.append(lambda _e: ends.append(env.now))
    assert pool.queue_length == 3
    env.run()
    assert ends == [1.0, 1.0, 2.0, 2.0, 3.0]
    assert pool.calls == 5 and pool.busy == 0


def test_byte_lru_evicts_least_recently_used_and_replaces_versions():
    cache = ByteLru(100)
    assert cache.put("a", 1, 40) == (True, [])
    assert cache.put("b", 1, 40) == (True, [])
    assert cache.hit("a", 1)  # a is now the most recently used
    assert cache.put("c", 1, 40) == (True, [("b", 1)])
    assert cache.put("a", 2, 40) == (True, [("a", 1)])
    assert not cache.hit("a", 1) and cache.hit("a", 2)
    assert cache.put("huge", 1, 101) == (False, [])
    assert cache.used == 80
