"""``actormux calibrate RUN_DIR``: fit a latency profile to a run's records.

Reads a run directory (``activations.parquet``, ``checkpoints.parquet``,
``requests.parquet`` and ``.hydra/config.yaml``), fits restore, checkpoint and
cold-start work, their size dependence and the node's CPU parallelism
(``sim/calibration.py``), and writes ``conf/latency/<name>.yaml`` that later runs
select with ``latency=<name>``. What the run cannot identify (e.g. size dependence
when every snapshot has the same size) keeps the value of the profile the run used,
and the file says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from experiments.paths import LATENCY_DIR as CONF_LATENCY
from sim.calibration import Calibration, calibrate, jobs_from_records

SHIPPED = {"gvisor_local", "substrate_gke"}


def _table(run_dir: Path, name: str) -> pd.DataFrame:
    path = run_dir / f"{name}.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} has no {name}.parquet: is it an actormux run directory?"
        )
    return pd.read_parquet(path)


def run_latency_config(run_dir: Path) -> dict[str, Any]:
    """The ``latency`` section the run was configured with (the prior)."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: cannot tell which profile the run used")
    latency = OmegaConf.to_container(OmegaConf.load(path), resolve=False)["latency"]  # type: ignore[index]
    assert isinstance(latency, dict)
    return latency


def calibrate_run(run_dir: Path) -> tuple[Calibration, dict[str, Any]]:
    """Fit a run's records; return the fit and the profile the run used."""
    acts = _table(run_dir, "activations")
    ckpts = _table(run_dir, "checkpoints")
    reqs = _table(run_dir, "requests")
    prior = run_latency_config(run_dir)
    fit = calibrate(
        jobs_from_records(
            {c: acts[c].to_numpy() for c in acts.columns},
            {c: ckpts[c].to_numpy() for c in ckpts.columns},
        ),
        prior_parallelism=float(prior["node"]["cpu_parallelism"]),
        prior_rates={
            "restore": float(prior["restore"]["mib_per_s"]),
            "checkpoint": float(prior["checkpoint"]["mib_per_s"]),
        },
        control_plane_s=reqs["control_plane_s"].to_numpy(),
    )
    return fit, prior


def profile_yaml(fit: Calibration, prior: dict[str, Any], source: Path) -> str:
    """The calibrated profile as YAML, every number with where it came from."""

    def dist(kind: str, fallback: Any) -> str:
        k = fit.kinds.get(kind)
        if k is None:
            return f"{fallback}   # not in the run: kept from the prior"
        return (
            f"lognormal(median={k.median_s:.4f}, sigma={k.sigma:.3f})"
            f"   # {k.samples} samples, mean concurrency {k.mean_concurrency:.2f}"
        )

    def rate(kind: str, fallback: Any) -> str:
        k = fit.kinds.get(kind)
        if k is None or not k.rate_fitted:
            return f"{fallback}   # not identifiable from the run: prior"
        return f"{k.mib_per_s:.0f}   # fitted: slope of work on snapshot size"

    cp = max(fit.control_plane_s, 1e-5)
    par = (
        f"{fit.cpu_parallelism:.2f}   # fitted from overlapping jobs"
        if fit.parallelism_fitted
        else f"{prior['node']['cpu_parallelism']}   # prior (not identifiable: see notes)"
    )
    notes = "".join(f"# note: {n}\n" for n in fit.notes)
    return f"""# Calibrated by `actormux calibrate` from the run in {source}
# (work per job = fixed + size / rate on the node's shared CPU; see sim/calibration.py).
{notes}restore:
  fixed: {dist("restore", prior["restore"]["fixed"])}
  mib_per_s: {rate("restore", prior["restore"]["mib_per_s"])}
  ready: {prior["restore"].get("ready", 0)}   # prior
checkpoint:
  fixed: {dist("checkpoint", prior["checkpoint"]["fixed"])}
  mib_per_s: {rate("checkpoint", prior["checkpoint"]["mib_per_s"])}
cold_start: {dist("cold_start", prior["cold_start"])}
transfer:
  first_byte: {prior["transfer"]["first_byte"]}   # prior
node:
  cpu_parallelism: {par}
  link_mib_per_s: {prior["node"]["link_mib_per_s"]}   # prior
  cache_mib: {prior["node"]["cache_mib"]}   # prior
control_plane:
  servers: 64              # the local control plane is in-process: no queue to speak of
  service: fixed(value={cp:.6f})   # median decision time of the run's requests
"""


def write_profile(fit: Calibration, prior: dict[str, Any], source: Path, path: Path) -> Path:
    """Write the profile to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(profile_yaml(fit, prior, source))
    return path


def main(argv: list[str]) -> int:
    """The ``actormux calibrate`` command."""
    parser = argparse.ArgumentParser(
        prog="actormux calibrate",
        description="Fit the simulator's latency model to a run and write conf/latency/NAME.yaml.",
    )
    parser.add_argument("run_dir", type=Path, help="a run directory (e.g. of backend=local)")
    parser.add_argument("--name", default="calibrated", help="profile name (latency=NAME)")
    parser.add_argument("--out-dir", type=Path, default=CONF_LATENCY)
    parser.add_argument("--force", action="store_true", help="overwrite a shipped profile")
    args = parser.parse_args(argv)
    if args.name in SHIPPED and not args.force:
        print(f"actormux calibrate: {args.name} is a shipped profile; pick another --name",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        fit, prior = calibrate_run(args.run_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"actormux calibrate: {e}", file=sys.stderr)
        return 2
    path = write_profile(fit, prior, args.run_dir, args.out_dir / f"{args.name}.yaml")
    print(path.read_text())
    print(f"wrote {path}; use it with latency={args.name}")
    return 0
