"""The ``backend: kind`` and ``backend: gke`` config sections, checked, as
:class:`KubeConfig` (a :class:`backends.protocol.Deployment`).

Both drive the same :class:`backends.kube.backend.KubeBackend`; they differ in their
defaults (``conf/backend/kind.yaml``: Redis and MinIO in the cluster;
``conf/backend/gke.yaml``: a GCS bucket). A run with either must be able to reach the
worker pods' addresses, Redis and the object store: in the cluster, as the bench Job
(``backends/kube/bench``) does, or from a machine routed into the pod network.

A run takes the same Lease as the control plane Deployment, so it cannot drive the
worker pods while that one does (scale it to 0 first; ``backends/kind/bench.sh`` does).
With ``isolate_runs`` (the default for experiments) the run keeps its state in a Redis
namespace and a snapshot prefix of its own and removes both afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.config import (
    duration,
    integer,
    ports,
    positive,
    read_token,
    router_limits,
    template,
    text,
)
from backends.controlplane import ControlPlane
from backends.kube.backend import KubeBackend, KubeSettings
from backends.local.router import RouterLimits
from control.controller import Controller
from control.recovery import RecoverySettings

log = logging.getLogger("actormux.kube.settings")
FLAVOURS = ("kind", "gke")


@dataclass(frozen=True)
class KubeConfig:
    """Everything ``backend=kind|gke`` needs (see the module docstring)."""

    name: str  # kind or gke
    settings: KubeSettings
    port: int
    admin_port: int
    actor_domain: str
    admin_token_file: Path
    template: str
    router: RouterLimits
    duration_s: float | None
    isolate_runs: bool
    activation_timeout_s: float
    listen_host: str = "127.0.0.1"  # serve in a pod: 0.0.0.0 (the router Service)

    @property
    def workers(self) -> int:
        """Worker pods the run scales the StatefulSet to."""
        assert self.settings.workers is not None
        return self.settings.workers

    @property
    def request_timeout_s(self) -> float:
        """Router -> actor."""
        return self.settings.request_timeout_s

    def recovery(self, configured: RecoverySettings) -> RecoverySettings:
        """As on the local backend: abandon a forward well after the router's own
        timeout; let an activation take a download and a restore."""
        forward = configured.forward_deadline_s or self.settings.request_timeout_s + 30.0
        activation = max(configured.activation_deadline_s, self.activation_timeout_s + 10.0)
        return replace(configured, forward_deadline_s=forward, activation_deadline_s=activation)

    def for_run(self) -> KubeConfig:
        """With ``isolate_runs``: this config with a Redis namespace and a snapshot
        prefix unique to one run (``after_run`` removes both)."""
        if not self.isolate_runs:
            return self
        run = f"run-{secrets.token_hex(4)}"
        settings = replace(
            self.settings,
            snapshots=f"{self.settings.snapshots.rstrip('/')}/{run}",
            state_namespace=f"{self.settings.namespace}-{run}",
        )
        return replace(self, settings=settings)

    def make_backend(self, controller: Controller) -> KubeBackend:
        """The control plane on the cluster."""
        return KubeBackend(self.settings, controller)

    def actor_templates(self, actors: int) -> list[str]:
        """Every experiment actor runs ``template``."""
        return [self.template] * actors

    def before_run(self) -> None:
        """Nothing: a run's state is its own (``isolate_runs``), or the deployment's."""

    def after_run(self) -> None:
        """With ``isolate_runs``: remove the run's snapshots and Redis keys."""
        if not self.isolate_runs:
            return
        from backends.agent import transfer
        from backends.state.redis_state import RedisState

        try:
            transfer.remove_tree(self.settings.snapshots, self.settings.storage_options)
        except OSError as e:
            log.warning("could not remove the run's snapshots %s: %s", self.settings.snapshots, e)
        namespace = self.settings.state_namespace or self.settings.namespace
        RedisState.erase(self.settings.redis_url, namespace)

    def start_monitor(self, backend: ControlPlane, out: Path) -> None:
        """None: on a cluster the driver's own account (from the agents) is the check."""
        return None


