"""Activation through a worker agent vs a bare ``runsc restore``. Writes JSON.

A worker agent runs as its own process (``python -m backends.agent``). A counter actor
is started cold through it and checkpointed to a snapshot URI (``file://`` by default,
or ``s3://`` against a local S3-compatible server with ``--s3``). Then, ``--rounds``
times, interleaved: the agent restores that snapshot (the client-side time of
``POST /v1/activate``, which includes checking the snapshot's sha256 and the
readiness probe) and stops it; and the same snapshot is restored with a bare
``runsc restore`` in another namespace and polled until its first HTTP reply.
Goal (the cluster backends issue): p50 ratio <= 1.2. For ``s3://`` the agent also
downloads the image each time; the ratio then prices the download too.

Then the warm-request overhead of actor traffic through the agent's forwarder (how a
router reaches actors inside worker pods): ``--warm`` requests each, interleaved,
straight to the actor and through the forwarder. Goal: <= 2 ms at p50.

Needs Linux, root and runsc.

    .venv/bin/python benchmarks/agent_activation.py [--rounds 20] [--s3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from backends.agent.api import Activate, Checkpoint, Outcome, Stop  # noqa: E402
from backends.agent.client import AgentClient  # noqa: E402
from backends.agent.transfer import local_path  # noqa: E402
from backends.gvisor import netns  # noqa: E402
from backends.gvisor.bundle import write_bundle  # noqa: E402
from backends.gvisor.catalog import default_templates  # noqa: E402
from backends.gvisor.names import WorkerNames  # noqa: E402
from backends.gvisor.probe import wait_ready  # noqa: E402
from backends.gvisor.rootfs import make_rootfs  # noqa: E402
from backends.gvisor.runsc import Runsc  # noqa: E402
from backends.local.cleanup import cleanup  # noqa: E402
from backends.local.settings import runsc_unusable_reason  # noqa: E402
from control.metrics import percentiles  # noqa: E402

INSTANCE = 8
RUN_DIR = Path(f"/run/actormux/{INSTANCE}")
TOKEN = "agent-benchmark-token-0123456789"


def start_agent(tmp: Path, options: dict[str, object]) -> tuple[subprocess.Popen[str], str]:
    """The agent for worker 0 of the benchmark's instance, and its URL."""
    (tmp / "token").write_text(TOKEN)
    argv = [
        sys.executable, "-m", "backends.agent", "--instance", str(INSTANCE), "--worker", "0",
        "--runtime-dir", str(RUN_DIR / "agent-w0"), "--runsc-root", str(RUN_DIR / "runsc"),
        "--token-file", str(tmp / "token"), "--storage-options", json.dumps(options),
        "--forward-listen", "127.0.0.1:0",
    ]  # fmt: skip
    log = (tmp / "agent.log").open("w")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        raise RuntimeError(f"the agent did not start; see {tmp / 'agent.log'}")
    return proc, line.split()[-1]


async def warm_overhead(agent: AgentClient, warm: int) -> dict[str, object]:
    """A running actor: the same GET straight to it and through the forwarder."""
    from backends.gvisor.httpclient import request

    state = await agent.state()
    direct_host, direct_port = state.actor_address.rsplit(":", 1)
    forward_host, forward_port = state.forward_address.rsplit(":", 1)
    direct, forwarded = [], []
    for _ in range(warm):
        for host, port, into in ((direct_host, direct_port, direct),
                                 (forward_host, forward_port, forwarded)):  # fmt: skip
            start = time.perf_counter()
            response = await request(host, int(port), "GET", "/", timeout=10)
            into.append(time.perf_counter() - start)
            assert response.status == 200, response
    overhead_ms = (statistics.median(forwarded) - statistics.median(direct)) * 1000
    return {
        "warm_request_direct_s": percentiles(direct),
        "warm_request_via_forwarder_s": percentiles(forwarded),
        "warm_overhead_p50_ms": round(overhead_ms, 3),
        "warm_overhead_goal_ms": 2.0,
        "warm_requests": warm,
    }


