"""Pluggable scheduling policies: placement, suspension (with keep-alive), admission,
scaling of the worker pool, two-tier locality (pause or suspend), and the retention of
old snapshot versions.

Each policy family is a :class:`typing.Protocol` in :mod:`control.policies.base`;
Hydra configs under ``conf/policy/`` choose an implementation by ``_target_``.
"""

from control.policies.admission import EvictThenWait, FailFast, ParkAndRetry, QueueWithDeadline
from control.policies.base import (
    AdmissionDecision,
    AdmissionPolicy,
    Demand,
    Load,
    LocalityPolicy,
    PlacementPolicy,
    Refuse,
    RetentionPolicy,
    ScalingPolicy,
    SnapshotLocator,
    SuspensionPolicy,
    Wait,
)
from control.policies.keepalive import GreedyDual, HybridHistogram, KeepRunning, PredictivePrewarm
from control.policies.locality import PauseFirst
from control.policies.placement import LruPlacement, RandomPlacement, SnapshotLocalityPlacement
from control.policies.retention import KeepNewest
from control.policies.scaling import DemandScaler
from control.policies.suspension import AfterEachRequest, IdleTimeout, Lazy, RestoreOnDemand

__all__ = [
    "AdmissionDecision",
    "AdmissionPolicy",
    "AfterEachRequest",
    "Demand",
    "DemandScaler",
    "EvictThenWait",
    "FailFast",
    "GreedyDual",
    "HybridHistogram",
    "IdleTimeout",
    "KeepNewest",
    "KeepRunning",
    "Lazy",
    "Load",
    "LocalityPolicy",
    "LruPlacement",
    "ParkAndRetry",
    "PauseFirst",
    "PlacementPolicy",
    "PredictivePrewarm",
    "QueueWithDeadline",
    "RandomPlacement",
    "Refuse",
    "RestoreOnDemand",
    "RetentionPolicy",
    "ScalingPolicy",
    "SnapshotLocalityPlacement",
    "SnapshotLocator",
    "SuspensionPolicy",
    "Wait",
]
