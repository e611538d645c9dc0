"""Latency and resource model of the simulated cluster, built and validated from config.

Times are seconds; sizes in config are MiB. See ``conf/latency/*.yaml`` for the
measured numbers each profile comes from.

* restore   = ``restore.fixed`` + size / ``restore.mib_per_s`` of node CPU work, then
  ``restore.ready`` of waiting (readiness probe, bundle prep; no CPU); with
  ``restore.lazy_fraction`` f (a lazy restore: ``runsc restore --background`` in newer
  gVisor) a share f of the size-dependent work is done after the actor answers, in
  the background on the node's CPU (page faults that slow the actor are not modeled);
* checkpoint = ``checkpoint.fixed`` + size / ``checkpoint.mib_per_s`` of node CPU work;
* cold start = ``cold_start`` of node CPU work (template, no snapshot);
* CPU work on one node is shared: ``node.cpu_parallelism`` units of work per second,
  at most 1 per job (8 restores at once on 2 cores: each ~3.6x slower -> 2.2);
* snapshot transfers (download before a restore on a node without it cached, upload
  after a checkpoint) wait ``transfer.first_byte`` then share ``node.link_mib_per_s``;
* each node caches ``node.cache_mib`` of snapshots (LRU);
* the control-plane API has ``control_plane.servers`` servers, each call taking
  ``control_plane.service``; with ``control_plane.shards`` > 1 it is that many API
  servers with that many servers each, every actor's calls going to the shard that owns
  it on a consistent-hash ring of ``control_plane.vnodes`` points per shard;
* ``store.mib_per_s`` (optional; default unbounded) caps the snapshot store's total
  throughput: a transfer takes as long as the slower of its share of its node's link
  and its share of the store (both shared equally by the transfers using them; an
  approximation of the exact coupled rates that is exact when one of the two binds);
* a worker the scaling policy asks for joins ``worker_start`` later (default 5 s).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.distributions import Distribution, Fixed, from_config

MIB = 1 << 20


@dataclass(frozen=True)
class LatencyModel:
    """All latency and resource parameters of a simulated cluster."""

    restore_fixed: Distribution
    restore_bytes_per_s: float
    restore_ready: Distribution
    checkpoint_fixed: Distribution
    checkpoint_bytes_per_s: float
    cold_start: Distribution
    transfer_first_byte: Distribution
    cpu_parallelism: float
    link_bytes_per_s: float
    cache_bytes: int
    cp_servers: int
    cp_service: Distribution
    worker_start: Distribution = field(default_factory=lambda: Fixed(5.0))
    restore_lazy_fraction: float = 0.0  # of the size-dependent work, loaded after ready
    cp_shards: int = 1  # API servers, each with cp_servers servers; actors hashed onto them
    cp_vnodes: int = 64  # points per shard on the consistent-hash ring
    store_bytes_per_s: float = math.inf  # the snapshot store's total throughput

    def restore_work(self, fixed: float, size: int) -> float:
        """Solo CPU seconds to restore a snapshot of ``size`` bytes (all of it)."""
        return fixed + size / self.restore_bytes_per_s

    def restore_split(self, fixed: float, size: int) -> tuple[float, float]:
        """A restore's CPU work before the actor answers, and after (pages a lazy
        restore loads in the background, competing for the node's CPU)."""
        deferred = self.restore_lazy_fraction * size / self.restore_bytes_per_s
        return self.restore_work(fixed, size) - deferred, deferred

    def checkpoint_work(self, fixed: float, size: int) -> float:
        """Solo CPU seconds to checkpoint ``size`` bytes of actor state."""
        return fixed + size / self.checkpoint_bytes_per_s


def _section(cfg: Mapping[str, Any], key: str, field: str) -> Mapping[str, Any]:
    value = cfg.get(key)
    if not isinstance(value, Mapping):
        raise ValueError(f"{field}.{key}: missing section")
    return value


def _positive(cfg: Mapping[str, Any], key: str, field: str, *, zero_ok: bool = False) -> float:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{field}.{key}: must be a number (got {value!r})")
    if value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{field}.{key}: must be {bound} (got {value})")
    return float(value)


def _fraction(cfg: Mapping[str, Any], key: str, field: str) -> float:
    value = cfg.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{field}.{key}: must be a number from 0 to 1 (got {value!r})")
    return float(value)


def _count(
    cfg: Mapping[str, Any], key: str, field: str, minimum: int, default: int | None = None
) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{field}.{key}: must be an integer >= {minimum} (got {value!r})")
    return value


def latency_from_config(
    cfg: Mapping[str, Any], field: str = "latency", base_dir: Path | None = None
) -> LatencyModel:
    """Build a :class:`LatencyModel`; ``ValueError`` names the offending field."""
    restore = _section(cfg, "restore", field)
    checkpoint = _section(cfg, "checkpoint", field)
    transfer = _section(cfg, "transfer", field)
    node = _section(cfg, "node", field)
    cp = _section(cfg, "control_plane", field)

    def dist(section: Mapping[str, Any], key: str, where: str) -> Distribution:
        return from_config(section.get(key), f"{field}.{where}.{key}", base_dir)

    servers = _count(cp, "servers", f"{field}.control_plane", 1)
    store = cfg.get("store") or {}
    if not isinstance(store, Mapping):
        raise ValueError(f"{field}.store: must be a section (got {store!r})")
    store_mib_per_s = store.get("mib_per_s")
    return LatencyModel(
        restore_fixed=dist(restore, "fixed", "restore"),
        restore_bytes_per_s=_positive(restore, "mib_per_s", f"{field}.restore") * MIB,
        restore_ready=dist(restore, "ready", "restore"),
        checkpoint_fixed=dist(checkpoint, "fixed", "checkpoint"),
        checkpoint_bytes_per_s=_positive(checkpoint, "mib_per_s", f"{field}.checkpoint") * MIB,
        cold_start=from_config(cfg.get("cold_start"), f"{field}.cold_start", base_dir),
        transfer_first_byte=dist(transfer, "first_byte", "transfer"),
        cpu_parallelism=_positive(node, "cpu_parallelism", f"{field}.node"),
        link_bytes_per_s=_positive(node, "link_mib_per_s", f"{field}.node") * MIB,
        cache_bytes=int(_positive(node, "cache_mib", f"{field}.node", zero_ok=True) * MIB),
        cp_servers=servers,
        cp_service=dist(cp, "service", "control_plane"),
        cp_shards=_count(cp, "shards", f"{field}.control_plane", 1, default=1),
        cp_vnodes=_count(cp, "vnodes", f"{field}.control_plane", 1, default=64),
        store_bytes_per_s=(
            math.inf
            if store_mib_per_s is None
            else _positive(store, "mib_per_s", f"{field}.store") * MIB
        ),
        restore_lazy_fraction=_fraction(restore, "lazy_fraction", f"{field}.restore"),
        worker_start=(
            from_config(cfg["worker_start"], f"{field}.worker_start", base_dir)
            if cfg.get("worker_start") is not None
            else Fixed(5.0)
        ),
    )
