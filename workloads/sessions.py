"""Closed-loop agent sessions: scripts drawn before the run, played against the answers.

A real agent sends its next tool call only after the previous one has been answered
and the model has taken its time (``call_gap``); its think time runs from the end of
the turn; a call that fails is retried under the client's policy. So when a call goes
out depends on how the system answered, and the open-loop plan of
:mod:`workloads.agent` (calls ``call_gap`` apart whatever happens) cannot say it.

:class:`Scripts` holds what the agents will do, drawn from the seed before the run:
for every actor its turns, each a list of calls with the model time before each call
and the service time it asks of the actor, and the think time after the turn.
:class:`SessionPlayer` turns answers into the next calls. It is pure (no clock, no
I/O): the simulator drives it in virtual time and the Locust side in real time, so
the same seed and the same answers give the same calls, the same gaps after answers
and the same retries (retry jitter is a hash of the seed, the actor, the call and the
attempt, not a shared random stream, so it does not depend on the order in which
answers arrive).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from workloads.base import Population, WorkloadRun
from workloads.shapes import TimeWarp

LOOPS = ("open", "closed")
GIVE_UP = ("turn", "call")
RESEND = ("same_id", "new_id")


@dataclass(frozen=True)
class ClientPolicy:
    """What an agent does when a call fails (rejected or timed out).

    It retries up to ``retries`` times, waiting ``backoff_s`` before the first retry and
    twice as long before each next one (at most ``backoff_max_s``); with ``jitter`` each
    wait is drawn uniformly from zero to that ("full jitter"). After the last retry it
    gives up the rest of the ``turn`` (thinks, then starts the next one) or only the
    ``call`` (goes on with the turn).

    With ``timeout_s`` > 0 the agent stops waiting for an answer after that long and
    counts the call failed (the request may still be carried out). A retry is sent
    with the ``same_id`` (Agent Executor's reconnect-and-resend: the actor applies each
    request id once and answers a repeat from what it did) or a ``new_id`` (a naive
    client: a call the actor had already done is done again).
    """

    retries: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    jitter: bool = True
    give_up: str = "turn"
    timeout_s: float = 0.0
    resend: str = "same_id"

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise ValueError(f"workload.client.retries: must be an integer (got {self.retries!r})")
        if not 0 <= self.retries <= 100:
            raise ValueError(f"workload.client.retries: must be 0..100 (got {self.retries})")
        for name in ("backoff_s", "backoff_max_s", "timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"workload.client.{name}: must be a number (got {value!r})")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"workload.client.{name}: must be a finite number >= 0")
        if not isinstance(self.jitter, bool):
            raise ValueError(f"workload.client.jitter: must be true or false (got {self.jitter!r})")
        if self.give_up not in GIVE_UP:
            raise ValueError(
                f"workload.client.give_up: unknown {self.give_up!r}; allowed: turn, call"
            )
        if self.resend not in RESEND:
            raise ValueError(
                f"workload.client.resend: unknown {self.resend!r}; allowed: same_id, new_id"
            )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> ClientPolicy:
        """From ``workload.client`` (absent keys keep their defaults)."""
        cfg = dict(cfg or {})
        known = {"retries", "backoff_s", "backoff_max_s", "jitter", "give_up", "timeout_s",
                 "resend"}  # fmt: skip
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"workload.client: unknown {sorted(unknown)}")
        return cls(**cfg)

    def wait_s(self, attempt: int, draw: float) -> float:
        """The wait before retry number ``attempt`` (1, 2, ...); ``draw`` in [0, 1)."""
        cap = min(self.backoff_max_s, self.backoff_s * 2.0 ** (attempt - 1))
        return cap * draw if self.jitter else cap


@dataclass(frozen=True)
class Scripts:
    """Every actor's calls, drawn before the run (see the module docstring).

    Actor ``i``'s calls are ``offsets[i]`` to ``offsets[i + 1] - 1``, in order. For each
    call: ``gap_s``, the model's time after the previous call's answer (0 for a turn's
    first call); ``service_s``, what it asks of the actor; ``ends_turn``; and for a turn's
    last call ``think_s``, the think time after the turn, in operational seconds (the
    load shape's :class:`TimeWarp` turns it into wall time from when the turn ends).
    ``first_turn`` is when each actor's first turn starts.
    """

    population: Population
    first_turn: NDArray[np.float64]
    offsets: NDArray[np.int64]
    gap_s: NDArray[np.float64]
    service_s: NDArray[np.float64]
    ends_turn: NDArray[np.bool_]
    think_s: NDArray[np.float64]
    warp: TimeWarp
    duration_s: float
    client: ClientPolicy = field(default_factory=ClientPolicy)
    seed: int = 0
    name: str = "sessions"

    def start(self, duration_s: float, seed: int) -> WorkloadRun:
        """As a workload: these scripts (drawn for ``self.duration_s``; the seed is not
        used), played closed-loop by whoever starts them."""
        if duration_s > self.duration_s + 1e-9:
            raise ValueError(f"scripts drawn for {self.duration_s:g} s, asked for {duration_s:g} s")
        return WorkloadRun(self.population, iter(()), replace(self, duration_s=duration_s))

    def save(self, path: Path) -> None:
        """Write the scripts as a NumPy ``.npz`` archive (for the Locust process)."""
        pop = self.population
        np.savez_compressed(
            path, ids=np.asarray(pop.ids), snapshot_bytes=pop.snapshot_bytes,
            snapshot_version=pop.snapshot_version, created_s=pop.created_s,
            first_turn=self.first_turn, offsets=self.offsets, gap_s=self.gap_s,
            service_s=self.service_s, ends_turn=self.ends_turn, think_s=self.think_s,
            warp_t=self.warp.t, warp_lam=self.warp.lam,
            meta=np.asarray([pop.template, self.name, repr(self.duration_s), str(self.seed),
                             json.dumps(asdict(self.client)), str(self.warp.identity)]),
        )  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> Scripts:
        """Read scripts written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as f:
            template, name, duration, seed, client, identity = (str(x) for x in f["meta"])
            population = Population(
                [str(x) for x in f["ids"]], f["snapshot_bytes"], f["snapshot_version"],
                f["created_s"], template,
            )  # fmt: skip
            warp = TimeWarp.from_arrays(f["warp_t"], f["warp_lam"], identity == "True")
            return cls(
                population, f["first_turn"], f["offsets"], f["gap_s"], f["service_s"],
                f["ends_turn"], f["think_s"], warp, float(duration),
                ClientPolicy(**json.loads(client)), int(seed), name,
            )  # fmt: skip

    def calls_of(self, actor: int) -> range:
        """The indices of ``actor``'s calls."""
        return range(int(self.offsets[actor]), int(self.offsets[actor + 1]))

    def __len__(self) -> int:
        return int(self.gap_s.size)


@dataclass(frozen=True)
class Call:
    """One request an agent sends: script call ``index`` of ``actor``, at ``at``,
    attempt 0 for the first try and 1, 2, ... for retries."""

    actor: int
    index: int
    at: float
    service_s: float
    attempt: int = 0


@dataclass
class ClientCounts:
    """What the agents did beyond their scripts."""

    retries: int = 0  # calls sent again after a failure
    gave_up: int = 0  # calls given up after their last retry
    turns_cut: int = 0  # turns whose remaining calls were skipped after a give-up
    calls: int = 0  # calls sent, retries included
    timeouts: int = 0  # calls the agent stopped waiting for (workload.client.timeout_s)
    duplicates_suppressed: int = 0  # resent calls the actor had done: answered, not redone
    duplicates_applied: int = 0  # resent calls the actor had done and did again (new_id)


@dataclass
class SessionPlayer:
    """Plays :class:`Scripts` against answers (see the module docstring), with the
    scripts' client policy and seed unless told others."""

    scripts: Scripts
    policy: ClientPolicy | None = None
    seed: int | None = None
    counts: ClientCounts = field(default_factory=ClientCounts)

    def __post_init__(self) -> None:
        if self.policy is None:
            self.policy = self.scripts.client
        if self.seed is None:
            self.seed = self.scripts.seed

    def first_calls(self) -> list[Call]:
        """Each actor's first call, before the run's end, in time order."""
        scripts = self.scripts
        found = []
        for actor in range(len(scripts.population)):
            start = float(scripts.first_turn[actor])
            if scripts.offsets[actor + 1] > scripts.offsets[actor] and start < scripts.duration_s:
                index = int(scripts.offsets[actor])
                found.append(Call(actor, index, start, float(scripts.service_s[index])))
        found.sort(key=lambda call: (call.at, call.actor))
        return found

    def request_id(self, call: Call) -> str:
        """The request id ``call`` goes out with: the same for every attempt of a
        script call (``resend: same_id``), or one per attempt (``new_id``)."""
        policy = self.policy
        assert policy is not None
        base = f"{self.scripts.population.ids[call.actor]}.{call.index}"
        return base if policy.resend == "same_id" else f"{base}.{call.attempt}"

    def sent(self, call: Call) -> None:
        """``call`` went out (counted)."""
        self.counts.calls += 1
        if call.attempt:
            self.counts.retries += 1

    def answered(self, call: Call, at: float, ok: bool) -> Call | None:
        """``call`` was answered at ``at`` (``ok``: 2xx); the actor's next call, if it
        goes out before the run's end."""
        policy = self.policy
        assert policy is not None
        if ok:
            return self._after(call, at)
        if call.attempt < policy.retries:
            retry = call.attempt + 1
            wait = policy.wait_s(retry, self._draw(call.actor, call.index, retry))
            return self._before_end(Call(call.actor, call.index, at + wait, call.service_s, retry))
        self.counts.gave_up += 1
        if policy.give_up == "call" or self.scripts.ends_turn[call.index]:
            return self._after(call, at)
        last = call.index
        while not self.scripts.ends_turn[last]:
            last += 1
        self.counts.turns_cut += 1
        return self._after(Call(call.actor, last, at, call.service_s), at)

    def _after(self, call: Call, at: float) -> Call | None:
        """The call after script call ``call.index``, ``call`` having ended at ``at``."""
        scripts, nxt = self.scripts, call.index + 1
        if nxt >= scripts.offsets[call.actor + 1]:
            return None  # the session's script is done
        if scripts.ends_turn[call.index]:
            think = scripts.think_s[call.index : call.index + 1]
            when = float(scripts.warp.advance(np.array([at]), think)[0])
        else:
            when = at + float(scripts.gap_s[nxt])
        return self._before_end(Call(call.actor, nxt, when, float(scripts.service_s[nxt])))

    def _before_end(self, call: Call) -> Call | None:
        return call if call.at < self.scripts.duration_s else None

    def _draw(self, actor: int, index: int, attempt: int) -> float:
        digest = hashlib.blake2b(
            f"{self.seed}:{actor}:{index}:{attempt}".encode(), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big") / 2.0**64
