"""Snapshot retention: which old snapshot versions of an actor are deleted, and when.

An actor's newest snapshot is what it resumes from; older ones are kept to repair from
(a newest one that turns out unusable) or to fork from, and cost storage. Without
garbage collection they pile up: one overnight soak of Agent Substrate left 1,603
snapshot generations of one actor (Substrate #664).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class KeepNewest:
    """Keep each actor's newest ``keep`` versions (None: keep every version, no GC).

    ``gc_interval_s`` 0 deletes what falls out at each commit; > 0 lets old versions
    pile up between collections every ``gc_interval_s`` seconds (a periodic sweeper).
    """

    def __init__(self, keep: int | None = 2, gc_interval_s: float = 0.0) -> None:
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"keep: must be an integer >= 1 or null (got {keep!r})")
        ok = isinstance(gc_interval_s, int | float) and not isinstance(gc_interval_s, bool)
        if not ok or not math.isfinite(gc_interval_s) or gc_interval_s < 0:
            raise ValueError(f"gc_interval_s: must be a finite number >= 0 (got {gc_interval_s!r})")
        self.keep = keep
        self.gc_interval_s = float(gc_interval_s)

    def to_delete(self, versions: Sequence[int]) -> list[int]:
        """Of an actor's stored ``versions`` (ascending), those to delete now."""
        if self.keep is None or len(versions) <= self.keep:
            return []
        return list(versions[: len(versions) - self.keep])
