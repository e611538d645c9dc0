"""A 100-configuration sweep with Hydra's joblib launcher and on a Ray cluster.

The sweep: policy preset (default, substrate) x workers (4, 6, 8, 12, 16) x 10 seeds,
250 agents for 300 simulated seconds each (``experiment=oversub_250_on_8``). It runs
with the joblib launcher (2 processes) and on a Ray cluster started here with 2 CPUs
(``experiments/runs/raycluster.py``: in a network namespace of its own, root needed),
and with the basic launcher (one job after another) for scale. Writes the wall time
of each and whether the 100 summaries agree (they must: same seeds, same numbers).
Run it in the Ray venv:

    make .venv-ray/.ray && sudo .venv-ray/bin/python benchmarks/sweep_launchers.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments.runs.raycluster import RAY_ENV, in_netns, ray_cluster  # noqa: E402

BIN = Path(sys.executable).parent
SWEEP = [
    "experiment=oversub_250_on_8", "duration_s=300", "policy=default,substrate",
    "cluster.workers=4,6,8,12,16", "seed=range(0,10)",
]  # fmt: skip


def sweep(out: Path, extra: list[str], netns: str | None = None) -> tuple[float, dict]:
    """Wall seconds of the sweep, and its summaries by job number."""
    command = [str(BIN / "actormux"), "-m", *SWEEP, f"hydra.sweep.dir={out}", *extra]
    if netns is not None:
        command = in_netns(netns, command)
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **RAY_ENV}, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"sweep failed: {' '.join(extra)}\n{done.stderr[-3000:]}")
    summaries = {}
    for job in out.iterdir():
        if (job / "summary.json").exists():
            summary = json.loads((job / "summary.json").read_text())
            summary.pop("wall_s")
            summaries[int(job.name)] = summary
    return wall, summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/sweeps.json")
    args = parser.parse_args()
    if not (BIN / "ray").exists():
        sys.exit("Ray is not installed in this venv: make .venv-ray/.ray, then use its python")
    results, summaries = {}, {}
    with tempfile.TemporaryDirectory(prefix="actormux-sweeps-") as tmp:
        for name, extra in (
            ("basic", ["hydra/launcher=basic"]),
            ("joblib", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]),
        ):
            wall, summaries[name] = sweep(Path(tmp) / name, extra)
            results[name] = {"wall_s": round(wall, 1), "jobs": len(summaries[name])}
            print(f"{name}: {len(summaries[name])} jobs in {wall:.1f} s", flush=True)
        started = time.perf_counter()
        with ray_cluster(BIN / "ray", cpus=2) as cluster:
            up_s = time.perf_counter() - started
            extra = [
                "hydra/launcher=ray_cluster",
                f"hydra.launcher.ray.init.address={cluster.address}",
            ]
            wall, summaries["ray"] = sweep(Path(tmp) / "ray", extra, netns=cluster.netns)
        results["ray"] = {"wall_s": round(wall, 1), "jobs": len(summaries["ray"]),
                          "cluster_start_s": round(up_s, 1)}  # fmt: skip
        print(f"ray: {len(summaries['ray'])} jobs in {wall:.1f} s (cluster up in {up_s:.1f} s)")
    agree = summaries["basic"] == summaries["joblib"] == summaries["ray"]
    report = {
        "sweep": SWEEP, "configurations": len(summaries["basic"]), "cpus": 2,
        "launchers": results, "summaries_agree": agree,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"summaries agree: {agree}; wrote {args.out}")


if __name__ == "__main__":
    main()
