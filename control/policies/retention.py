"""Snapshot retention: which old snapshot versions of an actor are deleted, and when.

An actor's newest snapshot is what it resumes from; older ones are kept to repair from
(a newest one that turns out unusable) or to fork from, and cost storage. Without
garbage collection they pile up: one overnight soak of Agent Substrate left 1,603
snapshot generations of one actor (Substrate #664).
"""

from __future__ import annotations

from collections.abc import Sequence

from control.policies.checks import finite, integer_or_none


class KeepNewest:
    """Keep each actor's newest ``keep`` versions (None: keep every version, no GC).

    ``gc_interval_s`` 0 deletes what falls out at each commit; > 0 lets old versions
    pile up between collections every ``gc_interval_s`` seconds (a periodic sweeper).
    """

    def __init__(self, keep: int | None = 2, gc_interval_s: float = 0.0) -> None:
        self.keep = integer_or_none("keep", keep, 1)
        self.gc_interval_s = finite("gc_interval_s", gc_interval_s, zero_ok=True)

    def to_delete(self, versions: Sequence[int]) -> list[int]:
        """Of an actor's stored ``versions`` (ascending), those to delete now."""
        if self.keep is None or len(versions) <= self.keep:
            return []
        return list(versions[: len(versions) - self.keep])
