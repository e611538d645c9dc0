"""The object store's bytes in the simulator: snapshot versions kept under a retention
policy (old versions deleted at commit, or piling up between periodic collections)."""

from __future__ import annotations

from control.policies.base import RetentionPolicy


class StoredSnapshots:
    """Every actor's stored snapshot versions and their sizes, and the total."""

    def __init__(self, retention: RetentionPolicy) -> None:
        self.retention = retention
        self.bytes = 0  # in the store now
        self.deleted_versions = 0
        self._versions: dict[str, dict[int, int]] = {}  # actor -> version -> bytes
        self._uncollected: set[str] = set()  # actors with versions a sweep may delete

    def put(self, actor: str, version: int, size: int) -> None:
        """``actor``'s snapshot ``version`` of ``size`` bytes was committed."""
        versions = self._versions.setdefault(actor, {})
        self.bytes += size - versions.get(version, 0)
        versions[version] = size
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
        versions = self._versions[actor]
        for old in self.retention.to_delete(sorted(versions)):
            self.bytes -= versions.pop(old)
            self.deleted_versions += 1

    def versions(self, actor: str) -> list[int]:
        """``actor``'s stored versions, ascending."""
        return sorted(self._versions.get(actor, ()))
