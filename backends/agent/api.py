"""The worker agent's orders and answers, as records, checked on the way in.

Every field a client can send is checked here, before anything touches a sandbox: an
order that does not parse is a :class:`BadOrder` (HTTP 400) that names the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from backends.gvisor.names import BadActorId, check_actor_id

_OP = re.compile(r"[A-Za-z0-9._:-]{1,80}")
_TEMPLATE = re.compile(r"[a-z0-9-]{1,40}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_REQUESTS = 100_000  # acknowledged request ids one checkpoint may name
URI_SCHEMES = ("file", "s3", "gs", "memory")  # memory: fsspec's in-process store (tests)


class BadOrder(ValueError):  # noqa: N818 - a verdict on input, like BadActorId
    """An order that is not well formed; the message names the field."""


class Outcome(StrEnum):
    """How an order ended (the controller's activation and checkpoint outcomes)."""

    OK = "ok"
    FAILED = "failed"  # activation: this attempt failed, the snapshot is fine
    UNUSABLE = "unusable"  # activation: the snapshot cannot be restored
    DECLINED = "declined"  # checkpoint: not attempted, the sandbox runs on untouched
    LOST = "lost"  # checkpoint: the sandbox is gone, and its state since its snapshot
    STALE = "stale"  # a newer generation of the actor has been seen: fenced


@dataclass(frozen=True)
class Activate:
    """Start ``actor`` as activation ``generation``: cold from ``template`` when
    ``snapshot`` is None, else restored from the snapshot at that URI (``version``)."""

    op: str
    actor: str
    generation: int
    template: str
    snapshot: str | None = None
    version: int = 0


@dataclass(frozen=True)
class Checkpoint:
    """Checkpoint activation ``generation`` of ``actor`` as snapshot ``version`` at the
    URI ``destination`` (which must not exist yet); its manifest names ``requests``,
    the acknowledged requests it holds beyond the previous version."""

    op: str
    actor: str
    generation: int
    version: int
    destination: str
    requests: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stop:
    """Kill and remove activation ``generation`` of ``actor`` (its state is not needed)."""

    op: str
    actor: str
    generation: int


Order = Activate | Checkpoint | Stop


@dataclass(frozen=True)
class Result:
    """The answer to one order. ``bytes`` and ``snapshot`` (its URI): a checkpoint's.
    ``transfer_s``: of ``seconds``, the time spent fetching and checking the snapshot
    (an activation) or describing and publishing it (a checkpoint); ``cache_hit``: an
    activation's snapshot was on this node already (nothing downloaded)."""

    op: str
    outcome: Outcome
    reason: str = ""
    seconds: float = 0.0
    bytes: int = 0
    snapshot: str | None = None
    transfer_s: float = 0.0
    cache_hit: bool = False

    def to_json(self) -> dict[str, Any]:
        """The answer's JSON body."""
        return {**asdict(self), "outcome": str(self.outcome)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Result:
        """Parse an answer (from an agent)."""
        return cls(
            op=str(data["op"]),
            outcome=Outcome(data["outcome"]),
            reason=str(data.get("reason", "")),
            seconds=float(data.get("seconds", 0.0)),
            bytes=int(data.get("bytes", 0)),
            snapshot=None if data.get("snapshot") is None else str(data["snapshot"]),
            transfer_s=float(data.get("transfer_s", 0.0)),
            cache_hit=bool(data.get("cache_hit", False)),
        )


@dataclass(frozen=True)
class SandboxView:
    """One sandbox the agent observes alive."""

    actor: str
    generation: int
    sandbox: str


@dataclass(frozen=True)
class AgentState:
    """What an agent observes: its worker, where its actors answer, what runs."""

    worker: str
    actor_address: str  # host:port where the worker's actor answers
    sandboxes: tuple[SandboxView, ...]
    forward_address: str = ""  # host:port that forwards to the actor ("": not forwarded)

    def to_json(self) -> dict[str, Any]:
        """The state's JSON body."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AgentState:
        """Parse a state (from an agent)."""
        return cls(
            worker=str(data["worker"]),
            actor_address=str(data["actor_address"]),
            sandboxes=tuple(
                SandboxView(str(s["actor"]), int(s["generation"]), str(s["sandbox"]))
                for s in data["sandboxes"]
            ),
            forward_address=str(data.get("forward_address", "")),
        )


# ---------------------------------------------------------------- parsing


def _field(data: Mapping[str, Any], name: str, kind: type, *, default: Any = ...) -> Any:
    if name not in data:
        if default is ...:
            raise BadOrder(f"{name}: missing")
        return default
    value = data[name]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadOrder(f"{name}: must be an integer")
    if kind is str and not isinstance(value, str):
        raise BadOrder(f"{name}: must be a string")
    return value


def _op(data: Mapping[str, Any]) -> str:
    op: str = _field(data, "op", str)
    if not _OP.fullmatch(op):
        raise BadOrder("op: 1-80 of A-Z a-z 0-9 . _ : -")
    return op


def _actor(data: Mapping[str, Any]) -> str:
    try:
        return check_actor_id(_field(data, "actor", str))
    except BadActorId as e:
        raise BadOrder(f"actor: {e}") from None


def _count(data: Mapping[str, Any], name: str, low: int) -> int:
    value: int = _field(data, name, int)
    if not low <= value < 2**53:
        raise BadOrder(f"{name}: must be >= {low}")
    return value


def check_uri(uri: str, name: str) -> str:
    """A snapshot URI: one of :data:`URI_SCHEMES`, no relative parts."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in URI_SCHEMES:
        raise BadOrder(f"{name}: must be a URI of {', '.join(URI_SCHEMES)} (got {uri[:80]!r})")
    parts = rest.split("/")
    if not rest or len(uri) > 1024 or any(p in (".", "..") for p in parts) or "\0" in uri:
        raise BadOrder(f"{name}: not a usable snapshot location")
    if scheme == "file" and not rest.startswith("/"):
        raise BadOrder(f"{name}: a file:// URI must be absolute")
    return uri.rstrip("/")


def _no_extra(data: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise BadOrder(f"unknown fields: {', '.join(extra)}")


def parse_activate(data: Any) -> Activate:
    """An :class:`Activate` from a JSON body."""
    if not isinstance(data, Mapping):
        raise BadOrder("the body must be a JSON object")
    _no_extra(data, {"op", "actor", "generation", "template", "snapshot", "version"})
    template: str = _field(data, "template", str)
    if not _TEMPLATE.fullmatch(template):
        raise BadOrder("template: 1-40 of a-z 0-9 -")
    snapshot = data.get("snapshot")
    version = 0
    if snapshot is not None:
        if not isinstance(snapshot, str):
            raise BadOrder("snapshot: must be a URI or null")
        snapshot = check_uri(snapshot, "snapshot")
        version = _count(data, "version", 1)
    elif data.get("version", 0) != 0:
        raise BadOrder("version: a cold start (no snapshot) has version 0")
    return Activate(
        _op(data), _actor(data), _count(data, "generation", 1), template, snapshot, version
    )


def parse_checkpoint(data: Any) -> Checkpoint:
    """A :class:`Checkpoint` from a JSON body."""
    if not isinstance(data, Mapping):
        raise BadOrder("the body must be a JSON object")
    _no_extra(data, {"op", "actor", "generation", "version", "destination", "requests"})
    requests = data.get("requests", [])
    if not isinstance(requests, list) or len(requests) > MAX_REQUESTS:
        raise BadOrder(f"requests: a list of at most {MAX_REQUESTS} request ids")
    for request in requests:
        if not isinstance(request, str) or not _REQUEST_ID.fullmatch(request):
            raise BadOrder("requests: each id is 1-128 of A-Z a-z 0-9 . _ : -")
    return Checkpoint(
        _op(data), _actor(data), _count(data, "generation", 1), _count(data, "version", 1),
        check_uri(_field(data, "destination", str), "destination"), tuple(requests),
    )  # fmt: skip


def parse_stop(data: Any) -> Stop:
    """A :class:`Stop` from a JSON body."""
    if not isinstance(data, Mapping):
        raise BadOrder("the body must be a JSON object")
    _no_extra(data, {"op", "actor", "generation"})
    return Stop(_op(data), _actor(data), _count(data, "generation", 1))


def order_json(order: Order) -> dict[str, Any]:
    """An order's JSON body (what :func:`parse_activate` and friends read)."""
    body = asdict(order)
    if isinstance(order, Checkpoint):
        body["requests"] = list(order.requests)
    return body
