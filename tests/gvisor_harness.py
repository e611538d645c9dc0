"""Helpers for the tests that run real gVisor sandboxes (backend instance 7, so they
never touch a developer's instance 0): an in-process backend with its router and
admin API, and ``actormux serve`` as a subprocess, driven like an operator would."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from backends.admin import admin_app
from backends.local.agents import AgentLocalBackend
from backends.local.driver import LocalBackend, LocalSettings
from backends.local.router import Router, RouterLimits
from control.controller import Controller, RecoverySettings
from control.messages import SuspendRequested
from control.policies import Lazy, LruPlacement, QueueWithDeadline

INSTANCE = 7
RUN_DIR = Path(f"/run/actormux/{INSTANCE}")
ROOT = Path(__file__).resolve().parent.parent
ACTORMUX = str(Path(sys.executable).parent / "actormux")
TOKEN = "test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Harness:
    """A backend with its router and admin API on free loopback ports."""

    def __init__(self, backend: LocalBackend, port: int, admin_port: int) -> None:
        self.backend = backend
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.admin = f"http://127.0.0.1:{admin_port}"
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self.router: Router | None = None

    async def call(
        self, actor: str, method: str = "POST", body: bytes = b"", path: str = "/", **headers: str
    ):
        async with self.session.request(
            method, self.url + path, data=body, headers={"Host": f"{actor}.actors.local", **headers}
        ) as resp:
            return resp.status, await resp.read(), resp.headers

    async def suspend(self, actor: str, timeout_s: float = 60.0) -> None:
        assert self.backend.admin(SuspendRequested(actor)).ok
        await self.until(lambda: self.backend.ctl.actor(actor).state == "suspended", timeout_s)

    async def until(self, condition: Any, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, "condition never became true"
            await asyncio.sleep(0.02)


@asynccontextmanager
async def harness(
    tmp_path: Path, *, workers: int = 2, suspension=None, recovery=None, limits=None,
    extra_templates=(), locality=None, timers=None, scaling=None, **settings_changes,
) -> AsyncIterator[Harness]:  # fmt: skip
    settings = LocalSettings(
        state_dir=tmp_path / "state", runtime_dir=RUN_DIR, instance=INSTANCE, workers=workers,
        agent_state_mb=8, **settings_changes,
    )  # fmt: skip
    controller = Controller(
        LruPlacement(), suspension or Lazy(), QueueWithDeadline(20.0), router_timeout_s=30.0,
        recovery=recovery or RecoverySettings(forward_deadline_s=90.0), locality=locality,
        timers=timers, scaling=scaling,
    )  # fmt: skip
    backend_class = AgentLocalBackend if settings.worker_agents else LocalBackend
    backend = backend_class(settings, controller)
    for template in extra_templates:
        backend.templates[template.name] = template
    router = Router(
        backend, domain="actors.local", limits=limits or RouterLimits(max_body_bytes=1024)
    )
    runners = []
    await backend.prepare()
    backend.open()
    try:
        port, admin_port = free_port(), free_port()
        await router.start(port)
        runner = web.AppRunner(admin_app(backend, token=TOKEN), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", admin_port).start()
        runners.append(runner)
        h = Harness(backend, port, admin_port)
        h.router = router
        try:
            yield h
        finally:
            await h.session.close()
    finally:
        await router.close()
        for runner in runners:
            await runner.cleanup()
        await backend.close(save=False)


def serve_process(
    tmp_path: Path, port: int, admin_port: int, *overrides: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """``actormux serve`` on instance 7 with its state in ``tmp_path/state``."""
    return subprocess.Popen(
        [ACTORMUX, "serve", "backend=local", f"backend.instance={INSTANCE}",
         f"backend.port={port}", f"backend.admin_port={admin_port}",
         f"backend.state_dir={tmp_path / 'state'}", f"backend.admin_token={TOKEN}",
         "cluster.workers=2", "policy/suspension=lazy", f"hydra.run.dir={tmp_path / 'run'}",
         *overrides],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def admin(admin_port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ACTORMUX, "admin", "--url", f"http://127.0.0.1:{admin_port}", "--token", TOKEN, *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def admin_json(admin_port: int, *args: str) -> Any:
    done = admin(admin_port, *args)
    return json.loads(done.stdout)


def wait_for(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("serve did not start")


def wait_until(condition: Any, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never became true"
        time.sleep(0.05)


def post(port: int, actor: str, method: str = "POST", **headers: str) -> dict:
    """One request through the router; the actor's JSON answer (raises on HTTP errors)."""
    data = b"" if method == "POST" else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/", data=data, method=method,
        headers={"Host": f"{actor}.actors.local", **headers},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def status_of(port: int, actor: str, method: str = "POST") -> int:
    """The HTTP status a request gets."""
    try:
        post(port, actor, method)
    except urllib.error.HTTPError as e:
        return e.code
    return 200


def kill9(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def stop(proc: subprocess.Popen, timeout: float = 180) -> str:
    """SIGINT (save running actors and tear down); kill -9 if it hangs, and fail."""
    proc.send_signal(2)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"serve did not stop in {timeout} s:\n{out[-3000:]}") from None
    return out


AGENT_TOKEN = "agent-test-token-0123456789"


def start_agent(
    worker: int, log_dir: Path, options: dict | None = None, *extra: str
) -> tuple[subprocess.Popen, str]:
    """Start ``python -m backends.agent`` for worker ``worker`` of the test instance;
    its process and base URL once it listens."""
    token_file = log_dir / "agent.token"
    token_file.write_text(AGENT_TOKEN)
    token_file.chmod(0o600)
    argv = [
        sys.executable, "-m", "backends.agent", "--instance", str(INSTANCE),
        "--worker", str(worker), "--runtime-dir", str(RUN_DIR / f"agent-w{worker}"),
        "--runsc-root", str(RUN_DIR / "runsc"), "--token-file", str(token_file),
        "--storage-options", json.dumps(options or {}), *extra,
    ]  # fmt: skip
    with (log_dir / f"agent-w{worker}.log").open("a") as log:
        # Its own process group: a test can kill it with its runsc children, as a
        # container's end kills every process in it.
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                                start_new_session=True)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "agent w0 listening on http://127.0.0.1:PORT"
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"agent did not start: {line!r}; see {log_dir}/agent-w{worker}.log")
    return proc, line.split()[-1]


def stop_agent(proc: subprocess.Popen) -> None:
    """SIGTERM: the agent lets orders finish and removes its sandboxes."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


@contextmanager
def agent(
    worker: int, tmp_path: Path, options: dict | None = None
) -> Iterator[tuple[subprocess.Popen, str]]:
    """An agent (:func:`start_agent`) for the block; stopped (:func:`stop_agent`) after."""
    proc, url = start_agent(worker, tmp_path, options)
    try:
        yield proc, url
    finally:
        stop_agent(proc)
