"""Two-tier locality: pause (keep the snapshot on its node) or suspend (upload it).

A paused actor resumes fast, but only on the node that holds its snapshot; when that
node has no free worker the actor is *stranded*: it waits up to ``wait_s`` for a worker
there (delay scheduling; the controller also evicts an idle actor on that node), then
its snapshot is uploaded from the node and it is restored anywhere (the fall-back from
pause to suspend). A paused snapshot idle for ``upload_after_s`` is uploaded in the
background, so long idle actors end up suspended and free to move.
"""

from __future__ import annotations

from control.messages import Tier
from control.model import Actor
from control.policies.checks import finite


class PauseFirst:
    """Pause every checkpoint, or only those of actors expected back soon.

    ``pause_below_s`` None pauses always; otherwise an actor is paused while the
    exponentially weighted mean of its idle times (weight ``alpha`` on the newest) is
    below it, and suspended (uploaded) otherwise or before it has come back once.
    """

    def __init__(
        self,
        wait_s: float = 0.5,
        upload_after_s: float | None = 60.0,
        pause_below_s: float | None = None,
        alpha: float = 0.3,
    ) -> None:
        self.wait_s = finite("wait_s", wait_s, zero_ok=True)
        self.upload_after_s = (
            None if upload_after_s is None else finite("upload_after_s", upload_after_s)
        )
        self.pause_below_s = (
            None if pause_below_s is None else finite("pause_below_s", pause_below_s)
        )
        self.alpha = finite("alpha", alpha)
        if self.alpha > 1:
            raise ValueError(f"alpha: must be in (0, 1] (got {alpha!r})")
        self._mean_idle: dict[str, float] = {}

    def on_request(self, actor: Actor, now: float) -> None:
        if self.pause_below_s is None or actor.generation == 0 or actor.state != "suspended":
            return  # only the idle time between a suspension and the next request counts
        idle = max(0.0, now - actor.last_used)
        old = self._mean_idle.get(actor.id)
        self._mean_idle[actor.id] = idle if old is None else old + self.alpha * (idle - old)

    def tier(self, actor: Actor, now: float) -> Tier:
        if self.pause_below_s is None:
            return Tier.LOCAL
        mean = self._mean_idle.get(actor.id)
        return Tier.LOCAL if mean is not None and mean < self.pause_below_s else Tier.REMOTE

    def __repr__(self) -> str:
        return (
            f"PauseFirst(wait_s={self.wait_s:g}, upload_after_s={self.upload_after_s}, "
            f"pause_below_s={self.pause_below_s})"
        )
