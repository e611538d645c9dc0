"""Keep-alive policies that learn from each actor's requests (suspension policies).

From the serverless literature, adapted to actors that are checkpointed rather than
killed:

* :class:`HybridHistogram`: Shahrad et al., "Serverless in the Wild", ATC'20: a
  per-actor histogram of idle times; pre-warm before the head of the distribution,
  keep alive to its tail, a fixed TTL while the histogram is thin;
* :class:`GreedyDual`: Fuerst and Sharma, "FaasCache", ASPLOS'21: keep everything warm,
  evict the idle actor with the lowest priority ``clock + frequency x cost / size``;
* :class:`PredictivePrewarm`: suspend at once and restore just before the next request
  is due, predicted from the actor's recent idle times;
* :class:`KeepRunning`: a pin that keeps the N most requested actors running, around
  any of the others.

An idle time runs from the moment an actor has no request in flight to its next
request's arrival, whether it stayed warm or was suspended meanwhile. Per-actor state is
kept for every actor that has been idle once (a few hundred bytes each).
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections import deque
from collections.abc import Iterable

from control.model import Actor
from control.policies.base import SuspensionPolicy
from control.policies.checks import finite, integer

MIB = 1 << 20


class _IdleGaps:
    """When each actor went idle, and whether a pre-warm was asked for in that gap."""

    def __init__(self) -> None:
        self.since: dict[str, float] = {}
        self.prewarmed: set[str] = set()

    def idle(self, actor: str, now: float) -> float:
        """``actor`` has no request in flight; when its idle time began (a pre-warmed
        actor going idle again keeps the start of the gap)."""
        return self.since.setdefault(actor, now)

    def ended(self, actor: str, now: float) -> float | None:
        """A request for ``actor`` arrived: the idle time it ends, if one was running."""
        self.prewarmed.discard(actor)
        start = self.since.pop(actor, None)
        return None if start is None else now - start


class HybridHistogram:
    """Per-actor idle-time histogram (Shahrad et al., ATC'20).

    Bins grow geometrically from ``first_bin_s`` by ``growth`` up to ``range_s`` (agent
    idle times span a second between tool calls to hours between turns). With at least
    ``min_samples`` idle times, fewer than ``max_out_of_range`` of them beyond the range:

    * head = the ``head_percentile`` of idle times, tail = the ``tail_percentile``;
    * pre-warm window = head x (1 - margin); when it is at least ``min_prewarm_s`` the
      actor is suspended as soon as it goes idle and restored at the window's end;
    * keep-alive = tail x (1 + margin), at most ``max_keep_alive_s``: an actor not
      suspended at once (or pre-warmed) stays warm until then.

    Otherwise (a thin or out-of-range histogram) it keeps the actor warm for ``ttl_s``.
    Victims under pressure: least recently used.
    """

    def __init__(
        self,
        *,
        ttl_s: float = 10.0,
        head_percentile: float = 5.0,
        tail_percentile: float = 99.0,
        margin: float = 0.1,
        min_samples: int = 5,
        min_prewarm_s: float = 5.0,
        max_keep_alive_s: float = 600.0,
        first_bin_s: float = 0.1,
        growth: float = 1.25,
        range_s: float = 4 * 3600.0,
        max_out_of_range: float = 0.5,
    ) -> None:
        self.ttl_s = finite("ttl_s", ttl_s, zero_ok=True)
        percentiles = {"head_percentile": head_percentile, "tail_percentile": tail_percentile}
        for name, pct in percentiles.items():
            if not (isinstance(pct, int | float) and 0 <= pct <= 100):
                raise ValueError(f"{name}: must be between 0 and 100 (got {pct!r})")
        if head_percentile > tail_percentile:
            raise ValueError("head_percentile: must not exceed tail_percentile")
        self.head_percentile = float(head_percentile)
        self.tail_percentile = float(tail_percentile)
        if not (isinstance(margin, int | float) and 0 <= margin < 1):
            raise ValueError(f"margin: must be in [0, 1) (got {margin!r})")
        self.margin = float(margin)
        self.min_samples = integer("min_samples", min_samples, 1)
        self.min_prewarm_s = finite("min_prewarm_s", min_prewarm_s)
        self.max_keep_alive_s = finite("max_keep_alive_s", max_keep_alive_s)
        first = finite("first_bin_s", first_bin_s)
        if not (isinstance(growth, int | float) and growth > 1):
            raise ValueError(f"growth: must be > 1 (got {growth!r})")
        top = finite("range_s", range_s)
        if top <= first:
            raise ValueError("range_s: must exceed first_bin_s")
        if not (isinstance(max_out_of_range, int | float) and 0 <= max_out_of_range <= 1):
            raise ValueError(f"max_out_of_range: must be in [0, 1] (got {max_out_of_range!r})")
        self.max_out_of_range = float(max_out_of_range)
        # Upper edges of the bins: bin 0 holds [0, first], bin k (first*g^(k-1), first*g^k].
        self._edges = [first]
        while self._edges[-1] < top:
            self._edges.append(min(self._edges[-1] * growth, top))
        self._log_first, self._log_growth = math.log(first), math.log(growth)
        self._counts: dict[str, array[int]] = {}
        self._beyond: dict[str, int] = {}  # idle times longer than range_s
        self._gaps = _IdleGaps()

    # ------------------------------------------------------------ learning

    def _bin(self, gap: float) -> int:
        if gap <= self._edges[0]:
            return 0
        k = math.ceil((math.log(gap) - self._log_first) / self._log_growth - 1e-12)
        return min(max(k, 0), len(self._edges) - 1)

    def on_request(self, actor: Actor, now: float) -> None:
        gap = self._gaps.ended(actor.id, now)
        if gap is None:
            return
        if gap > self._edges[-1]:
            self._beyond[actor.id] = self._beyond.get(actor.id, 0) + 1
            return
        counts = self._counts.get(actor.id)
        if counts is None:
            counts = self._counts[actor.id] = array("I", bytes(4 * len(self._edges)))
        counts[self._bin(gap)] += 1

    def windows(self, actor_id: str) -> tuple[float, float] | None:
        """(pre-warm window, keep-alive window) in seconds from the start of an idle
        time; None while the histogram is thin or mostly out of range."""
        counts = self._counts.get(actor_id)
        inside = sum(counts) if counts is not None else 0
        beyond = self._beyond.get(actor_id, 0)
        if counts is None or inside + beyond < self.min_samples:
            return None
        if beyond > self.max_out_of_range * (inside + beyond):
            return None
        head = self._percentile(counts, inside, self.head_percentile, upper=False)
        tail = self._percentile(counts, inside, self.tail_percentile, upper=True)
        keep_alive = min(tail * (1 + self.margin), self.max_keep_alive_s)
        return head * (1 - self.margin), keep_alive

    def _percentile(self, counts: array[int], total: int, pct: float, *, upper: bool) -> float:
        """The bin edge at ``pct``: the lower edge for the head (pre-warm no later than
        the shortest likely idle time), the upper for the tail (keep alive long enough)."""
        rank = max(1, math.ceil(total * pct / 100))
        seen = 0
        for k, n in enumerate(counts):
            seen += n
            if seen >= rank:
                if upper:
                    return self._edges[k]
                return self._edges[k - 1] if k else 0.0
        return self._edges[-1]

    # ------------------------------------------------------------ deciding

    def suspend_at(self, actor: Actor, now: float) -> float | None:
        start = self._gaps.idle(actor.id, now)
        windows = self.windows(actor.id)
        if windows is None:
            return now + self.ttl_s
        prewarm, keep_alive = windows
        if prewarm >= self.min_prewarm_s and actor.id not in self._gaps.prewarmed:
            return now  # a long idle time is due: unload now, pre-warm later
        return max(now, start + keep_alive)

    def prewarm_at(self, actor: Actor, now: float) -> float | None:
        start = self._gaps.since.get(actor.id)
        windows = self.windows(actor.id)
        if start is None or windows is None or actor.id in self._gaps.prewarmed:
            return None
        prewarm = windows[0]
        if prewarm < self.min_prewarm_s:
            return None  # it was evicted from its keep-alive: wait for a request
        self._gaps.prewarmed.add(actor.id)
        return max(now, start + prewarm)

    def choose_victim(self, idle: Iterable[Actor]) -> Actor | None:
        return next(iter(idle), None)


class GreedyDual:
    """Greedy-Dual keep-alive (FaasCache, ASPLOS'21): keep idle actors warm; under
    pressure evict the one with the lowest priority.

    An actor's priority, set each time it goes idle, is ``clock + frequency x cost /
    size``: frequency counts its requests since it was last evicted, cost is its restore
    time (``restore_fixed_s`` + ``restore_s_per_mib`` x snapshot MiB: gVisor's measured
    cost here), size its snapshot in MiB (at least 1). Evicting an actor sets the clock
    to its priority, so actors not used for a long time age out. With ``ttl_s`` an idle
    actor is also suspended after that long (None: only under pressure). Choosing a
    victim scans the idle actors: O(workers).
    """

    def __init__(
        self,
        *,
        restore_fixed_s: float = 0.08,
        restore_s_per_mib: float = 0.00054,
        ttl_s: float | None = None,
    ) -> None:
        self.restore_fixed_s = finite("restore_fixed_s", restore_fixed_s, zero_ok=True)
        self.restore_s_per_mib = finite("restore_s_per_mib", restore_s_per_mib, zero_ok=True)
        if self.restore_fixed_s == 0 and self.restore_s_per_mib == 0:
            raise ValueError("restore_fixed_s, restore_s_per_mib: one must be > 0")
        self.ttl_s = None if ttl_s is None else finite("ttl_s", ttl_s, zero_ok=True)
        self.clock = 0.0
        self._frequency: dict[str, int] = {}
        self._priority: dict[str, float] = {}

    def priority(self, actor: Actor) -> float:
        """What the actor's priority would be if it went idle now."""
        mib = max(actor.snapshot_bytes / MIB, 1.0)
        cost = self.restore_fixed_s + self.restore_s_per_mib * mib
        return self.clock + self._frequency.get(actor.id, 0) * cost / mib

    def on_request(self, actor: Actor, now: float) -> None:
        self._frequency[actor.id] = self._frequency.get(actor.id, 0) + 1

    def suspend_at(self, actor: Actor, now: float) -> float | None:
        self._priority[actor.id] = self.priority(actor)
        return None if self.ttl_s is None else now + self.ttl_s

    def choose_victim(self, idle: Iterable[Actor]) -> Actor | None:
        victim: Actor | None = None
        lowest = math.inf
        for actor in idle:  # LRU order: ties go to the least recently used
            value = self._priority.get(actor.id, self.clock)
            if value < lowest:
                victim, lowest = actor, value
        if victim is not None:
            self.clock = lowest
            self._frequency.pop(victim.id, None)
            self._priority.pop(victim.id, None)
        return victim

    def prewarm_at(self, actor: Actor, now: float) -> float | None:
        return None


class PredictivePrewarm:
    """Suspend an actor as soon as it goes idle and restore it ``lead_s`` before its next
    request is due, predicted as the median of its last ``history`` idle times.

    An actor whose predicted idle time is shorter than ``min_gap_s`` (calls in a burst),
    or that has fewer than ``min_history`` idle times on record, stays warm for
    ``hold_s`` instead; a pre-warmed actor stays warm until ``hold_s`` past its
    predicted request.
    """

    def __init__(
        self,
        *,
        history: int = 8,
        lead_s: float = 1.0,
        hold_s: float = 5.0,
        min_gap_s: float = 10.0,
        min_history: int = 3,
    ) -> None:
        self.history = integer("history", history, 1)
        self.min_history = integer("min_history", min_history, 1)
        if self.min_history > self.history:
            raise ValueError("min_history: must not exceed history")
        self.lead_s = finite("lead_s", lead_s, zero_ok=True)
        self.hold_s = finite("hold_s", hold_s, zero_ok=True)
        self.min_gap_s = finite("min_gap_s", min_gap_s)
        self._recent: dict[str, deque[float]] = {}
        self._gaps = _IdleGaps()

    def predicted_gap(self, actor_id: str) -> float | None:
        """The actor's next idle time as predicted now; None with too few on record."""
        recent = self._recent.get(actor_id)
        if recent is None or len(recent) < self.min_history:
            return None
        return statistics.median(recent)

    def on_request(self, actor: Actor, now: float) -> None:
        gap = self._gaps.ended(actor.id, now)
        if gap is not None:
            recent = self._recent.setdefault(actor.id, deque(maxlen=self.history))
            recent.append(gap)

    def suspend_at(self, actor: Actor, now: float) -> float | None:
        start = self._gaps.idle(actor.id, now)
        gap = self.predicted_gap(actor.id)
        if gap is None or gap < self.min_gap_s:
            return now + self.hold_s
        if actor.id in self._gaps.prewarmed:
            return max(now, start + gap + self.hold_s)
        return now

    def prewarm_at(self, actor: Actor, now: float) -> float | None:
        start = self._gaps.since.get(actor.id)
        gap = self.predicted_gap(actor.id)
        if start is None or gap is None or gap < self.min_gap_s:
            return None
        if actor.id in self._gaps.prewarmed:
            return None  # pre-warmed once in this idle time already
        self._gaps.prewarmed.add(actor.id)
        return max(now, start + gap - self.lead_s)

    def choose_victim(self, idle: Iterable[Actor]) -> Actor | None:
        return next(iter(idle), None)


class KeepRunning:
    """Keep the ``count`` most requested actors running (a "keep N warm" pin), and
    decide for the rest as ``inner`` does.

    A pinned actor is never suspended by a timer nor chosen as a victim (a request that
    needs a worker while only pinned actors are idle waits), and one checkpointed anyway
    (its worker drained, an operator suspended it) is restored as soon as a worker is
    free; one pinned while suspended stays so until its next request. Who is pinned
    follows the request counts, so the pin moves with popularity; ``actors`` pins these
    ids besides, always.
    """

    def __init__(self, inner: SuspensionPolicy, *, count: int = 0,
                 actors: Iterable[str] = ()) -> None:  # fmt: skip
        self.inner = inner
        self.count = integer("count", count, 0)
        self.always = frozenset(actors)
        self._requests: dict[str, int] = {}
        self._pinned: set[str] = set(self.always)

    def pinned(self, actor_id: str) -> bool:
        """True while ``actor_id`` is pinned."""
        return actor_id in self._pinned

    def on_request(self, actor: Actor, now: float) -> None:
        self.inner.on_request(actor, now)
        if not self.count:
            return
        seen = self._requests[actor.id] = self._requests.get(actor.id, 0) + 1
        if actor.id in self._pinned:
            return
        ranked = [a for a in self._pinned if a not in self.always]
        if len(ranked) < self.count:
            self._pinned.add(actor.id)
            return
        weakest = min(ranked, key=lambda a: self._requests.get(a, 0))
        if seen > self._requests.get(weakest, 0):
            self._pinned.discard(weakest)
            self._pinned.add(actor.id)

    def suspend_at(self, actor: Actor, now: float) -> float | None:
        at = self.inner.suspend_at(actor, now)  # the inner policy still learns the idle time
        return None if actor.id in self._pinned else at

    def choose_victim(self, idle: Iterable[Actor]) -> Actor | None:
        return self.inner.choose_victim(a for a in idle if a.id not in self._pinned)

    def prewarm_at(self, actor: Actor, now: float) -> float | None:
        if actor.id in self._pinned:
            return now
        return self.inner.prewarm_at(actor, now)
