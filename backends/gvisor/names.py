"""Names and addresses of everything the local backend creates.

Every network namespace is ``actormux-<instance>-w<i>`` and every veth ``amx<instance>h<i>``
(host side) / ``amx<instance>c<i>`` (worker side), so cleanup can find ours by name
and never touches anything else. Worker ``i`` of instance ``n`` owns the /30 network
``10.(200+n).(i//64).(4*(i%64))``: the host end is ``.1``, the actor ``.2``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

NETNS_PREFIX = "actormux-"
VETH_PREFIX = "amx"
MAX_INSTANCE = 49
MAX_WORKERS = 64 * 256
_NETNS = re.compile(re.escape(NETNS_PREFIX) + r"(?P<instance>\d{1,3})-w(?P<index>\d{1,6})")
_ACTOR_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
_OWNER = re.compile(r"[A-Za-z0-9_.-]{0,64}")


class BadActorId(ValueError):  # noqa: N818 - reads better at call sites than BadActorIdError
    """An actor id that is not a short DNS label."""


def check_actor_id(actor_id: str) -> str:
    """Return ``actor_id`` if it is 1-40 lowercase letters, digits or '-' (not at an end).

    Actor ids appear in Host headers, file names and container ids, so nothing else
    (no '/', '.', spaces or shell characters) is ever accepted.
    """
    if not isinstance(actor_id, str) or not _ACTOR_ID.fullmatch(actor_id):
        raise BadActorId(
            f"bad actor id {actor_id!r}: use 1-40 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return actor_id


def check_owner(owner: str) -> str:
    """Return ``owner`` (an actor's tenant) if it is at most 64 letters, digits, '_', '.'
    or '-' ("" for none); else :class:`ValueError`."""
    if not isinstance(owner, str) or not _OWNER.fullmatch(owner):
        raise ValueError(f"bad owner {owner!r}: use at most 64 letters, digits, '_', '.' or '-'")
    return owner


def actor_from_host(host: str, domain: str) -> str:
    """The actor id in a ``Host: <actor>.<domain>[:port]`` header (``BadActorId`` if none)."""
    name = host.strip().lower()
    if name.startswith("["):  # an IPv6 literal is never an actor
        raise BadActorId(f"Host {host!r} does not name an actor")
    name = name.rsplit(":", 1)[0] if ":" in name else name
    suffix = "." + domain.lower()
    if not name.endswith(suffix):
        raise BadActorId(f"Host {host!r} does not name an actor (expected <actor>.{domain})")
    return check_actor_id(name[: -len(suffix)])


@dataclass(frozen=True)
class WorkerNames:
    """Names and addresses of worker ``index`` of backend ``instance``."""

    instance: int
    index: int

    def __post_init__(self) -> None:
        if not 0 <= self.instance <= MAX_INSTANCE:
            raise ValueError(f"backend.instance: must be 0..{MAX_INSTANCE} (got {self.instance})")
        if not 0 <= self.index < MAX_WORKERS:
            raise ValueError(f"worker index must be 0..{MAX_WORKERS - 1} (got {self.index})")

    @classmethod
    def from_netns(cls, name: str) -> WorkerNames | None:
        """The worker whose namespace is called ``name`` (None: not one of ours)."""
        match = _NETNS.fullmatch(name)
        if match is None:
            return None
        try:
            return cls(int(match["instance"]), int(match["index"]))
        except ValueError:
            return None

    @property
    def worker_id(self) -> str:
        """The controller's id for this worker."""
        return f"w{self.index}"

    @property
    def netns(self) -> str:
        """The network namespace's name."""
        return f"{NETNS_PREFIX}{self.instance}-w{self.index}"

    @property
    def netns_path(self) -> str:
        """Where ``ip netns`` mounts it."""
        return f"/var/run/netns/{self.netns}"

    @property
    def veth_host(self) -> str:
        """The veth end in the host namespace."""
        return f"{VETH_PREFIX}{self.instance}h{self.index}"

    @property
    def veth_worker(self) -> str:
        """The veth end inside the worker's namespace."""
        return f"{VETH_PREFIX}{self.instance}c{self.index}"

    def _network(self) -> ipaddress.IPv4Network:
        base = ipaddress.IPv4Address(f"10.{200 + self.instance}.0.0")
        return ipaddress.IPv4Network((int(base) + 4 * self.index, 30))

    @property
    def host_ip(self) -> str:
        """The host end's address."""
        return str(self._network()[1])

    @property
    def actor_ip(self) -> str:
        """The address the actor's sandbox answers on (it binds 0.0.0.0)."""
        return str(self._network()[2])


def sandbox_id(actor: str, generation: int, instance: int) -> str:
    """The container id of activation ``generation`` of ``actor`` (backend ``instance``)."""
    return f"{actor}_g{generation}_i{instance}"


def parse_sandbox_id(cid: str) -> tuple[str, int, int] | None:
    """``(actor, generation, instance)`` from an actor sandbox's container id."""
    parts = cid.split("_")
    if len(parts) != 3 or not parts[1].startswith("g") or not parts[2].startswith("i"):
        return None
    try:
        return check_actor_id(parts[0]), int(parts[1][1:]), int(parts[2][1:])
    except ValueError:
        return None
