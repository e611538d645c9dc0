"""Regression benchmarks: ``actormux bench SUITE [backend=sim|local]`` and ``bench-report``.

A suite (``conf/bench/<SUITE>.yaml``) names cases (lists of overrides) and metrics
with a direction and a tolerance. ``bench`` runs every case on the chosen backend,
writes the results (metrics, git commit, machine, time) to JSON, compares them with a
baseline (``benchmarks/baselines/<SUITE>-<backend>.json``), appends them to a history
file (``benchmarks/history/<SUITE>-<backend>.jsonl``) and exits 1 when a metric got
worse than its tolerance allows, naming it. ``--update-baseline`` makes the results the
new baseline. ``bench-report`` plots a history.

In CI against a real system, run the suite with the backend there and keep the history
as a build artifact, e.g.::

    sudo .venv/bin/actormux bench real backend=local --history $ARTIFACTS/real-local.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from experiments.paths import ROOT
from experiments.runs.versions import package_versions

SUITES = ROOT / "conf" / "bench"


@dataclass(frozen=True)
class Regression:
    """A metric that got worse than allowed, moved at all where the suite says it must
    not (``sided: two``), or is missing from the results or the baseline."""

    case: str
    metric: str
    value: float | None
    baseline: float | None
    limit: float | None
    kind: str = "worse"  # worse, changed or missing

    def __str__(self) -> str:
        if self.kind == "missing":
            where = "the results" if self.value is None else "the baseline"
            return (
                f"MISSING {self.case}: {self.metric} is not in {where} (results "
                f"{_show(self.value)}, baseline {_show(self.baseline)})"
            )
        if self.kind == "changed":
            return (
                f"CHANGED {self.case}: {self.metric} = {self.value:.9g}, baseline "
                f"{self.baseline:.9g}; may differ by at most {self.limit:.3g}"
            )
        return (
            f"REGRESSION {self.case}: {self.metric} = {self.value:.6g}, baseline "
            f"{self.baseline:.6g}, allowed up to {self.limit:.6g}"
        )


def _show(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def load_suite(name: str) -> dict[str, Any]:
    """The suite's YAML (``conf/bench/<name>.yaml``)."""
    path = SUITES / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SUITES.glob("*.yaml"))
        raise FileNotFoundError(f"no bench suite {name!r}; known: {', '.join(known)}")
    suite: dict[str, Any] = yaml.safe_load(path.read_text())
    return suite


def metrics_of(summary: dict[str, Any]) -> dict[str, float | None]:
    """A summary flattened (``activation_latency_s.p99``), plus ``failed_fraction``."""
    flat: dict[str, float | None] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            for inner, v in value.items():
                if v is None or (isinstance(v, int | float) and not isinstance(v, bool)):
                    flat[f"{key}.{inner}"] = None if v is None else float(v)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[key] = float(value)
    requests = summary.get("requests") or 0
    failed = summary.get("rejected", 0) + summary.get("timed_out", 0)
    flat["failed_fraction"] = failed / requests if requests else 0.0
    return flat


def run_case(overrides: list[str], backend: str) -> dict[str, Any]:
    """One case's summary: simulated in-process, or a real run as a subprocess."""
    if backend == "sim":
        from hydra import compose, initialize_config_dir

        from experiments.runs.build import build
        from experiments.runs.runner import simulate

        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[*overrides, "backend.progress=false"])
        return simulate(build(cfg)).summary
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            str(Path(sys.executable).parent / "actormux"),
            *overrides,
            f"backend={backend}",
            f"hydra.run.dir={tmp}",
        ]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"case failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
        summary: dict[str, Any] = json.loads((Path(tmp) / "summary.json").read_text())
        return summary


def compare(
    result: dict[str, Any], baseline: dict[str, Any], spec: dict[str, Any]
) -> list[Regression]:
    """What in ``result`` fails against ``baseline`` under the suite's rules: a metric
    worse than its tolerance allows (``worse: higher|lower``), or, with ``sided: two``,
    one that moved by more than it in either direction (deterministic metrics); and every
    case or metric that one side has and the other lacks (a metric that both have as
    none, e.g. a percentile of nothing, is equal)."""
    found = []
    cases = result["cases"]
    base_cases = baseline.get("cases", {})
    for case in sorted(set(cases) | set(base_cases)):
        metrics, base = cases.get(case), base_cases.get(case)
        if metrics is None or base is None:
            found.append(Regression(case, "(the whole case)", None if metrics is None else 0.0,
                                    None if base is None else 0.0, None, "missing"))  # fmt: skip
            continue
        for metric, rule in spec.items():
            value, ref = metrics.get(metric), base.get(metric)
            if value is None and ref is None and metric in metrics and metric in base:
                continue
            if value is None or ref is None:
                found.append(Regression(case, metric, value, ref, None, "missing"))
                continue
            tol, slack = float(rule.get("tolerance", 0.1)), float(rule.get("absolute", 0.0))
            if rule.get("sided", "one") == "two":
                allowed = abs(ref) * tol + slack
                if abs(value - ref) > allowed + 1e-12:
                    found.append(Regression(case, metric, value, ref, allowed, "changed"))
                continue
            if rule.get("worse", "higher") == "higher":
                limit = ref * (1 + tol) + slack
                bad = value > limit + 1e-12
            else:
                limit = ref * (1 - tol) - slack
                bad = value < limit - 1e-12
            if bad:
                found.append(Regression(case, metric, value, ref, limit))
    return found


