"""A cheaper "call this later" on a SimPy environment, in the same order as a timeout.

Most of what the simulator schedules is a function to call at a time, not a process
to resume: a request's service ending, a timer, a resource's next completion. Doing
that with ``env.timeout(delay).callbacks.append(fn)`` builds a full
:class:`simpy.Timeout` per call. :func:`call_later` pushes a bare, slotted event
instead, with the same key (time, NORMAL priority, the environment's next event id)
at the same moment, so SimPy processes it exactly where it would have processed the
timeout: a run's results do not change (``actormux bench core`` is bit-identical), it
costs ~0.9 µs less per call (measured: 1 M calls, 3.4 s -> 2.5 s).

It relies on three attributes SimPy 4 keeps on :class:`simpy.Environment` (``_queue``,
``_eid``, ``_now``) and on what ``Environment.step`` reads from an event
(``callbacks``, ``_ok``); ``tests/test_clock.py`` checks the order against real
timeouts, so a SimPy release that changes them fails there first.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

import simpy
from simpy.events import NORMAL, URGENT

Callback = Callable[[Any], object]


class _Call:
    """What ``Environment.step`` needs of an event: its callbacks and that it succeeded."""

    __slots__ = ("_ok", "_value", "callbacks")

    def __init__(self, callback: Callback) -> None:
        self.callbacks: list[Callback] | None = [callback]
        self._ok = True
        self._value = None


def call_later(env: simpy.Environment, delay: float, callback: Callback) -> None:
    """Call ``callback(event)`` ``delay`` seconds from now (``delay`` >= 0), ordered
    exactly as ``env.timeout(delay).callbacks.append(callback)`` would be."""
    if delay < 0:
        raise ValueError(f"negative delay {delay}")
    heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), _Call(callback)))  # type: ignore[misc]


def call_first(env: simpy.Environment, callback: Callback) -> None:
    """Call ``callback(event)`` now, before the events due now, where
    ``env.process(...)`` would run a new process's first step."""
    heappush(env._queue, (env._now, URGENT, next(env._eid), _Call(callback)))  # type: ignore[misc]


def run_until(env: simpy.Environment, until: simpy.Event) -> None:
    """``env.run(until=until)`` with ``Environment.step`` inlined: the same events in
    the same order, without a method call and exception frame per event."""
    queue = env._queue
    while True:
        try:
            env._now, _, _, event = heappop(queue)
        except IndexError:
            raise RuntimeError(f"no events left, {until} was never triggered") from None
        callbacks, event.callbacks = event.callbacks, None  # type: ignore[assignment]
        for callback in callbacks:
            callback(event)
        if event is until:
            return
        if not event._ok and not hasattr(event, "_defused"):  # a process failed
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc
