"""Trace replay: request arrivals from a CSV file.

Two formats:

* generic: a ``timestamp`` column (seconds as numbers, or date-times), optionally an
  ``actor`` column and a ``service_s`` column (names configurable);
* azure: the Azure LLM inference 2023 format ``TIMESTAMP,ContextTokens,GeneratedTokens``;
  a request's service time is ``ContextTokens / prefill_tokens_per_s +
  GeneratedTokens / decode_tokens_per_s``.

Times start at the first request, are multiplied by ``time_scale`` (2 = half the
rate) and windowed from ``window_start_s`` for the run's duration. Without an actor
column, requests go to ``actors`` actors by a seeded session/popularity model:
``concurrent_sessions`` sessions are open at any time and each request goes to one of
them (uniformly), so an actor's calls in a session come about ``concurrent_sessions /
rate`` seconds apart; a session ends after ``calls_per_session`` calls and its slot
goes to a new session of an actor drawn by Zipf popularity (one not in a session).
Between sessions an actor is idle, as an agent between turns. A bad trace fails with
the file and line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from sim.distributions import Distribution, LogNormal, from_config
from workloads.agent import MIB, zipf_rates
from workloads.base import ArrivalBatch, Population, WorkloadRun, actor_ids

PROJECT_ROOT = Path(__file__).resolve().parent.parent
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
FORMATS = ("auto", "generic", "azure")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class TraceError(ValueError):
    """A trace file that cannot be replayed; the message names the file and line."""


@dataclass(frozen=True)
class Trace:
    """Requests read from a trace: seconds since the first, optional actors and service."""

    times: NDArray[np.float64]
    actors: list[str] | None
    service_s: NDArray[np.float64] | None
    source: str
    format: str


def _line(row: int) -> int:
    """The file line of data row ``row`` (the header is line 1)."""
    return row + 2


def _parse_times(raw: pd.Series, path: Path) -> NDArray[np.float64]:
    numeric = pd.to_numeric(raw, errors="coerce")
    if not np.isnan(numeric.iloc[0]):  # the first value decides: seconds or date-times
        bad = np.flatnonzero(numeric.isna().to_numpy())
        if bad.size:
            row = int(bad[0])
            raise TraceError(
                f"{path}:{_line(row)}: cannot parse timestamp {raw.iloc[row]!r} "
                "(the trace gives seconds)"
            )
        seconds = numeric.to_numpy(dtype=np.float64)
    else:
        parsed = pd.to_datetime(raw, errors="coerce", format="ISO8601")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size:
            row = int(bad[0])
            raise TraceError(
                f"{path}:{_line(row)}: cannot parse timestamp {raw.iloc[row]!r} "
                "(expected seconds or an ISO 8601 date-time)"
            )
        ns = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        seconds = (ns - ns[0]) / 1e9
    if not np.isfinite(seconds).all():
        row = int(np.flatnonzero(~np.isfinite(seconds))[0])
        raise TraceError(f"{path}:{_line(row)}: timestamp {raw.iloc[row]!r} is not finite")
    backwards = np.flatnonzero(np.diff(seconds) < 0)
    if backwards.size:
        row = int(backwards[0]) + 1
        raise TraceError(
            f"{path}:{_line(row)}: timestamps out of order ({raw.iloc[row]!r} after "
            f"{raw.iloc[row - 1]!r}); sort the trace by time first"
        )
    return seconds - seconds[0]


def _numbers(raw: pd.Series, column: str, path: Path) -> NDArray[np.float64]:
    values = pd.to_numeric(raw, errors="coerce")
    bad = np.flatnonzero((values.isna() | (values < 0)).to_numpy())
    if bad.size:
        row = int(bad[0])
        raise TraceError(
            f"{path}:{_line(row)}: {column} must be a number >= 0 (got {raw.iloc[row]!r})"
        )
    return values.to_numpy(dtype=np.float64)


def read_trace(
    path: Path,
    *,
    format: str = "auto",
    timestamp_column: str = "timestamp",
    actor_column: str | None = "actor",
    service_column: str | None = None,
    prefill_tokens_per_s: float = 4000.0,
    decode_tokens_per_s: float = 50.0,
) -> Trace:
    """Read and check a trace file (see the module docstring for the formats)."""
    if format not in FORMATS:
        raise TraceError(f"workload.format: unknown {format!r}; allowed: {', '.join(FORMATS)}")
    if not path.is_file():
        raise TraceError(f"workload.path: no such file {str(path)!r}")
    try:
        frame = pd.read_csv(path, dtype=str, skipinitialspace=True, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise TraceError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise TraceError(f"{path}: not a readable CSV file ({e})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    columns = set(frame.columns)
    if format == "auto":
        format = "azure" if set(AZURE_COLUMNS) <= columns else "generic"
    if format == "azure":
        missing = [c for c in AZURE_COLUMNS if c not in columns]
        if missing:
            raise TraceError(f"{path}: missing columns {missing} for the azure format")
        time_col, actor_col, service_col = "TIMESTAMP", None, None
    else:
        if timestamp_column not in columns:
            raise TraceError(
                f"{path}: no timestamp column {timestamp_column!r} (columns: {sorted(columns)}); "
                "set workload.timestamp_column"
            )
        time_col = timestamp_column
        actor_col = actor_column if actor_column in columns else None
        if service_column is not None and service_column not in columns:
            raise TraceError(f"{path}: no service column {service_column!r}")
        service_col = service_column
    if frame.empty:
        raise TraceError(f"{path}: the trace has a header but no requests")
    times = _parse_times(frame[time_col], path)
    service = None
    if format == "azure":
        if not (prefill_tokens_per_s > 0 and decode_tokens_per_s > 0):
            raise TraceError("workload: prefill_tokens_per_s and decode_tokens_per_s must be > 0")
        context = _numbers(frame["ContextTokens"], "ContextTokens", path)
        generated = _numbers(frame["GeneratedTokens"], "GeneratedTokens", path)
        service = context / prefill_tokens_per_s + generated / decode_tokens_per_s
    elif service_col is not None:
        service = _numbers(frame[service_col], service_col, path)
    actors = None
    if actor_col is not None:
        actors = [a.strip() for a in frame[actor_col].tolist()]
        empty = [i for i, a in enumerate(actors) if not a]
        if empty:
            raise TraceError(f"{path}:{_line(empty[0])}: empty {actor_col}")
    return Trace(times, actors, service, str(path), format)


def assign_actors(
    count: int,
    requests: int,
    rng: np.random.Generator,
    *,
    zipf: float,
    concurrent_sessions: int,
    calls_per_session: Distribution,
) -> NDArray[np.int64]:
    """Give each of ``requests`` requests (in time order) an actor, by sessions."""
    slots = min(concurrent_sessions, count)
    slot_of = rng.integers(slots, size=requests)
    lengths = np.maximum(1, np.rint(calls_per_session.sample_n(rng, requests))).astype(np.int64)
    candidates = rng.choice(count, size=2 * requests + count, p=zipf_rates(count, zipf) / count)
    next_candidate = 0
    actor_in = np.full(slots, -1)
    left = np.zeros(slots, dtype=np.int64)
    busy = np.zeros(count, dtype=bool)  # actors in a session now
    sessions = 0
    out = np.empty(requests, dtype=np.int64)
    for i in range(requests):
        slot = slot_of[i]
        if left[slot] == 0:  # open a new session in this slot
            if actor_in[slot] >= 0:
                busy[actor_in[slot]] = False
            while busy[candidates[next_candidate]]:
                next_candidate += 1
            actor = candidates[next_candidate]
            next_candidate += 1
            busy[actor] = True
            actor_in[slot], left[slot] = actor, lengths[sessions]
            sessions += 1
        out[i] = actor_in[slot]
        left[slot] -= 1
    return out


class TraceWorkload:
    """Replays a trace file (see the module docstring)."""

    def __init__(
        self,
        trace: Trace,
        *,
        actors: int = 250,
        service: Distribution | None = None,
        time_scale: float = 1.0,
        window_start_s: float = 0.0,
        popularity_zipf: float = 0.5,
        concurrent_sessions: int = 16,
        calls_per_session: Distribution | None = None,
        snapshot_mib: float = 16.0,
        initial: str = "snapshot",
        name: str = "trace",
    ) -> None:
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"workload.time_scale: must be > 0 (got {time_scale})")
        if window_start_s < 0:
            raise ValueError(f"workload.window_start_s: must be >= 0 (got {window_start_s})")
        if trace.actors is None and actors < 1:
            raise ValueError(f"workload.actors: must be >= 1 (got {actors})")
        if concurrent_sessions < 1:
            raise ValueError(
                f"workload.concurrent_sessions: must be >= 1 (got {concurrent_sessions})"
            )
        if trace.service_s is None and service is None:
            raise ValueError("workload.service: needed when the trace has no service times")
        if initial not in ("snapshot", "cold"):
            raise ValueError(f"workload.initial: must be snapshot or cold (got {initial!r})")
        self.trace = trace
        self.actors = actors
        self.service = service
        self.time_scale = time_scale
        self.window_start_s = window_start_s
        self.popularity_zipf = popularity_zipf
        self.concurrent_sessions = concurrent_sessions
        self.calls_per_session = calls_per_session or LogNormal(6.0, 0.6)
        self.snapshot_bytes = int(snapshot_mib * MIB)
        self.initial = initial
        self.name = name

    def start(self, duration_s: float, seed: int) -> WorkloadRun:
        rng = np.random.default_rng([seed, 0x54524143])  # stream tag "TRAC"
        trace = self.trace
        scaled = trace.times * self.time_scale
        keep = (scaled >= self.window_start_s) & (scaled < self.window_start_s + duration_s)
        times = scaled[keep] - self.window_start_s
        if trace.actors is not None:
            names = [a for a, k in zip(trace.actors, keep.tolist(), strict=True) if k]
            unique = list(dict.fromkeys(names))
            ids = unique if all(_DNS_LABEL.fullmatch(a) for a in unique) else actor_ids(len(unique))
            index = {a: i for i, a in enumerate(unique)}
            actors = np.asarray([index[a] for a in names], dtype=np.int64)
        else:
            ids = actor_ids(self.actors)
            actors = assign_actors(
                self.actors, times.size, rng, zipf=self.popularity_zipf,
                concurrent_sessions=self.concurrent_sessions,
                calls_per_session=self.calls_per_session,
            )  # fmt: skip
        if trace.service_s is not None:
            service = trace.service_s[keep]
        else:
            assert self.service is not None
            service = self.service.sample_n(rng, times.size)
        n = len(ids)
        population = Population(
            ids=ids,
            snapshot_bytes=np.full(n, self.snapshot_bytes, dtype=np.int64),
            snapshot_version=np.full(n, int(self.initial == "snapshot"), dtype=np.int64),
            created_s=np.zeros(n),
            template="agent",
        )

        def batches() -> Iterator[ArrivalBatch]:
            yield ArrivalBatch(times, actors, service)

        return WorkloadRun(population, batches())

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], base_dir: Path | None = None) -> TraceWorkload:
        """Build from ``conf/workload/trace.yaml``-shaped config; reads the trace now."""
        allowed = {
            "kind", "name", "path", "format", "timestamp_column", "actor_column",
            "service_column", "service", "prefill_tokens_per_s", "decode_tokens_per_s",
            "time_scale", "window_start_s", "actors", "popularity_zipf", "concurrent_sessions",
            "calls_per_session", "snapshot_mib", "initial",
        }  # fmt: skip
        unknown = set(cfg) - allowed
        if unknown:
            raise ValueError(
                f"workload: unknown {sorted(unknown)} for kind trace; allowed: {sorted(allowed)}"
            )
        raw_path = cfg.get("path")
        if not isinstance(raw_path, str) or not raw_path:
            raise ValueError("workload.path: the trace file to replay is required")
        trace = read_trace(
            resolve_path(raw_path, base_dir),
            format=str(cfg.get("format", "auto")),
            timestamp_column=str(cfg.get("timestamp_column", "timestamp")),
            actor_column=cfg.get("actor_column", "actor"),
            service_column=cfg.get("service_column"),
            prefill_tokens_per_s=float(cfg.get("prefill_tokens_per_s", 4000.0)),
            decode_tokens_per_s=float(cfg.get("decode_tokens_per_s", 50.0)),
        )
        service = cfg.get("service")
        actors = cfg.get("actors", 250)
        if isinstance(actors, bool) or not isinstance(actors, int):
            raise ValueError(f"workload.actors: must be an integer >= 1 (got {actors!r})")
        return cls(
            trace,
            actors=actors,
            service=None if service is None else from_config(service, "workload.service"),
            time_scale=float(cfg.get("time_scale", 1.0)),
            window_start_s=float(cfg.get("window_start_s", 0.0)),
            popularity_zipf=float(cfg.get("popularity_zipf", 0.5)),
            concurrent_sessions=int(cfg.get("concurrent_sessions", 16)),
            calls_per_session=from_config(
                cfg.get("calls_per_session", "lognormal(median=6, sigma=0.6)"),
                "workload.calls_per_session",
            ),
            snapshot_mib=float(cfg.get("snapshot_mib", 16.0)),
            initial=str(cfg.get("initial", "snapshot")),
            name=str(cfg.get("name", "trace")),
        )


def resolve_path(raw: str, base_dir: Path | None) -> Path:
    """An absolute path as is; a relative one against ``base_dir`` (the directory the
    command ran in), then the project root (so ``data/...`` works from anywhere)."""
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path
    for root in (base_dir or Path.cwd(), PROJECT_ROOT):
        if (root / path).is_file():
            return root / path
    return (base_dir or Path.cwd()) / path
