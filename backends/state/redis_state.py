"""The control plane's state in Redis (or Valkey), fenced by the leader's token.

Every write is one Lua script, so it is atomic with its fence check: the script reads
the highest fencing token Redis has seen, refuses the write (:class:`Deposed`) if the
caller's token is older, and otherwise records the caller's token and writes. A
control plane that lost its Lease, even one paused for minutes that does not know it
yet, can no longer change anything once the new leader has written once
(:meth:`RedisState.claim` is that first write). Reads are not fenced.

Keys (all under one hash tag, ``{actormux:<namespace>}``, so a Redis Cluster keeps them
in one slot and the scripts may touch them together)::

    fence                  the highest fencing token seen
    seq                    a counter giving actors their creation order
    actors                 sorted set: actor id -> creation order
    actor:<id>             hash: template, owner, generation (the fence of its sandboxes)
    sandbox:<id>           hash: actor, worker, netns, generation, status, started_unix
    live                   sorted set: sandboxes not known to be stopped -> started_unix
    activations, losses    lists of JSON records, oldest first
    wake_seq, wakes        a counter, and hash: wake-up id -> JSON {actor, at_unix}

Durability: an acknowledged write must survive a Redis crash, so :class:`RedisState`
checks that the server appends every write to its log and fsyncs it before replying
(``appendonly yes``, ``appendfsync always``) and refuses to start otherwise, unless told
that the store is durable in another way (``require_fsync=False``; e.g. a managed
service that forbids ``CONFIG``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import redis

from backends.state import (
    ActorExists,
    ActorRow,
    Deposed,
    LossRow,
    SandboxRow,
    StaleGeneration,
    WakeRow,
)

P = ParamSpec("P")
T = TypeVar("T")

# Every write script starts here: KEYS[1] is the fence, ARGV[1] the caller's token.
_FENCE = """
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
local token = tonumber(ARGV[1])
if token < fence then return redis.error_reply('DEPOSED fencing token ' .. token ..
    ' is older than ' .. fence .. ': another control plane leads') end
if token > fence then redis.call('SET', KEYS[1], ARGV[1]) end
"""

_SCRIPTS = {
    "claim": "return 1",
    # KEYS: fence, seq, actors, actor:<id>; ARGV: token, id, template, now, owner
    "add_actor": """
if redis.call('EXISTS', KEYS[4]) == 1 then return redis.error_reply('EXISTS') end
local order = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[3], order, ARGV[2])
redis.call('HSET', KEYS[4], 'template', ARGV[3], 'generation', 0, 'created_unix', ARGV[4],
  'owner', ARGV[5])
return 1""",
    # KEYS: fence, wake_seq, wakes; ARGV: token, record (JSON); returns the new id
    "add_wake": """
local id = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], id, ARGV[2])
return id""",
    # KEYS: fence, wakes; ARGV: token, id
    "remove_wake": """
redis.call('HDEL', KEYS[2], ARGV[2])
return 1""",
    # KEYS: fence, actor:<id>; ARGV: token, generation
    "raise_generation": """
local current = tonumber(redis.call('HGET', KEYS[2], 'generation') or '-1')
if current >= 0 and tonumber(ARGV[2]) > current then
  redis.call('HSET', KEYS[2], 'generation', ARGV[2])
end
return 1""",
    # KEYS: fence, actors, actor:<id>; ARGV: token, id
    "delete_actor": """
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3])
return 1""",
    # KEYS: fence, actor:<id>, sandbox:<id>, live
    # ARGV: token, generation, sandbox, actor, worker, netns, now
    "begin_activation": """
local current = tonumber(redis.call('HGET', KEYS[2], 'generation') or '-1')
if current < 0 then return redis.error_reply('STALE ' .. ARGV[4] .. ' is not recorded') end
if tonumber(ARGV[2]) <= current then
  return redis.error_reply('STALE ' .. ARGV[4] .. ': generation ' .. ARGV[2] ..
    ' is not newer than the fence')
end
redis.call('HSET', KEYS[2], 'generation', ARGV[2])
redis.call('HSET', KEYS[3], 'actor', ARGV[4], 'worker', ARGV[5], 'netns', ARGV[6],
  'generation', ARGV[2], 'status', 'starting', 'started_unix', ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[3])
return 1""",
    # KEYS: fence, sandbox:<id>, live; ARGV: token, status, id, now
    "sandbox_status": """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'status', ARGV[2])
if ARGV[2] == 'stopped' then
  redis.call('HSET', KEYS[2], 'stopped_unix', ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[3])