def version_changes(result: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """The shaping packages whose versions differ from the baseline's (a simulator
    metric may then move for that reason alone)."""
    now, then = result.get("versions", {}), baseline.get("versions", {})
    moved = [n for n in sorted(set(now) | set(then)) if now.get(n) != then.get(n)]
    return [f"{n} {then.get(n, '?')} -> {now.get(n, '?')}" for n in moved]


def baseline_refusal(path: Path, *, dirty: bool) -> str | None:
    """Why ``path`` must not become a baseline now: a committed baseline (under
    benchmarks/baselines) is only taken from a tree without uncommitted changes."""
    if dirty and path.resolve().is_relative_to(ROOT / "benchmarks" / "baselines"):
        return (
            f"refusing to write {path} from a tree with uncommitted changes (nobody "
            "could reproduce it); commit first"
        )
    return None


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def bench_main(argv: list[str]) -> int:
    """The ``actormux bench`` command."""
    parser = argparse.ArgumentParser(
        prog="actormux bench", description="Run a regression suite and compare with its baseline."
    )
    parser.add_argument("suite", help="conf/bench/<suite>.yaml")
    parser.add_argument("overrides", nargs="*", help="backend=sim|local and other overrides")
    parser.add_argument(
        "--baseline", type=Path, help="default: benchmarks/baselines/SUITE-BACKEND.json"
    )
    parser.add_argument(
        "--history", type=Path, help="default: benchmarks/history/SUITE-BACKEND.jsonl"
    )
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/)")
    parser.add_argument(
        "--update-baseline", action="store_true", help="make these results the baseline"
    )
    args = parser.parse_args(argv)
    backend = "sim"
    extra = []
    for o in args.overrides:
        if o.startswith("backend="):
            backend = o.split("=", 1)[1]
        else:
            extra.append(o)
    try:
        suite = load_suite(args.suite)
    except FileNotFoundError as e:
        print(f"actormux bench: {e}", file=sys.stderr)
        return 2
    tag = f"{args.suite}-{backend}"
    baseline_path = args.baseline or ROOT / "benchmarks" / "baselines" / f"{tag}.json"
    history_path = args.history or ROOT / "benchmarks" / "history" / f"{tag}.jsonl"
    out_path = args.out or ROOT / "benchmarks" / "results" / f"bench-{tag}.json"
    result: dict[str, Any] = {
        "suite": args.suite,
        "backend": backend,
        "overrides": extra,
        "git": _git(),
        "versions": package_versions(),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cases": {},
    }
    for case, overrides in suite["cases"].items():
        started = time.perf_counter()
        summary = run_case([*overrides, *extra], backend)
        metrics = metrics_of(summary)
        result["cases"][case] = {m: metrics.get(m) for m in suite["metrics"]}
        print(
            f"{case}: "
            + ", ".join(f"{m}={v:.4g}" for m, v in result["cases"][case].items() if v is not None)
            + f"  ({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
    for path in (out_path, history_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    with history_path.open("a") as history:
        history.write(json.dumps(result) + "\n")
    if args.update_baseline:
        refusal = baseline_refusal(baseline_path, dirty=bool(result["git"]["dirty"]))
        if refusal:
            print(f"actormux bench: {refusal}", file=sys.stderr)
            return 2
        baseline_path.parent.mkdir(parents=True, exist_ok=True)
        baseline_path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"baseline updated: {baseline_path}")
        return 0
    if not baseline_path.is_file():
        print(f"no baseline at {baseline_path}; create one with --update-baseline")
        return 0
    baseline = json.loads(baseline_path.read_text())
    regressions = compare(result, baseline, suite["metrics"])
    for regression in regressions:
        print(regression, file=sys.stderr)
    if regressions:
        changed = version_changes(result, baseline)
        if changed:
            print(f"(package versions differ from the baseline's: {', '.join(changed)}; "
                  "install from requirements.lock)", file=sys.stderr)  # fmt: skip
        return 1
    print(f"no regression against {baseline_path} ({len(result['cases'])} cases)")
    return 0


def report_main(argv: list[str]) -> int:
    """The ``actormux bench-report`` command: plot a history file."""
    parser = argparse.ArgumentParser(
        prog="actormux bench-report", description="Plot each metric of a bench history over runs."
    )
    parser.add_argument(
        "history", type=Path, nargs="?", default=ROOT / "benchmarks" / "history" / "core-sim.jsonl"
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports" / "bench")
    args = parser.parse_args(argv)
    from experiments.analysis.report import plt, save_figure

    if not args.history.is_file():
        print(f"actormux bench-report: no history at {args.history}", file=sys.stderr)
        return 2
    runs = [json.loads(line) for line in args.history.read_text().splitlines() if line.strip()]
    labels = [f"{(r['git']['commit'] or '?')[:7]}{'*' if r['git']['dirty'] else ''}" for r in runs]
    metrics = sorted({m for r in runs for c in r["cases"].values() for m in c})
    args.out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Bench history: {args.history.name}",
        "",
        f"{len(runs)} runs; * = uncommitted changes.",
        "",
    ]
    for metric in metrics:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for case in sorted({c for r in runs for c in r["cases"]}):
            ys = [r["cases"].get(case, {}).get(metric) for r in runs]
            ax.plot(
                range(len(runs)),
                [float("nan") if y is None else y for y in ys],
                marker="o",
                label=case,
            )
        ax.set_xticks(range(len(runs)), labels, rotation=45, fontsize=7)
        ax.set_title(metric)
        ax.legend(fontsize=7)
        name = f"{args.history.stem}-{metric}.png".replace("/", "_")
        save_figure(fig, ax, args.out_dir / name)
        lines += [f"## {metric}", "", f"![{metric}]({name})", ""]
    report = args.out_dir / f"{args.history.stem}.md"
    report.write_text("\n".join(lines))
    print(f"report: {report}")
    return 0
