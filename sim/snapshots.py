"""The object store's bytes in the simulator: snapshot versions kept under a retention
policy (old versions deleted at commit, or piling up between periodic collections)."""

from __future__ import annotations

from control.policies.base import RetentionPolicy


class StoredSnapshots:
    """Every actor's stored snapshot versions and their sizes, and the total.

    A million actors each hold a version or two, so an actor's versions are one flat
    tuple ``(version, bytes, version, bytes, ...)`` in ascending version order, not a
    dict each (~130 bytes less per actor)."""

    def __init__(self, retention: RetentionPolicy) -> None:
        self.retention = retention
        self.bytes = 0  # in the store now
        self.deleted_versions = 0
        self._versions: dict[str, tuple[int, ...]] = {}  # actor -> (version, bytes, ...)
        self._uncollected: set[str] = set()  # actors with versions a sweep may delete

    def put(self, actor: str, version: int, size: int) -> None:
        """``actor``'s snapshot ``version`` of ``size`` bytes was committed."""
        held = self._sizes(actor)
        self.bytes += size - held.get(version, 0)
        held[version] = size
        self._store(actor, held)
        if self.retention.gc_interval_s > 0:
            self._uncollected.add(actor)
        else:
            self._collect(actor)

    def collect(self) -> None:
        """A periodic sweep: delete what the retention policy lets go."""
        for actor in sorted(self._uncollected):  # sorted: the same order every run
            self._collect(actor)
        self._uncollected.clear()

    def _collect(self, actor: str) -> None:
        held = self._sizes(actor)
        doomed = self.retention.to_delete(sorted(held))
        if not doomed:
            return
        for old in doomed:
            self.bytes -= held.pop(old)
            self.deleted_versions += 1
        self._store(actor, held)

    def _sizes(self, actor: str) -> dict[int, int]:
        flat = self._versions.get(actor, ())
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def _store(self, actor: str, held: dict[int, int]) -> None:
        self._versions[actor] = tuple(item for pair in sorted(held.items()) for item in pair)

    def versions(self, actor: str) -> list[int]:
        """``actor``'s stored versions, ascending."""
        return list(self._versions.get(actor, ())[::2])
