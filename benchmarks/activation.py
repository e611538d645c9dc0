"""Activation and router overhead on real gVisor sandboxes. Writes JSON.

Three measurements, in one run on this machine:

1. **Activation through the router vs bare runsc restore.** A counter actor is
   suspended, then one request is sent through the router (held while the actor is
   restored, then served): client-side latency. Interleaved with it, the same
   snapshot is restored with a bare ``runsc restore`` into a namespace outside the
   controller's pool and polled until its first HTTP reply. Goal: p50 ratio <= 1.2.
2. **Warm-request overhead.** With the actor running, requests through the router vs
   straight to the actor's address, both with a fresh connection that the client
   closes (as the router does). Goal: router - direct <= 2 ms at p50.
3. **p99 activation at 250-on-8**: the real experiment's summary
   (``actormux experiment=oversub_250_on_8 backend=local``), unless ``--skip-250``.

Needs Linux, root and runsc.

    .venv/bin/python benchmarks/activation.py [--rounds 20] [--warm 300] [--skip-250]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.gvisor import netns  # noqa: E402
from backends.gvisor.httpclient import ActorHTTPError, request  # noqa: E402
from backends.gvisor.names import WorkerNames  # noqa: E402
from backends.local.cleanup import cleanup  # noqa: E402
from backends.local.driver import LocalBackend, LocalSettings  # noqa: E402
from backends.local.router import Router, RouterLimits  # noqa: E402
from backends.local.settings import runsc_unusable_reason  # noqa: E402
from control.controller import Controller  # noqa: E402
from control.messages import SuspendRequested  # noqa: E402
from control.metrics import percentiles  # noqa: E402
from control.policies import Lazy, LruPlacement, QueueWithDeadline  # noqa: E402

INSTANCE = 8
PORT = 18700


async def _until_reply(ip: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (await request(ip, port, "GET", "/healthz", timeout=2.0)).status == 200:
                return
        except ActorHTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("no reply")
        await asyncio.sleep(0.005)


async def measure(rounds: int, warm: int, state: Path) -> dict[str, object]:
    settings = LocalSettings(
        state_dir=state, runtime_dir=Path(f"/run/actormux/{INSTANCE}"), instance=INSTANCE,
        workers=1,
    )  # fmt: skip
    backend = LocalBackend(
        settings, Controller(LruPlacement(), Lazy(), QueueWithDeadline(30), router_timeout_s=60)
    )
    bare = WorkerNames(INSTANCE, 1)  # outside the controller's pool
    router = Router(backend, domain="actors.local", limits=RouterLimits())
    try:
        await backend.prepare()
        await netns.create(bare)
        bundle = backend.write_bundle(backend.templates["counter"], bare)  # the same sandbox
        backend.open()
        backend.create_actor("bench", "counter")
        await router.start(PORT)
        host = "bench.actors.local"
        await request("127.0.0.1", PORT, "POST", "/", host_header=host)  # cold start
        via_router, bare_restore = [], []
        for i in range(rounds):
            backend.admin(SuspendRequested("bench"))
            while backend.ctl.actor("bench").state != "suspended":
                await asyncio.sleep(0.01)
            version = backend.ctl.actor("bench").snapshot_version
            start = time.perf_counter()
            answer = await request("127.0.0.1", PORT, "GET", "/", host_header=host, timeout=60)
            via_router.append(time.perf_counter() - start)
            assert answer.status == 200, answer
            # the same snapshot, restored bare (no controller, no router)
            cid = f"bare-{i}"
            await netns.restore_address(bare)
            start = time.perf_counter()
            await backend.runsc.restore(cid, backend.store.path("bench", version), bundle,
                                        bare.netns_path, backend._log(cid))  # fmt: skip
            await _until_reply(bare.actor_ip, settings.actor_port)
            bare_restore.append(time.perf_counter() - start)
            await backend.runsc.kill(cid, bare.netns_path)
            await backend.runsc.delete(cid, bare.netns_path)
        # warm: the actor is running now
        ip, port = backend.address(backend.ctl.actor("bench").worker or "w0")
        routed, direct = [], []
        for _ in range(warm):
            start = time.perf_counter()
            await request("127.0.0.1", PORT, "GET", "/", host_header=host)
            routed.append(time.perf_counter() - start)
            start = time.perf_counter()
            await request(ip, port, "GET", "/")
            direct.append(time.perf_counter() - start)
    finally:
        await router.close()
        await backend.close(save=False)
        await netns.delete(bare)
    ratio = statistics.median(via_router) / statistics.median(bare_restore)
    overhead_ms = 1000 * (statistics.median(routed) - statistics.median(direct))
    return {
        "activation_via_router_s": percentiles(via_router),
        "bare_runsc_restore_to_first_reply_s": percentiles(bare_restore),
        "activation_p50_ratio": round(ratio, 3),
        "activation_ratio_goal": 1.2,
        "warm_via_router_ms": {k: 1000 * v for k, v in percentiles(routed).items() if v},
        "warm_direct_ms": {k: 1000 * v for k, v in percentiles(direct).items() if v},
        "warm_overhead_p50_ms": round(overhead_ms, 3),
        "warm_overhead_goal_ms": 2.0,
        "rounds": rounds,
        "warm_requests": warm,
    }


def run_250(out: Path) -> dict[str, object]:
    """The real 250-on-8 experiment's activation percentiles."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "actormux"), "experiment=oversub_250_on_8",
         "backend=local", f"backend.instance={INSTANCE}", f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    s = json.loads((out / "summary.json").read_text())
    keys = ("activation_latency_s", "restore_latency_s", "checkpoint_latency_s",
            "request_latency_s", "activations", "requests", "lost_updates",
            "double_activations", "duration_s", "worker_utilization")  # fmt: skip
    return {k: s[k] for k in keys}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--skip-250", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/activation.json")
    args = parser.parse_args()
    reason = runsc_unusable_reason()
    if reason:
        print(f"cannot benchmark gVisor here: {reason}", file=sys.stderr)
        return 2
    cleanup(INSTANCE)
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(args.rounds, args.warm, Path(tmp) / "state"))
        if not args.skip_250:
            result["oversub_250_on_8"] = run_250(Path(tmp) / "run250")
    cleanup(INSTANCE)
    result["machine"] = {"python": platform.python_version(), "platform": platform.platform(),
                         "runsc": shutil.which("runsc")}  # fmt: skip
    result["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
