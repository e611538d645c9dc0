"""Workload statistics on cases with known answers, and the workload-report command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workloads.plan import Plan
from workloads.stats import active_actors, actor_gaps, burstiness, workload_stats

ROOT = Path(__file__).resolve().parent.parent


def test_burstiness_is_minus_one_for_periodic_and_near_zero_for_poisson():
    assert burstiness(np.full(100, 2.0)) == pytest.approx(-1.0)
    poisson = np.random.default_rng(0).exponential(1.0, 200_000)
    assert burstiness(poisson) == pytest.approx(0.0, abs=0.01)
    # 900 gaps of 0.1 s and 100 of 100 s: mean 10.09, std 29.97 -> (29.97-10.09)/40.06.
    bursty = np.concatenate([np.full(900, 0.1), np.full(100, 100.0)])
    assert burstiness(bursty) == pytest.approx(0.4963, abs=1e-4)


def test_active_actors_counts_each_actors_overlapping_stretches_once():
    # Actor 0: requests at 0, 2, 4 (one stretch 0..9 with a 5 s window); actor 1 at 3.
    plan = Plan.from_schedule([0, 2, 3, 4], [0, 0, 1, 0], 0.1, duration_s=20)
    t, active = active_actors(plan, window_s=5.0)
    assert t[:3].tolist() == [0.0, 1.0, 2.0]  # sampled each second
    assert active.tolist()[:10] == [1, 1, 1, 2, 2, 2, 2, 2, 1, 0]
    assert active[10:].sum() == 0
    np.testing.assert_allclose(sorted(actor_gaps(plan)), [2.0, 2.0])


def test_workload_stats_of_a_regular_schedule():
    # 4 actors, each every 10 s, staggered by 2.5 s: aggregate perfectly periodic.
    times = np.arange(0, 400, 2.5)
    plan = Plan.from_schedule(times, np.arange(times.size) % 4, 0.1, duration_s=400)
    stats = workload_stats(plan, active_window_s=5.0)
    assert stats["requests"] == 160 and stats["actors"] == 4
    assert stats["interarrival_cv"] == pytest.approx(0.0, abs=1e-9)
    assert stats["actor_gap_s"]["p50"] == pytest.approx(10.0)
    assert stats["idle_gaps"] == 156  # every gap (10 s) exceeds the 5 s window
    assert stats["active_actors"]["max"] == 2
    assert stats["requests_per_actor"]["mean"] == 40


@pytest.mark.slow
def test_workload_report_command_writes_stats_and_plots(tmp_path):
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "actormux"), "workload-report", "workload=agent",
         "duration_s=300", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((tmp_path / "workload_stats.json").read_text())
    assert stats["requests"] > 100 and stats["actors"] == 250
    assert "interarrival_cv" in proc.stdout and "report:" in proc.stdout
    report = (tmp_path / "workload_report.md").read_text()
    for png in ("interarrival_cdf.png", "actor_gaps_cdf.png", "active_actors.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")
        assert f"]({png})" in report
