"""Simulator speed: events per wall second on the 100k-actor scenario, beside a bare loop.

Runs ``experiment=scale_100k`` (100,000 actors, 3,300 workers, one simulated hour)
and, in the same process, a bare ``heapq`` event loop that processes the same number
of events (a hold model: pop the earliest event, schedule one new one). The ratio
says how much the simulator pays per event for everything it models over a loop
that models nothing. Prints a table and writes JSON.

    .venv/bin/python benchmarks/sim_speed.py                    # the full scenario
    .venv/bin/python benchmarks/sim_speed.py actors=10000       # smaller, faster
    .venv/bin/python benchmarks/sim_speed.py --out results.json duration_s=600

Extra arguments are Hydra overrides on top of ``experiment=scale_100k``.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments.runs.build import build  # noqa: E402
from experiments.runs.runner import make_simulation  # noqa: E402


def bare_heapq_loop(events: int, pending: int, seed: int = 0) -> float:
    """Process ``events`` events from a heap holding ``pending``; return events/s."""
    rng = random.Random(seed)
    heap = [(rng.random(), i) for i in range(pending)]
    heapq.heapify(heap)
    handled = 0

    def handle(_key: int) -> None:
        nonlocal handled
        handled += 1

    started = time.perf_counter()
    for i in range(events):
        now, key = heapq.heappop(heap)
        handle(key)
        heapq.heappush(heap, (now + rng.random(), pending + i))
    elapsed = time.perf_counter() - started
    assert handled == events
    return events / elapsed


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/sim_speed.json")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. workload.actors=1000")
    args = parser.parse_args()
    overrides = ["experiment=scale_100k", "backend.progress=false"]
    for o in args.overrides:  # shorthand: actors=N scales workers and nodes along (30x, 25/node)
        if o.startswith("actors="):
            n = int(o.split("=", 1)[1])
            workers = max(1, n // 30)
            overrides += [
                f"workload.actors={n}",
                f"cluster.workers={workers}",
                f"cluster.nodes={max(1, workers // 25)}",
            ]
        else:
            overrides.append(o)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        spec = build(compose("config", overrides=overrides))

    sim = make_simulation(spec)
    started = time.perf_counter()
    result = sim.run()
    wall_s = time.perf_counter() - started
    controller_events = result.events
    simpy_events = next(sim.env._eid)  # events SimPy scheduled (private counter)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    requests, activations = len(result.requests["request"]), len(result.activations["total_s"])
    ok = int((result.requests["outcome"] == "ok").sum())  # a speed of a fleet that fails
    # most requests says little: the JSON says how much of the load was served
    del sim, result  # the loop should not pay for the simulator's records in GC passes
    gc.collect()

    # The machine's speed drifts (a VM); take the median of three runs of the loop.
    heapq_rates = sorted(
        bare_heapq_loop(controller_events, pending=spec.workload.actors, seed=i) for i in range(3)
    )
    heapq_rate = heapq_rates[1]
    sim_rate = controller_events / wall_s
    report = {
        "scenario": {
            "experiment": spec.experiment,
            "overrides": overrides,
            "actors": spec.workload.actors,
            "workers": spec.workers,
            "nodes": spec.nodes,
            "simulated_s": spec.duration_s,
            "requests": requests,
            "ok_fraction": round(ok / requests, 6) if requests else None,
            "activations": activations,
        },
        "sim": {
            "wall_s": round(wall_s, 2),
            "controller_events": controller_events,
            "simpy_events": simpy_events,
            "controller_events_per_s": round(sim_rate),
            "simpy_events_per_s": round(simpy_events / wall_s),
            "simulated_s_per_wall_s": round(spec.duration_s / wall_s, 1),
            "peak_rss_mib": round(peak_rss_mib),
        },
        "bare_heapq_loop": {
            "events": controller_events,
            "pending": spec.workload.actors,
            "events_per_s": round(heapq_rate),
            "runs_events_per_s": [round(r) for r in heapq_rates],
        },
        "ratio_sim_to_heapq": round(sim_rate / heapq_rate, 4),
        "git_commit": git_commit(),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": __import__("os").cpu_count(),
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    s, sc = report["sim"], report["scenario"]
    print(
        f"scenario: {sc['actors']:,} actors, {sc['workers']:,} workers, {sc['simulated_s']:.0f} s"
    )
    print(
        f"  requests {sc['requests']:,} ({sc['ok_fraction']:.2%} ok), "
        f"activations {sc['activations']:,}"
    )
    print(f"simulator: {s['wall_s']} s wall, {s['controller_events']:,} controller events")
    print(
        f"  {s['controller_events_per_s']:,} controller events/s, "
        f"{s['simpy_events_per_s']:,} SimPy events/s, peak RSS {s['peak_rss_mib']} MiB"
    )
    loop = report["bare_heapq_loop"]
    print(
        f"bare heapq loop: {loop['events_per_s']:,} events/s "
        f"(median of {loop['runs_events_per_s']})"
    )
    print(f"ratio simulator / bare loop: {report['ratio_sim_to_heapq']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
