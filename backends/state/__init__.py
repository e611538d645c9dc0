"""The control plane's durable state, behind one interface with two implementations.

* SQLite (``backends/local/db.py``, :class:`backends.local.db.StateDB`): the local
  backend's, the embedded default; one control plane per state dir (a lock file).
* Redis (``backends/state/redis.py``, :class:`backends.state.redis.RedisState`): the
  clusters'; several control planes may reach it, and only the current leader may
  write: every write carries the leader's fencing token (from the Kubernetes Lease it
  holds, ``backends/kube/lease.py``) and Redis refuses a token older than one it has
  seen (:class:`Deposed`), in the same atomic step as the write.

What is stored: actors with their owner and generation fence (a restore raises it, a
stale activation can never commit), the sandboxes that may be running, how activations
went, the losses reported, and the wake-ups actors scheduled (kept until delivered, so
a restarted control plane delivers them still). Snapshots are not recorded here: the
snapshot store is their only source of truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class StaleGeneration(RuntimeError):  # noqa: N818 - a verdict, like a fence refusing
    """An activation or checkpoint of a generation that is no longer the actor's newest."""


class ActorExists(ValueError):  # noqa: N818
    """An actor with that id is already recorded."""


class Deposed(RuntimeError):  # noqa: N818
    """A write by a control plane whose fencing token is older than one the state has
    seen: another control plane leads now, and this one must stop."""


@dataclass(frozen=True)
class ActorRow:
    """An actor as stored."""

    id: str
    template: str
    generation: int
    owner: str = ""  # the tenant it belongs to ("" for none): admission may budget per owner


@dataclass(frozen=True)
class WakeRow:
    """A wake-up an actor scheduled, not yet delivered."""

    id: int
    actor: str
    at_unix: float


@dataclass(frozen=True)
class SandboxRow:
    """A sandbox that was not known to be stopped."""

    id: str
    actor: str
    worker: str
    netns: str  # where it runs: a network namespace (local) or a worker pod (clusters)
    generation: int
    status: str


@dataclass(frozen=True)
class LossRow:
    """A reported loss: what an actor acknowledged after snapshot ``version`` is gone."""

    actor: str
    generation: int
    version: int
    reason: str
    requests: tuple[str, ...]
    known: bool
    at_unix: float


class ControlState(Protocol):
    """What a control plane reads and writes. Methods block; a driver calls them through
    :meth:`offload`, which runs them off its event loop, in the order issued."""

    async def offload(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` (a method of this state) off the event loop, writes in order."""
        ...

    def close(self) -> None:
        """Finish pending writes and let go of the store."""

    def add_actor(self, actor: str, template: str, owner: str = "") -> None:
        """Record a new actor (:class:`ActorExists` if its id is taken)."""

    def add_wake(self, actor: str, at_unix: float) -> int:
        """Record a wake-up ``actor`` scheduled for ``at_unix``; its id."""
        ...

    def remove_wake(self, wake: int) -> None:
        """A wake-up was delivered (or refused): forget it."""

    def wakes(self) -> list[WakeRow]:
        """Every wake-up not yet delivered, soonest first."""
        ...

    def actors(self) -> list[ActorRow]:
        """Every actor, in creation order."""
        ...

    def has_actor(self, actor: str) -> bool:
        """True if ``actor`` is recorded."""
        ...

    def generation(self, actor: str) -> int:
        """The newest generation of ``actor`` (``KeyError`` if unknown)."""
        ...

    def raise_generation(self, actor: str, generation: int) -> None:
        """Make ``generation`` at least the actor's newest."""

    def delete_actor(self, actor: str) -> None:
        """Forget an actor (and its wake-ups)."""

    def begin_activation(
        self, actor: str, generation: int, sandbox: str, worker: str, netns: str
    ) -> None:
        """Fence and record a sandbox before it starts: ``generation`` becomes the actor's
        newest, or :class:`StaleGeneration` if it is not newer than the fence."""

    def sandbox_running(self, sandbox: str) -> None:
        """A sandbox answered its readiness probe."""

    def sandbox_stopping(self, sandbox: str) -> None:
        """The control plane ends a sandbox whose state is not needed."""

    def sandbox_stopped(self, sandbox: str) -> None:
        """A sandbox is gone."""

    def live_sandboxes(self) -> list[SandboxRow]:
        """Sandboxes not known to be stopped, oldest first."""
        ...

    def netns_of(self, sandbox: str) -> str | None:
        """Where a sandbox was started."""
        ...

    def activation(
        self, sandbox: str, *, actor: str, worker: str, kind: str, version: int, outcome: str,
        seconds: float,
    ) -> None:  # fmt: skip
        """Record how an activation went."""

    def record_loss(
        self, actor: str, generation: int, version: int, reason: str,
        requests: Sequence[str], *, known: bool,
    ) -> None:  # fmt: skip
        """Report that what ``actor`` acknowledged after snapshot ``version`` is lost."""

    def losses(self) -> list[LossRow]:
        """Every reported loss, oldest first."""
        ...
