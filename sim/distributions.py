"""Random distributions for latencies and workloads, built from config.

A distribution is a small frozen object; randomness always comes from a
``numpy.random.Generator`` the caller owns, so a run is reproducible from its seed.
In config a distribution is one string (times in seconds)::

    0.3                                   # the same as fixed(value=0.3)
    fixed(value=0.3)
    uniform(low=0.1, high=2.0)
    lognormal(median=0.3, sigma=0.2)      # sigma of log(x)
    exponential(mean=30)
    pareto(minimum=5, alpha=1.5)          # heavy tail, x >= minimum
    empirical(path=samples.csv, column=restore_s)

A string replaces a default as a whole when configs are merged (a mapping would be
merged key by key), and overrides on the command line stay one value:
``actormux 'workload.idle_gap="pareto(minimum=5, alpha=1.5)"'``. A mapping
``{kind: lognormal, median: 0.3, sigma: 0.2}`` is accepted too, from Python.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


class Distribution(Protocol):
    """Something to sample non-negative values from."""

    def sample_n(self, rng: np.random.Generator, n: int) -> FloatArray:
        """``n`` independent samples."""
        ...

    @property
    def mean(self) -> float:
        """The distribution's mean (``inf`` when it has none)."""
        ...


@dataclass(frozen=True)
class Fixed:
    """Always ``value``."""

    value: float

    def sample_n(self, rng: np.random.Generator, n: int) -> FloatArray:
        return np.full(n, self.value)

    @property
    def mean(self) -> float:
        return self.value


@dataclass(frozen=True)
class Uniform:
    """Uniform on [low, high)."""

    low: float
    high: float

    def sample_n(self, rng: np.random.Generator, n: int) -> FloatArray:
        return rng.uniform(self.low, self.high, n)

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2


@dataclass(frozen=True)
class LogNormal:
    """Log-normal with the given median and ``sigma`` (standard deviation of log x)."""

    median: float
    sigma: float

    def sample_n(self, rng: np.random.Generator, n: int) -> FloatArray:
        return rng.lognormal(math.log(self.median), self.sigma, n)

    @property
    def mean(self) -> float:
        return self.median * math.exp(self.sigma**2 / 2)


@dataclass(frozen=True)
class Exponential:
    """Exponential with the given mean."""

    mean_s: float

    def sample_n(self, rng: np.random.Generator, n: int) -> FloatArray:
        return rng.exponential(self.mean_s, n)

    @property
    def mean(self) -> float:
        return self.mean_s


@dataclass(frozen=True)
class Pareto:
    """Pareto (type I): ``x >= minimum``, tail index ``alpha`` (smaller = heavier)."""

    minimum: float
    alpha: float

    def sample_n(self, rng: np.random.Generator, n: int) -> FloatArray:
        return self.minimum * (1.0 + rng.pareto(self.alpha, n))

    @property
    def mean(self) -> float:
        return math.inf if self.alpha <= 1 else self.alpha * self.minimum / (self.alpha - 1)


@dataclass(frozen=True)
class Empirical:
    """Resamples (with replacement) measured values, e.g. restore times from a real run."""

    values: tuple[float, ...]
    source: str = ""

    def sample_n(self, rng: np.random.Generator, n: int) -> FloatArray:
        return np.asarray(self.values)[rng.integers(len(self.values), size=n)]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))


KINDS = ("fixed", "uniform", "lognormal", "exponential", "pareto", "empirical")


