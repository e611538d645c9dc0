"""Calibration, the sweep collector, the capacity planner and the regression benchmarks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from control.controller import Controller
from control.policies import AfterEachRequest, LruPlacement, QueueWithDeadline
from experiments.analysis.calibrate import calibrate_run, profile_yaml
from experiments.runs.bench import Regression, baseline_refusal, compare, metrics_of
from experiments.runs.planner import SLO, plan, search
from sim.calibration import calibrate, jobs_from_records
from sim.distributions import LogNormal, Uniform
from sim.engine import Simulation
from sim.latency import latency_from_config
from workloads.agent import AgentWorkload
from workloads.shapes import Waves

ROOT = Path(__file__).resolve().parent.parent
ACTORMUX = str(Path(sys.executable).parent / "actormux")


def actormux(*args: str) -> subprocess.CompletedProcess:
    """Run the ``actormux`` command from the project root; never raises on failure."""
    return subprocess.run([ACTORMUX, *args], cwd=ROOT, capture_output=True, text=True, check=False)


TRUTH = {
    "restore": {"fixed": "lognormal(median=0.25, sigma=0.1)", "mib_per_s": 500, "ready": 0},
    "checkpoint": {"fixed": "lognormal(median=0.1, sigma=0.1)", "mib_per_s": 800},
    "cold_start": "lognormal(median=0.5, sigma=0.1)",
    "transfer": {"first_byte": 0},
    "node": {"cpu_parallelism": 2.0, "link_mib_per_s": 1000, "cache_mib": 1_000_000},
    "control_plane": {"servers": 4, "service": 0.001},
}


def synthetic_run():
    """Records from the simulator with known parameters: quiet, with waves of 8
    restores at once, snapshots of 4-64 MiB (so every parameter is identifiable)."""
    workload = AgentWorkload(
        actors=200,
        calls_per_turn=LogNormal(2, 0.3),
        call_gap=Uniform(0.1, 1.0),
        think_time=LogNormal(300, 1.0),
        service=LogNormal(0.1, 0.3),
        snapshot_mib=Uniform(4, 64),
        shape=Waves(start_s=20, period_s=30, count=19, size=8),
    )
    controller = Controller(
        LruPlacement(), AfterEachRequest(), QueueWithDeadline(10), router_timeout_s=30
    )
    sim = Simulation(
        controller, workload, latency_from_config(TRUTH), workers=8, nodes=1, duration_s=600, seed=3
    )
    return sim.run()


def test_calibration_recovers_known_parameters_from_synthetic_records():
    run = synthetic_run()
    fit = calibrate(
        jobs_from_records(run.activations, run.checkpoints),
        prior_parallelism=3.5,  # deliberately wrong priors
        prior_rates={"restore": 1850, "checkpoint": 950},
    )
    assert fit.parallelism_fitted and fit.cpu_parallelism == pytest.approx(2.0, rel=0.1)
    restore, checkpoint = fit.kinds["restore"], fit.kinds["checkpoint"]
    assert restore.rate_fitted and restore.mib_per_s == pytest.approx(500, rel=0.15)
    assert restore.median_s == pytest.approx(0.25, rel=0.05)
    assert restore.sigma == pytest.approx(0.1, rel=0.3)
    assert checkpoint.mib_per_s == pytest.approx(800, rel=0.15)
    assert checkpoint.median_s == pytest.approx(0.1, rel=0.05)
    assert restore.mean_concurrency > 1.5  # there was contention to see through


def test_calibration_keeps_priors_it_cannot_identify():
    run = synthetic_run()
    acts = dict(run.activations)
    acts["snapshot_bytes"] = np.full(len(acts["start_s"]), 16 << 20)  # all one size
    fit = calibrate(
        jobs_from_records(acts, {k: v[:0] for k, v in run.checkpoints.items()}),
        prior_parallelism=2.0,
        prior_rates={"restore": 1850},
    )
    assert fit.kinds["restore"].mib_per_s == 1850 and not fit.kinds["restore"].rate_fitted
    assert any("sizes barely vary" in note for note in fit.notes)


def test_calibrate_command_writes_a_profile_the_simulator_accepts(tmp_path):
    run_dir = tmp_path / "run"
    proc = actormux("experiment=oversub_250_on_8", "duration_s=300", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    proc = actormux("calibrate", str(run_dir), "--name", "fitted", "--out-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    profile = yaml.safe_load((tmp_path / "fitted.yaml").read_text())
    model = latency_from_config(profile)  # a valid latency profile
    # The run used gvisor_local (restore median 0.324 s): the fit lands near it.
    assert model.restore_fixed.median == pytest.approx(0.324, rel=0.15)
    fit, prior = calibrate_run(run_dir)
    assert "Calibrated by" in profile_yaml(fit, prior, run_dir)


def test_calibrate_refuses_a_non_run_directory(tmp_path):
    proc = actormux("calibrate", str(tmp_path))
    assert proc.returncode == 2 and "activations.parquet" in proc.stderr


@pytest.mark.slow
def test_collect_gathers_a_2x2_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    proc = actormux(
        "-m",
        "experiment=oversub_250_on_8",
        "duration_s=120",
        "policy=default,substrate",
        "cluster.workers=4,8",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr
    proc = actormux("collect", str(sweep))
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_parquet(sweep / "sweep.parquet")
    assert len(frame) == 4
    assert sorted(frame["workers"]) == [4, 4, 8, 8]
    assert frame["policy"].nunique() == 2
    assert {"activation_latency_s.p99", "failed_fraction", "oversubscription"} <= set(frame)
    substrate = frame[frame["policy"].str.contains("after_request")]
    default = frame[~frame["policy"].str.contains("after_request")]
    assert substrate["failed_fraction"].sum() > default["failed_fraction"].sum()
    for png in ("p99_activation_vs_oversubscription.png", "failed_vs_workers.png"):
        assert (sweep / png).read_bytes().startswith(b"\x89PNG")


def test_search_finds_the_smallest_passing_worker_count():
    # A made-up monotone system: the SLO holds from 13 workers on.
    def evaluate(workers, seed):
        return {
            "requests": 100,
            "rejected": 0 if workers >= 13 else 5,
            "timed_out": 0,
            "activation_latency_s": {"p99": 0.5},
        }

    result = search(100, evaluate, SLO(), seeds=[0, 1], max_workers=100)
    assert result.workers == 13
    tried = {t.workers for t in result.trials}
    assert 12 in tried and 13 in tried  # bisection pinned the edge
    assert search(100, evaluate, SLO(), seeds=[0], max_workers=8).workers is None


def test_search_with_a_tolerance_stops_early_but_never_below_the_edge():
    edge = 1_234

    def evaluate(workers, seed):
        return {
            "requests": 100,
            "rejected": 0,
            "timed_out": 0,
            "activation_latency_s": {"p99": 0.5 if workers >= edge else 1.5},
        }

    exact = search(100_000, evaluate, SLO(), seeds=[0], max_workers=100_000)
    rough = search(100_000, evaluate, SLO(), seeds=[0], max_workers=100_000, tolerance=0.02)
    assert exact.workers == edge
    assert edge <= rough.workers <= edge * 1.02
    assert len(rough.trials) < len(exact.trials)
    with pytest.raises(ValueError, match="tolerance"):
        search(10, evaluate, SLO(), seeds=[0], max_workers=10, tolerance=1.0)
    with pytest.raises(ValueError, match="seeds"):
        search(10, evaluate, SLO(), seeds=[], max_workers=10)


@pytest.mark.slow
def test_planner_answer_is_monotone_in_actors():
    answers = [
        plan(["workload=bursty", "duration_s=180"], actors=n, slo=SLO(), seeds=[0, 1]).workers
        for n in (30, 60, 120)
    ]
    assert all(a is not None for a in answers)
    assert answers == sorted(answers) and answers[0] < answers[-1]


def test_bench_compare_flags_only_real_regressions():
    spec = {
        "activation_latency_s.p99": {"worse": "higher", "tolerance": 0.1},
        "ok_fraction": {"worse": "lower", "tolerance": 0.01},
    }
    base = {"cases": {"c": {"activation_latency_s.p99": 1.0, "ok_fraction": 0.99}}}
    ok = {"cases": {"c": {"activation_latency_s.p99": 1.09, "ok_fraction": 0.985}}}
    bad = {"cases": {"c": {"activation_latency_s.p99": 1.2, "ok_fraction": 0.9}}}
    assert compare(ok, base, spec) == []
    found = compare(bad, base, spec)
    assert {r.metric for r in found} == {"activation_latency_s.p99", "ok_fraction"}
    assert "activation_latency_s.p99 = 1.2" in str(found[0]) and isinstance(found[0], Regression)
    assert metrics_of({"requests": 10, "rejected": 1, "timed_out": 1})["failed_fraction"] == 0.2


def test_bench_compare_fails_on_any_move_of_a_two_sided_metric_and_on_anything_missing():
    spec = {
        "activations": {"sided": "two", "tolerance": 1e-9},
        "activation_latency_s.p99": {"sided": "two", "tolerance": 1e-9},
    }
    base = {"cases": {"c": {"activations": 100.0, "activation_latency_s.p99": None},
                      "d": {"activations": 5.0, "activation_latency_s.p99": 1.0}}}  # fmt: skip
    same = {"cases": {"c": {"activations": 100.0, "activation_latency_s.p99": None},
                      "d": {"activations": 5.0, "activation_latency_s.p99": 1.0}}}  # fmt: skip
    assert compare(same, base, spec) == []  # none on both sides is equal
    better = {"cases": {"c": {"activations": 99.0, "activation_latency_s.p99": None},
                        "d": {"activations": 5.0, "activation_latency_s.p99": 1.0}}}  # fmt: skip
    (moved,) = compare(better, base, spec)
    assert (moved.kind, moved.case, moved.metric) == ("changed", "c", "activations")
    assert str(moved).startswith("CHANGED c: activations = 99, baseline 100")
    lost_case = {"cases": {"c": same["cases"]["c"]}}
    (gone,) = compare(lost_case, base, spec)
    assert gone.kind == "missing" and gone.case == "d" and "not in the results" in str(gone)
    new_case = {"cases": {**same["cases"], "e": {"activations": 1.0}}}
    assert [(r.kind, r.case) for r in compare(new_case, base, spec)] == [("missing", "e")]
    no_metric = {"cases": {"c": {"activations": 100.0}, "d": same["cases"]["d"]}}
    (absent,) = compare(no_metric, base, spec)
    assert (absent.kind, absent.metric) == ("missing", "activation_latency_s.p99")
    half = {"cases": {"c": {"activations": 100.0, "activation_latency_s.p99": 0.5},
                      "d": same["cases"]["d"]}}  # fmt: skip
    (appeared,) = compare(half, base, spec)
    assert appeared.kind == "missing" and "not in the baseline" in str(appeared)


def test_a_committed_baseline_comes_only_from_a_committed_tree(tmp_path):
    committed = ROOT / "benchmarks/baselines/core-sim.json"
    assert "uncommitted changes" in baseline_refusal(committed, dirty=True)
    assert baseline_refusal(committed, dirty=False) is None
    assert baseline_refusal(tmp_path / "mine.json", dirty=True) is None  # a scratch one


def test_the_simulator_matches_its_committed_bench_baseline(tmp_path):
    """``actormux bench core`` against benchmarks/baselines/core-sim.json: any change to a
    simulated number fails here until the baseline is recaptured, on purpose."""
    done = actormux("bench", "core", "--out", str(tmp_path / "out.json"),
                    "--history", str(tmp_path / "history.jsonl"))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no regression against" in done.stdout
    baseline = json.loads((ROOT / "benchmarks/baselines/core-sim.json").read_text())
    assert baseline["git"]["dirty"] is False  # captured from a committed tree
    assert set(baseline["versions"]) >= {"python", "numpy", "simpy"}


@pytest.mark.slow
def test_bench_passes_against_its_own_baseline_and_fails_against_a_stricter_one(tmp_path):
    baseline, history = tmp_path / "baseline.json", tmp_path / "history.jsonl"

    def bench(*flags):
        return actormux(
            "bench",
            "core",
            "backend=sim",
            "--baseline",
            str(baseline),
            "--history",
            str(history),
            "--out",
            str(tmp_path / "out.json"),
            *flags,
        )

    assert bench("--update-baseline").returncode == 0
    same = bench()
    assert same.returncode == 0, same.stderr
    assert "no regression" in same.stdout
    stricter = json.loads(baseline.read_text())
    stricter["cases"]["oversub_250_on_8"]["activation_latency_s.p99"] *= 0.5
    baseline.write_text(json.dumps(stricter))
    worse = bench()
    assert worse.returncode == 1
    assert "CHANGED oversub_250_on_8: activation_latency_s.p99" in worse.stderr
    assert len(history.read_text().splitlines()) == 3
    report = actormux("bench-report", str(history), "--out-dir", str(tmp_path))
    assert report.returncode == 0
    assert list(tmp_path.glob("history-*.png"))


def test_fidelity_errors_goals_and_intervals():
    from experiments.analysis.fidelity import attribute, bootstrap_interval, error_table, render

    def summary(p50, p99, acts):
        return {"activation_latency_s": {"p50": p50, "p90": p50, "p99": p99},
                "request_latency_s": {"p50": 1.0, "p99": 2.0}, "activations": acts,
                "worker_utilization": 0.5, "rejected": 0, "timed_out": 0}  # fmt: skip

    samples = {"activation_latency_s": np.random.default_rng(1).lognormal(-1.0, 0.5, 400)}
    rows = {r.metric: r for r in error_table(summary(0.30, 1.0, 100), summary(0.32, 1.2, 104),
                                             summary(0.40, 1.0, 120), samples)}  # fmt: skip
    assert rows["activation latency p50"].error == pytest.approx(0.0667, abs=1e-3)
    assert rows["activation latency p50"].met is True
    assert rows["activation latency p99"].met is False  # +20% > 10%
    assert rows["activations"].met is True and rows["activations"].prior_error == pytest.approx(0.2)
    assert rows["request latency p99"].met is None  # no goal
    lo, hi = rows["activation latency p50"].interval
    assert lo < np.median(samples["activation_latency_s"]) < hi
    lo99, hi99 = bootstrap_interval(samples["activation_latency_s"], 99)
    assert hi99 - lo99 > hi - lo  # the tail is known less well than the median
    ranked = attribute({"a": 0.10, "b": 0.30, "restores at once": 2.0},
                       {"a": 0.18, "b": 0.31, "restores at once": 9.0})  # fmt: skip
    assert [name for name, *_ in ranked] == ["a", "b", "restores at once"]
    assert "set `fidelity.repeats`" in render(list(rows.values()), ranked, "p.yaml")
    # Two real runs of the same requests: the error is against their mean, with their range.
    runs = [summary(0.30, 1.0, 100), summary(0.30, 0.6, 110)]
    two = {r.metric: r for r in error_table(runs, summary(0.32, 0.86, 104), summary(0.4, 1, 120))}
    assert two["activation latency p99"].real == pytest.approx(0.8)
    assert two["activation latency p99"].spread == (0.6, 1.0)
    assert two["activation latency p99"].met is True  # 0.86 vs 0.8: +7.5%
    assert two["activations"].spread == (100, 110) and two["activations"].met is True
    table = render(list(two.values()), ranked, "p.yaml", runs=2)
    assert "real (mean of 2 runs)" in table and "| 0.600-1.000 |" in table


def test_fidelity_refuses_bad_repeats_before_any_real_run(tmp_path):
    proc = actormux("experiment=fidelity", "fidelity.repeats=0", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert "actormux: bad config: fidelity.repeats: must be an integer 1..20 (got 0)" in proc.stderr


def test_fidelity_calibrates_on_the_evaluations_images_unless_told_otherwise(compose_cfg):
    from hydra import initialize_config_dir

    from experiments.analysis.fidelity import calibration_config
    from experiments.app import CONF_DIR

    sizes = "backend.agent_state_mb=[4,48]"
    cfg = compose_cfg("experiment=fidelity", "backend.template=agent", sizes,
                      "backend.instance=9", "backend.port=8123")  # fmt: skip
    base = [str(o) for o in cfg.fidelity.calibration.overrides]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cal = calibration_config(cfg, base, 8)
        mine = calibration_config(cfg, [*base, "backend.template=counter"], 8)
    assert cal.backend.template == "agent" and list(cal.backend.agent_state_mb) == [4, 48]
    assert cal.workload.name == "bursty" and cal.seed == 1 and cal.cluster.workers == 8
    assert (cal.backend.name, cal.backend.instance, cal.backend.port) == ("local", 9, 8123)
    assert mine.backend.template == "counter"
    assert list(mine.backend.agent_state_mb) == [4, 48] and mine.backend.instance == 9


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("plan.seeds=0", "plan.seeds: must be an integer in [1, 1000] (got 0)"),
        ("plan.actors=[0]", "plan.actors: must be a list of integers >= 1"),
        ("plan.tolerance=0.9", "plan.tolerance: must be a number in [0, 0.5]"),
        ("plan.activation_p99_s=0", "plan.activation_p99_s: must be a number"),
        ("policy.admission.timeout_s=0", "policy.admission: timeout_s"),
    ],
)
def test_plan_command_refuses_bad_config_before_searching(tmp_path, override, message):
    proc = actormux("plan", override, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert f"actormux: bad config: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plan_command_answers(tmp_path):
    proc = actormux(
        "plan", "plan.actors=[40]", "plan.seeds=1", "workload=bursty", "duration_s=60",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    *_, line, binds = proc.stdout.strip().splitlines()
    assert line.lstrip().startswith("40 actors:") and "workers" in line and "tried" in line
    # what binds: the resource nearest its capacity, of those it lists
    found = re.fullmatch(r"what binds at (.+): (\w+) \((\d+)% of capacity\); utilization: (.*)",
                         binds.strip())  # fmt: skip
    assert found is not None, binds
    shares = dict(item.rsplit(" ", 1) for item in found[4].split(", "))
    assert {"control_plane", "node_cpu", "node_link", "workers"} <= set(shares)
    assert found[2] == max(shares, key=lambda name: float(shares[name]))
    assert abs(float(shares[found[2]]) * 100 - int(found[3])) <= 1
