"""``replications=N`` (means and 95% intervals over seeds) and ``warmup_s``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from control.metrics import summarize
from experiments.runs.build import ConfigError, build
from experiments.runs.replicate import interval

ROOT = Path(__file__).resolve().parent.parent
ACTORMUX = str(Path(sys.executable).parent / "actormux")


def test_the_interval_is_students_t():
    values = [1.0, 2.0, 3.0, 4.0]
    found = interval(values)
    # mean 2.5, s = 1.2910, t(0.975, 3) = 3.1824: half-width 2.0543
    assert found.mean == 2.5
    assert math.isclose(found.high - found.mean, 3.182446 * 1.290994 / 2, rel_tol=1e-5)
    assert math.isclose(found.mean - found.low, found.high - found.mean)
    one = interval([7.0])
    assert one.mean == 7.0 and one.low == -math.inf and one.high == math.inf
    same = interval([3.0, 3.0, 3.0])
    assert same.low == same.high == 3.0


def test_the_interval_covers_the_mean_about_95_times_in_100():
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(2000):
        sample = rng.normal(10.0, 3.0, size=5).tolist()
        found = interval(sample)
        covered += found.low <= 10.0 <= found.high
    assert 0.935 < covered / 2000 < 0.965


def test_warmup_leaves_the_transient_out_of_request_and_activation_metrics():
    requests = {
        "arrival_s": np.array([1.0, 2.0, 50.0, 60.0]),
        "outcome": np.array(["timeout", "ok", "ok", "ok"]),
        "total_s": np.array([30.0, 9.0, 0.5, 0.7]),
    }
    activations = {
        "start_s": np.array([1.0, 55.0]), "total_s": np.array([5.0, 0.3]),
        "cold": np.array([False, False]), "cache_hit": np.array([False, False]),
        "snapshot_bytes": np.array([100, 7]),
    }  # fmt: skip
    common = dict(experiment="x", backend="sim", seed=0, actors=2, workers=1, duration_s=100.0,
                  worker_utilization=0.5, control_plane_calls=10, events=1, wall_s=0.0)  # fmt: skip
    whole = summarize(requests, activations, **common)
    warm = summarize(requests, activations, **common, warmup_s=10.0)
    assert (whole["requests"], whole["timed_out"], whole["activations"]) == (4, 1, 2)
    assert (warm["requests"], warm["timed_out"], warm["activations"]) == (2, 0, 1)
    assert warm["activation_latency_s"]["max"] == 0.3 and warm["warmup_s"] == 10.0
    assert warm["control_plane_calls_per_s"] == whole["control_plane_calls_per_s"]
    assert whole["snapshot_bytes_moved"]["downloaded"] == 107
    assert warm["snapshot_bytes_moved"]["downloaded"] == 7


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("replications=0", "replications: must be 1..1000"),
        ("replications=2.5", "replications: must be an integer"),
        ("warmup_s=-1", "warmup_s: must be >= 0 and < duration_s=600"),
        ("warmup_s=600", "warmup_s: must be >= 0 and < duration_s=600"),
    ],
)
def test_bad_replications_or_warmup_are_refused(compose_cfg, override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        build(compose_cfg("experiment=oversub_250_on_8", override))


def test_a_replicated_run_reports_each_metric_with_its_interval(tmp_path):
    proc = subprocess.run(
        [ACTORMUX, "experiment=oversub_250_on_8", "duration_s=200", "replications=4",
         "warmup_s=20", f"hydra.run.dir={tmp_path}", "backend.progress=false"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["replications"] == 4 and summary["seeds"] == [0, 1, 2, 3]
    p99 = summary["ci95"]["activation_latency_s.p99"]
    assert p99["values"][0] == summary["activation_latency_s"]["p99"]  # seed 0's summary
    assert len(set(p99["values"])) == 4  # the seeds differ
    assert p99["low"] < p99["mean"] < p99["high"]
    assert math.isclose(p99["mean"], sum(p99["values"]) / 4)
    single = subprocess.run(
        [ACTORMUX, "experiment=oversub_250_on_8", "duration_s=200", "seed=2", "warmup_s=20",
         f"hydra.run.dir={tmp_path / 'seed2'}", "backend.progress=false"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    seed2 = json.loads((tmp_path / "seed2" / "summary.json").read_text())
    assert seed2["activation_latency_s"]["p99"] == p99["values"][2]  # replication 2 is seed 2
    report = (tmp_path / "report.md").read_text()
    assert "## Over 4 seeds (0..3)" in report and "replications.png" in report
    assert (tmp_path / "replications.png").stat().st_size > 1000
    assert single.returncode == 0