class Sampler:
    """Draws one value at a time from a distribution, generating them in blocks.

    Per-value calls into numpy cost ~1 us; a block of draws costs a few ns per value.
    The sequence depends only on the generator's state, so it is reproducible.
    """

    __slots__ = ("_buf", "_dist", "_i", "_n", "_rng")

    def __init__(self, dist: Distribution, rng: np.random.Generator, block: int = 1024) -> None:
        self._dist = dist
        self._rng = rng
        self._n = block
        self._buf: list[float] = []
        self._i = 0

    def __call__(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._dist.sample_n(self._rng, self._n).tolist()
            self._i = 0
        value = self._buf[self._i]
        self._i += 1
        return value


def _number(cfg: Mapping[str, Any], key: str, field: str) -> float:
    if key not in cfg:
        raise ValueError(f"{field}.{key}: missing")
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{field}.{key}: must be a finite number (got {value!r})")
    return float(value)


def _read_samples(path: Path, column: str | None, field: str) -> tuple[float, ...]:
    if not path.is_file():
        raise ValueError(f"{field}.path: no such file {str(path)!r}")
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{field}.path: {path} is empty")
        header = [h.strip() for h in header]
        if column is None:
            col = 0
        elif column in header:
            col = header.index(column)
        else:
            raise ValueError(f"{field}.column: {column!r} not in {path} (columns: {header})")
        values = []
        for line, row in enumerate(reader, start=2):
            if not row or not row[col].strip():
                continue
            try:
                value = float(row[col])
            except ValueError:
                raise ValueError(f"{path}:{line}: not a number: {row[col]!r}") from None
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{path}:{line}: samples must be finite and >= 0 (got {value})")
            values.append(value)
    if not values:
        raise ValueError(f"{field}.path: {path} holds no samples")
    return tuple(values)


_CALL = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", re.IGNORECASE | re.DOTALL)


def parse(text: str, field: str) -> dict[str, Any]:
    """Parse ``kind(key=value, ...)`` (or a bare number) into a config mapping."""
    try:
        return {"kind": "fixed", "value": float(text)}
    except ValueError:
        pass
    match = _CALL.match(text)
    if match is None:
        raise ValueError(
            f"{field}: cannot read {text!r}; write e.g. lognormal(median=0.3, sigma=0.2) "
            f"(kinds: {', '.join(KINDS)})"
        )
    cfg: dict[str, Any] = {"kind": match.group(1).lower()}
    args = match.group(2).strip()
    for arg in args.split(",") if args else []:
        key, eq, value = arg.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise ValueError(f"{field}: expected key=value, got {arg.strip()!r} in {text!r}")
        if key in cfg:
            raise ValueError(f"{field}: {key} given twice in {text!r}")
        try:
            cfg[key] = float(value)
        except ValueError:
            cfg[key] = value.strip("'\"")
    return cfg


def from_config(cfg: Any, field: str, base_dir: Path | None = None) -> Distribution:
    """Build a distribution from its config string (or mapping, or number).

    ``field`` is the config path used in error messages (e.g. ``latency.restore.fixed``);
    relative empirical paths are resolved against ``base_dir``. Raises ``ValueError``
    naming the field and the allowed values when the config is impossible.
    """
    if isinstance(cfg, str):
        cfg = parse(cfg, field)
    elif isinstance(cfg, int | float) and not isinstance(cfg, bool):
        cfg = {"kind": "fixed", "value": cfg}
    if not isinstance(cfg, Mapping):
        raise ValueError(
            f"{field}: expected a distribution such as lognormal(median=0.3, sigma=0.2) "
            f"(kinds: {', '.join(KINDS)}); got {cfg!r}"
        )
    kind = cfg.get("kind")
    allowed = {
        "fixed": {"value"},
        "uniform": {"low", "high"},
        "lognormal": {"median", "sigma"},
        "exponential": {"mean"},
        "pareto": {"minimum", "alpha"},
        "empirical": {"path", "column"},
    }
    if kind not in allowed:
        raise ValueError(f"{field}.kind: unknown {kind!r}; allowed: {', '.join(KINDS)}")
    extra = set(cfg) - allowed[kind] - {"kind"}
    if extra:
        raise ValueError(
            f"{field}: unexpected {sorted(extra)} for {kind}; allowed: {sorted(allowed[kind])}"
        )
    if kind == "fixed":
        value = _number(cfg, "value", field)
        if value < 0:
            raise ValueError(f"{field}.value: must be >= 0 (got {value})")
        return Fixed(value)
    if kind == "uniform":
        low, high = _number(cfg, "low", field), _number(cfg, "high", field)
        if not 0 <= low <= high:
            raise ValueError(f"{field}: uniform needs 0 <= low <= high (got {low}, {high})")
        return Uniform(low, high)
    if kind == "lognormal":
        median, sigma = _number(cfg, "median", field), _number(cfg, "sigma", field)
        if median <= 0:
            raise ValueError(f"{field}.median: must be > 0 (got {median})")
        if sigma < 0:
            raise ValueError(f"{field}.sigma: must be >= 0 (got {sigma})")
        return LogNormal(median, sigma)
    if kind == "exponential":
        mean = _number(cfg, "mean", field)
        if mean <= 0:
            raise ValueError(f"{field}.mean: must be > 0 (got {mean})")
        return Exponential(mean)
    if kind == "pareto":
        minimum, alpha = _number(cfg, "minimum", field), _number(cfg, "alpha", field)
        if minimum <= 0:
            raise ValueError(f"{field}.minimum: must be > 0 (got {minimum})")
        if alpha <= 0:
            raise ValueError(f"{field}.alpha: must be > 0 (got {alpha})")
        return Pareto(minimum, alpha)
    raw_path = cfg.get("path")
    if not isinstance(raw_path, str) or not raw_path:
        raise ValueError(f"{field}.path: a CSV file of samples is required")
    path = Path(raw_path)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    column = cfg.get("column")
    return Empirical(_read_samples(path, None if column is None else str(column), field), str(path))
