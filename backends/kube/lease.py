"""Leader election with a ``coordination.k8s.io/v1`` Lease, and its fencing token.

Several control planes may run (a Deployment with replicas, or a new pod while the old
one is still terminating); one leads. The Lease records the holder, when it renewed,
for how long that holds, and ``leaseTransitions``, which goes up by one every time the
holder changes. That count is the **fencing token**: the leader passes it with every
state write (``backends/state/redis_state.py``), and the state refuses a token older
than one it has seen, so a leader that was paused past its lease and does not know it
yet cannot commit anything once its successor has written once.

Taking and renewing are compare-and-swap updates: the write names the
``resourceVersion`` it read, and the API server refuses it (409) if the Lease changed
meanwhile, so two candidates can never both take it. Like client-go's leader election,
expiry is judged by this process's own monotonic clock from the moment it last saw the
Lease change, never by comparing the holder's timestamps with our clock (clocks skew).

The Kubernetes API is used for this and for pool changes only, never on the request path.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

log = logging.getLogger("actormux.kube.lease")


@dataclass(frozen=True)
class LeaseSettings:
    """Which Lease, who we are, and its timing (client-go's defaults: 15 s, renew 10 s)."""

    namespace: str
    name: str
    identity: str  # unique per control-plane process: e.g. the pod name
    duration_s: float = 15.0  # how long a renewal holds
    renew_deadline_s: float = 10.0  # a leader that could not renew for this long stops

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("identity must not be empty")
        if not 0 < self.renew_deadline_s < self.duration_s:
            raise ValueError(
                f"renew_deadline_s must be > 0 and < duration_s={self.duration_s} "
                f"(got {self.renew_deadline_s})"
            )


@dataclass(frozen=True)
class Leadership:
    """This process leads with fencing ``token`` until ``valid_until`` (monotonic)."""

    token: int
    valid_until: float


def _micro_time(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Takes, renews and releases one Lease for one identity."""

    def __init__(
        self, api: client.CoordinationV1Api, settings: LeaseSettings,
        *, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.api = api
        self.settings = settings
        self.clock = clock
        self.leadership: Leadership | None = None
        self._seen: tuple[str, float] | None = None  # (resourceVersion, when we saw it change)

    def _spec(self, transitions: int, acquired: str | None = None) -> dict[str, Any]:
        now = _micro_time(datetime.datetime.now(datetime.UTC))
        spec: dict[str, Any] = {
            "holderIdentity": self.settings.identity,
            "leaseDurationSeconds": max(1, round(self.settings.duration_s)),
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        spec["acquireTime"] = acquired or now
        return spec

    def try_lead(self) -> Leadership | None:
        """Take or renew the Lease if it is ours to take; None if another holds it.
        Call it every ``duration_s / 3`` or so; a leader whose leadership lapsed
        (:meth:`leads` is False) must stop writing and step down."""
        started = self.clock()
        try:
            lease = self.api.read_namespaced_lease(self.settings.name, self.settings.namespace)
        except client.ApiException as e:
            if e.status != 404:
                log.warning("reading lease %s failed: %s", self.settings.name, e.reason)
                return self._keep_or_lose()
            return self._create(started)
        version = lease.metadata.resource_version
        if self._seen is None or self._seen[0] != version:
            self._seen = (version, started)
        spec = lease.spec
        holder = spec.holder_identity or ""
        transitions = int(spec.lease_transitions or 0)
        if holder == self.settings.identity:
            acquired = _micro_time(spec.acquire_time) if spec.acquire_time else None
            return self._write(version, self._spec(transitions, acquired), transitions, started)
        expired = started > self._seen[1] + float(spec.lease_duration_seconds or 0)
        if holder and not expired:
            self.leadership = None
            return None
        return self._write(version, self._spec(transitions + 1), transitions + 1, started)

    def _create(self, started: float) -> Leadership | None:
        body = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.settings.name, "namespace": self.settings.namespace},
            "spec": self._spec(1),
        }  # fmt: skip
        try:
            self.api.create_namespaced_lease(self.settings.namespace, body)
        except client.ApiException as e:
            if e.status == 409:  # another candidate created it first
                return None
            log.warning("creating lease %s failed: %s", self.settings.name, e.reason)
            return self._keep_or_lose()
        return self._took(1, started)

    def _write(
        self, version: str, spec: dict[str, Any], token: int, started: float
    ) -> Leadership | None:
        body = {"metadata": {"resourceVersion": version}, "spec": spec}
        try:
            written = self.api.patch_namespaced_lease(
                self.settings.name, self.settings.namespace, body
            )
        except client.ApiException as e:
            if e.status == 409:  # it changed since we read it: not ours this time
                self.leadership = None
                return None
            log.warning("writing lease %s failed: %s", self.settings.name, e.reason)
            return self._keep_or_lose()
        self._seen = (written.metadata.resource_version, started)
        return self._took(token, started)

    def _took(self, token: int, started: float) -> Leadership:
        if self.leadership is None or self.leadership.token != token:
            log.warning("%s leads with fencing token %d", self.settings.identity, token)
        # Measured from before the read: the renewal may have reached the API server late.
        self.leadership = Leadership(token, started + self.settings.renew_deadline_s)
        return self.leadership

    def _keep_or_lose(self) -> Leadership | None:
        """The API server could not be reached: leadership lasts until its deadline."""
        if self.leadership is not None and self.clock() >= self.leadership.valid_until:
            self.leadership = None
        return self.leadership

    def leads(self) -> bool:
        """True while this process may act as leader (renewed within the deadline)."""
        return self.leadership is not None and self.clock() < self.leadership.valid_until

    def release(self) -> None:
        """Give the Lease up now (on a clean shutdown), so a successor need not wait."""
        if self.leadership is None or self._seen is None:
            return
        self.leadership = None
        try:
            lease = self.api.read_namespaced_lease(self.settings.name, self.settings.namespace)
            if lease.spec.holder_identity != self.settings.identity:
                return
            body = {
                "metadata": {"resourceVersion": lease.metadata.resource_version},
                "spec": {"holderIdentity": "", "leaseDurationSeconds": 1},
            }
            self.api.patch_namespaced_lease(self.settings.name, self.settings.namespace, body)
        except client.ApiException as e:
            log.warning("releasing lease %s failed: %s", self.settings.name, e.reason)
