"""An experiment on the local backend: real gVisor actors, real Locust, real checks.

1. Materialise the workload into a plan (the requests the simulator plays too).
2. Start the backend; make the template's golden snapshot (one cold start and one
   checkpoint) and give every actor that should start with a snapshot a hard-linked
   copy of it, so its first activation is a restore.
3. Serve the router on 127.0.0.1 and let Locust play the plan against it.
4. Check every actor that got requests: its counter must equal the increments the
   clients saw acknowledged (``lost_updates``, ``unacknowledged_updates``); with the
   agent template the history digest too. Check that no actor ever had two sandboxes
   alive at once (``double_activations``).
5. Summarise like the simulator, plus those checks and checkpoint/restore percentiles,
   and simulate the same plan for a side-by-side comparison.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from backends.local.cleanup import cleanup
from backends.local.driver import LocalBackend
from backends.local.router import data_app
from backends.local.settings import LocalConfig
from control.metrics import (
    ACTIVATION_COLUMNS,
    CHECKPOINT_COLUMNS,
    REQUEST_COLUMNS,
    SAMPLE_COLUMNS,
    percentiles,
)
from experiments.build import RunSpec
from experiments.runner import RunOutput, simulate, summary_of
from experiments.serve import start_site
from sim.engine import RunResult
from workloads.loadtest import LocustRun, run_locust
from workloads.plan import Plan


@dataclass
class Verification:
    """What reading every actor back found."""

    actors_checked: int
    lost_updates: int  # acknowledged increments missing from the counter
    unacknowledged_updates: int  # increments the counter has that no client saw succeed
    digest_mismatches: int
    unreadable: int


def _table(columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> dict[str, np.ndarray]:
    if not rows:
        return {c: np.empty(0) for c in columns}
    return {c: np.asarray(v) for c, v in zip(columns, zip(*rows, strict=True), strict=True)}


def expected_digest(count: int) -> str:
    """The agent template's digest after ``count`` empty POST bodies."""
    digest = hashlib.sha256()
    for _ in range(count):
        digest.update(b"\n")
    return digest.hexdigest()


async def read_back(
    port: int, domain: str, actors: list[str], parallel: int
) -> dict[str, dict[str, Any] | None]:
    """GET every actor through the router (activating it), ``parallel`` at a time,
    retrying 503/504 a few times: the answers are what each actor holds."""
    found: dict[str, dict[str, Any] | None] = {}
    gate = asyncio.Semaphore(parallel)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(actor: str) -> None:
            async with gate:
                for _ in range(10):
                    async with session.get(
                        f"http://127.0.0.1:{port}/", headers={"Host": f"{actor}.{domain}"}
                    ) as resp:
                        if resp.status == 200:
                            found[actor] = await resp.json()
                            return
                    await asyncio.sleep(0.5)
                found[actor] = None

        await asyncio.gather(*(one(a) for a in actors))
    return found


def verify(
    plan: Plan, locust: LocustRun, held: dict[str, dict[str, Any] | None], template: str
) -> Verification:
    """Compare what each actor holds with what the clients saw acknowledged."""
    ok = locust.records[locust.records["outcome"] == "ok"]
    acked = Counter(ok["actor"].tolist())
    lost = extra = digests = unreadable = 0
    for actor, state in held.items():
        if state is None:
            unreadable += 1
            continue
        count = int(state["count"])
        lost += max(0, acked[actor] - count)
        extra += max(0, count - acked[actor])
        if template == "agent" and state.get("digest") != expected_digest(count):
            digests += 1
    return Verification(len(held), lost, extra, digests, unreadable)


@dataclass
class LocalOutput:
    """A real run's summary, records and the comparison with the simulator."""

    output: RunOutput
    locust: LocustRun
    verification: Verification
    simulated: RunOutput


