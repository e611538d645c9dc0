"""The Hydra app: configs compose, bad configs fail early and clearly, runs write reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra.errors import MissingConfigException

from control.metrics import (
    ACTIVATION_COLUMNS,
    CHECKPOINT_COLUMNS,
    REQUEST_COLUMNS,
    SAMPLE_COLUMNS,
    SUMMARY_KEYS,
)
from experiments.runs.build import ConfigError, build

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
ACTORMUX = str(Path(sys.executable).parent / "actormux")


def test_there_are_experiments():
    assert "oversub_250_on_8" in EXPERIMENTS and "substrate_nightly" in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates(compose_cfg, name):
    spec = build(compose_cfg(f"experiment={name}"))
    assert spec.experiment == name
    assert spec.workers >= 1 and spec.duration_s > 0
    assert spec.choices["latency"] and spec.choices["policy"]
    spec.make_controller()  # policies instantiate


def test_demo_experiment_is_the_headline_case(compose_cfg):
    spec = build(compose_cfg("experiment=oversub_250_on_8"))
    assert (spec.workload.actors, spec.workers, spec.duration_s, spec.seed) == (250, 8, 600, 0)
    assert spec.workload.population == "fixed"
    assert spec.workload.name == "agent"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cluster.workers=0", "cluster.workers: must be an integer >= 1 (got 0)"),
        ("cluster.workers=-3", "cluster.workers: must be an integer >= 1"),
        ("cluster.nodes=9", "cluster.nodes: must be <= cluster.workers=8"),
        ("duration_s=0", "duration_s: must be > 0"),
        ("seed=-1", "seed: must be an integer >= 0"),
        ("router.timeout_s=0", "router.timeout_s: must be > 0"),
        ("latency.restore.fixed='lognormal(median=0.3, sigma=-1)'", "latency.restore.fixed.sigma"),
        ("latency.cold_start='gamma(k=2)'", "latency.cold_start.kind: unknown 'gamma'; allowed:"),
        ("latency.cold_start='empirical(path=/no/such/file.csv)'", "no such file"),
        ("latency.control_plane.servers=0", "latency.control_plane.servers: must be an integer"),
        ("latency.node.cpu_parallelism=-2", "latency.node.cpu_parallelism: must be > 0"),
        ("workload.actors=0", "workload.actors: must be >= 1"),
        ("workload.kind=poisson", "workload.kind: unknown 'poisson'; allowed: agent"),
        ("workload.think_time='uniform(low=3, high=1)'", "workload.think_time: uniform needs"),
        ("+workload.idle_gap=3", "workload: unknown ['idle_gap'] for kind agent; allowed:"),
        ("workload.shape='tsunami()'", "workload.shape.kind: unknown 'tsunami'"),
        ("workload.population=closed", "workload.population: unknown 'closed'"),
        (
            ("workload.population=open", "workload.session_rate_per_s=0"),
            "workload.session_rate_per_s: must be > 0",
        ),
        ("policy.suspension.ttl_s=-5", "policy.suspension: ttl_s: must be a finite number >= 0"),
        ("policy.admission.timeout_s=0", "policy.admission: timeout_s: must be"),
        ("backend.name=ecs", "backend.name: unknown 'ecs'; allowed: sim, local, kind, gke"),
        ("policy.placement._target_=collections.OrderedDict", "is not a placement policy"),
        ("faults.restore_failure_rate=1.5", "faults.restore_failure_rate: must be between 0 and 1"),
        ("faults.worker_replacement_s=0", "faults.worker_replacement_s: must be > 0"),
        ("recovery.activation_deadline_s=0", "recovery.activation_deadline_s: must be a finite"),
        ("recovery.max_activation_attempts=0", "recovery.max_activation_attempts: must be an"),
        ("+recovery.bogus=1", "recovery: unknown ['bogus']; allowed:"),
    ],
)
def test_bad_config_fails_before_the_run_naming_the_field(compose_cfg, override, message):
    with pytest.raises(ConfigError) as err:
        build(compose_cfg(*(override if isinstance(override, tuple) else (override,))))
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("override", "options"),
    [
        ("policy/placement=nearest", ["locality", "lru", "random"]),
        ("policy/suspension=never", ["after_request", "idle_timeout", "lazy"]),
        ("policy/admission=retry", ["evict_wait", "fail_fast", "queue"]),
        ("latency=fast", ["gvisor_local", "substrate_gke"]),
    ],
)
def test_unknown_option_lists_the_allowed_ones(compose_cfg, override, options):
    with pytest.raises(MissingConfigException) as err:
        compose_cfg(override)
    for option in options:
        assert option in str(err.value)


def test_lazy_without_eviction_is_warned_about(compose_cfg):
    spec = build(compose_cfg("policy/suspension=lazy", "policy/admission=queue"))
    assert any("evict_wait" in w for w in spec.warnings)
    assert not build(compose_cfg("policy=lazy")).warnings


def run_cli(run_dir: Path, *overrides: str, hash_seed: str = "0") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run(
        [ACTORMUX, *overrides, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_demo_smoke_run_writes_summary_records_plots_and_report(tmp_path):
    proc = run_cli(tmp_path, "experiment=oversub_250_on_8", "duration_s=90")
    assert proc.returncode == 0, proc.stderr
    assert f"report: {tmp_path / 'report.md'}" in proc.stdout
    assert "activation_latency_s" in proc.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["requests"] > 0 and summary["duration_s"] == 90
    assert summary["ok"] + summary["rejected"] + summary["timed_out"] == summary["requests"]
    for name, columns in [
        ("requests", REQUEST_COLUMNS),
        ("activations", ACTIVATION_COLUMNS),
        ("checkpoints", CHECKPOINT_COLUMNS),
        ("samples", SAMPLE_COLUMNS),
    ]:
        frame = pd.read_parquet(tmp_path / f"{name}.parquet")
        assert tuple(frame.columns) == columns, name
    assert len(pd.read_parquet(tmp_path / "requests.parquet")) == summary["requests"]
    report = (tmp_path / "report.md").read_text()
    for png in ("activation_cdf.png", "workers_busy.png", "actors_by_state.png"):
        data = (tmp_path / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
        assert f"]({png})" in report
    assert "| workers | 8 |" in report and "SnapshotLocalityPlacement" in report


@pytest.mark.slow
def test_bad_config_exits_2_with_the_field_and_no_traceback(tmp_path):
    proc = run_cli(tmp_path, "cluster.workers=0")
    assert proc.returncode == 2
    assert "actormux: bad config: cluster.workers" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.slow
def test_same_seed_and_config_give_the_same_summary_across_processes(tmp_path):
    """Different PYTHONHASHSEEDs too: no set/dict-of-str iteration order may leak in."""
    args = ("experiment=oversub_250_on_8", "duration_s=120", "policy/placement=random")
    runs = []
    for i, hash_seed in enumerate(["1", "2"]):
        out = tmp_path / f"run{i}"
        proc = run_cli(out, *args, hash_seed=hash_seed)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads((out / "summary.json").read_text())
        summary.pop("wall_s")
        runs.append((summary, pd.read_parquet(out / "requests.parquet")))
    assert runs[0][0] == runs[1][0]
    pd.testing.assert_frame_equal(runs[0][1], runs[1][1])
    other = tmp_path / "other"
    assert run_cli(other, *args, "seed=1").returncode == 0
    changed = json.loads((other / "summary.json").read_text())
    assert changed["requests"] != runs[0][0]["requests"]
