"""Capacity planning: the fewest workers that meet an SLO, found by simulation.

``plan(overrides, actors=..., slo=...)`` simulates the configured workload and
policies for ``actors`` actors and searches for the smallest worker count whose runs
meet the SLO for *every* seed in ``seeds`` (so one lucky seed does not decide): it
doubles the workers until the SLO holds, then bisects. More workers never make the
modelled system worse, which the search relies on. Nodes grow with the workers
(``workers_per_node``), so CPU contention per node stays as on the calibrated machine.

``actormux plan [overrides] plan.actors=[250,1000,10000]`` prints the answer.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from experiments.app import exit_bad_config
from experiments.paths import CONF_DIR
from experiments.runs.build import ConfigError, build
from experiments.runs.runner import simulate


@dataclass(frozen=True)
class SLO:
    """What "good enough" means: activation p99 and the share of failed requests."""

    activation_p99_s: float = 1.0
    max_failed_fraction: float = 0.001

    def met(self, summary: dict[str, Any]) -> bool:
        """Does one run's summary meet the SLO?"""
        requests = summary["requests"] or 1
        failed = (summary["rejected"] + summary["timed_out"]) / requests
        p99 = summary["activation_latency_s"]["p99"]
        return failed <= self.max_failed_fraction and (p99 is None or p99 <= self.activation_p99_s)


@dataclass
class Trial:
    """One simulated run of the search."""

    workers: int
    seed: int
    activation_p99_s: float | None
    failed_fraction: float
    met: bool
    resources: dict[str, float | None] = field(default_factory=dict)  # utilization


@dataclass
class PlanResult:
    """The answer, and every run that led to it."""

    actors: int
    workers: int | None  # None: not met even at max_workers
    slo: SLO
    trials: list[Trial] = field(default_factory=list)

    @property
    def oversubscription(self) -> float | None:
        """Actors per worker at the answer."""
        return None if not self.workers else self.actors / self.workers

    def utilization(self, workers: int) -> dict[str, float]:
        """Each resource's utilization at ``workers``, the mean over the seeds tried."""
        runs = [t.resources for t in self.trials if t.workers == workers and t.resources]
        names = [n for n in (runs[0] if runs else {}) if all(r.get(n) is not None for r in runs)]
        return {n: sum(float(r[n]) for r in runs) / len(runs) for n in names}  # type: ignore[arg-type]

    def binding(self) -> tuple[int, str, float] | None:
        """What binds: at the most workers that missed the SLO (at the answer if none
        did), the resource nearest its capacity, as (workers, resource, utilization)."""
        missed = [t.workers for t in self.trials if not t.met]
        at = max(missed) if missed else self.workers
        if at is None:
            return None
        used = self.utilization(at)
        if not used:
            return None
        name = max(used, key=used.__getitem__)
        return at, name, used[name]


Evaluate = Callable[[int, int], dict[str, Any]]


