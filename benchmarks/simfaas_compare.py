"""Simulated requests per wall second: actormux beside SimFaaS on the same offered load.

SimFaaS 0.2.2 (``pip install simfaas``, an optional benchmark dependency: ``make
.venv/.bench``) simulates one serverless function: Poisson arrivals at
``arrival_rate``, exponential warm and cold service times, an instance kept warm for
``expiration_threshold`` seconds after its last request. Its own example: 0.9 req/s,
warm 2.016 s, cold 2.163 s, 600 s.

actormux plays the same load on its agent model: ``actors`` actors, one call per turn,
exponential think times so that the actors together send ``arrival_rate`` requests per
second (a Poisson process), exponential service of 2.016 s, actors kept running for
600 s after a request (``policy/suspension=idle_timeout``), and enough workers that no
request waits for one (warm unless the actor was suspended, then a restore: its cold
start). Both run for the simulated time that makes ``requests`` requests.

The difference in what is modelled: SimFaaS's instances are interchangeable (any warm
instance serves any request) and it scans every instance at every transition, so its
cost per request grows with the instances alive; actormux's actors each hold their own
state, and the simulator also models the control plane, the node CPUs and links, the
snapshot store and caches. The rates are therefore compared at several loads; the
goal (>= 3x) is judged at the headline scale (250 actors, 10 req/s), and the JSON has
every load.

    .venv/bin/python benchmarks/simfaas_compare.py            # writes results/simfaas.json
    .venv/bin/python benchmarks/simfaas_compare.py --rates 0.9 10 --requests 20000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments.runs.build import build  # noqa: E402
from experiments.runs.runner import make_simulation  # noqa: E402

WARM_S, COLD_S, KEEP_S = 2.016, 2.163, 600.0  # SimFaaS's example
GOAL = 3.0
HEADLINE_RATE = 10.0


def simfaas_rate(arrival_rate: float, simulated_s: float) -> tuple[int, float]:
    """Requests SimFaaS simulated and its wall seconds."""
    from simfaas.ServerlessSimulator import ServerlessSimulator

    sim = ServerlessSimulator(
        arrival_rate=arrival_rate, warm_service_rate=1 / WARM_S, cold_service_rate=1 / COLD_S,
        expiration_threshold=KEEP_S, max_time=simulated_s,
    )  # fmt: skip
    started = time.perf_counter()
    sim.generate_trace(debug_print=False, progress=False)
    return sim.total_req_count, time.perf_counter() - started


def actormux_rate(arrival_rate: float, simulated_s: float, actors: int) -> tuple[int, float, float]:
    """Requests actormux simulated, its wall seconds, and the share that succeeded."""
    mean_think = actors / arrival_rate  # the actors together: arrival_rate per second
    overrides = [
        "workload=bursty", f"workload.actors={actors}", "workload.calls_per_turn=1",
        f"workload.think_time='exponential(mean={mean_think})'",
        f"workload.service='exponential(mean={WARM_S})'",
        "policy/suspension=idle_timeout", f"policy.suspension.ttl_s={KEEP_S}",
        f"cluster.workers={actors}", f"cluster.nodes={max(1, actors // 25)}",
        f"duration_s={simulated_s}", "backend.progress=false", "backend.sample_interval_s=10",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        spec = build(compose("config", overrides=overrides))
    sim = make_simulation(spec)
    started = time.perf_counter()
    result = sim.run()
    wall_s = time.perf_counter() - started
    outcomes = result.requests["outcome"]
    return len(outcomes), wall_s, float((outcomes == "ok").mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/simfaas.json")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.9, HEADLINE_RATE, 100.0])
    parser.add_argument("--requests", type=int, default=100_000, help="per run, about")
    parser.add_argument("--actors", type=int, default=250)
    args = parser.parse_args()
    try:
        import simfaas  # noqa: F401
    except ImportError:
        sys.exit("simfaas is not installed: make .venv/.bench (or pip install simfaas==0.2.2)")

    loads = []
    for rate in args.rates:
        simulated_s = args.requests / rate
        theirs, their_wall = simfaas_rate(rate, simulated_s)
        ours, our_wall, ok = actormux_rate(rate, simulated_s, args.actors)
        load = {
            "arrival_rate": rate,
            "simulated_s": simulated_s,
            "simfaas": {"requests": theirs, "wall_s": round(their_wall, 2),
                        "requests_per_wall_s": round(theirs / their_wall)},
            "actormux": {"requests": ours, "wall_s": round(our_wall, 2), "ok_fraction": ok,
                         "requests_per_wall_s": round(ours / our_wall)},
            "ratio": round((ours / our_wall) / (theirs / their_wall), 2),
        }  # fmt: skip
        loads.append(load)
        print(
            f"{rate:>6} req/s: SimFaaS {load['simfaas']['requests_per_wall_s']:>8,} req/wall-s, "
            f"actormux {load['actormux']['requests_per_wall_s']:>8,} ({ok:.2%} ok): "
            f"x{load['ratio']}",
            flush=True,
        )
    headline = next((load for load in loads if load["arrival_rate"] == HEADLINE_RATE), None)
    report = {
        "scenario": {"actors": args.actors, "warm_s": WARM_S, "cold_s": COLD_S,
                     "keep_warm_s": KEEP_S, "requests_per_run": args.requests},
        "loads": loads,
        "goal": {"ratio_at_least": GOAL, "arrival_rate": HEADLINE_RATE,
                 "ratio": headline["ratio"] if headline else None,
                 "met": bool(headline and headline["ratio"] >= GOAL)},
        "simfaas_version": _version("simfaas"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
