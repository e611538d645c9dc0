"""Turn a composed Hydra config into a validated, ready-to-run :class:`RunSpec`.

Everything that can be wrong with a config is found here, before a run starts, and
reported as a :class:`ConfigError` that names the field and the allowed values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from control.controller import Controller, RecoverySettings
from control.policies import EvictThenWait, KeepRunning, Lazy, RetentionPolicy
from control.timers import TimerSettings
from sim.faults import FaultModel, faults_from_config
from sim.latency import LatencyModel, latency_from_config
from workloads.agent import AgentWorkload
from workloads.base import Workload
from workloads.trace import TraceWorkload
from workloads.wakeups import WakeupSource

BACKENDS = ("sim", "local", "kind", "gke")
CLUSTER_MODES = ("pool", "pod_per_actor")
MAX_REPLICATIONS = 1000
WORKLOADS: dict[str, Callable[[Mapping[str, Any], Path], Workload]] = {
    "agent": AgentWorkload.from_config,
    "trace": TraceWorkload.from_config,
}
POLICY_METHODS = {
    "placement": ("add", "discard", "choose", "__len__"),
    "suspension": ("suspend_at", "choose_victim", "on_request", "prewarm_at"),
    "admission": ("admit", "serve_newest_first"),
    "retention": ("to_delete", "gc_interval_s"),
    "scaling": ("target", "interval_s"),
    "locality": ("tier", "on_request", "wait_s", "upload_after_s"),
}
REQUIRED_POLICIES = ("placement", "suspension", "admission", "retention")
OPTIONAL_POLICIES = ("scaling", "locality")  # an empty config: none


CONTROLLER_POLICIES = ("placement", "suspension", "admission")  # retention: the drivers'


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field."""


@dataclass(frozen=True)
class RunSpec:
    """A validated run: everything the simulator (or a backend) needs."""

    experiment: str
    question: str
    backend: str
    seed: int
    duration_s: float
    workers: int
    nodes: int
    workload: Workload
    latency: LatencyModel
    choices: dict[str, str]  # Hydra group -> chosen option, e.g. latency -> gvisor_local
    policy_names: dict[str, str]
    router_timeout_s: float
    resume_on_every_request: bool
    sample_interval_s: float
    progress: bool | None  # None: only when stderr is a terminal
    config: dict[str, Any]
    warnings: tuple[str, ...]
    _policy_cfg: dict[str, Any]
    recovery: RecoverySettings = field(default_factory=RecoverySettings)
    faults: FaultModel = field(default_factory=FaultModel)
    warmup_s: float = 0.0  # requests and activations before it are left out of the metrics
    billing: str = "pool"  # worker_seconds.billed: "pool" (provisioned) or "occupied"
    replications: int = 1  # seeds seed .. seed + replications - 1 (experiments/runs/replicate.py)
    timers: TimerSettings = field(default_factory=TimerSettings)
    wakeups: WakeupSource = field(default_factory=WakeupSource)  # the simulator's wake-ups

    def make_controller(self, recovery: RecoverySettings | None = None) -> Controller:
        """A fresh controller with fresh policy instances (policies keep state);
        ``recovery`` replaces the configured deadlines (a real backend adds its own)."""
        policies = {k: instantiate(self._policy_cfg[k]) for k in CONTROLLER_POLICIES}
        optional = {k: self._policy_cfg.get(k) for k in OPTIONAL_POLICIES}
        made = {k: instantiate(c) if c is not None else None for k, c in optional.items()}
        return Controller(
            policies["placement"],
            policies["suspension"],
            policies["admission"],
            router_timeout_s=self.router_timeout_s,
            recovery=recovery or self.recovery,
            scaling=made["scaling"],
            locality=made["locality"],
            timers=self.timers,
        )

    def make_retention(self) -> RetentionPolicy:
        """A fresh snapshot retention policy (the simulator's or a real backend's store)."""
        retention: RetentionPolicy = instantiate(self._policy_cfg["retention"])
        return retention


def _int(cfg: Mapping[str, Any], key: str, field: str, minimum: int) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{field}: must be an integer >= {minimum} (got {value!r})")
    return value


def _float(cfg: Mapping[str, Any], key: str, field: str) -> float:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{field}: must be a finite number (got {value!r})")
    if value <= 0:
        raise ConfigError(f"{field}: must be > 0 (got {value!r})")
    return float(value)


