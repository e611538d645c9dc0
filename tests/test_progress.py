"""Progress on long runs and sweeps: simulated time, events per second, ETA."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.runs import progress as progress_module
from experiments.runs.build import build
from experiments.runs.progress import RunProgress
from experiments.runs.runner import simulate

ROOT = Path(__file__).resolve().parent.parent


def test_a_progress_line_gives_simulated_time_events_per_second_and_the_time_left():
    progress = RunProgress(3600, "fleet", tty=False, stream=io.StringIO())
    line = progress.line(simulated_s=900, events=180_000, wall_s=60)
    # 900 simulated s in 60 wall s: 15 per s; 2,700 left take 180 s
    assert line == (
        "fleet: simulated 900 of 3,600 s (25%), 3,000 events/s, 15.0 sim-s per s, ETA 3m00s"
    )
    assert progress.line(0, 0, 5).endswith("ETA ?")  # no pace yet


def test_a_run_not_on_a_terminal_prints_progress_lines_and_a_last_one(compose_cfg, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    spec = build(compose_cfg("experiment=oversub_250_on_8", "duration_s=120",
                             "backend.progress=true"))  # fmt: skip
    monkeypatch.setattr(progress_module, "LINE_EVERY_S", 0.0)  # a line at every sample
    out = simulate(spec)
    lines = stream.getvalue().splitlines()
    assert len(lines) > 100  # a line per sample (1 s) and the last one
    last = re.fullmatch(
        r"oversub_250_on_8: simulated ([\d,]+) of 120 s \((\d+)%\), ([\d,]+) events/s, .* ETA .*",
        lines[-1],
    )
    assert last is not None, lines[-1]
    assert last[1] == "120" and last[2] == "100"
    assert int(last[3].replace(",", "")) > 0
    assert out.summary["requests"] > 0


@pytest.mark.slow
def test_a_sweep_says_how_many_jobs_it_runs_and_how_many_are_done(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "-m", "experiment=oversub_250_on_8",
         "duration_s=30", "seed=0,1", "policy=default,substrate",
         f"hydra.sweep.dir={tmp_path}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sweep: 4 jobs" in done.stderr
    ends = re.findall(r"sweep: job #(\d) done in [\d.]+ s: (\d) of 4 done", done.stderr)
    assert sorted(int(job) for job, _ in ends) == [0, 1, 2, 3]
    assert sorted(int(count) for _, count in ends) == [1, 2, 3, 4]
