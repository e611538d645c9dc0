"""The policy evaluation: its grid, its Pareto front and picks, and one small real run
of it through the CLI (experiment=policy_eval)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from experiments.analysis.policy_report import pareto_front, picks
from experiments.runs.evaluate import EvaluationError, settings_of

SECTION = {
    "replications": 2,
    "jobs": 1,
    "reference": "substrate",
    "scales": [{"actors": 40, "workers": 4, "nodes": 1, "workloads": {"agent": ["x=1"]}}],
    "workloads": {"agent": [], "trace": ["workload=trace"]},
    "policies": {"substrate": ["policy=substrate"], "default": []},
}


def test_a_selection_runs_a_subset_of_the_grid_in_config_order():
    selected = SECTION | {"select": {"policies": ["default", "substrate"], "workloads": ["trace"]}}
    cells = settings_of(selected, seed=0, duration_s=60.0, warmup_s=0.0).cells
    assert [(c.policy, c.workload) for c in cells] == [("substrate", "trace"), ("default", "trace")]


def test_the_grid_is_every_policy_on_every_workload_at_every_scale():
    settings = settings_of(SECTION, seed=3, duration_s=60.0, warmup_s=5.0)
    assert len(settings.cells) == 2 * 2
    cell = settings.cells[0]
    assert (cell.policy, cell.workload, cell.actors, cell.workers) == ("substrate", "agent", 40, 4)
    assert "seed=3" in cell.overrides and "x=1" in cell.overrides
    # A policy's own overrides come last: a row can change the scale's settings.
    assert cell.overrides.index("policy=substrate") > cell.overrides.index("cluster.workers=4")
    assert "x=1" not in settings.cells[2].overrides  # per-scale overrides: that workload only


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reference": "nobody"}, "evaluation.reference"),
        ({"policies": {}}, "evaluation.policies"),
        ({"workloads": {"agent": "x=1"}}, "evaluation.workloads.agent"),
        ({"scales": []}, "evaluation.scales"),
        ({"scales": [{"actors": 0, "workers": 1, "nodes": 1}]}, r"scales\[0\].actors"),
        (
            {"scales": [{"actors": 5, "workers": 1, "nodes": 1, "workloads": {"nope": []}}]},
            "unknown",
        ),
        ({"replications": 0}, "evaluation.replications"),
        ({"select": {"policies": ["default"]}}, "must include the reference"),
        ({"select": {"policies": ["substrate", "nope"]}}, "select.policies: unknown"),
        ({"select": {"actors": [7]}}, "no scale has"),
    ],
)
def test_a_bad_evaluation_section_is_refused_naming_the_field(change, message):
    with pytest.raises(EvaluationError, match=message):
        settings_of(SECTION | change, seed=0, duration_s=60.0, warmup_s=0.0)


def frame(rows):
    columns = ["policy", "failed_fraction", "activation_p99_s", "worker_s_billed"]
    table = pd.DataFrame(rows, columns=columns)
    table["bytes_downloaded"], table["bytes_uploaded"] = 0.0, [10.0 * i for i in range(len(rows))]
    return table


def test_the_pareto_front_keeps_exactly_the_rows_nothing_beats_on_every_objective():
    table = frame([
        ("cheap", 0.05, 0.5, 100.0),     # cheapest
        ("fast", 0.0, 0.3, 900.0),       # fastest and most reliable
        ("beaten", 0.05, 0.6, 200.0),    # cheap is better on everything
        ("balanced", 0.0, 0.4, 300.0),   # more reliable than cheap, cheaper than fast
        ("twin", 0.0, 0.4, 300.0),       # equal to balanced: neither dominates
    ])  # fmt: skip
    assert list(table["policy"][pareto_front(table)]) == ["cheap", "fast", "balanced", "twin"]


def test_picks_name_a_policy_per_goal_and_none_when_nothing_meets_the_slo():
    table = frame([("cheap", 0.05, 0.5, 100.0), ("fast", 0.0, 0.3, 900.0),
                   ("balanced", 0.0, 0.9, 300.0)])  # fmt: skip
    chosen = picks(table, slo_p99_s=1.0, slo_failed=0.001)
    assert chosen["fewest failed requests"] == "balanced"  # ties on failures: the cheaper
    assert chosen["fastest activations (of the reliable)"] == "fast"
    assert chosen["cheapest meeting the SLO"] == "balanced"
    assert chosen["least snapshot traffic (of the reliable)"] == "fast"
    assert picks(table, slo_p99_s=0.1, slo_failed=0.001)["cheapest meeting the SLO"] == "none"


@pytest.mark.slow
def test_policy_eval_runs_from_one_command_and_reports_intervals_and_the_front(tmp_path):
    out = tmp_path / "eval"
    command = [
        sys.executable, "-m", "experiments.cli", "experiment=policy_eval", "duration_s=60",
        "warmup_s=5", "evaluation.replications=2", "evaluation.jobs=2",
        "evaluation.scales=[{actors:40,workers:4,nodes:1}]",
        "evaluation.select.workloads=[agent,flash_crowd]",
        "evaluation.select.policies=[substrate,default,autoscale,pod_fly]",
        f"hydra.run.dir={out}",
    ]  # fmt: skip
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "policy_eval: 8/8 cells" in done.stderr  # progress with an ETA
    rows = pd.read_parquet(out / "evaluation.parquet")
    assert len(rows) == 8 and set(rows["replications"]) == {2}
    assert (rows["failed_fraction_low"] <= rows["failed_fraction"]).all()
    assert (rows["worker_s_billed"] > 0).all()
    pool = rows[(rows["policy"] == "default") & (rows["workload"] == "agent")].iloc[0]
    assert pool["worker_s_billed"] == pytest.approx(4 * 60)
    report = (out / "report.md").read_text()
    assert "## Picks" in report and "**substrate** (ref.)" in report and "| yes |" in report
    assert (out / "pareto.png").stat().st_size > 10_000
