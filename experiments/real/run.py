"""An experiment on a real backend: real gVisor actors, real Locust, real checks.

The same for every real backend (``backend=local``, ``kind``, ``gke``): the
:class:`backends.protocol.Deployment` makes the driver and says where things are.

1. Materialise the workload into a plan (the requests the simulator plays too), or,
   for closed-loop sessions (``workload.loop=closed``), into their scripts, which
   Locust and the simulator each play against their own answers.
2. Start the backend; make the template's golden snapshot (one cold start and one
   checkpoint) and give every actor that should start with a snapshot a copy of it
   (hard links locally, copies inside the object store on a cluster), so its first
   activation is a restore.
3. Serve the router on 127.0.0.1 and let Locust play the plan against it.
4. Check every actor that got requests: its counter must equal the increments the
   clients saw acknowledged, less what the backend reported lost (``lost_updates``
   counts silent losses only; ``reported_lost_updates`` the reported ones), plus
   ``unacknowledged_updates``; with the agent template the history digest too. Locally
   an independent monitor process checks that no actor ever had two sandboxes alive at
   once (``double_activations``); on a cluster that count is the driver's own, from
   what the worker agents report (``monitor_samples`` is 0 there).
5. Summarise like the simulator, plus those checks and checkpoint/restore percentiles,
   and simulate the same plan for a side-by-side comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pandas as pd

from backends.controlplane import ControlPlane, GoldenImage
from backends.local.router import Router
from backends.protocol import Deployment, Monitor
from backends.state import LossRow
from control.metrics import (
    ACTIVATION_COLUMNS,
    CHECKPOINT_COLUMNS,
    REQUEST_COLUMNS,
    SAMPLE_COLUMNS,
    percentiles,
    table,
    worker_utilization,
)
from experiments.runs.build import RunSpec
from experiments.runs.runner import RunOutput, simulate, summary_of
from sim.engine import RunResult, policy_actions, reliability_counters
from workloads.loadtest import LocustRun, run_locust
from workloads.plan import Plan
from workloads.sessions import ClientCounts, Scripts


@dataclass
class Verification:
    """What reading every actor back found."""

    actors_checked: int
    lost_updates: int  # acknowledged increments missing, and not reported lost (silent)
    unacknowledged_updates: int  # increments the counter has that no client saw succeed
    digest_mismatches: int
    unreadable: int
    reported_lost_updates: int = 0  # acknowledged increments the backend reported lost
    reported_unnamed_updates: int = 0  # missing from actors with a loss it could not name


@dataclass
class PlanWindow:
    """Occupied worker-seconds, control-plane calls and provisioned worker-seconds (the
    pool, which the scaling policy may change) over the plan's window (from the start
    of the load to ``duration_s`` later, not the drain after it), as the simulator
    measures them: taken when the window ends, or at :meth:`close` if the load ended
    first."""

    backend: ControlPlane
    start_s: float
    occupied_from: float
    calls_from: int
    provisioned_from: float = 0.0
    taken: tuple[float, int, float] | None = None
    timer: asyncio.TimerHandle | None = None

    @classmethod
    def open(cls, backend: ControlPlane, duration_s: float) -> PlanWindow:
        """Start the window now."""
        start = backend.now()
        window = cls(backend, start, backend.ctl.occupied_worker_seconds(start),
                     backend.control_plane_calls,
                     backend.ctl.provisioned_worker_seconds(start))  # fmt: skip
        window.timer = asyncio.get_running_loop().call_later(duration_s, window._take)
        return window

    def _take(self) -> None:
        if self.taken is None:
            now = self.backend.now()
            self.taken = (
                self.backend.ctl.occupied_worker_seconds(now) - self.occupied_from,
                self.backend.control_plane_calls - self.calls_from,
                self.backend.ctl.provisioned_worker_seconds(now) - self.provisioned_from,
            )

    def close(self) -> tuple[float, int, float]:
        """Occupied worker-seconds, control-plane calls and provisioned worker-seconds
        in the window."""
        if self.timer is not None:
            self.timer.cancel()
        self._take()
        assert self.taken is not None
        return self.taken


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


def real_snapshot_bytes(
    planned: np.ndarray,
    templates: dict[str, str],
    golden: dict[str, int],
    checkpoints: dict[str, Any],
) -> np.ndarray:
    """Each actor's snapshot size as the run measured it, for the simulator to use:
    its template's golden image, else that template's median checkpoint, else as
    planned. ``templates`` maps actor ids, in population order, to templates."""
    sizes = np.asarray(planned, dtype=np.int64).copy()
    written: dict[str, list[int]] = {}
    for actor, size in zip(checkpoints["actor"], checkpoints["snapshot_bytes"], strict=True):
        written.setdefault(templates[str(actor)], []).append(int(size))
    for i, t in enumerate(templates.values()):
        if t in golden:
            sizes[i] = golden[t]
        elif t in written:
            sizes[i] = int(np.median(written[t]))
    return sizes


def verify(
    records: pd.DataFrame,
    held: dict[str, dict[str, Any] | None],
    template: str,
    reported: Mapping[str, set[str]] | None = None,
    unnamed: set[str] | None = None,
) -> Verification:
    """Compare what each actor holds with what the clients saw acknowledged (``records``
    in the requests schema); ``reported`` maps actors to the ids of requests the
    backend reported lost (those are missing by account, not silently); ``unnamed``
    are actors with a reported loss whose requests it could not all name (what they
    miss is reported, though not by id)."""
    ok = records[records["outcome"] == "ok"]
    acked: dict[str, set[str]] = {}
    for actor, request in zip(ok["actor"], ok["request"], strict=True):
        acked.setdefault(str(actor), set()).add(str(request))
    reported = reported or {}
    unnamed = unnamed or set()
    lost = extra = digests = unreadable = reported_lost = reported_unnamed = 0
    for actor, state in held.items():
        if state is None:
            unreadable += 1
            continue
        count = int(state["count"])
        mine = acked.get(actor, set())
        gone = mine & reported.get(actor, set())
        reported_lost += len(gone)
        missing = max(0, len(mine) - len(gone) - count)
        if actor in unnamed:
            reported_unnamed += missing
        else:
            lost += missing
        extra += max(0, count - (len(mine) - len(gone)))
        if template.startswith("agent") and state.get("digest") != expected_digest(count):
            digests += 1
    return Verification(
        len(held), lost, extra, digests, unreadable, reported_lost, reported_unnamed
    )


def reported_losses(losses: list[LossRow]) -> dict[str, set[str]]:
    """Actor -> ids of requests the backend reported lost."""
    found: dict[str, set[str]] = {}
    for loss in losses:
        found.setdefault(loss.actor, set()).update(loss.requests)
    return found


def unnamed_losses(losses: list[LossRow]) -> set[str]:
    """Actors with a reported loss whose acknowledged requests are not all named."""
    return {loss.actor for loss in losses if not loss.known}


@dataclass
class RealOutput:
    """A real run's summary, records and the comparison with the simulator."""

    output: RunOutput
    plan: Plan | Scripts  # what was played, with each actor's snapshot size as measured
    locust: LocustRun
    verification: Verification
    simulated: RunOutput


