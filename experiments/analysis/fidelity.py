"""``experiment=fidelity``: how far does the simulator miss reality?

1. A *calibration run* on real gVisor with a different seed and workload
   (``fidelity.calibration.overrides``; by default a bursty workload in waves, so
   restores meet both an idle and a crowded CPU) and the evaluation's actor images
   (``backend.template``, ``backend.agent_state_mb``; several sizes make the
   restore's dependence on snapshot size identifiable).
2. ``calibrate`` fits a latency profile to it (``calibrated_latency.yaml``).
3. The *evaluation run*: this experiment's workload and policies, on real gVisor,
   ``fidelity.repeats`` times with the same requests (the real value is their mean;
   their range shows how much reality itself moves between runs).
4. The simulator plays the evaluation run's exact requests twice: with the calibrated
   profile and with the prior one (``latency=...``).
5. The report: per-metric error of the calibrated simulation against the goals
   (activation latency p50/p99 within 10%, activation count within 5%), and, for
   each miss, which component carries it: the control plane, the restore itself, CPU
   contention between concurrent restores, or queueing for a worker.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose
from omegaconf import DictConfig, OmegaConf

from backends.protocol import Deployment
from experiments.analysis.calibrate import calibrate_run, write_profile
from experiments.analysis.report import format_summary, plt, save_figure, write_run
from experiments.real.deployments import deployment, section_of
from experiments.real.run import run_real_experiment
from experiments.runs.build import ConfigError, RunSpec, build
from experiments.runs.runner import simulate
from sim.calibration import concurrency_steps, jobs_from_records, solo_work
from sim.engine import RunResult
from sim.latency import latency_from_config

# metric -> (how to read it from a summary, goal as a relative error, or None)
METRICS: dict[str, tuple[tuple[str, ...], float | None]] = {
    "activation latency p50": (("activation_latency_s", "p50"), 0.10),
    "activation latency p90": (("activation_latency_s", "p90"), None),
    "activation latency p99": (("activation_latency_s", "p99"), 0.10),
    "request latency p50": (("request_latency_s", "p50"), None),
    "request latency p99": (("request_latency_s", "p99"), None),
    "activations": (("activations",), 0.05),
    "worker utilization": (("worker_utilization",), None),
    "failed requests": (("failed",), None),
}


@dataclass
class ErrorRow:
    """One metric: real, simulated (calibrated and prior) and the relative errors.

    ``real`` is the mean over the evaluation's real runs and ``spread`` their range
    (None for one run): how much the real value moves between identical runs.
    ``interval`` is a 90% bootstrap interval of a real percentile in the first run: how
    much it could move with another sample of the same size (None for counts).
    """

    metric: str
    real: float
    calibrated: float
    prior: float
    goal: float | None
    interval: tuple[float, float] | None = None
    spread: tuple[float, float] | None = None

    @property
    def error(self) -> float:
        """(calibrated - real) / real."""
        return (self.calibrated - self.real) / self.real if self.real else 0.0

    @property
    def prior_error(self) -> float:
        """(prior - real) / real."""
        return (self.prior - self.real) / self.real if self.real else 0.0

    @property
    def met(self) -> bool | None:
        """Within the goal? (None: no goal for this metric)."""
        return None if self.goal is None else abs(self.error) <= self.goal


def _read(summary: dict[str, Any], path: tuple[str, ...]) -> float:
    if path == ("failed",):
        return float(summary["rejected"] + summary["timed_out"])
    value: Any = summary
    for key in path:
        value = value[key]
    return float(value) if value is not None else float("nan")


def bootstrap_interval(
    values: np.ndarray, q: float, *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """90% bootstrap interval of the ``q``-th percentile of ``values``."""
    rng = np.random.default_rng(seed)
    draws = rng.choice(values, size=(resamples, values.size), replace=True)
    estimates = np.percentile(draws, q, axis=1)
    return float(np.percentile(estimates, 5)), float(np.percentile(estimates, 95))


def error_table(
    real: dict[str, Any] | Sequence[dict[str, Any]],
    calibrated: dict[str, Any],
    prior: dict[str, Any],
    samples: dict[str, np.ndarray] | None = None,
) -> list[ErrorRow]:
    """Per-metric errors of the simulations against the real run, or against the mean
    of several real runs of the same requests (with their range); ``samples`` (the
    first run's activation and request latencies) give bootstrap intervals."""
    reals = [real] if isinstance(real, dict) else list(real)
    rows = []
    for name, (path, goal) in METRICS.items():
        interval = None
        if samples and len(path) == 2 and path[1].startswith("p"):
            values = samples.get(path[0])
            if values is not None and values.size:
                interval = bootstrap_interval(values, float(path[1][1:]))
        values = [_read(r, path) for r in reals]
        spread = (min(values), max(values)) if len(values) > 1 else None
        rows.append(
            ErrorRow(
                name, float(np.mean(values)), _read(calibrated, path), _read(prior, path), goal,
                interval, spread,
            )
        )  # fmt: skip
    return rows


def components(result: RunResult) -> dict[str, float]:
    """Where an activated request's wait goes, per component, in seconds (medians and
    means), plus ``restores at once``: the mean number of restores and checkpoints
    sharing the CPU during a restore (a diagnostic, not a duration)."""
    acts, reqs = result.activations, result.requests
    cp = np.asarray(reqs["control_plane_s"], dtype=float)
    out = {"control plane": float(np.median(cp)) if cp.size else 0.0}
    all_jobs = jobs_from_records(acts, result.checkpoints)
    restores = [j for j in all_jobs if j.kind == "restore"]
    if restores:
        durations = restores[0].end - restores[0].start
        _, crowd = solo_work(restores[0], concurrency_steps(all_jobs), 1e9)
        alone = durations[crowd < 1.2]
        solo = float(np.median(alone)) if alone.size else float(np.median(durations))
        out["restore (alone)"] = solo
        out["contention (extra restore time)"] = max(0.0, float(np.median(durations)) - solo)
        out["restores at once"] = float(crowd.mean())
    ok = np.asarray(reqs["outcome"]) == "ok"
    activated = np.asarray(reqs["activated"]).astype(bool) & ok
    queue = np.asarray(reqs["queue_s"], dtype=float)[activated]
    out["queue for a worker (mean)"] = float(queue.mean()) if queue.size else 0.0
    return out


def attribute(
    real: dict[str, float], sim: dict[str, float]
) -> list[tuple[str, float, float, float]]:
    """Components sorted by how many seconds the simulation misses them by (largest
    first); the ``restores at once`` diagnostic comes last."""
    rows = [(name, r, sim.get(name, float("nan")), abs(sim.get(name, float("nan")) - r))
            for name, r in real.items()]  # fmt: skip
    return sorted(rows, key=lambda row: (row[0] == "restores at once", -row[3]))


def _cdf_plot(path: Path, title: str, series: dict[str, np.ndarray]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in series.items():
        if values.size:
            xs = np.sort(values)
            ax.step(xs, np.arange(1, xs.size + 1) / xs.size, where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("seconds (log scale)")
    ax.set_ylabel("fraction <= x")
    ax.set_title(title)
    ax.legend(loc="lower right")
    save_figure(fig, ax, path)


def _latencies(result: RunResult, table: str) -> np.ndarray:
    """Activation latencies, or the latencies of requests that ended ok."""
    rows = getattr(result, table)
    values = np.asarray(rows["total_s"], dtype=float)
    return values[np.asarray(rows["outcome"]) == "ok"] if table == "requests" else values


def _pct(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{100 * x:+.1f}%"


def render(
    rows: list[ErrorRow],
    attribution: list[tuple[str, float, float, float]],
    profile: str,
    runs: int = 1,
) -> str:
    """The fidelity section of the report."""
    repeats = runs > 1
    lines = [
        "## Fidelity: calibrated simulator vs real gVisor (same requests)",
        "",
        f"| metric | real{f' (mean of {runs} runs)' if repeats else ''} "
        f"| {'real, range over runs' if repeats else 'real, 90% interval'} "
        "| simulated (calibrated) | error | goal | simulated (prior profile) | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        band = r.spread if repeats else r.interval
        interval = "-" if band is None else f"{band[0]:.3f}-{band[1]:.3f}"
        goal = (
            "-"
            if r.goal is None
            else (f"±{100 * r.goal:.0f}% " + ("met" if r.met else "**missed**"))
        )
        lines.append(
            f"| {r.metric} | {r.real:.3f} | {interval} | {r.calibrated:.3f} | {_pct(r.error)} "
            f"| {goal} | {r.prior:.3f} | {_pct(r.prior_error)} |"
        )
    if not repeats:
        lines += [
            "",
            "One real run: its interval is that run's sampling error only; identical runs "
            "can differ more (set `fidelity.repeats` to measure it).",
        ]
    missed = [r.metric for r in rows if r.met is False]
    lines += [
        "",
        "### Where the time goes (medians; real vs calibrated simulation)",
        "",
        "| component | real | simulated | difference |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {a:.4f} | {b:.4f} | {b - a:+.4f} |" for n, a, b, _ in attribution]
    if missed:
        worst = attribution[0][0]
        lines += [
            "",
            f"Missed: {', '.join(missed)}. The component the simulation misses most "
            f"is **{worst}** (table above).",
        ]
    else:
        lines += ["", "Every goal met."]
    lines += [
        "",
        f"Calibrated profile: `{profile}` (select it with `latency=...` after copying "
        "it to `conf/latency/`).",
        "",
        "![activation latency](fidelity_activation_cdf.png)",
        "",
        "![request latency](fidelity_request_cdf.png)",
    ]
    return "\n".join(lines)


def fidelity_repeats(cfg: DictConfig) -> int:
    """``fidelity.repeats``: real evaluation runs of the same requests (1..20)."""
    repeats = cfg.fidelity.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 20:
        raise ConfigError(f"fidelity.repeats: must be an integer 1..20 (got {repeats!r})")
    return repeats


IMAGE_KEYS = ("template", "agent_state_mb")  # what the calibration run may change


def calibration_config(cfg: DictConfig, overrides: list[str], workers: int) -> DictConfig:
    """The calibration run's config: ``overrides`` (which may change the actor images,
    ``backend.template`` and ``backend.agent_state_mb``), on the evaluation's backend
    section (same backend, instance, ports, cluster) and worker count."""
    images = [f"backend.{k}={cfg.backend[k]}" for k in IMAGE_KEYS if k in cfg.backend]
    composed = compose(
        "config",
        overrides=[
            *images,
            *overrides,
            f"backend={cfg.backend.name}",
            f"cluster.workers={workers}",
        ],
    )
    backend = OmegaConf.merge(
        cfg.backend, {k: composed.backend[k] for k in IMAGE_KEYS if k in composed.backend}
    )
    OmegaConf.set_struct(composed, False)
    composed.backend = backend
    return composed


def run_fidelity(
    cfg: DictConfig, spec: RunSpec, evaluation: Deployment, out_dir: Path
) -> list[ErrorRow]:
    """The whole procedure of the module docstring; returns the error table."""
    overrides = [str(o) for o in cfg.fidelity.calibration.overrides]
    cal_cfg = calibration_config(cfg, overrides, spec.workers)
    cal_spec = build(cal_cfg)
    cal_dir = out_dir / "calibration_run"
    print(f"1/3 calibration run ({' '.join(overrides)}) ...", file=sys.stderr, flush=True)
    cal_deployment = deployment(section_of(cal_cfg), cal_spec, state_dir=cal_dir / "state")
    cal_real = run_real_experiment(cal_spec, cal_deployment, cal_dir)
    write_run(cal_dir, cal_spec, cal_real.output)
    (cal_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cal_cfg, cal_dir / ".hydra" / "config.yaml")
    fit, prior = calibrate_run(cal_dir)
    profile = write_profile(fit, prior, cal_dir, out_dir / "calibrated_latency.yaml")
    calibrated = latency_from_config(OmegaConf.to_container(OmegaConf.load(profile)))  # type: ignore[arg-type]
    repeats = fidelity_repeats(cfg)
    print("2/3 evaluation run ...", file=sys.stderr, flush=True)
    real = run_real_experiment(spec, evaluation, out_dir)
    others = []
    for k in range(1, repeats):  # the same requests again: how much does reality move?
        print(f"2/3 evaluation run, repeat {k + 1} of {repeats} ...", file=sys.stderr, flush=True)
        again = out_dir / f"repeat_{k + 1}"
        again.mkdir(exist_ok=True)
        fresh = deployment(section_of(cfg), spec, state_dir=again / "state")
        others.append(run_real_experiment(spec, fresh, again).output)
        write_run(again, spec, others[-1])
    print("3/3 simulating the same requests with the calibrated profile ...", file=sys.stderr)
    duration = real.output.result.duration_s
    sim_cal = simulate(
        replace(spec, workload=real.plan, duration_s=duration, latency=calibrated, progress=False)
    )
    samples = {
        "activation_latency_s": _latencies(real.output.result, "activations"),
        "request_latency_s": _latencies(real.output.result, "requests"),
    }
    reals = [real.output.summary, *(o.summary for o in others)]
    rows = error_table(reals, sim_cal.summary, real.simulated.summary, samples)
    attribution = attribute(components(real.output.result), components(sim_cal.result))
    for name, table in (("activation", "activations"), ("request", "requests")):
        _cdf_plot(
            out_dir / f"fidelity_{name}_cdf.png",
            f"{name.capitalize()} latency: real vs simulated",
            {
                "real gVisor": _latencies(real.output.result, table),
                "simulated, calibrated": _latencies(sim_cal.result, table),
                "simulated, prior profile": _latencies(real.simulated.result, table),
            },
        )
    section = render(rows, attribution, str(profile), runs=len(reals))
    summary = {
        **real.output.summary,
        "fidelity": {
            r.metric: {
                "real": r.real,
                "simulated": r.calibrated,
                "error": r.error,
                "goal": r.goal,
                "met": r.met,
            }
            for r in rows
        },
    }
    (out_dir / "sim_calibrated_summary.json").write_text(
        json.dumps(sim_cal.summary, indent=2) + "\n"
    )
    report = write_run(out_dir, spec, replace(real.output, summary=summary), (section,))
    print(format_summary({k: v for k, v in summary.items() if k != "fidelity"}))
    print()
    print(section.split("### Where")[0])
    print(f"report: {report}")
    return rows
