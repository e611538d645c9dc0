"""The Hydra application behind ``actormux [overrides]``: build, run, report."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.build import ConfigError, RunSpec, build
from experiments.report import format_summary, write_run
from experiments.runner import simulate

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def build_or_exit(cfg: DictConfig) -> RunSpec:
    """:func:`build`, or print the config error and exit with status 2 (no traceback)."""
    try:
        return build(cfg)
    except ConfigError as e:
        print(f"actormux: bad config: {e}", file=sys.stderr)
        sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def run_experiment(cfg: DictConfig) -> None:
    """Validate the config, run the experiment and write its report into the run dir."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    spec = build_or_exit(cfg)
    for warning in spec.warnings:
        print(f"actormux: warning: {warning}", file=sys.stderr)
    output = simulate(spec)
    report = write_run(out_dir, spec, output)
    print(f"{spec.experiment} ({spec.backend}):")
    print(format_summary(output.summary))
    print(f"report: {report}")
