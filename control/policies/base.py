"""The three policy protocols the controller consults."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

from control.messages import Tier
from control.model import Actor, Worker


class SnapshotLocator(Protocol):
    """Answers which nodes' local caches hold an actor's current snapshot."""

    def nodes_holding(self, actor: Actor) -> Sequence[str]:
        """Nodes caching ``actor``'s current snapshot version, most recent first."""
        ...


class PlacementPolicy(Protocol):
    """Owns the pool of free workers and picks one for an actor that needs a worker.

    The controller calls :meth:`add` when a worker becomes free, :meth:`discard` when a
    free worker leaves, and :meth:`choose` (which removes the chosen worker from the
    pool) when an actor must be activated. Keeping the pool inside the policy lets
    each policy keep the index it needs (a list for random, an LRU order, per-node
    pools), so a choice costs O(1) even with thousands of workers.
    """

    def add(self, worker: Worker) -> None:
        """``worker`` became free."""
        ...

    def discard(self, worker: Worker) -> None:
        """Remove a free ``worker`` from the pool (it is leaving the cluster)."""
        ...

    def choose(self, actor: Actor, snapshots: SnapshotLocator) -> Worker | None:
        """Take a free worker for ``actor`` out of the pool; None when none is free."""
        ...

    def __len__(self) -> int:
        """Number of free workers."""
        ...


class SuspensionPolicy(Protocol):
    """Decides when an idle running actor is checkpointed, whom to evict, and (keep-alive
    policies) when a suspended actor is restored ahead of its next request."""

    def suspend_at(self, actor: Actor, now: float) -> float | None:
        """When ``actor``, idle since ``now``, should be suspended; None keeps it warm."""
        ...

    def choose_victim(self, idle: Iterable[Actor]) -> Actor | None:
        """An actor to suspend to free a worker, from idle actors in LRU order."""
        ...

    def on_request(self, actor: Actor, now: float) -> None:
        """A request for ``actor`` arrived (keep-alive policies learn idle times here)."""
        ...

    def prewarm_at(self, actor: Actor, now: float) -> float | None:
        """``actor`` was just suspended with nobody waiting: when to restore it ahead of
        its next request (on a free worker only); None: when a request comes."""
        ...


class Refuse(NamedTuple):
    """Admission answer: end the request now with ``status``."""

    status: int
    reason: str


class Wait(NamedTuple):
    """Admission answer: wait for a worker until ``deadline`` (None: router timeout only).

    With ``evict`` the controller also suspends idle actors to make room.
    """

    deadline: float | None
    evict: bool


AdmissionDecision = Refuse | Wait


class Load(NamedTuple):
    """What admission sees when an actor needs a worker and none is free.

    ``waiting``: actors already queued for a worker (not counting this one);
    ``owner_waiting``: how many of those belong to this actor's owner; ``queued``: this
    actor already holds a place in the queue (another request for it arrived);
    ``workers``: workers the controller knows (quarantined ones too); ``freeing``: checkpoints
    under way that will give a worker back.
    """

    waiting: int
    owner_waiting: int
    queued: bool
    workers: int
    freeing: int


class AdmissionPolicy(Protocol):
    """Decides what happens to a request whose actor needs a worker when none is free,
    and which queued actor the next free worker goes to."""

    def admit(self, actor: Actor, now: float, load: Load) -> AdmissionDecision:
        """Refuse the request, or let it wait (optionally evicting idle actors)."""
        ...

    def serve_newest_first(self, load: Load) -> bool:
        """True: the next free worker goes to the actor queued last (LIFO), else first."""
        ...


class RetentionPolicy(Protocol):
    """Decides which old snapshot versions of an actor are deleted, and how often."""

    gc_interval_s: float  # 0: at each commit; > 0: sweeps this many seconds apart

    def to_delete(self, versions: Sequence[int]) -> list[int]:
        """Of an actor's stored ``versions`` (ascending), those to delete now."""
        ...


class LocalityPolicy(Protocol):
    """Decides where a checkpoint keeps its snapshot (two tiers): on its node only
    (paused: no upload, fast restore there, nowhere else) or in remote storage
    (suspended: restorable anywhere), and how long a paused actor whose node has no free
    worker waits for one there (delay scheduling) before its snapshot is uploaded."""

    wait_s: float  # a stranded actor waits this long for a worker on its node
    upload_after_s: float | None  # a paused snapshot idle this long is uploaded; None: never

    def tier(self, actor: Actor, now: float) -> Tier:
        """The tier of the checkpoint ``actor`` is about to take."""
        ...

    def on_request(self, actor: Actor, now: float) -> None:
        """A request for ``actor`` arrived (a policy may learn its idle times)."""
        ...


class Demand(NamedTuple):
    """What the pool is asked for, when the scaling policy is consulted.

    ``workers``: in the pool, joined or starting; ``starting``: of those, not joined yet;
    ``busy``: hosting an actor that is resuming, serving or suspending; ``idle``:
    hosting a warm actor with nothing to do (it could give its worker back);
    ``waiting``: actors queued for a worker; ``free``: workers with no actor.
    """

    workers: int
    starting: int
    busy: int
    idle: int
    waiting: int
    free: int


class ScalingPolicy(Protocol):
    """Decides how many workers the pool should have, every ``interval_s`` seconds."""

    interval_s: float

    def target(self, demand: Demand, now: float) -> int:
        """The pool size to have now (workers joined or starting)."""
        ...
