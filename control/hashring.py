"""Consistent hashing: which of several control-plane shards owns an actor.

Each shard is placed on a ring of 64-bit hashes at ``vnodes`` points (virtual nodes);
an actor belongs to the shard owning the first point at or after the actor's own
hash. More virtual nodes even out the shards' shares; adding a shard moves only the
actors that now fall on its points (about ``1 / (shards + 1)`` of them), which is why
sharded API servers use it. The hash is BLAKE2b, so every process and every run maps
an actor to the same shard (Python's ``hash`` of a string is salted per process).
"""

from __future__ import annotations

from bisect import bisect_left
from hashlib import blake2b


def ring_hash(key: str) -> int:
    """A stable 64-bit hash of ``key``."""
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Shards ``0 .. shards - 1`` on a ring, ``vnodes`` points each."""

    def __init__(self, shards: int, vnodes: int = 64) -> None:
        if shards < 1:
            raise ValueError(f"shards: must be >= 1 (got {shards})")
        if vnodes < 1:
            raise ValueError(f"vnodes: must be >= 1 (got {vnodes})")
        self.shards = shards
        self.vnodes = vnodes
        points = sorted(
            (ring_hash(f"shard-{shard}#{point}"), shard)
            for shard in range(shards)
            for point in range(vnodes)
        )
        self._hashes = [h for h, _ in points]
        self._owners = [shard for _, shard in points]

    def shard_of(self, key: str) -> int:
        """The shard that owns ``key``."""
        if self.shards == 1:
            return 0
        i = bisect_left(self._hashes, ring_hash(key))
        return self._owners[i if i < len(self._owners) else 0]
