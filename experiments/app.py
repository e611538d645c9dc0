"""The Hydra application behind ``actormux [overrides]``: build, run, report."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from backends.local.settings import LocalConfig
from experiments.analysis.report import format_summary, side_by_side, write_run
from experiments.paths import CONF_DIR
from experiments.runs.build import ConfigError, RunSpec, build
from experiments.runs.runner import simulate

if TYPE_CHECKING:
    from experiments.real.run import RealOutput


def exit_bad_config(error: Exception) -> NoReturn:
    """Print a config error the way every command does and exit with status 2."""
    print(f"actormux: bad config: {error}", file=sys.stderr)
    sys.exit(2)


def build_or_exit(cfg: DictConfig) -> RunSpec:
    """:func:`build`, or print the config error and exit with status 2 (no traceback)."""
    try:
        return build(cfg)
    except ConfigError as e:
        exit_bad_config(e)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def run_experiment(cfg: DictConfig) -> None:
    """Validate the config, run the experiment and write its report into the run dir."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    spec = build_or_exit(cfg)
    for warning in spec.warnings:
        print(f"actormux: warning: {warning}", file=sys.stderr)
    if spec.backend != "sim":
        run_real(cfg, spec, out_dir)
        return
    if cfg.get("evaluation") is not None:
        run_evaluation(cfg, spec, out_dir)
        return
    output = simulate(spec)
    sections: tuple[str, ...] = ()
    if spec.replications > 1:
        from experiments.runs.replicate import plot, replicate, section

        added = replicate(
            output.summary, spec, lambda one: simulate(replace(one, progress=False)).summary
        )
        output = replace(output, summary={**output.summary, **added})
        out_dir.mkdir(parents=True, exist_ok=True)
        plot(output.summary, out_dir / "replications.png")
        sections = (section(output.summary, "replications.png"),)
    report = write_run(out_dir, spec, output, sections)
    print(f"{spec.experiment} ({spec.backend}):")
    print(format_summary(output.summary))
    if sections:
        print()
        print(sections[0])
    print(f"report: {report}")


def run_evaluation(cfg: DictConfig, spec: RunSpec, out_dir: Path) -> None:
    """``experiment=policy_eval``: the grid of policies x workloads x scales, simulated
    with replications; its table, Pareto plot and report in the run dir."""
    from experiments.analysis.policy_report import write
    from experiments.runs.evaluate import EvaluationError, run, settings_of

    section = OmegaConf.to_container(cfg.evaluation, resolve=True)
    try:
        settings = settings_of(section, seed=spec.seed, duration_s=spec.duration_s,  # type: ignore[arg-type]
                               warmup_s=spec.warmup_s)  # fmt: skip
    except EvaluationError as e:
        exit_bad_config(e)
    if spec.replications > 1:
        exit_bad_config(ValueError("replications: the evaluation has its own "
                                   "(evaluation.replications)"))  # fmt: skip
    print(f"policy_eval: {len(settings.cells)} cells x {settings.replications} seeds, "
          f"{settings.jobs} at a time", file=sys.stderr)  # fmt: skip
    rows = list(run(settings))
    report = write(rows, out_dir, reference=settings.reference,
                   slo_p99_s=settings.slo_activation_p99_s,
                   slo_failed=settings.slo_max_failed_fraction, question=spec.question,
                   workloads=list(dict.fromkeys(c.workload for c in settings.cells)),
                   policies=list(dict.fromkeys(c.policy for c in settings.cells)))  # fmt: skip
    print(report.read_text())
    print(f"report: {report}")


def local_config_or_exit(
    cfg: DictConfig, spec: RunSpec, *, state_dir: Path | None = None
) -> LocalConfig:
    """The checked ``backend: local`` section, or exit: 2 for a bad config, 3 when gVisor
    cannot run on this machine (the message says why)."""
    from experiments.real.deployments import deployment_or_exit

    local = deployment_or_exit(cfg, spec, state_dir=state_dir)
    if not isinstance(local, LocalConfig):
        exit_bad_config(ValueError(f"needs backend=local (got backend={spec.backend})"))
    return local


