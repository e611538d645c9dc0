"""How the controller treats wake-ups that actors schedule (``timers`` in the config)."""

from __future__ import annotations

from dataclasses import dataclass

from control.policies.checks import finite, integer


@dataclass(frozen=True)
class TimerSettings:
    """Wake-ups: an actor asks to be woken at a time (a timer, or work it set itself).

    ``lead_s``: restore a suspended actor this long before its wake-up is due (on a free
    worker only), and keep an idle one running when its wake-up comes within this long
    of its suspension time. ``wait_s``: how long a delivered wake-up may wait for its
    activation (no client waits for it). ``max_pending``: wake-ups an actor may have
    scheduled at once (more are refused, so one actor cannot flood the timers);
    ``max_after_s``: how far ahead a wake-up may be.
    """

    lead_s: float = 1.0
    wait_s: float = 60.0
    max_pending: int = 16
    max_after_s: float = 86_400.0

    def __post_init__(self) -> None:
        finite("lead_s", self.lead_s, zero_ok=True)
        finite("wait_s", self.wait_s)
        integer("max_pending", self.max_pending, 1)
        finite("max_after_s", self.max_after_s)