end
return 1""",
    # KEYS: fence, list; ARGV: token, record
    "append": """
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1""",
}


class RedisState:
    """The control plane's state in the Redis at ``url``, written with ``token``.

    ``namespace`` separates deployments sharing one Redis. ``token`` is the fencing
    token of the Lease this control plane holds (>= 1); a newer token seen by Redis
    makes every later write raise :class:`Deposed`.
    """

    def __init__(
        self, url: str, *, namespace: str, token: int, require_fsync: bool = True,
        client: redis.Redis | None = None,
    ) -> None:  # fmt: skip
        if token < 1:
            raise ValueError(f"fencing token must be >= 1 (got {token})")
        if not namespace or any(c in namespace for c in "{}: \n"):
            raise ValueError(f"namespace must be a plain name (got {namespace!r})")
        self.token = token
        self.redis = client or redis.Redis.from_url(url, decode_responses=True)
        self._tag = "{actormux:" + namespace + "}"
        if require_fsync:
            self._check_durable()
        self._scripts = {name: self.redis.register_script(_FENCE + body)
                         for name, body in _SCRIPTS.items()}  # fmt: skip
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="redisstate")

    def _key(self, *parts: str) -> str:
        return ":".join((self._tag, *parts))

    @staticmethod
    def erase(url: str, namespace: str) -> int:
        """Delete every key of ``namespace`` (a finished run's own state); how many."""
        client = redis.Redis.from_url(url, decode_responses=True)
        try:
            keys = list(client.scan_iter(match="{actormux:" + namespace + "}:*", count=500))
            return int(client.delete(*keys)) if keys else 0
        finally:
            client.close()

    def _check_durable(self) -> None:
        config = self.redis.config_get("append*")
        if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
            raise RuntimeError(
                "Redis must log and fsync every write before acknowledging it "
                "(appendonly yes, appendfsync always); it has appendonly="
                f"{config.get('appendonly')}, appendfsync={config.get('appendfsync')}"
            )

    def _write(self, script: str, keys: Sequence[str], *args: Any) -> Any:
        try:
            return self._scripts[script](keys=[self._key("fence"), *keys], args=[self.token, *args])
        except redis.ResponseError as e:
            message = str(e)
            if message.startswith("DEPOSED"):
                raise Deposed(message.removeprefix("DEPOSED ")) from None
            if message.startswith("STALE"):
                raise StaleGeneration(message.removeprefix("STALE ")) from None
            if message.startswith("EXISTS"):
                raise ActorExists("actor already exists") from None
            raise

    async def offload(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` (a method of this state) on its own thread, writes in order."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        """Finish pending writes and close the connection."""
        self._thread.shutdown(wait=True)
        self.redis.close()

    # ------------------------------------------------------------ leadership

    def claim(self) -> None:
        """The first write of a new leader: from now on older tokens are refused."""
        self._write("claim", [])

    def fence(self) -> int:
        """The highest fencing token Redis has seen."""
        return int(self.redis.get(self._key("fence")) or 0)

    # ------------------------------------------------------------ actors

    def add_actor(self, actor: str, template: str, owner: str = "") -> None:
        """Record a new actor (:class:`ActorExists` if its id is taken)."""
        try:
            self._write(
                "add_actor", [self._key("seq"), self._key("actors"), self._key("actor", actor)],
                actor, template, time.time(), owner,
            )  # fmt: skip
        except ActorExists:
            raise ActorExists(f"actor {actor!r} already exists") from None

    def actors(self) -> list[ActorRow]:
        """Every actor, in creation order."""
        ids = [str(actor) for actor in self.redis.zrange(self._key("actors"), 0, -1)]
        pipe = self.redis.pipeline(transaction=False)
        for actor in ids:
            pipe.hmget(self._key("actor", actor), "template", "generation", "owner")
        rows = []
        for actor, (template, generation, owner) in zip(ids, pipe.execute(), strict=True):
            if template is not None:  # deleted between the two reads
                rows.append(ActorRow(actor, template, int(generation), owner or ""))
        return rows

    def has_actor(self, actor: str) -> bool:
        """True if ``actor`` is recorded."""
        return bool(self.redis.exists(self._key("actor", actor)))

    def generation(self, actor: str) -> int:
        """The newest generation of ``actor`` (``KeyError`` if unknown)."""
        value = self.redis.hget(self._key("actor", actor), "generation")
        if value is None:
            raise KeyError(actor)
        return int(value)

    def raise_generation(self, actor: str, generation: int) -> None:
        """Make ``generation`` at least the actor's newest."""
        self._write("raise_generation", [self._key("actor", actor)], generation)

    def delete_actor(self, actor: str) -> None:
        """Forget an actor (and its wake-ups)."""
        self._write("delete_actor", [self._key("actors"), self._key("actor", actor)], actor)
        for wake in self.wakes():
            if wake.actor == actor:
                self.remove_wake(wake.id)

    # ------------------------------------------------------------ wake-ups

    def add_wake(self, actor: str, at_unix: float) -> int:
        """Record a wake-up ``actor`` scheduled for ``at_unix``; its id."""
        record = json.dumps({"actor": actor, "at_unix": at_unix})
        return int(self._write("add_wake", [self._key("wake_seq"), self._key("wakes")], record))

    def remove_wake(self, wake: int) -> None:
        """A wake-up was delivered (or refused): forget it."""
        self._write("remove_wake", [self._key("wakes")], wake)

    def wakes(self) -> list[WakeRow]:
        """Every wake-up not yet delivered, soonest first."""
        rows = []
        for wake, raw in self.redis.hgetall(self._key("wakes")).items():
            record = json.loads(raw)
            rows.append(WakeRow(int(wake), record["actor"], float(record["at_unix"])))
        return sorted(rows, key=lambda row: (row.at_unix, row.id))

    # ------------------------------------------------------------ sandboxes

    def begin_activation(
        self, actor: str, generation: int, sandbox: str, worker: str, netns: str
    ) -> None:
        """Fence and record a sandbox before it starts (see :class:`ControlState`)."""
        self._write(
            "begin_activation",
            [self._key("actor", actor), self._key("sandbox", sandbox), self._key("live")],
            generation, sandbox, actor, worker, netns, time.time(),
        )  # fmt: skip

    def _status(self, sandbox: str, status: str) -> None:
        self._write(
            "sandbox_status", [self._key("sandbox", sandbox), self._key("live")],
            status, sandbox, time.time(),
        )  # fmt: skip

    def sandbox_running(self, sandbox: str) -> None:
        """A sandbox answered its readiness probe."""
        self._status(sandbox, "running")

    def sandbox_stopping(self, sandbox: str) -> None:
        """The control plane ends a sandbox whose state is not needed."""
        self._status(sandbox, "stopping")

    def sandbox_stopped(self, sandbox: str) -> None:
        """A sandbox is gone."""
        self._status(sandbox, "stopped")

    def live_sandboxes(self) -> list[SandboxRow]:
        """Sandboxes not known to be stopped, oldest first."""
        ids = [str(sandbox) for sandbox in self.redis.zrange(self._key("live"), 0, -1)]
        pipe = self.redis.pipeline(transaction=False)
        fields = ("actor", "worker", "netns", "generation", "status")
        for sandbox in ids:
            pipe.hmget(self._key("sandbox", sandbox), *fields)
        rows = []
        for sandbox, (actor, worker, netns, generation, status) in zip(
            ids, pipe.execute(), strict=True
        ):
            if actor is not None:
                rows.append(SandboxRow(sandbox, actor, worker, netns, int(generation), status))
        return rows

    def netns_of(self, sandbox: str) -> str | None:
        """Where a sandbox was started."""
        value = self.redis.hget(self._key("sandbox", sandbox), "netns")
        return None if value is None else str(value)

    def activation(
        self, sandbox: str, *, actor: str, worker: str, kind: str, version: int, outcome: str,
        seconds: float,
    ) -> None:  # fmt: skip
        """Record how an activation went."""
        record = {"sandbox": sandbox, "actor": actor, "worker": worker, "kind": kind,
                  "version": version, "outcome": outcome, "seconds": seconds,
                  "at_unix": time.time()}  # fmt: skip
        self._write("append", [self._key("activations")], json.dumps(record))

    # ------------------------------------------------------------ losses

    def record_loss(
        self, actor: str, generation: int, version: int, reason: str,
        requests: Sequence[str], *, known: bool,
    ) -> None:  # fmt: skip
        """Report that what ``actor`` acknowledged after snapshot ``version`` is lost."""
        record = {"actor": actor, "generation": generation, "version": version,
                  "reason": reason, "requests": list(requests), "known": known,
                  "at_unix": time.time()}  # fmt: skip
        self._write("append", [self._key("losses")], json.dumps(record))

    def losses(self) -> list[LossRow]:
        """Every reported loss, oldest first."""
        rows = []
        for raw in self.redis.lrange(self._key("losses"), 0, -1):
            loss = json.loads(raw)
            rows.append(LossRow(loss["actor"], loss["generation"], loss["version"],
                                loss["reason"], tuple(loss["requests"]), loss["known"],
                                loss["at_unix"]))  # fmt: skip
        return rows
