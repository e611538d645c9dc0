"""The ``backend: local`` config section, checked, as :class:`LocalSettings` and ports."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from backends.gvisor.names import MAX_INSTANCE
from backends.local.agents import AgentLocalBackend
from backends.local.driver import LocalBackend, LocalSettings
from backends.local.router import RouterLimits
from control.controller import Controller
from control.recovery import RecoverySettings

RUN_BASE = Path("/run/actormux")


@dataclass(frozen=True)
class LocalConfig:
    """Everything ``backend=local`` needs: settings for the driver, and the router's."""

    settings: LocalSettings
    port: int
    admin_port: int
    actor_domain: str
    admin_token: str | None
    template: str
    router: RouterLimits
    duration_s: float | None

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


def _int(cfg: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"backend.{key}: must be an integer {lo}..{hi} (got {value!r})")
    return value


def _sizes(cfg: Mapping[str, Any], key: str) -> int | tuple[int, ...]:
    """An integer 1..4096, or a non-empty list of distinct ones."""
    value = cfg.get(key)
    if not isinstance(value, list | tuple):
        return _int(cfg, key, 1, 4096)
    sizes = tuple(_int({key: v}, key, 1, 4096) for v in value)
    if not sizes or len(set(sizes)) != len(sizes):
        raise ValueError(f"backend.{key}: a list of sizes must be non-empty and distinct")
    return sizes


def _bool(cfg: Mapping[str, Any], key: str) -> bool:
    value = cfg.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"backend.{key}: must be true or false (got {value!r})")
    return value


def _pos(cfg: Mapping[str, Any], key: str) -> float:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"backend.{key}: must be a number > 0 (got {value!r})")
    return float(value)


def local_config(
    cfg: Mapping[str, Any], *, workers: int, state_dir: Path | None = None,
    resume_on_every_request: bool = False,
) -> LocalConfig:  # fmt: skip
    """Check the ``backend`` section; ``state_dir`` overrides ``backend.state_dir``."""
    instance = _int(cfg, "instance", 0, MAX_INSTANCE)
    port, admin_port = _int(cfg, "port", 1, 65535), _int(cfg, "admin_port", 1, 65535)
    if port == admin_port:
        raise ValueError("backend.admin_port: must differ from backend.port")
    template = cfg.get("template")
    if template not in ("counter", "agent"):
        raise ValueError(f"backend.template: unknown {template!r}; allowed: counter, agent")
    duration = cfg.get("duration_s")
    settings = LocalSettings(
        state_dir=Path(state_dir if state_dir is not None else str(cfg.get("state_dir"))),
        runtime_dir=RUN_BASE / str(instance),
        instance=instance,
        workers=workers,
        python=str(cfg.get("python", "/usr/bin/python3")),
        agent_state_mb=_sizes(cfg, "agent_state_mb"),
        activation_timeout_s=_pos(cfg, "activation_timeout_s"),
        request_timeout_s=_pos(cfg, "request_timeout_s"),
        sample_interval_s=_pos(cfg, "sample_interval_s"),
        observe_interval_s=_pos(cfg, "observe_interval_s"),
        snapshot_reserve_mb=_int(cfg, "snapshot_reserve_mb", 0, 1 << 20),
        keep_snapshots=_int(cfg, "keep_snapshots", 1, 1000),
        resume_on_every_request=resume_on_every_request,
        worker_agents=_bool(cfg, "worker_agents"),
    )
    return LocalConfig(
        settings=settings,
        port=port,
        admin_port=admin_port,
        actor_domain=str(cfg.get("actor_domain", "actors.local")),
        admin_token=None if cfg.get("admin_token") is None else str(cfg["admin_token"]),
        template=str(template),
        router=RouterLimits(
            header_timeout_s=_pos(cfg, "header_timeout_s"),
            body_timeout_s=_pos(cfg, "body_timeout_s"),
            idle_timeout_s=_pos(cfg, "idle_timeout_s"),
            max_connections=_int(cfg, "max_connections", 1, 1 << 20),
            max_header_bytes=_int(cfg, "max_header_bytes", 1024, 1 << 20),
            max_body_bytes=_int(cfg, "max_body_bytes", 1, 1 << 30),
        ),
        duration_s=None if duration is None else _pos(cfg, "duration_s"),
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
