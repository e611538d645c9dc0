"""Pluggable scheduling policies: placement, suspension and admission.

Each policy family is a :class:`typing.Protocol` in :mod:`control.policies.base`;
Hydra configs under ``conf/policy/`` choose an implementation by ``_target_``.
"""

from control.policies.admission import EvictThenWait, FailFast, QueueWithDeadline
from control.policies.base import (
    AdmissionDecision,
    AdmissionPolicy,
    PlacementPolicy,
    Refuse,
    SnapshotLocator,
    SuspensionPolicy,
    Wait,
)
from control.policies.placement import LruPlacement, RandomPlacement, SnapshotLocalityPlacement
from control.policies.suspension import AfterEachRequest, IdleTimeout, Lazy

__all__ = [
    "AdmissionDecision",
    "AdmissionPolicy",
    "AfterEachRequest",
    "EvictThenWait",
    "FailFast",
    "IdleTimeout",
    "Lazy",
    "LruPlacement",
    "PlacementPolicy",
    "QueueWithDeadline",
    "RandomPlacement",
    "Refuse",
    "SnapshotLocalityPlacement",
    "SnapshotLocator",
    "SuspensionPolicy",
    "Wait",
]
