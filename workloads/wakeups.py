"""Wake-ups that actors schedule themselves (timers), for the simulator.

A fraction of the actors wake themselves every ``period_s`` (plus or minus up to
``jitter_s``): a cron-like check, or an agent that said "look again in five minutes".
Each wake-up is a turn of ``service_s`` seconds; when it ends (or fails) the actor
schedules its next one. Which actors, and the phase of each one's first wake-up, come
from the run's seed alone; the jitter of later ones from a stream of their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

_FIELDS = ("fraction", "period_s", "jitter_s", "service_s")


@dataclass(frozen=True)
class WakeupSource:
    """Which share of the actors wake themselves, how often, and for how long."""

    fraction: float = 0.0
    period_s: float = 300.0
    jitter_s: float = 30.0
    service_s: float = 1.0

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"wakeups.{name}: must be a number (got {value!r})")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"wakeups.{name}: must be finite and >= 0 (got {value!r})")
        if self.fraction > 1:
            raise ValueError(f"wakeups.fraction: must be in [0, 1] (got {self.fraction!r})")
        if self.period_s <= 0:
            raise ValueError(f"wakeups.period_s: must be > 0 (got {self.period_s!r})")
        if self.jitter_s >= self.period_s:
            raise ValueError(
                f"wakeups.jitter_s: must be < period_s={self.period_s:g} (got {self.jitter_s!r})"
            )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> WakeupSource:
        """The source fields of the ``wakeups`` section (the others are the controller's)."""
        return cls(**{name: cfg[name] for name in _FIELDS if name in cfg})

    def plan(self, actors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Which actors (indices, ascending) wake themselves, and when each first does."""
        if self.fraction <= 0 or actors == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x57414B45]))  # "WAKE"
        count = round(self.fraction * actors)
        chosen = np.sort(rng.choice(actors, size=count, replace=False))
        return chosen, rng.uniform(0.0, self.period_s, size=count)

    def jitter_stream(self, seed: int) -> np.random.Generator:
        """The random stream of later wake-ups' jitter."""
        return np.random.default_rng(np.random.SeedSequence([seed, 0x4A4954]))  # "JIT"
