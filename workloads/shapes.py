"""Global load shapes: how the whole population's activity varies over a run.

A shape has an *intensity* ``m(t) > 0`` (1 = the workload's own pace) and may add
*waves*: moments when many actors wake at once. Think times between turns pass in
"operational time": an actor that would think for ``x`` seconds at intensity 1 wakes
at ``Λ⁻¹(Λ(t) + x)`` with ``Λ(t) = ∫₀ᵗ m``, so a flash crowd of 5x makes actors come
back five times sooner while their turns (calls and the gaps between them) keep
their own pace. In config a shape is one string::

    steady()
    waves(start_s=30, period_s=60, count=3, size=8)     # Substrate's "3 waves of 8"
    flash_crowd(start_s=300, duration_s=120, multiplier=5)
    diurnal(period_s=86400, amplitude=0.6, peak_s=50400) # m = 1 + a cos(2π (t - peak)/period)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from sim.distributions import parse

FloatArray = NDArray[np.float64]
SHAPES = ("steady", "waves", "flash_crowd", "diurnal")


class LoadShape(Protocol):
    """Intensity over time and synchronized wake-ups."""

    def intensity(self, t: FloatArray) -> FloatArray:
        """``m(t)``, strictly positive."""
        ...

    def waves(self, duration_s: float) -> list[tuple[float, int]]:
        """``(time, actors)`` pairs: that many actors start a turn at that time."""
        ...


@dataclass(frozen=True)
class Steady:
    """Constant intensity 1."""

    def intensity(self, t: FloatArray) -> FloatArray:
        return np.ones_like(t)

    def waves(self, duration_s: float) -> list[tuple[float, int]]:
        return []


@dataclass(frozen=True)
class Waves:
    """``count`` waves of ``size`` actors, ``period_s`` apart from ``start_s``."""

    start_s: float
    period_s: float
    count: int
    size: int

    def intensity(self, t: FloatArray) -> FloatArray:
        return np.ones_like(t)

    def waves(self, duration_s: float) -> list[tuple[float, int]]:
        times = (self.start_s + k * self.period_s for k in range(self.count))
        return [(t, self.size) for t in times if t < duration_s]


@dataclass(frozen=True)
class FlashCrowd:
    """Intensity ``multiplier`` during ``[start_s, start_s + duration_s)``, else 1."""

    start_s: float
    duration_s: float
    multiplier: float

    def intensity(self, t: FloatArray) -> FloatArray:
        inside = (t >= self.start_s) & (t < self.start_s + self.duration_s)
        return np.where(inside, self.multiplier, 1.0)

    def waves(self, duration_s: float) -> list[tuple[float, int]]:
        return []


@dataclass(frozen=True)
class Diurnal:
    """A daily cycle: ``1 + amplitude * cos(2π (t - peak_s) / period_s)``."""

    period_s: float
    amplitude: float
    peak_s: float

    def intensity(self, t: FloatArray) -> FloatArray:
        return 1.0 + self.amplitude * np.cos(2 * math.pi * (t - self.peak_s) / self.period_s)

    def waves(self, duration_s: float) -> list[tuple[float, int]]:
        return []


class TimeWarp:
    """Maps think time (operational seconds) to wall-clock time under a shape.

    ``Λ`` is integrated on a grid of at most 1 s steps over ``[0, horizon_s]``; beyond
    the horizon intensity 1 is assumed (only times inside the run matter).
    """

    def __init__(self, shape: LoadShape, horizon_s: float) -> None:
        steps = max(2, math.ceil(horizon_s / min(1.0, horizon_s / 100)) + 1)
        self.t = np.linspace(0.0, horizon_s, steps)
        m = shape.intensity(self.t)
        if not np.all(m > 0):
            raise ValueError("workload.shape: intensity must stay > 0")
        self.lam = np.concatenate([[0.0], np.cumsum((m[1:] + m[:-1]) / 2 * np.diff(self.t))])
        self.identity = bool(np.all(m == 1.0))

    @classmethod
    def from_arrays(cls, t: FloatArray, lam: FloatArray, identity: bool) -> TimeWarp:
        """A warp from its grid (as saved with a session script)."""
        warp = cls.__new__(cls)
        warp.t, warp.lam, warp.identity = np.asarray(t), np.asarray(lam), bool(identity)
        return warp

    def forward(self, t: FloatArray) -> FloatArray:
        """``Λ(t)``."""
        if self.identity:
            return t
        end_t, end_lam = self.t[-1], self.lam[-1]
        return np.asarray(
            np.where(t <= end_t, np.interp(t, self.t, self.lam), end_lam + (t - end_t)),
            dtype=np.float64,
        )

    def inverse(self, lam: FloatArray) -> FloatArray:
        """``Λ⁻¹(λ)``."""
        if self.identity:
            return lam
        end_t, end_lam = self.t[-1], self.lam[-1]
        return np.asarray(
            np.where(lam <= end_lam, np.interp(lam, self.lam, self.t), end_t + (lam - end_lam)),
            dtype=np.float64,
        )

    def advance(self, t: FloatArray, think: FloatArray) -> FloatArray:
        """Wall time after thinking ``think`` operational seconds from ``t``."""
        if self.identity:
            return np.asarray(t + think, dtype=np.float64)
        return self.inverse(self.forward(t) + think)


def _num(cfg: Mapping[str, Any], key: str, field: str) -> float:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{field}.{key}: must be a finite number (got {value!r})")
    return float(value)


def shape_from_config(cfg: Any, field: str = "workload.shape") -> LoadShape:
    """Build a load shape from ``kind(key=value, ...)`` (or a mapping with ``kind``)."""
    if cfg is None:
        return Steady()
    if isinstance(cfg, str):
        cfg = parse(cfg, field)
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{field}: expected e.g. flash_crowd(start_s=300, duration_s=120, ...)")
    kind = cfg.get("kind")
    params = {
        "steady": set(),
        "waves": {"start_s", "period_s", "count", "size"},
        "flash_crowd": {"start_s", "duration_s", "multiplier"},
        "diurnal": {"period_s", "amplitude", "peak_s"},
    }
    if kind not in params:
        raise ValueError(f"{field}.kind: unknown {kind!r}; allowed: {', '.join(SHAPES)}")
    given = set(cfg) - {"kind"}
    if given != params[kind]:
        raise ValueError(
            f"{field}: {kind} takes exactly {sorted(params[kind])} (got {sorted(given)})"
        )
    if kind == "steady":
        return Steady()
    if kind == "waves":
        start, period = _num(cfg, "start_s", field), _num(cfg, "period_s", field)
        count, size = _num(cfg, "count", field), _num(cfg, "size", field)
        if start < 0 or period <= 0 or count < 1 or size < 1 or count % 1 or size % 1:
            raise ValueError(
                f"{field}: waves need start_s >= 0, period_s > 0, integer count, size >= 1"
            )
        return Waves(start, period, int(count), int(size))
    if kind == "flash_crowd":
        start, length = _num(cfg, "start_s", field), _num(cfg, "duration_s", field)
        mult = _num(cfg, "multiplier", field)
        if start < 0 or length <= 0 or mult <= 0:
            raise ValueError(
                f"{field}: flash_crowd needs start_s >= 0, duration_s > 0, multiplier > 0"
            )
        return FlashCrowd(start, length, mult)
    period, amp, peak = (_num(cfg, k, field) for k in ("period_s", "amplitude", "peak_s"))
    if period <= 0 or not 0 <= amp < 1:
        raise ValueError(f"{field}: diurnal needs period_s > 0 and 0 <= amplitude < 1")
    return Diurnal(period, amp, peak)
