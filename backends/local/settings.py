"""The ``backend: local`` config section, checked, as :class:`LocalSettings` and ports."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.config import boolean, duration, integer, ports, positive, router_limits, template
from backends.controlplane import ControlPlane
from backends.gvisor.catalog import agent_template_name
from backends.gvisor.names import MAX_INSTANCE
from backends.local.agents import AgentLocalBackend
from backends.local.cleanup import cleanup
from backends.local.driver import LocalBackend, LocalSettings
from backends.local.monitor import MonitorProcess
from backends.local.router import RouterLimits
from control.controller import Controller
from control.policies import KeepNewest, RetentionPolicy
from control.recovery import RecoverySettings

RUN_BASE = Path("/run/actormux")


@dataclass(frozen=True)
class LocalConfig:
    """Everything ``backend=local`` needs: settings for the driver, and the router's
    (a :class:`backends.protocol.Deployment`)."""

    settings: LocalSettings
    port: int
    admin_port: int
    actor_domain: str
    admin_token: str | None
    template: str
    router: RouterLimits
    duration_s: float | None
    name: str = "local"

    @property
    def listen_host(self) -> str:
        """Loopback only: actormux's traffic stays on this machine."""
        return "127.0.0.1"

    @property
    def workers(self) -> int:
        """Worker slots on this machine."""
        return self.settings.workers

    @property
    def request_timeout_s(self) -> float:
        """Router -> actor."""
        return self.settings.request_timeout_s

    def recovery(self, configured: RecoverySettings) -> RecoverySettings:
        """The controller's deadlines for this backend: a forwarded request is abandoned
        (and its connection reset) if the router has not ended it well after its own
        request timeout; an activation may take the readiness probe's time and more."""
        forward = configured.forward_deadline_s or self.settings.request_timeout_s + 30.0
        activation = max(configured.activation_deadline_s,
                         self.settings.activation_timeout_s + 10.0)  # fmt: skip
        return replace(configured, forward_deadline_s=forward, activation_deadline_s=activation)

    def make_backend(self, controller: Controller) -> LocalBackend:
        """The backend: runsc in this process, or one worker agent process per worker
        (``backend.worker_agents``)."""
        if self.settings.worker_agents:
            return AgentLocalBackend(self.settings, controller)
        return LocalBackend(self.settings, controller)

    def actor_templates(self, actors: int) -> list[str]:
        """Each actor's template: ``template``, or, for ``agent`` with several state
        sizes, ``agent-<MiB>`` with the sizes taken in turn (so snapshot sizes vary)."""
        sizes = self.settings.agent_state_mb
        if self.template != "agent" or isinstance(sizes, int) or len(sizes) == 1:
            return [self.template] * actors
        return [agent_template_name(sizes[i % len(sizes)]) for i in range(actors)]

    def before_run(self) -> None:
        """Remove what an earlier crash of this instance left."""
        cleanup(self.settings.instance)

    def after_run(self) -> None:
        """Remove the run's sandboxes, namespaces and snapshots."""
        cleanup(self.settings.instance)
        shutil.rmtree(self.settings.state_dir, ignore_errors=True)

    def start_monitor(self, backend: ControlPlane, out: Path) -> MonitorProcess:
        """The independent monitor process, reading runsc's state directory."""
        assert isinstance(backend, LocalBackend)
        return MonitorProcess(backend.runsc.root, self.settings.instance, out)


def _sizes(cfg: Mapping[str, Any], key: str) -> int | tuple[int, ...]:
    """An integer 1..4096, or a non-empty list of distinct ones."""
    value = cfg.get(key)
    if not isinstance(value, list | tuple):
        return integer(cfg, key, 1, 4096)
    sizes = tuple(integer({key: v}, key, 1, 4096) for v in value)
    if not sizes or len(set(sizes)) != len(sizes):
        raise ValueError(f"backend.{key}: a list of sizes must be non-empty and distinct")
    return sizes


def local_config(
    cfg: Mapping[str, Any], *, workers: int, state_dir: Path | None = None,
    resume_on_every_request: bool = False, retention: RetentionPolicy | None = None,
) -> LocalConfig:  # fmt: skip
    """Check the ``backend`` section; ``state_dir`` overrides ``backend.state_dir``;
    ``retention``: which old snapshot versions the store deletes (default: keep 2)."""
    instance = integer(cfg, "instance", 0, MAX_INSTANCE)
    port, admin_port = ports(cfg)
    settings = LocalSettings(
        state_dir=Path(state_dir if state_dir is not None else str(cfg.get("state_dir"))),
        runtime_dir=RUN_BASE / str(instance),
        instance=instance,
        workers=workers,
        python=str(cfg.get("python", "/usr/bin/python3")),
        agent_state_mb=_sizes(cfg, "agent_state_mb"),
        activation_timeout_s=positive(cfg, "activation_timeout_s"),
        request_timeout_s=positive(cfg, "request_timeout_s"),
        sample_interval_s=positive(cfg, "sample_interval_s"),
        observe_interval_s=positive(cfg, "observe_interval_s"),
        snapshot_reserve_mb=integer(cfg, "snapshot_reserve_mb", 0, 1 << 20),
        resume_on_every_request=resume_on_every_request,
        worker_agents=boolean(cfg, "worker_agents"),
        retention=retention or KeepNewest(keep=2),
    )
    return LocalConfig(
        settings=settings,
        port=port,
        admin_port=admin_port,
        actor_domain=str(cfg.get("actor_domain", "actors.local")),
        admin_token=None if cfg.get("admin_token") is None else str(cfg["admin_token"]),
        template=template(cfg),
        router=router_limits(cfg),
        duration_s=duration(cfg),
    )


def runsc_unusable_reason(python: str = "/usr/bin/python3") -> str | None:
    """Why real gVisor sandboxes cannot run here, or None if they can."""
    if not sys.platform.startswith("linux"):
        return f"gVisor needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the local backend needs root (network namespaces, runsc)"
    packages = {"runsc": "runsc", "nft": "nftables", "flock": "util-linux"}
    for tool in ("runsc", "ip", "nsenter", "unshare", "flock", "nft"):
        if shutil.which(tool) is None:
            package = packages.get(tool)
            hint = f" (apt-get update && apt-get install -y {package})" if package else ""
            return f"{tool} is not installed{hint}"
    if not python.startswith("/usr/"):
        return f"{python}: the sandbox's Python must be under /usr (all it sees of the host)"
    if not Path(python).exists():
        return f"{python} (the Python actors run inside the sandbox) does not exist"
    return None


if TYPE_CHECKING:  # mypy checks that the config is a Deployment
    from backends.protocol import Deployment

    def _is_a_deployment(config: LocalConfig) -> Deployment:
        return config