async def _run(
    spec: RunSpec, deployment: Deployment, plan: Plan | Scripts, out_dir: Path
) -> tuple[RunOutput, LocustRun, Verification, np.ndarray]:
    backend = deployment.make_backend(spec.make_controller(deployment.recovery(spec.recovery)))
    router = Router(backend, domain=deployment.actor_domain, limits=deployment.router)
    monitor: Monitor | None = None
    workers = deployment.workers
    started_wall = time.perf_counter()
    try:
        await backend.prepare()
        pop = plan.population
        chosen = deployment.actor_templates(len(pop))
        templates = dict(zip(pop.ids, chosen, strict=True))
        golden: dict[str, GoldenImage] = {}
        if (pop.snapshot_version > 0).any():
            for t in sorted(set(templates.values())):
                print(f"making the golden snapshot of {t} ...", file=sys.stderr, flush=True)
                golden[t] = await backend.golden_image(t)
        for i, actor in enumerate(pop.ids):
            start_from = golden[templates[actor]] if pop.snapshot_version[i] else None
            owner = pop.owners[i] if pop.owners is not None else ""
            await backend.add_actor(actor, templates[actor], golden=start_from, owner=owner)
        backend.open()
        await backend.wait_for_workers(workers, timeout_s=600.0)
        await router.start(deployment.port)
        monitor = deployment.start_monitor(backend, out_dir / "monitor.jsonl")
        print(
            f"playing {len(plan):,} {'script calls' if isinstance(plan, Scripts) else 'requests'}"
            f" to {len(pop):,} actors on {workers} "
            f"workers ({deployment.name}) for {plan.duration_s:g} s ...",
            file=sys.stderr,
            flush=True,
        )
        load_start = backend.now()
        window = PlanWindow.open(backend, plan.duration_s)
        locust = await asyncio.to_thread(
            run_locust,
            plan,
            f"http://127.0.0.1:{deployment.port}",
            out_dir / "locust",
            actor_domain=deployment.actor_domain,
            request_timeout_s=deployment.request_timeout_s + 30,
        )
        occupied, cp_calls, provisioned = window.close()
        scaled = backend.ctl.scaling is not None
        # Requests the agents stopped waiting for are still being carried out: as in the
        # simulator, the run drains until every request has ended (and is recorded).
        drain_until = backend.now() + deployment.request_timeout_s + 30
        while backend.ctl.open_requests and backend.now() < drain_until:
            await asyncio.sleep(0.05)
        backend.sample()
        rec = backend.records
        n_req, n_act, n_ckpt, n_samples = (
            len(rec.requests),
            len(rec.activations),
            len(rec.checkpoints),
            len(rec.samples),
        )
        requested = sorted({str(actor) for actor in locust.records["actor"]})
        print(f"reading back {len(requested)} actors ...", file=sys.stderr, flush=True)
        held = await read_back(deployment.port, deployment.actor_domain, requested,
                               parallel=workers)  # fmt: skip
        watched = await asyncio.to_thread(monitor.stop) if monitor is not None else None
        monitor = None  # stopped
        losses = list(backend.records.losses)
        verification = verify(
            locust.records, held, deployment.template, reported_losses(losses),
            unnamed_losses(losses),
        )  # fmt: skip
        sizes = real_snapshot_bytes(
            pop.snapshot_bytes,
            templates,
            {t: image.bytes for t, image in golden.items()},
            table(CHECKPOINT_COLUMNS, rec.checkpoints[:n_ckpt]),
        )
        double_driver = backend.double_activations()
        result = RunResult(
            requests=_shift(table(REQUEST_COLUMNS, rec.requests[:n_req]), "arrival_s", load_start),
            activations=_shift(
                table(ACTIVATION_COLUMNS, rec.activations[:n_act]), "start_s", load_start
            ),
            checkpoints=_shift(
                table(CHECKPOINT_COLUMNS, rec.checkpoints[:n_ckpt]), "start_s", load_start
            ),
            samples=_shift(table(SAMPLE_COLUMNS, rec.samples[:n_samples]), "t_s", load_start),
            actors=len(pop),
            workers=workers,
            duration_s=plan.duration_s,
            worker_utilization=(
                occupied / provisioned
                if scaled and provisioned > 0
                else worker_utilization(occupied, workers, plan.duration_s)
            ),
            provisioned_worker_s=provisioned if scaled else None,
            control_plane_calls=cp_calls,
            events=backend.ctl.stats.events,
            reliability=reliability_counters(
                backend.ctl, {}, ClientCounts(**locust.client) if locust.client else None
            ),
            policy_actions=policy_actions(backend.ctl),
        )
    finally:
        if monitor is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(monitor.stop)
        await router.close()
        await backend.close(save=False)
        deployment.after_run()
    summary = summary_of(
        result, spec, backend=deployment.name, wall_s=time.perf_counter() - started_wall
    )
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
            # the independent monitor where there is one, else the driver's account
            "double_activations": double_driver if watched is None else watched.double_activations,
            "double_activations_driver": double_driver,  # the driver's own account
            "monitor_samples": 0 if watched is None else watched.samples,
            "monitor_max_gap_s": None if watched is None else watched.max_gap_s,
            "monitor_gaps_over_100ms": 0 if watched is None else watched.gaps_over_100ms,
            "reported_lost_updates": verification.reported_lost_updates,
            "reported_unnamed_updates": verification.reported_unnamed_updates,
            "losses_reported": len(losses),
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
            "template": deployment.template,
        }
    )
    return RunOutput(summary, result), locust, verification, sizes


def _shift(table: dict[str, np.ndarray], column: str, by: float) -> dict[str, np.ndarray]:
    """Times relative to the start of the load (the simulator's time 0)."""
    if len(table[column]):
        table[column] = np.asarray(table[column], dtype=float) - by
    return table


def run_real_experiment(spec: RunSpec, deployment: Deployment, out_dir: Path) -> RealOutput:
    """Run ``spec`` for real (see the module docstring); the simulator plays the same plan."""
    duration = deployment.duration_s or spec.duration_s
    spec = replace(spec, duration_s=duration)
    plan: Plan | Scripts
    if getattr(spec.workload, "loop", "open") == "closed":
        plan = spec.workload.scripts(duration, spec.seed)  # type: ignore[attr-defined]
    else:
        plan = Plan.materialize(spec.workload, duration, spec.seed)
    deployment.before_run()  # leftovers of an earlier crash
    output, locust, verification, sizes = asyncio.run(_run(spec, deployment, plan, out_dir))
    # The simulator plays the same requests with the snapshot sizes the run measured.
    played = replace(plan, population=replace(plan.population, snapshot_bytes=sizes))
    simulated = simulate(replace(spec, workload=played, progress=False))
    return RealOutput(output, played, locust, verification, simulated)
