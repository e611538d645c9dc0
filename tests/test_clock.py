"""call_later calls back in exactly the order SimPy's own timeouts would, ties included."""

from __future__ import annotations

import random

import pytest
import simpy

from sim.clock import call_later, run_until


def _play(seed: int, light: bool) -> list[tuple[float, int]]:
    """Callbacks that schedule more callbacks (many at equal times) beside a process;
    which callback ran when."""
    env, rng, seen = simpy.Environment(), random.Random(seed), []

    def later(delay: float, callback) -> None:
        if light:
            call_later(env, delay, callback)
        else:
            env.timeout(delay).callbacks.append(callback)

    def fire(tag: int, depth: int) -> None:
        seen.append((env.now, tag))
        for child in range(rng.randrange(3) if depth < 4 else 0):
            later(rng.choice((0.0, 0.5, 1.0, rng.random())), make(tag * 10 + child, depth + 1))

    def make(tag: int, depth: int):
        return lambda _event: fire(tag, depth)

    def process():
        for step in range(20):
            yield env.timeout(rng.choice((0.0, 0.5, 1.0)))
            seen.append((env.now, -step))

    env.process(process())
    for tag in range(30):
        later(rng.choice((0.0, 0.5, 1.0, 2.0)), make(tag, 0))
    end = env.timeout(3.0)
    end.callbacks.append(lambda _event: seen.append((env.now, 999)))
    if light:
        run_until(env, end)
    else:
        env.run(until=end)
    assert env.now == 3.0 and seen[-1] == (3.0, 999)
    return seen


@pytest.mark.parametrize("seed", range(5))
def test_call_later_runs_callbacks_in_the_order_timeouts_would(seed):
    expected = _play(seed, light=False)
    assert len(expected) > 30
    assert _play(seed, light=True) == expected


def test_a_negative_delay_is_refused_like_a_timeout():
    env = simpy.Environment()
    with pytest.raises(ValueError):
        env.timeout(-1)
    with pytest.raises(ValueError, match="negative delay"):
        call_later(env, -1, lambda _event: None)


def test_run_until_stops_at_its_event_and_raises_what_a_process_raised():
    env = simpy.Environment()

    def failing():
        yield env.timeout(1)
        raise KeyError("boom")

    env.process(failing())
    with pytest.raises(KeyError, match="boom"):
        run_until(env, env.timeout(5))
    assert env.now == 1

    env = simpy.Environment()
    never = env.event()
    call_later(env, 2, lambda _event: None)
    with pytest.raises(RuntimeError, match="never triggered"):
        run_until(env, never)
    assert env.now == 2