def search(
    actors: int,
    evaluate: Evaluate,
    slo: SLO,
    seeds: Sequence[int],
    max_workers: int,
    *,
    tolerance: float = 0.0,
) -> PlanResult:
    """Doubling, then bisection, over worker counts (``evaluate(workers, seed)`` -> summary).

    With ``tolerance`` > 0 the bisection stops once the known-bad and known-good counts
    are within that fraction of the good one: the answer meets the SLO and is at most
    that much above the fewest workers that do (fewer runs for huge fleets)."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance: must be in [0, 1) (got {tolerance})")
    if not seeds:
        raise ValueError("seeds: give at least one")
    result = PlanResult(actors, None, slo)
    verdicts: dict[int, bool] = {}

    def ok(workers: int) -> bool:
        if workers not in verdicts:
            good = True
            for seed in seeds:
                s = evaluate(workers, seed)
                requests = s["requests"] or 1
                met = slo.met(s)
                failed = (s["rejected"] + s["timed_out"]) / requests
                p99 = s["activation_latency_s"]["p99"]
                resources = dict(s.get("resources") or {})
                result.trials.append(Trial(workers, seed, p99, failed, met, resources))
                if not met:
                    good = False
                    break  # one failing seed is enough
            verdicts[workers] = good
        return verdicts[workers]

    hi = max(1, min(max_workers, math.ceil(actors / 64)))
    lo = 0  # largest known-bad worker count
    while not ok(hi):
        if hi >= max_workers:
            return result
        lo, hi = hi, min(max_workers, hi * 2)
    while hi - lo > max(1, math.floor(tolerance * hi)):
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    result.workers = hi
    return result


def plan(
    overrides: Sequence[str],
    *,
    actors: int,
    slo: SLO,
    seeds: Sequence[int] = (0, 1, 2),
    workers_per_node: int = 8,
    max_workers: int | None = None,
    tolerance: float = 0.0,
) -> PlanResult:
    """The fewest workers for ``actors`` actors under the configured workload and policies."""

    def evaluate(workers: int, seed: int) -> dict[str, Any]:
        nodes = max(1, math.ceil(workers / workers_per_node))
        run = [
            *overrides,
            f"workload.actors={actors}",
            f"cluster.workers={workers}",
            f"cluster.nodes={nodes}",
            f"seed={seed}",
            "backend.progress=false",
        ]
        if GlobalHydra.instance().is_initialized():  # inside a Hydra app
            cfg = compose("config", overrides=run)
        else:
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                cfg = compose("config", overrides=run)
        return simulate(build(cfg)).summary

    return search(actors, evaluate, slo, seeds, max_workers or actors, tolerance=tolerance)


def _checked(p: DictConfig) -> dict[str, Any]:
    """The ``plan`` section, checked (ConfigError naming the field otherwise)."""

    def number(key: str, lo: float, hi: float, *, integer: bool = False) -> Any:
        value = p.get(key)
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not lo <= value <= hi:
            what = "an integer" if integer else "a number"
            raise ConfigError(f"plan.{key}: must be {what} in [{lo}, {hi}] (got {value!r})")
        return value

    actors = p.get("actors")
    if (
        not isinstance(actors, Sequence)
        or not actors
        or not all(isinstance(a, int) and not isinstance(a, bool) and a >= 1 for a in actors)
    ):
        raise ConfigError(f"plan.actors: must be a list of integers >= 1 (got {actors!r})")
    max_workers = p.get("max_workers")
    if max_workers is not None:
        max_workers = number("max_workers", 1, 10**9, integer=True)
    return {
        "actors": [int(a) for a in actors],
        "slo": SLO(number("activation_p99_s", 1e-9, math.inf), number("max_failed_fraction", 0, 1)),
        "seeds": range(number("seeds", 1, 1000, integer=True)),
        "workers_per_node": number("workers_per_node", 1, 10_000, integer=True),
        "max_workers": max_workers,
        "tolerance": float(number("tolerance", 0, 0.5)),
    }


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def run_plan(cfg: DictConfig) -> None:
    """``actormux plan``: answer for each of ``plan.actors``."""
    try:
        p = _checked(OmegaConf.to_container(cfg.plan, resolve=True))  # type: ignore[arg-type]
        build(cfg)  # the rest of the config, checked before any search
    except ConfigError as e:
        exit_bad_config(e)
    slo = p["slo"]
    overrides = [o for o in _task_overrides() if not o.lstrip("+~").startswith(_PLANNED)]
    tolerance = f", answers within {100 * p['tolerance']:g}%" if p["tolerance"] else ""
    print(
        f"SLO: activation p99 <= {slo.activation_p99_s} s and failed <= "
        f"{100 * slo.max_failed_fraction:g}% in each of {len(p['seeds'])} seeds{tolerance}"
    )
    for actors in p["actors"]:
        result = plan(
            overrides,
            actors=actors,
            slo=slo,
            seeds=p["seeds"],
            workers_per_node=p["workers_per_node"],
            max_workers=p["max_workers"],
            tolerance=p["tolerance"],
        )
        tried = sorted({t.workers for t in result.trials})
        answer = "not met" if result.workers is None else f"{result.workers} workers"
        over = "" if result.oversubscription is None else f" ({result.oversubscription:.1f}x)"
        print(f"{actors:>8,} actors: {answer}{over}  (tried {tried})", flush=True)
        binds = result.binding()
        if binds is not None:
            at, name, used = binds
            where = "the answer" if at == result.workers else f"{at} workers (SLO missed)"
            shares = ", ".join(f"{n} {u:.2f}" for n, u in result.utilization(at).items())
            print(f"{'':>10}what binds at {where}: {name} ({used:.0%} of capacity); "
                  f"utilization: {shares}", flush=True)  # fmt: skip


_PLANNED = ("plan.", "hydra.", "workload.actors", "cluster.", "seed")  # set by the search


def _task_overrides() -> list[str]:
    """The command line's overrides of the running Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    task = HydraConfig.get().overrides.task
    return [str(o) for o in OmegaConf.to_container(task)]  # type: ignore[union-attr]


if __name__ == "__main__":  # pragma: no cover
    run_plan()
    sys.exit(0)