def run_real(cfg: DictConfig, spec: RunSpec, out_dir: Path) -> None:
    """``backend=local|kind|gke``: run for real, check, compare with the simulator, report."""
    from experiments.analysis.fidelity import fidelity_repeats, run_fidelity
    from experiments.real.deployments import deployment_or_exit
    from experiments.real.run import run_real_experiment

    fidelity = cfg.get("fidelity") is not None
    if fidelity:
        try:
            fidelity_repeats(cfg)
        except ConfigError as e:
            exit_bad_config(e)
    if cfg.get("soak") is not None:
        if getattr(spec.workload, "loop", "open") == "closed":
            why = "plays open-loop plans only (it restarts Locust part-way)"
            exit_bad_config(ValueError(f"experiment=soak: {why}; set workload.loop=open"))
        if spec.backend != "local":
            exit_bad_config(ValueError("experiment=soak: needs backend=local (it kills "
                                       "this machine's processes)"))  # fmt: skip
        run_soak_or_exit(cfg, spec, out_dir)
        return
    deployment = deployment_or_exit(cfg, spec, state_dir=out_dir / "state")
    if fidelity:
        if spec.replications > 1:
            exit_bad_config(ValueError("replications: experiment=fidelity repeats its real "
                                       "runs itself (fidelity.repeats)"))  # fmt: skip
        run_fidelity(cfg, spec, deployment, out_dir)
        return
    real = run_real_experiment(spec, deployment, out_dir)
    sections: tuple[str, ...] = ()
    if spec.replications > 1:
        real, sections = replicate_real(cfg, spec, real, out_dir)
    spec = replace(spec, duration_s=real.output.result.duration_s)  # as played
    s, v = real.output.summary, real.verification
    monitor = (
        f"independent monitor, {s['monitor_samples']} samples, largest gap "
        f"{s['monitor_max_gap_s']} s"
        if s["monitor_samples"]
        else "the driver's account from what the worker agents report"
    )
    checks = (
        "## Correctness\n\n"
        f"Every actor that got requests ({v.actors_checked}) was read back through the router "
        f"after the load: lost updates {v.lost_updates} (silent; reported and named by the "
        f"backend: {v.reported_lost_updates}), unacknowledged updates "
        f"{v.unacknowledged_updates}, digest mismatches {v.digest_mismatches}, unreadable "
        f"{v.unreadable}; double activations {s['double_activations']} ({monitor})."
    )
    label = f"real ({spec.backend})"
    compare = (
        "## Real vs simulated (same plan, same policies, `gvisor_local`-style latency model)\n\n"
        + side_by_side(s, real.simulated.summary, (label, "simulated"))
    )
    (out_dir / "sim_summary.json").write_text(json.dumps(real.simulated.summary, indent=2) + "\n")
    report = write_run(out_dir, spec, real.output, (checks, compare, *sections))
    print(f"{spec.experiment} ({spec.backend}, real gVisor):")
    print(format_summary(s))
    print()
    print(side_by_side(s, real.simulated.summary, (label, "simulated")))
    for replicated in sections:
        print()
        print(replicated)
    print(f"report: {report}")


def replicate_real(
    cfg: DictConfig, spec: RunSpec, first: RealOutput, out_dir: Path
) -> tuple[RealOutput, tuple[str, ...]]:
    """``replications=N`` on a real backend: seeds ``seed + 1 ..`` run for real too,
    each in ``seed_<K>/`` with its own state, and each simulated on its own scripts;
    the summaries get ``ci95`` over the real runs, ``sim_summary.json`` over the
    simulated ones, and the report a section for each."""
    from experiments.real.deployments import deployment, section_of
    from experiments.real.run import run_real_experiment
    from experiments.runs.replicate import plot, replicate, section

    simulated = [first.simulated.summary]

    def run_seed(seeded: RunSpec) -> Mapping[str, Any]:
        run_dir = out_dir / f"seed_{seeded.seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"replication: seed {seeded.seed} ...", file=sys.stderr, flush=True)
        fresh = deployment(section_of(cfg), seeded, state_dir=run_dir / "state")
        again = run_real_experiment(seeded, fresh, run_dir)
        write_run(run_dir, seeded, again.output)
        simulated.append(again.simulated.summary)
        return again.output.summary

    real_added = replicate(first.output.summary, spec, run_seed)
    sim_added = replicate(first.simulated.summary, spec,
                          lambda seeded: simulated[seeded.seed - spec.seed])  # fmt: skip
    output = replace(first.output, summary={**first.output.summary, **real_added})
    sim = replace(first.simulated, summary={**first.simulated.summary, **sim_added})
    plot(output.summary, out_dir / "replications.png")
    plot(sim.summary, out_dir / "replications_simulated.png")
    sections = (
        "# Real runs\n\n" + section(output.summary, "replications.png"),
        "# Simulated, the same scripts of each seed\n\n"
        + section(sim.summary, "replications_simulated.png"),
    )
    return replace(first, output=output, simulated=sim), sections


def run_soak_or_exit(cfg: DictConfig, spec: RunSpec, out_dir: Path) -> None:
    """``experiment=soak``: a long real run under faults (``experiments/real/soak.py``)."""
    from experiments.real.soak import run_soak, soak_settings

    try:
        soak_settings(cfg)
    except ConfigError as e:
        exit_bad_config(e)
    lc = local_config_or_exit(cfg, spec)
    report = run_soak(cfg, spec, lc, out_dir)
    print((out_dir / "report.md").read_text())
    failed = report.lost_updates or report.double_activations
    if failed:
        print("soak: FAILED (lost updates or double activations)", file=sys.stderr)
        sys.exit(1)
