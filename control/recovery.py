"""How the controller treats work that does not complete: deadlines and retries.

Shared by the simulator and every backend (``recovery`` in the config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number > 0 (got {value!r})")
    if value <= 0:
        raise ValueError(f"{name}: must be a finite number > 0 (got {value!r})")
    return float(value)


@dataclass(frozen=True)
class RecoverySettings:
    """How long operations may take, and how the controller retries.

    ``forward_deadline_s`` None trusts the driver to end every forwarded request (the
    simulator does); a real backend sets it above its own request timeout.
    """

    activation_deadline_s: float = 30.0
    checkpoint_deadline_s: float = 120.0
    forward_deadline_s: float | None = None
    max_activation_attempts: int = 3
    retry_backoff_s: float = 0.25  # doubles with every failed attempt
    checkpoint_retry_s: float = 1.0  # after a declined checkpoint; doubles, up to the max
    checkpoint_retry_max_s: float = 30.0

    def __post_init__(self) -> None:
        for name in (
            "activation_deadline_s",
            "checkpoint_deadline_s",
            "retry_backoff_s",
            "checkpoint_retry_s",
            "checkpoint_retry_max_s",
        ):
            _positive(name, getattr(self, name))
        if self.forward_deadline_s is not None:
            _positive("forward_deadline_s", self.forward_deadline_s)
        attempts = self.max_activation_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"max_activation_attempts: must be an integer >= 1 (got {attempts!r})")