async def measure(url: str, uri: str, rounds: int, tmp: Path, warm: int = 200) -> dict[str, object]:
    """Interleaved rounds of agent restores and bare restores of one snapshot."""
    bare = WorkerNames(INSTANCE, 1)
    runsc = Runsc(RUN_DIR / "runsc")
    template = default_templates("/usr/bin/python3", 8080, 16)["counter"]
    await netns.create(bare)
    bundle = write_bundle(
        tmp / "bare-bundle", args=template.args, env={"PATH": "/usr/bin:/bin"},
        netns_path=bare.netns_path, rootfs=make_rootfs(tmp / "rootfs"),
        app_dir=template.directory,
    )  # fmt: skip
    via_agent, bare_restore = [], []
    async with AgentClient(url, TOKEN) as agent:
        first = await agent.order(Activate("b:cold", "bench", 1, "counter"))
        assert first.outcome is Outcome.OK, first.reason
        saved = await agent.order(Checkpoint("b:save", "bench", 1, 1, uri))
        assert saved.outcome is Outcome.OK, saved.reason
        image = local_path(uri)
        if image is None:  # an object store: the bare restore reads a local copy
            from backends.agent.transfer import fetch

            _, image = fetch(uri, tmp / "bare-image", actor="bench", version=1,
                             options=json.loads((tmp / "options.json").read_text()))  # fmt: skip
        for i in range(rounds):
            generation = 2 + i
            start = time.perf_counter()
            done = await agent.order(Activate(f"b:{i}", "bench", generation, "counter", uri, 1))
            via_agent.append(time.perf_counter() - start)
            assert done.outcome is Outcome.OK, done.reason
            stopped = await agent.order(Stop(f"b:stop:{i}", "bench", generation))
            assert stopped.outcome is Outcome.OK
            cid = f"bare-{i}"
            await netns.restore_address(bare)
            start = time.perf_counter()
            await runsc.restore(cid, image, bundle, bare.netns_path, tmp / f"{cid}.log")
            await wait_ready(bare.actor_ip, 8080, timeout_s=20)
            bare_restore.append(time.perf_counter() - start)
            await runsc.kill(cid, bare.netns_path)
            await runsc.delete(cid, bare.netns_path)
        last = 2 + rounds
        done = await agent.order(Activate("b:warm", "bench", last, "counter", uri, 1))
        assert done.outcome is Outcome.OK, done.reason
        forwarding = await warm_overhead(agent, warm)
        await agent.order(Stop("b:warm:stop", "bench", last))
    await netns.delete(bare)
    ratio = statistics.median(via_agent) / statistics.median(bare_restore)
    return {
        "snapshot_uri_scheme": uri.partition("://")[0],
        "snapshot_bytes": saved.bytes,
        "activation_via_agent_s": percentiles(via_agent),
        "bare_runsc_restore_to_first_reply_s": percentiles(bare_restore),
        "activation_p50_ratio": round(ratio, 3),
        "activation_ratio_goal": 1.2,
        "rounds": rounds,
        **forwarding,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--s3", action="store_true", help="snapshots in a local S3 server")
    parser.add_argument("--warm", type=int, default=200, help="warm requests each way")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    reason = runsc_unusable_reason()
    if reason:
        print(f"cannot benchmark gVisor here: {reason}", file=sys.stderr)
        return 2
    name = "agent_activation_s3.json" if args.s3 else "agent_activation.json"
    out = args.out or ROOT / "benchmarks/results" / name
    cleanup(INSTANCE, discard=True)
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        options: dict[str, object] = {}
        uri = f"file://{tmp}/snapshots/bench/v000001-g1"
        if args.s3:
            from s3_server import s3_server

            server = stack.enter_context(s3_server(tmp))
            options = dict(server.options)
            uri = f"s3://{server.bucket}/bench/v000001-g1"
        (tmp / "options.json").write_text(json.dumps(options))
        proc, url = start_agent(tmp, options)
        try:
            result = asyncio.run(measure(url, uri, args.rounds, tmp, args.warm))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    cleanup(INSTANCE, discard=True)
    result["machine"] = {"python": platform.python_version(), "platform": platform.platform()}
    result["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
