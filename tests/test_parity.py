"""One definition per metric for the simulator and the real backends (control/metrics.py):
the rows both build, the plan window both measure utilization and control-plane calls
over. The real backends' measured parts are checked in test_local_backend.py,
test_local_agents.py and test_kube_backend.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
import pytest

from control.metrics import (
    ACTIVATION_COLUMNS,
    CHECKPOINT_COLUMNS,
    ActivationRow,
    CheckpointRow,
    table,
    worker_utilization,
)
from experiments.real.run import PlanWindow
from experiments.runs.build import build
from experiments.runs.runner import simulate


def test_an_activation_total_is_the_sum_of_its_parts():
    row = ActivationRow.of("a", "w0", "n0", 1.0, cold=False, cache_hit=False,
                           snapshot_bytes=10, control_plane_s=0.01, download_s=0.2,
                           restore_s=0.3)  # fmt: skip
    assert row.total_s == pytest.approx(0.51)
    ckpt = CheckpointRow.of("a", "w0", "n0", 2.0, snapshot_bytes=10, control_plane_s=0.01,
                            checkpoint_s=0.2, upload_s=0.05)  # fmt: skip
    assert ckpt.total_s == pytest.approx(0.26)
    columns = table(ACTIVATION_COLUMNS, [row, row])
    assert list(columns) == list(ACTIVATION_COLUMNS) and columns["total_s"].shape == (2,)
    assert table(CHECKPOINT_COLUMNS, [])["total_s"].size == 0


def test_the_simulator_builds_the_same_rows(compose_cfg):
    cfg = compose_cfg("experiment=oversub_250_on_8", "duration_s=120", "cluster.nodes=4",
                      "latency=substrate_gke", "latency.node.cache_mib=4096")  # fmt: skip
    acts = simulate(build(cfg)).result.activations
    parts = acts["control_plane_s"] + acts["download_s"] + acts["restore_s"]
    np.testing.assert_allclose(acts["total_s"], parts, rtol=1e-12)
    hits = acts["cache_hit"].astype(bool)
    assert 0 < hits.sum() < hits.size  # both kinds happen here
    assert not np.any(hits & acts["cold"].astype(bool))  # a cold start has no snapshot
    assert np.all(acts["download_s"][hits] == 0) and np.all(
        acts["download_s"][~hits & ~acts["cold"].astype(bool)] > 0
    )


def test_worker_utilization_is_over_the_plan_window():
    assert worker_utilization(40.0, 4, 20.0) == 0.5
    assert worker_utilization(1.0, 0, 20.0) == 0.0


@dataclass
class _Controller:
    occupied: float = 0.0
    provisioned: float = 0.0

    def occupied_worker_seconds(self, now: float) -> float:
        return self.occupied

    def provisioned_worker_seconds(self, now: float) -> float:
        return self.provisioned


@dataclass
class _Backend:
    """A stand-in for a ControlPlane's counters (PlanWindow reads only these)."""

    ctl: _Controller = field(default_factory=_Controller)
    control_plane_calls: int = 0
    clock: float = 0.0

    def now(self) -> float:
        return self.clock


def test_the_plan_window_ends_at_the_plan_duration_not_after_the_drain():
    async def body() -> tuple[float, int, float]:
        backend = _Backend()
        ctl = backend.ctl
        ctl.occupied, backend.control_plane_calls, ctl.provisioned = 5.0, 2, 8.0  # before
        window = PlanWindow.open(backend, 0.05)  # type: ignore[arg-type]
        ctl.occupied, backend.control_plane_calls, ctl.provisioned = 9.0, 7, 20.0  # during
        await asyncio.sleep(0.2)
        ctl.occupied, backend.control_plane_calls, ctl.provisioned = 30.0, 50, 99.0  # drain
        return window.close()

    assert asyncio.run(body()) == (4.0, 5, 12.0)


def test_a_load_that_ends_early_closes_its_window_then():
    async def body() -> tuple[float, int, float]:
        backend = _Backend()
        window = PlanWindow.open(backend, 60.0)  # type: ignore[arg-type]
        backend.ctl.occupied, backend.control_plane_calls = 3.0, 1
        backend.ctl.provisioned = 6.5
        return window.close()

    assert asyncio.run(body()) == (3.0, 1, 6.5)
