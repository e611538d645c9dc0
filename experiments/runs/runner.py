"""Run a validated :class:`RunSpec` and summarise it. Usable without Hydra (notebooks)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control.metrics import summarize
from experiments.runs.build import RunSpec
from experiments.runs.progress import RunProgress
from experiments.runs.versions import package_versions
from sim.engine import RunResult, Simulation


@dataclass
class RunOutput:
    """The summary (``summary.json``) and the records of one run."""

    summary: dict[str, Any]
    result: RunResult


def summary_of(result: RunResult, spec: RunSpec, *, backend: str, wall_s: float) -> dict[str, Any]:
    """The run's summary (``summary.json``) from its records, with the versions of the
    packages that shape its numbers."""
    return summarize(
        result.requests,
        result.activations,
        experiment=spec.experiment,
        backend=backend,
        seed=spec.seed,
        actors=result.actors,
        workers=result.workers,
        duration_s=result.duration_s,
        worker_utilization=result.worker_utilization,
        control_plane_calls=result.control_plane_calls,
        events=result.events,
        wall_s=round(wall_s, 3),
        reliability=result.reliability,
        warmup_s=spec.warmup_s,
        versions=package_versions(),
        checkpoints=result.checkpoints,
        policy_actions=result.policy_actions,
        samples=result.samples,
        billing=spec.billing,
        provisioned_s=result.provisioned_worker_s,
        later_uploads=result.later_uploads,
        resources=result.resources,
    )


def make_simulation(spec: RunSpec, progress: Callable[[float], None] | None = None) -> Simulation:
    """A ready-to-run simulation of ``spec`` with a fresh controller."""
    return Simulation(
        spec.make_controller(),
        spec.workload,
        spec.latency,
        workers=spec.workers,
        nodes=spec.nodes,
        duration_s=spec.duration_s,
        seed=spec.seed,
        resume_on_every_request=spec.resume_on_every_request,
        sample_interval_s=spec.sample_interval_s,
        progress=progress,
        faults=spec.faults,
        retention=spec.make_retention(),
        wakeups=spec.wakeups,
    )


def simulate(spec: RunSpec) -> RunOutput:
    """Simulate ``spec`` and summarise it, with progress (simulated time, events per
    second, ETA: a bar on a terminal, a line every 30 s otherwise) when
    ``backend.progress`` is true, or is auto and stderr is a terminal."""
    tty = sys.stderr.isatty()
    show = tty if spec.progress is None else spec.progress
    bar = RunProgress(spec.duration_s, spec.experiment, tty=tty) if show else None
    sim: Simulation | None = None

    def progress(t: float) -> None:
        assert bar is not None and sim is not None
        bar.update(t, sim.controller.stats.events)

    started = time.perf_counter()
    sim = make_simulation(spec, progress=progress if bar is not None else None)
    try:
        result = sim.run()
    finally:
        if bar is not None:
            bar.close()
    wall_s = time.perf_counter() - started
    summary = summary_of(result, spec, backend=spec.backend, wall_s=wall_s)
    return RunOutput(summary, result)