def _storage_options(value: Any) -> dict[str, dict[str, Any]]:
    if isinstance(value, str):
        try:
            value = json.loads(value or "{}")
        except ValueError as e:
            raise ValueError(f"backend.storage_options: not JSON ({e})") from None
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise ValueError(
            "backend.storage_options: a mapping of protocol -> fsspec options, e.g. "
            '{"s3": {"endpoint_url": "http://actormux-minio:9000"}}'
        )
    return {str(k): dict(v) for k, v in value.items()}


def kube_config(
    cfg: Mapping[str, Any], *, workers: int, resume_on_every_request: bool = False
) -> KubeConfig:
    """Check the ``backend`` section of ``kind`` or ``gke`` (reads the agent token)."""
    flavour = cfg.get("name")
    if flavour not in FLAVOURS:
        raise ValueError(f"backend.name: {flavour!r} is not a cluster backend ({FLAVOURS})")
    port, admin_port = ports(cfg)
    snapshots = text(cfg, "snapshots")
    if not snapshots.startswith(("s3://", "gs://", "file:///")):
        raise ValueError(f"backend.snapshots: an s3://, gs:// or file:/// URI (got {snapshots!r})")
    redis_url = text(cfg, "redis_url")
    if not redis_url.startswith(("redis://", "rediss://")):
        raise ValueError(f"backend.redis_url: a redis:// URL (got {redis_url!r})")
    api_host = cfg.get("api_host")
    settings = KubeSettings(
        namespace=text(cfg, "namespace"),
        identity=str(cfg.get("identity") or os.environ.get("POD_NAME") or os.uname().nodename),
        redis_url=redis_url,
        snapshots=snapshots,
        agent_token=read_token(Path(text(cfg, "agent_token_file")), "backend.agent_token_file"),
        api_host=None if api_host is None else str(api_host),
        statefulset=text(cfg, "statefulset"),
        lease=text(cfg, "lease"),
        storage_options=_storage_options(cfg.get("storage_options", {})),
        instance=integer(cfg, "instance", 0, 49),
        request_timeout_s=positive(cfg, "request_timeout_s"),
        sample_interval_s=positive(cfg, "sample_interval_s"),
        observe_interval_s=positive(cfg, "observe_interval_s"),
        workers=workers,
        workers_timeout_s=positive(cfg, "workers_timeout_s"),
        resume_on_every_request=resume_on_every_request,
    )
    isolate = cfg.get("isolate_runs", True)
    if not isinstance(isolate, bool):
        raise ValueError(f"backend.isolate_runs: must be true or false (got {isolate!r})")
    return KubeConfig(
        name=str(flavour),
        settings=settings,
        port=port,
        admin_port=admin_port,
        actor_domain=str(cfg.get("actor_domain", "actors.local")),
        admin_token_file=Path(text(cfg, "admin_token_file")),
        template=template(cfg),
        router=router_limits(cfg),
        duration_s=duration(cfg),
        isolate_runs=isolate,
        activation_timeout_s=positive(cfg, "activation_timeout_s"),
        listen_host=_listen_host(cfg),
    )


def _listen_host(cfg: Mapping[str, Any]) -> str:
    host = cfg.get("listen_host", "127.0.0.1")
    if host not in ("127.0.0.1", "0.0.0.0"):
        raise ValueError(
            f"backend.listen_host: 127.0.0.1, or 0.0.0.0 for a control plane in a pod "
            f"(got {host!r})"
        )
    return str(host)


if TYPE_CHECKING:  # mypy checks that the config is a Deployment
    from backends.protocol import Deployment

    def _is_a_deployment(config: KubeConfig) -> Deployment:
        return config
