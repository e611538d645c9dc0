"""Sweeps on a Ray cluster: Hydra's Ray launcher sends each job of a sweep to a Ray
cluster that this test starts, and the jobs give exactly the summaries the joblib
launcher gives (the same seeds, the same numbers).

Ray binds its services to every address the machine has, so the cluster runs in a
network namespace the test creates (``actormux-ray-<pid>``, only loopback in it), and
the sweep runs there too (``experiments/runs/raycluster.py``). It is stopped by its
process id and the namespace deleted by its name; no Ray process is left behind
(checked). Runs in the Ray venv (``make test-ray``; in ``make pytest``, beside the
gVisor tests).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.runs.raycluster import RAY_ENV, in_netns, processes_mentioning, ray_cluster

pytestmark = [pytest.mark.real, pytest.mark.ray]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SEEDS = (0, 1, 2, 3)
SWEEP = ["experiment=oversub_250_on_8", "duration_s=120", f"seed={','.join(map(str, SEEDS))}"]


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"the Ray test must run in CI, but: {reason}")
        pytest.skip(reason)


@pytest.fixture
def cluster():
    """A Ray cluster (2 CPUs) in a network namespace of its own, stopped afterwards."""
    _need(os.geteuid() == 0 and shutil.which("ip") is not None, "needs root and ip (iproute2)")
    _need((BIN / "ray").exists(), "Ray is not installed in this venv: run make test-ray")
    with ray_cluster(BIN / "ray", cpus=2) as found:
        yield found
    assert not processes_mentioning(found.netns)  # its head and workers are gone


def _sweep(out: Path, *extra: str, netns: str | None = None) -> dict[int, dict]:
    command = [str(BIN / "actormux"), "-m", *SWEEP, f"hydra.sweep.dir={out}", *extra]
    if netns is not None:
        command = in_netns(netns, command)
    done = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **RAY_ENV}, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    summaries = {}
    for job in sorted(out.iterdir()):
        if (job / "summary.json").exists():
            summary = json.loads((job / "summary.json").read_text())
            summary.pop("wall_s")  # the only thing that may differ
            summaries[summary["seed"]] = summary
    return summaries | {-1: {"log": done.stdout + done.stderr}}


def test_a_sweep_on_a_ray_cluster_gives_what_the_joblib_launcher_gives(cluster, tmp_path):
    on_ray = _sweep(
        tmp_path / "ray", "hydra/launcher=ray_cluster",
        f"hydra.launcher.ray.init.address={cluster.address}", netns=cluster.netns,
    )  # fmt: skip
    log = on_ray.pop(-1)["log"]
    assert f"Ray Launcher is launching {len(SEEDS)} jobs" in log
    assert "(_run_job pid=" in log  # the jobs printed from Ray's worker processes
    with_joblib = _sweep(tmp_path / "joblib", "hydra/launcher=joblib")
    with_joblib.pop(-1)
    assert sorted(on_ray) == sorted(with_joblib) == list(SEEDS)
    assert on_ray == with_joblib
    assert len({s["requests"] for s in on_ray.values()}) > 1  # the seeds differ
