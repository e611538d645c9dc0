"""Failures the simulator injects, so policies can be studied under faults.

They reach the controller through the same events a real backend sends: a failed
restore is ``ActivationFinished(op, FAILED)``, a checkpoint that kills its sandbox is
``CheckpointFinished(op, LOST)``, a vanished worker is ``WorkerLost`` (and later a
replacement ``WorkerAdded``); work still running on a lost worker completes late and
is ignored as stale, and the requests it was serving fail with 502.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FaultModel:
    """Rates of injected failures (all 0: none, and no random numbers are drawn)."""

    restore_failure_rate: float = 0.0  # probability that one restore or cold start fails
    checkpoint_failure_rate: float = 0.0  # probability that a checkpoint loses its sandbox
    worker_loss_per_hour: float = 0.0  # expected losses per worker per hour
    worker_replacement_s: float = 30.0  # a lost worker's replacement joins after this

    @property
    def enabled(self) -> bool:
        """True when any failure is injected."""
        return bool(
            self.restore_failure_rate or self.checkpoint_failure_rate or self.worker_loss_per_hour
        )


def _number(cfg: Mapping[str, Any], key: str, field: str, high: float) -> float:
    value = cfg.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{field}.{key}: must be a number (got {value!r})")
    if not 0 <= value <= high:
        raise ValueError(f"{field}.{key}: must be between 0 and {high:g} (got {value!r})")
    return float(value)


def faults_from_config(cfg: Mapping[str, Any] | None, field: str = "faults") -> FaultModel:
    """A checked :class:`FaultModel` from the ``faults`` config section (None: no faults)."""
    if cfg is None:
        return FaultModel()
    allowed = {"name", *FaultModel.__dataclass_fields__}
    unknown = set(cfg) - allowed
    if unknown:
        known = sorted(allowed - {"name"})
        raise ValueError(f"{field}: unknown {sorted(unknown)}; allowed: {known}")
    replacement = _number(
        {"worker_replacement_s": cfg.get("worker_replacement_s", 30.0)},
        "worker_replacement_s", field, 86400.0,
    )  # fmt: skip
    if replacement <= 0:
        raise ValueError(f"{field}.worker_replacement_s: must be > 0 (got {replacement!r})")
    return FaultModel(
        restore_failure_rate=_number(cfg, "restore_failure_rate", field, 1.0),
        checkpoint_failure_rate=_number(cfg, "checkpoint_failure_rate", field, 1.0),
        worker_loss_per_hour=_number(cfg, "worker_loss_per_hour", field, 3600.0),
        worker_replacement_s=replacement,
    )
