"""The agent session model: turns of calls, heavy-tailed think times, skew, load shapes.

An actor is an agent session. A *turn* is a burst of ``calls_per_turn`` requests to
the actor (tool calls), ``call_gap`` apart (the model's reply in between), each with
``service`` seconds of work at the actor. Between turns the agent waits
``think_time`` for a human or a long tool: seconds to hours, heavy-tailed.

* ``population: fixed``: ``actors`` sessions exist from the start and never leave;
  with ``popularity_zipf = s > 0`` the actor of rank r comes back ``∝ r^-s`` as often
  (actor 0 is the most active).
* ``population: open``: sessions arrive (Poisson, ``session_rate_per_s``), run
  ``turns_per_session`` turns and leave; each session is a new, cold actor.
* ``shape`` varies the pace of the whole population (see :mod:`workloads.shapes`).
* ``loop``: ``open`` (the default) draws every call's time up front, ``call_gap`` apart
  whatever the answers; ``closed`` draws the sessions' scripts instead
  (:meth:`AgentWorkload.scripts`) and lets the answers decide when each call goes out
  (:mod:`workloads.sessions`, with ``client``'s retry policy).

Generation is vectorised over actors, one time segment at a time: an idle actor is a
few array slots (its next turn, its rate), never a process, so a million actors cost
tens of MB. Measured agents for scale: GitHub Copilot coding-agent sessions (2026)
average 3.95 turns, 7.8 LLM calls and 7.3 tool calls per turn.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.distributions import Distribution, from_config
from workloads.base import (
    ArrivalBatch,
    Population,
    WorkloadRun,
    actor_ids,
    concat,
    select,
    sort,
)
from workloads.sessions import LOOPS, ClientPolicy, Scripts
from workloads.shapes import LoadShape, Steady, TimeWarp, shape_from_config

MIB = 1 << 20
POPULATIONS = ("fixed", "open")
CONFIG_KEYS = {
    "kind", "name", "population", "actors", "session_rate_per_s", "turns_per_session",
    "calls_per_turn", "call_gap", "service", "think_time", "popularity_zipf", "snapshot_mib",
    "shape", "initial", "template", "window_s", "loop", "client", "long_answer_share",
    "long_answer", "tenants",
}  # fmt: skip


@dataclass
class _Actors:
    """Per-actor generator state, one array slot per actor."""

    next_turn: np.ndarray  # when its next turn starts (inf: none)
    rates: np.ndarray  # relative pace of coming back (Zipf)
    turns_left: np.ndarray  # turns before the session leaves (inf: never)
    last_end: np.ndarray  # when its last turn's last call finished


def tenant_owners(count: int, tenants: int, *, by_rank: bool) -> list[str] | None:
    """Owners ``t0 .. t{tenants-1}`` of ``count`` actors; None without tenants.

    ``by_rank``: in contiguous blocks of popularity rank, so under Zipf popularity
    tenant t0 owns the busiest actors (a noisy neighbour); else round robin (sessions
    that arrive over time).
    """
    if tenants <= 0:
        return None
    if by_rank:
        return [f"t{i * tenants // count}" for i in range(count)]
    return [f"t{i % tenants}" for i in range(count)]


def zipf_rates(count: int, exponent: float) -> NDArray[np.float64]:
    """Relative activity of actors ranked 0..count-1 under Zipf(exponent); mean 1."""
    weights = np.arange(1, count + 1, dtype=np.float64) ** -exponent
    return weights / weights.mean()


class AgentWorkload:
    """Agent sessions: turns of calls separated by think times, seeded."""

    def __init__(
        self,
        *,
        calls_per_turn: Distribution,
        call_gap: Distribution,
        think_time: Distribution,
        service: Distribution,
        population: str = "fixed",
        actors: int = 250,
        session_rate_per_s: float = 0.0,
        turns_per_session: Distribution | None = None,
        snapshot_mib: Distribution | None = None,
        popularity_zipf: float = 0.0,
        shape: LoadShape | None = None,
        initial: str = "snapshot",
        template: str = "agent",
        name: str = "agent",
        window_s: float = 60.0,
        loop: str = "open",
        client: ClientPolicy | None = None,
        long_answer_share: float = 0.0,
        long_answer: Distribution | None = None,
        tenants: int = 0,
    ) -> None:
        if population not in POPULATIONS:
            raise ValueError(f"workload.population: unknown {population!r}; allowed: fixed, open")
        if population == "fixed" and actors < 1:
            raise ValueError(f"workload.actors: must be >= 1 (got {actors})")
        if population == "open":
            if not session_rate_per_s > 0:
                raise ValueError(
                    f"workload.session_rate_per_s: must be > 0 for an open population "
                    f"(got {session_rate_per_s})"
                )
            if turns_per_session is None:
                raise ValueError("workload.turns_per_session: required for an open population")
        if not think_time.mean > 0:
            raise ValueError("workload.think_time: must have a mean > 0")
        if not (math.isfinite(popularity_zipf) and popularity_zipf >= 0):
            raise ValueError(f"workload.popularity_zipf: must be >= 0 (got {popularity_zipf})")
        if initial not in ("snapshot", "cold"):
            raise ValueError(f"workload.initial: must be snapshot or cold (got {initial!r})")
        if not window_s > 0:
            raise ValueError(f"workload.window_s: must be > 0 (got {window_s})")
        if loop not in LOOPS:
            raise ValueError(f"workload.loop: unknown {loop!r}; allowed: open, closed")
        if not (math.isfinite(long_answer_share) and 0 <= long_answer_share <= 1):
            raise ValueError(
                f"workload.long_answer_share: must be in [0, 1] (got {long_answer_share})"
            )
        if long_answer_share > 0 and long_answer is None:
            raise ValueError("workload.long_answer: required when long_answer_share > 0")
        if loop == "closed" and (shape or Steady()).waves(1e12):
            raise ValueError(
                "workload.loop=closed: shapes with waves (waves, flash_crowd) are not "
                "played closed-loop yet; use workload.loop=open"
            )
        self.name = name
        self.population = population
        self.actors = actors
        self.session_rate_per_s = session_rate_per_s
        self.turns_per_session = turns_per_session
        self.calls_per_turn = calls_per_turn
        self.call_gap = call_gap
        self.think_time = think_time
        self.service = service
        self.snapshot_mib = snapshot_mib
        self.popularity_zipf = popularity_zipf
        self.shape = shape or Steady()
        self.initial = initial
        self.template = template
        self.window_s = window_s
        self.loop = loop
        self.long_answer_share = long_answer_share
        self.long_answer = long_answer
        if isinstance(tenants, bool) or not isinstance(tenants, int) or tenants < 0:
            raise ValueError(f"workload.tenants: must be an integer >= 0 (got {tenants!r})")
        self.tenants = tenants
        self.client = client or ClientPolicy()

    # ------------------------------------------------------------ running

    def start(self, duration_s: float, seed: int) -> WorkloadRun:
        """The population and its requests (open loop), or its scripts (closed loop)."""
        if self.loop == "closed":
            scripts = self.scripts(duration_s, seed)
            return WorkloadRun(scripts.population, iter(()), scripts)
        rng = np.random.default_rng([seed, 0x4147454E])  # stream tag "AGEN"
        warp = TimeWarp(self.shape, duration_s)
        population, state = self._population(rng, warp, duration_s)
        return WorkloadRun(population, self._generate(rng, warp, duration_s, state))

    def _population(
        self, rng: np.random.Generator, warp: TimeWarp, duration_s: float
    ) -> tuple[Population, _Actors]:
        if self.population == "fixed":
            n = self.actors
            rates = zipf_rates(n, self.popularity_zipf)
            turns_left = np.full(n, np.inf)
            first_turn = warp.inverse(self._residual_think(rng, n) / rates)
            created = np.zeros(n)
            version = np.full(n, 1 if self.initial == "snapshot" else 0, dtype=np.int64)
        else:
            first_turn = self._session_arrivals(rng, warp, duration_s)
            n = first_turn.size
            rates = np.ones(n)
            assert self.turns_per_session is not None
            turns_left = np.maximum(1, np.rint(self.turns_per_session.sample_n(rng, n)))
            created = first_turn.copy()
            version = np.zeros(n, dtype=np.int64)
        sizes = self.snapshot_mib.sample_n(rng, n) if self.snapshot_mib else np.zeros(n)
        population = Population(
            ids=actor_ids(n),
            snapshot_bytes=(sizes * MIB).astype(np.int64),
            snapshot_version=version,
            created_s=created,
            template=self.template,
            owners=tenant_owners(n, self.tenants, by_rank=self.population == "fixed"),
        )
        return population, _Actors(first_turn, rates, turns_left, np.full(n, -np.inf))

    def _service(self, rng: np.random.Generator, total: int) -> np.ndarray:
        """The actor's time for ``total`` calls: ``service``, except for a
        ``long_answer_share`` of calls whose answers take model time (a long or streamed
        response: ``long_answer``). Nothing more is drawn when the share is 0."""
        service = self.service.sample_n(rng, total)
        if self.long_answer_share > 0:
            assert self.long_answer is not None
            long = rng.random(total) < self.long_answer_share
            service[long] = self.long_answer.sample_n(rng, int(long.sum()))
        return service

    def scripts(self, duration_s: float, seed: int) -> Scripts:
        """Closed-loop sessions (:mod:`workloads.sessions`): each actor's turns, drawn
        until its earliest possible next turn (every answer instant) is past the end."""
        rng = np.random.default_rng([seed, 0x434C4F53])  # stream tag "CLOS"
        warp = TimeWarp(self.shape, duration_s)
        population, state = self._population(rng, warp, duration_s)
        earliest = state.next_turn.copy()  # each actor's next turn, if answers took no time
        rounds: list[tuple[np.ndarray, ...]] = []
        due = np.flatnonzero((earliest < duration_s) & (state.turns_left > 0))
        while due.size:
            calls = np.maximum(1, np.rint(self.calls_per_turn.sample_n(rng, due.size)))
            calls = calls.astype(np.int64)
            total = int(calls.sum())
            first = np.cumsum(calls) - calls
            gaps = self.call_gap.sample_n(rng, total)
            gaps[first] = 0.0
            service = self._service(rng, total)
            think = np.maximum(self.think_time.sample_n(rng, due.size), 1e-3) / state.rates[due]
            ends = np.zeros(total, dtype=bool)
            ends[first + calls - 1] = True
            thinks = np.zeros(total)
            thinks[first + calls - 1] = think
            turn_s = np.add.reduceat(gaps + service, first)
            state.turns_left[due] -= 1
            earliest[due] = np.where(
                state.turns_left[due] > 0, warp.advance(earliest[due] + turn_s, think), np.inf
            )
            rounds.append((np.repeat(due, calls), gaps, service, ends, thinks))
            due = np.flatnonzero((earliest < duration_s) & (state.turns_left > 0))
        n = len(population)
        if rounds:
            columns = (np.concatenate(c) for c in zip(*rounds, strict=True))
            actor, gap, service, ends, thinks = columns
        else:
            actor = np.empty(0, dtype=np.int64)
            gap, service, thinks, ends = np.empty(0), np.empty(0), np.empty(0), np.empty(0, bool)
        order = np.argsort(actor, kind="stable")  # per actor, its turns in order
        offsets = np.searchsorted(actor[order], np.arange(n + 1)).astype(np.int64)
        return Scripts(
            population, state.next_turn, offsets, gap[order], service[order], ends[order],
            thinks[order], warp, float(duration_s), self.client, seed, self.name,
        )  # fmt: skip

    def _residual_think(self, rng: np.random.Generator, n: int, pool: int = 8) -> np.ndarray:
        """Time left of the think time each actor is in at t=0 (operational seconds).

        A run that starts in steady state finds each actor inside some think time, and
        long ones are more likely to be the one in progress (length bias): draw it with
        probability proportional to its length, then a uniform point in it. A plain
        draw would put too many first turns near t=0.
        """
        candidates = self.think_time.sample_n(rng, pool * n)
        in_progress = rng.choice(candidates, size=n, p=candidates / candidates.sum())
        return rng.uniform(0.0, 1.0, n) * in_progress

    def _session_arrivals(
        self, rng: np.random.Generator, warp: TimeWarp, duration_s: float
    ) -> np.ndarray:
        """Session start times: Poisson in operational time, plus the shape's waves."""
        total = float(warp.forward(np.array([duration_s]))[0])
        count = rng.poisson(self.session_rate_per_s * total)
        starts = warp.inverse(np.sort(rng.uniform(0.0, total, count)))
        waves = [np.full(size, t) for t, size in self.shape.waves(duration_s)]
        return np.sort(np.concatenate([starts, *waves]), kind="stable")

    def _generate(
        self, rng: np.random.Generator, warp: TimeWarp, duration_s: float, state: _Actors
    ) -> Iterator[ArrivalBatch]:
        """Turns, one segment at a time; segments end at window ends and wave times."""
        waves = self.shape.waves(duration_s) if self.population == "fixed" else []
        boundaries = sorted(
            {*np.arange(self.window_s, duration_s, self.window_s).tolist(), duration_s}
            | {t for t, _ in waves}
        )
        wave_at = dict(waves)
        carry: list[ArrivalBatch] = []
        for end in boundaries:
            parts = carry
            while True:
                due = np.flatnonzero(state.next_turn < end)
                if due.size == 0:
                    break
                parts.append(self._turns(rng, warp, due, state))
            batch = concat(parts)
            now = batch.times < end
            later = ~now & (batch.times < duration_s)
            carry = [select(batch, later)] if later.any() else []
            if end in wave_at:
                self._wave(rng, end, wave_at[end], state)
            yield sort(select(batch, now))

    def _turns(
        self, rng: np.random.Generator, warp: TimeWarp, due: np.ndarray, state: _Actors
    ) -> ArrivalBatch:
        """One turn for each actor in ``due``; schedules the turn after it."""
        calls = np.maximum(1, np.rint(self.calls_per_turn.sample_n(rng, due.size))).astype(np.int64)
        total = int(calls.sum())
        first = np.cumsum(calls) - calls  # index of each turn's first call
        gaps = self.call_gap.sample_n(rng, total)
        gaps[first] = 0.0
        offsets = np.cumsum(gaps)
        offsets -= np.repeat(offsets[first], calls)
        times = np.repeat(state.next_turn[due], calls) + offsets
        service = self._service(rng, total)
        last = first + calls - 1
        turn_end = times[last] + service[last]
        state.last_end[due] = turn_end
        state.turns_left[due] -= 1
        think = np.maximum(self.think_time.sample_n(rng, due.size), 1e-3) / state.rates[due]
        state.next_turn[due] = np.where(
            state.turns_left[due] > 0, warp.advance(turn_end, think), np.inf
        )
        return ArrivalBatch(times, np.repeat(due, calls), service)

    @staticmethod
    def _wave(rng: np.random.Generator, at: float, size: int, state: _Actors) -> None:
        """``size`` idle actors (not in a turn) start a turn at ``at``."""
        idle = np.flatnonzero(
            (state.last_end <= at) & (state.next_turn > at) & (state.turns_left > 0)
        )
        chosen = rng.choice(idle, size=min(size, idle.size), replace=False)
        state.next_turn[np.sort(chosen)] = at

    # ------------------------------------------------------------ config

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], base_dir: Path | None = None) -> AgentWorkload:
        """Build from ``conf/workload/*.yaml``-shaped config (kind: agent)."""

        def dist(key: str, default: Any = None) -> Distribution | None:
            value = cfg.get(key, default)
            return None if value is None else from_config(value, f"workload.{key}", base_dir)

        def number(key: str, default: float) -> float:
            value = cfg.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"workload.{key}: must be a number (got {value!r})")
            return float(value)

        unknown = set(cfg) - CONFIG_KEYS
        if unknown:
            allowed = sorted(CONFIG_KEYS)
            raise ValueError(
                f"workload: unknown {sorted(unknown)} for kind agent; allowed: {allowed}"
            )
        actors = cfg.get("actors", 250)
        if isinstance(actors, bool) or not isinstance(actors, int):
            raise ValueError(f"workload.actors: must be an integer >= 1 (got {actors!r})")
        required = {k: dist(k) for k in ("calls_per_turn", "call_gap", "think_time", "service")}
        missing = [k for k, v in required.items() if v is None]
        if missing:
            raise ValueError(f"workload: missing {missing}")
        return cls(
            calls_per_turn=required["calls_per_turn"],  # type: ignore[arg-type]
            call_gap=required["call_gap"],  # type: ignore[arg-type]
            think_time=required["think_time"],  # type: ignore[arg-type]
            service=required["service"],  # type: ignore[arg-type]
            population=str(cfg.get("population", "fixed")),
            actors=actors,
            session_rate_per_s=number("session_rate_per_s", 0.0),
            turns_per_session=dist("turns_per_session"),
            snapshot_mib=dist("snapshot_mib", 16),
            popularity_zipf=number("popularity_zipf", 0.0),
            shape=shape_from_config(cfg.get("shape")),
            initial=str(cfg.get("initial", "snapshot")),
            template=str(cfg.get("template", "agent")),
            name=str(cfg.get("name", "agent")),
            window_s=number("window_s", 60.0),
            loop=str(cfg.get("loop", "open")),
            client=ClientPolicy.from_config(cfg.get("client")),
            long_answer_share=number("long_answer_share", 0.0),
            long_answer=dist("long_answer"),
            tenants=cfg.get("tenants", 0),
        )