def _section(cfg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = cfg.get(key)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: missing config section")
    return value


def _policy(kind: str, cfg: Any) -> tuple[str, Any]:
    field = f"policy.{kind}"
    if not isinstance(cfg, Mapping) or "_target_" not in cfg:
        raise ConfigError(f"{field}: needs a _target_ (choose with policy/{kind}=NAME)")
    try:
        policy = instantiate(cfg)
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise ConfigError(f"{field}: {cause}") from None
    missing = [m for m in POLICY_METHODS[kind] if not hasattr(policy, m)]
    if missing:
        raise ConfigError(f"{field}: {cfg['_target_']} is not a {kind} policy (lacks {missing})")
    return type(policy).__name__, policy


def build(cfg: DictConfig | Mapping[str, Any], base_dir: Path | None = None) -> RunSpec:
    """Validate ``cfg`` and build the run. Relative file paths resolve against ``base_dir``."""
    base_dir = base_dir or Path.cwd()
    choices = _choices(cfg)
    if isinstance(cfg, DictConfig):
        # Resolve the run's own keys only: Hydra's node has interpolations that resolve
        # only inside a running Hydra app (e.g. hydra.job.num).
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        try:
            raw = OmegaConf.to_container(cfg, resolve=True)
        except Exception as e:  # an interpolation that cannot resolve, e.g. ${missing}
            raise ConfigError(str(e)) from None
    else:
        raw = {k: v for k, v in cfg.items() if k != "hydra"}
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping")

    backend = _section(raw, "backend")
    backend_name = backend.get("name")
    if backend_name not in BACKENDS:
        raise ConfigError(f"backend.name: unknown {backend_name!r}; allowed: {', '.join(BACKENDS)}")
    progress = backend.get("progress", "auto")
    if progress not in ("auto", True, False):
        raise ConfigError(f"backend.progress: must be auto, true or false (got {progress!r})")

    seed = _int(raw, "seed", "seed", 0)
    duration_s = _float(raw, "duration_s", "duration_s")
    cluster = _section(raw, "cluster")
    mode = cluster.get("mode", "pool")
    if mode not in CLUSTER_MODES:
        raise ConfigError(f"cluster.mode: unknown {mode!r}; allowed: {', '.join(CLUSTER_MODES)}")
    if mode == "pool":
        workers = _int(cluster, "workers", "cluster.workers", 1)
        nodes = _int(cluster, "nodes", "cluster.nodes", 1)
        if nodes > workers:
            raise ConfigError(f"cluster.nodes: must be <= cluster.workers={workers} (got {nodes})")

    router = _section(raw, "router")
    timeout_s = _float(router, "timeout_s", "router.timeout_s")
    every = router.get("resume_on_every_request")
    if not isinstance(every, bool):
        raise ConfigError(f"router.resume_on_every_request: must be true or false (got {every!r})")

    policy = _section(raw, "policy")
    unknown = set(policy) - set(POLICY_METHODS)
    if unknown:
        raise ConfigError(f"policy: unknown {sorted(unknown)}; allowed: {sorted(POLICY_METHODS)}")
    names, instances = {}, {}
    optional_cfg = {}
    for kind in OPTIONAL_POLICIES:
        chosen = policy.get(kind) or None  # none.yaml / suspend.yaml: empty
        if chosen is not None:
            optional_cfg[kind] = chosen
            names[kind], instances[kind] = _policy(kind, chosen)
    cluster_refuses = {
        "scaling": "autoscaling runs in the simulator and the local backend only for now "
        "(policy/scaling=none on a cluster)",
        "locality": "pausing runs in the simulator and the local backend only for now "
        "(policy/locality=suspend on a cluster)",
    }
    for kind, why in cluster_refuses.items():
        if kind in optional_cfg and backend_name not in ("sim", "local"):
            raise ConfigError(f"policy.{kind}: {why}")
    for kind in REQUIRED_POLICIES:
        if kind not in policy:
            raise ConfigError(f"policy.{kind}: missing (choose with policy/{kind}=NAME)")
        names[kind], instances[kind] = _policy(kind, policy[kind])
    warnings = []
    if isinstance(instances["suspension"], Lazy) and not isinstance(
        instances["admission"], EvictThenWait
    ):
        warnings.append(
            "policy/suspension=lazy never frees a worker by itself; with "
            f"{names['admission']} the first actors keep every worker and the rest wait or "
            "fail. Pair it with policy/admission=evict_wait."
        )

    workload_cfg = _section(raw, "workload")
    kind = workload_cfg.get("kind")
    if kind not in WORKLOADS:
        raise ConfigError(f"workload.kind: unknown {kind!r}; allowed: {', '.join(WORKLOADS)}")
    try:
        workload = WORKLOADS[kind](workload_cfg, base_dir)
        latency = latency_from_config(_section(raw, "latency"), "latency", base_dir)
        faults = faults_from_config(raw.get("faults"))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    recovery = recovery_from_config(raw.get("recovery"))
    timers, wakeups = wakeups_from_config(raw.get("wakeups"))
    if mode == "pod_per_actor":  # a pod and a node per actor, billed while it exists
        if getattr(workload, "population", "fixed") != "fixed" or not hasattr(workload, "actors"):
            raise ConfigError("cluster.mode: pod_per_actor needs a fixed population of actors")
        if backend_name != "sim":
            raise ConfigError("cluster.mode: pod_per_actor is a simulated baseline (backend=sim)")
        workers = nodes = int(workload.actors)
    pin = instances["suspension"]
    if isinstance(pin, KeepRunning) and pin.count + len(pin.always) >= workers:
        warnings.append(
            f"policy.suspension: KeepRunning pins {pin.count + len(pin.always)} actors on "
            f"{workers} workers: the others get no worker once the pinned ones hold them all"
        )

    sample_interval_s = _float(backend, "sample_interval_s", "backend.sample_interval_s")
    warmup_s = raw.get("warmup_s", 0)
    if isinstance(warmup_s, bool) or not isinstance(warmup_s, int | float):
        raise ConfigError(f"warmup_s: must be a number (got {warmup_s!r})")
    if not 0 <= warmup_s < duration_s:
        raise ConfigError(
            f"warmup_s: must be >= 0 and < duration_s={duration_s:g} (got {warmup_s})"
        )
    replications = raw.get("replications", 1)
    if isinstance(replications, bool) or not isinstance(replications, int):
        raise ConfigError(f"replications: must be an integer (got {replications!r})")
    if not 1 <= replications <= MAX_REPLICATIONS:
        raise ConfigError(f"replications: must be 1..{MAX_REPLICATIONS} (got {replications})")
    return RunSpec(
        experiment=str(raw.get("experiment", "adhoc")),
        question=str(raw.get("question", "")),
        backend=str(backend_name),
        seed=seed,
        duration_s=duration_s,
        workers=workers,
        nodes=nodes,
        workload=workload,
        latency=latency,
        choices=choices,
        policy_names=names,
        router_timeout_s=timeout_s,
        resume_on_every_request=every,
        sample_interval_s=sample_interval_s,
        progress=None if progress == "auto" else bool(progress),
        config=raw,
        warnings=tuple(warnings),
        _policy_cfg={k: policy[k] for k in REQUIRED_POLICIES} | optional_cfg,
        recovery=recovery,
        faults=faults,
        warmup_s=float(warmup_s),
        replications=replications,
        billing="occupied" if mode == "pod_per_actor" else "pool",
        timers=timers,
        wakeups=wakeups,
    )


def wakeups_from_config(cfg: Any) -> tuple[TimerSettings, WakeupSource]:
    """The ``wakeups`` section: the controller's timer settings and the simulator's source."""
    if cfg is None:
        return TimerSettings(), WakeupSource()
    if not isinstance(cfg, Mapping):
        raise ConfigError("wakeups: must be a mapping")
    settings = set(TimerSettings.__dataclass_fields__)
    allowed = settings | set(WakeupSource.__dataclass_fields__)
    unknown = set(cfg) - allowed
    if unknown:
        raise ConfigError(f"wakeups: unknown {sorted(unknown)}; allowed: {sorted(allowed)}")
    try:
        timers = TimerSettings(**{k: v for k, v in cfg.items() if k in settings})
        return timers, WakeupSource.from_config(cfg)
    except ValueError as e:
        message = str(e)
        raise ConfigError(
            message if message.startswith("wakeups.") else f"wakeups.{message}"
        ) from None


def recovery_from_config(cfg: Any) -> RecoverySettings:
    """The ``recovery`` section (the controller's deadlines and retries), checked."""
    if cfg is None:
        return RecoverySettings()
    if not isinstance(cfg, Mapping):
        raise ConfigError("recovery: must be a mapping")
    allowed = set(RecoverySettings.__dataclass_fields__)
    unknown = set(cfg) - allowed
    if unknown:
        raise ConfigError(f"recovery: unknown {sorted(unknown)}; allowed: {sorted(allowed)}")
    try:
        return RecoverySettings(**cfg)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"recovery.{e}") from None


def _choices(cfg: Any) -> dict[str, str]:
    """Which option each config group took, from the composed ``hydra`` node or the
    running Hydra app (empty when neither is available, e.g. a hand-built mapping)."""
    hydra_node = cfg.get("hydra") if isinstance(cfg, Mapping | DictConfig) else None
    found: Any = None
    if hydra_node is not None:
        found = hydra_node.get("runtime", {}).get("choices")
    if found is None:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            found = HydraConfig.get().runtime.choices
    return {str(k): str(v) for k, v in (found or {}).items() if v is not None}
