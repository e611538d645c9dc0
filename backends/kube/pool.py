"""The worker pool on Kubernetes: a StatefulSet of worker pods, each running the worker
agent (``backends/agent``), discovered by watching pods, resized through the API.

:class:`PodPool` turns what the API server says about the pods into
:class:`PoolChange` records (a worker became ready, a worker went away) that the control
plane hands to the controller as ``WorkerAdded`` / worker loss. A watch is not reliable,
and the pool does not assume it is:

* events may repeat (every re-watch begins with ADDED for every pod): a change is
  reported only when the set of ready workers really changes;
* events may be missed (a dropped stream, a 410 Gone): after every stream ends the pool
  lists the pods again and reports the difference, so it converges to the truth;
* a pod may be deleted and created again under the same name (a node failure, a
  rolling update): its uid differs, so the old worker is reported gone (its sandboxes
  with it) and the new one added.

A worker is ready when its pod is Running, its Ready condition is True and it has an
IP; the agent's port is the pod's ``actormux.dev/agent-port`` annotation if set (pods
sharing one IP, e.g. host networking), else its container port named ``agent``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kubernetes import client, watch

log = logging.getLogger("actormux.kube.pool")
AGENT_PORT_ANNOTATION = "actormux.dev/agent-port"


@dataclass(frozen=True)
class PoolSettings:
    """Where the worker pods are."""

    namespace: str
    statefulset: str = "actormux-worker"
    labels: Mapping[str, str] | None = None  # default: app.kubernetes.io/name=<statefulset>
    watch_timeout_s: int = 300  # the server ends a watch after this; the pool lists again

    @property
    def selector(self) -> str:
        """The label selector of the worker pods."""
        labels = self.labels or {"app.kubernetes.io/name": self.statefulset}
        return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


@dataclass(frozen=True)
class WorkerPod:
    """A ready worker: its id (the pod name), the pod's uid, its agent's address."""

    name: str
    uid: str
    host: str
    port: int

    @property
    def url(self) -> str:
        """The worker agent's base URL."""
        return f"http://{self.host}:{self.port}"


class Change(StrEnum):
    """What happened to a worker."""

    ADDED = "added"
    REMOVED = "removed"


@dataclass(frozen=True)
class PoolChange:
    """One change of the set of ready workers."""

    change: Change
    worker: WorkerPod


def _labels_match(pod: Any, selector: str) -> bool:
    labels = pod.metadata.labels or {}
    return all(labels.get(k) == v for k, _, v in (t.partition("=") for t in selector.split(",")))


def ready_worker(pod: Any) -> WorkerPod | None:
    """The worker a pod is, if it is ready to take orders (see the module docstring)."""
    status = pod.status
    if status is None or status.phase != "Running" or not status.pod_ip:
        return None
    if pod.metadata.deletion_timestamp is not None:
        return None  # terminating: no new work
    conditions = status.conditions or []
    if not any(c.type == "Ready" and c.status == "True" for c in conditions):
        return None
    port = (pod.metadata.annotations or {}).get(AGENT_PORT_ANNOTATION)
    if port is None:
        for container in pod.spec.containers or []:
            for declared in container.ports or []:
                if declared.name == "agent":
                    port = declared.container_port
    if port is None:
        log.warning("pod %s declares no agent port; ignored", pod.metadata.name)
        return None
    try:
        number = int(port)
    except ValueError:
        log.warning("pod %s: agent port %r is not a number; ignored", pod.metadata.name, port)
        return None
    return WorkerPod(pod.metadata.name, pod.metadata.uid or "", status.pod_ip, number)


class PodPool:
    """The ready workers of one StatefulSet, kept current from the API server."""

    def __init__(
        self, core: client.CoreV1Api, apps: client.AppsV1Api, settings: PoolSettings
    ) -> None:
        self.core = core
        self.apps = apps
        self.settings = settings
        self.workers: dict[str, WorkerPod] = {}
        self.relists = 0  # times the pool listed the pods again (a watch ended or failed)
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None

    def _update(self, name: str, worker: WorkerPod | None) -> list[PoolChange]:
        known = self.workers.get(name)
        if known == worker:
            return []  # a repeated event, or a change that does not matter to us
        changes = []
        if known is not None:
            del self.workers[name]
            changes.append(PoolChange(Change.REMOVED, known))
        if worker is not None:
            self.workers[name] = worker
            changes.append(PoolChange(Change.ADDED, worker))
        return changes

    def resync(self) -> tuple[list[PoolChange], str]:
        """List the pods; the changes since what the pool knew, and the list's version."""
        listing = self.core.list_namespaced_pod(
            self.settings.namespace, label_selector=self.settings.selector
        )
        seen: dict[str, WorkerPod | None] = {}
        for pod in listing.items:
            if _labels_match(pod, self.settings.selector):
                seen[pod.metadata.name] = ready_worker(pod)
        changes = []
        for name in sorted(set(self.workers) | set(seen)):
            changes += self._update(name, seen.get(name))
        return changes, listing.metadata.resource_version

    def apply(self, kind: str, pod: Any) -> list[PoolChange]:
        """The changes one watch event makes (none for a repeat)."""
        if not _labels_match(pod, self.settings.selector):
            return []
        worker = None if kind == "DELETED" else ready_worker(pod)
        return self._update(pod.metadata.name, worker)

    def run(self, on_change: Callable[[PoolChange], None]) -> None:
        """List, then watch, until :meth:`close`; every change goes to ``on_change``.
        A watch that ends or fails is followed by a new list (and the difference)."""
        stop = self._stop
        while not stop.is_set():
            try:
                changes, version = self.resync()
            except client.ApiException as e:
                log.warning("listing worker pods failed (%s); retrying", e.reason)
                stop.wait(1.0)
                continue
            except OSError as e:  # the API server cannot be reached
                log.warning("listing worker pods failed (%s); retrying", e)
                stop.wait(1.0)
                continue
            for change in changes:
                on_change(change)
            stream = self._watch = watch.Watch()
            try:
                for event in stream.stream(
                    self.core.list_namespaced_pod, self.settings.namespace,
                    label_selector=self.settings.selector, resource_version=version,
                    timeout_seconds=self.settings.watch_timeout_s,
                ):  # fmt: skip
                    if stop.is_set():
                        break
                    for change in self.apply(event["type"], event["object"]):
                        on_change(change)
            except client.ApiException as e:  # 410 Gone and the like: list again
                log.info("pod watch ended (%s); listing again", e.reason)
            except Exception as e:  # a dropped connection (or close() cut it)
                if not stop.is_set():
                    log.info("pod watch failed (%s); listing again", e)
                    stop.wait(0.2)
            finally:
                stream.stop()
            self.relists += 1

    def close(self) -> None:
        """Stop :meth:`run` now: its open watch is cut rather than waited out."""
        self._stop.set()
        stream = self._watch
        if stream is not None:
            stream.stop()
            response = getattr(stream, "_resp", None)  # the client keeps it there
            if response is not None:
                response.close()

    def scale(self, replicas: int) -> None:
        """Ask for ``replicas`` worker pods (the scaling policy's decision)."""
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0 (got {replicas})")
        self.apps.patch_namespaced_stateful_set_scale(
            self.settings.statefulset, self.settings.namespace, {"spec": {"replicas": replicas}}
        )