async def _run(
    spec: RunSpec, lc: LocalConfig, plan: Plan, out_dir: Path
) -> tuple[RunOutput, LocustRun, Verification]:
    backend = LocalBackend(lc.settings, spec.make_controller())
    runner = None
    started_wall = time.perf_counter()
    try:
        await backend.prepare()
        pop = plan.population
        golden = None
        if (pop.snapshot_version > 0).any():
            print("making the golden snapshot ...", file=sys.stderr, flush=True)
            golden = await backend.golden_image(lc.template)
        backend.open()
        for i, actor in enumerate(pop.ids):
            backend.create_actor(
                actor, lc.template, golden=golden if pop.snapshot_version[i] else None
            )
        runner = await start_site(
            data_app(backend, domain=lc.actor_domain, max_body_bytes=lc.max_body_bytes), lc.port
        )
        print(
            f"playing {len(plan):,} requests to {len(pop):,} actors on {lc.settings.workers} "
            f"workers for {plan.duration_s:g} s ...",
            file=sys.stderr,
            flush=True,
        )
        load_start = backend.now()
        occupied_start = backend.ctl.occupied_worker_seconds(load_start)
        locust = await asyncio.to_thread(
            run_locust,
            plan,
            f"http://127.0.0.1:{lc.port}",
            out_dir / "locust",
            actor_domain=lc.actor_domain,
            request_timeout_s=lc.settings.request_timeout_s + 30,
        )
        load_end = backend.now()
        occupied = backend.ctl.occupied_worker_seconds(load_end) - occupied_start
        backend.sample()
        rec = backend.records
        n_req, n_act, n_ckpt, n_samples = (
            len(rec.requests),
            len(rec.activations),
            len(rec.checkpoints),
            len(rec.samples),
        )
        requested = sorted(set(np.asarray(pop.ids)[plan.actors].tolist()))
        print(f"reading back {len(requested)} actors ...", file=sys.stderr, flush=True)
        held = await read_back(lc.port, lc.actor_domain, requested, parallel=lc.settings.workers)
        verification = verify(plan, locust, held, lc.template)
        double = backend.double_activations()
        cp_calls = backend.control_plane_calls
        result = RunResult(
            requests=_shift(_table(REQUEST_COLUMNS, rec.requests[:n_req]), "arrival_s", load_start),
            activations=_shift(
                _table(ACTIVATION_COLUMNS, rec.activations[:n_act]), "start_s", load_start
            ),
            checkpoints=_shift(
                _table(CHECKPOINT_COLUMNS, rec.checkpoints[:n_ckpt]), "start_s", load_start
            ),
            samples=_shift(_table(SAMPLE_COLUMNS, rec.samples[:n_samples]), "t_s", load_start),
            actors=len(pop),
            workers=lc.settings.workers,
            duration_s=plan.duration_s,
            worker_utilization=occupied / (lc.settings.workers * (load_end - load_start)),
            control_plane_calls=cp_calls,
            events=backend.ctl.stats.events,
        )
    finally:
        if runner is not None:
            await runner.cleanup()
        await backend.close(save=False)
        cleanup(lc.settings.instance)
        shutil.rmtree(lc.settings.state_dir, ignore_errors=True)  # this run's snapshots
    summary = summary_of(result, spec, backend="local", wall_s=time.perf_counter() - started_wall)
    acts = result.activations
    cold = acts["cold"].astype(bool) if len(acts["total_s"]) else np.zeros(0, bool)
    client = locust.records
    summary.update(
        {
            "lost_updates": verification.lost_updates,
            "unacknowledged_updates": verification.unacknowledged_updates,
            "digest_mismatches": verification.digest_mismatches,
            "unreadable_actors": verification.unreadable,
            "verified_actors": verification.actors_checked,
            "double_activations": double,
            "restore_latency_s": percentiles(acts["total_s"][~cold])
            if cold.size
            else percentiles([]),
            "cold_start_latency_s": percentiles(acts["total_s"][cold])
            if cold.size
            else percentiles([]),
            "checkpoint_latency_s": percentiles(result.checkpoints["total_s"]),
            "snapshot_mib": percentiles(np.asarray(result.checkpoints["snapshot_bytes"]) / 2**20),
            "client_requests": len(client),
            "client_ok": int((client["outcome"] == "ok").sum()),
            "client_request_latency_s": percentiles(
                client.loc[client["outcome"] == "ok", "total_s"]
            ),
            "template": lc.template,
        }
    )
    return RunOutput(summary, result), locust, verification


def _shift(table: dict[str, np.ndarray], column: str, by: float) -> dict[str, np.ndarray]:
    """Times relative to the start of the load (the simulator's time 0)."""
    if len(table[column]):
        table[column] = np.asarray(table[column], dtype=float) - by
    return table


def run_local_experiment(spec: RunSpec, lc: LocalConfig, out_dir: Path) -> LocalOutput:
    """Run ``spec`` for real (see the module docstring); the simulator plays the same plan."""
    duration = lc.duration_s or spec.duration_s
    spec = replace(spec, duration_s=duration)
    plan = Plan.materialize(spec.workload, duration, spec.seed)
    cleanup(lc.settings.instance)  # leftovers of an earlier crash of this instance
    output, locust, verification = asyncio.run(_run(spec, lc, plan, out_dir))
    return LocalOutput(output, locust, verification, simulate(replace(spec, progress=False)))
