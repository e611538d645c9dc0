"""One worker's sandboxes, as the worker agent runs them.

A worker holds at most one actor at a time (a worker is one slot). Orders:

* :meth:`WorkerAgent.activate`: refuse a generation older than one seen for the actor
  (fenced), refuse while another actor occupies the worker, kill an older activation of
  the same actor still here, fetch and check the snapshot (``transfer.py``), put the
  worker's address back, ``runsc run`` or ``runsc restore``, probe ``/healthz``
  (telling the actor its generation);
* :meth:`WorkerAgent.checkpoint`: only the running activation of that generation;
  declined (the sandbox untouched) while a host connection to the actor is not closed
  or the scratch disk lacks room for its memory; ``runsc checkpoint`` into a scratch
  directory, hash it, publish it at the destination URI with the generation in its
  manifest. The image is the actor's only copy once runsc ran, so a failing publish is
  retried (with backoff), never dropped;
* :meth:`WorkerAgent.stop`: kill and remove one activation's sandbox, by its id.

Every order has an operation id; :class:`Operations` runs each id once and gives a
repeat the first answer (a repeat with different content is refused). Sandbox ids are
``<actor>_g<generation>_i<instance>``, as in the local backend, so cleanup and the
double-activation monitor see agent sandboxes the same way.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from backends.agent import transfer
from backends.agent.api import (
    Activate,
    AgentState,
    Checkpoint,
    Order,
    Outcome,
    Result,
    SandboxView,
    Stop,
)
from backends.gvisor import netns, tcpstate
from backends.gvisor.bundle import write_bundle
from backends.gvisor.catalog import Template
from backends.gvisor.httpclient import ActorHTTPError
from backends.gvisor.names import WorkerNames, parse_sandbox_id, sandbox_id
from backends.gvisor.probe import wait_ready
from backends.gvisor.proc import CommandError
from backends.gvisor.rootfs import make_rootfs
from backends.gvisor.runsc import Runsc
from backends.manifest import Snapshot

log = logging.getLogger("actormux.agent")
MIB = 1 << 20


class OpConflict(ValueError):  # noqa: N818 - a verdict on input
    """An operation id reused for a different order."""


class StateUnreadable(RuntimeError):  # noqa: N818
    """What runs could not be read whole just now (never answered with a guess)."""


@dataclass(frozen=True)
class AgentSettings:
    """What one worker agent owns and how long it waits."""

    worker: WorkerNames
    runtime_dir: Path  # bundles, logs, scratch: this agent's alone
    runsc_root: Path | None = None  # runsc's state (may be shared); default runtime_dir/runsc
    templates: Mapping[str, Template] = field(default_factory=dict)
    actor_port: int = 8080
    activation_timeout_s: float = 20.0
    snapshot_reserve_mb: int = 64  # scratch space kept free beyond a checkpoint's memory
    manage_netns: bool = True  # create (and remove) the worker's namespace
    storage_options: transfer.StorageOptions = field(default_factory=dict)
    operations_kept: int = 4096  # answers remembered for repeated orders
    runsc: str = "runsc"


class Operations:
    """Runs each operation id once; a repeat waits for, and gets, the first answer."""

    def __init__(self, kept: int) -> None:
        self._kept = kept
        self._runs: OrderedDict[str, tuple[Order, asyncio.Task[Result]]] = OrderedDict()
        self.repeats = 0

    async def run(self, order: Order, work: Callable[[], Awaitable[Result]]) -> Result:
        """The answer to ``order``: ``work()``'s, computed once per operation id."""
        known = self._runs.get(order.op)
        if known is not None:
            if known[0] != order:
                raise OpConflict(f"operation {order.op} was a different order")
            self.repeats += 1
            return await asyncio.shield(known[1])

        async def wrapped() -> Result:
            return await work()

        task = asyncio.get_running_loop().create_task(wrapped())
        self._runs[order.op] = (order, task)
        while len(self._runs) > self._kept:
            oldest, (_, oldest_task) = next(iter(self._runs.items()))
            if not oldest_task.done():
                break
            del self._runs[oldest]
        return await asyncio.shield(task)

    async def drain(self, timeout_s: float) -> None:
        """Let what is running finish (a checkpoint being published holds the actor's
        only copy); cancel what is still running after ``timeout_s``."""
        running = [task for _, task in self._runs.values() if not task.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=timeout_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


@dataclass
class _Running:
    actor: str
    generation: int
    sandbox: str
    download: Path | None  # a fetched snapshot, removed when the sandbox goes


class WorkerAgent:
    """The sandboxes of one worker."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.w = settings.worker
        self.runsc = Runsc(settings.runsc_root or settings.runtime_dir / "runsc", settings.runsc)
        self.operations = Operations(settings.operations_kept)
        self._fence: dict[str, int] = {}  # actor -> newest generation seen
        self._running: _Running | None = None
        self._lock = asyncio.Lock()  # one order touches the worker's sandbox at a time
        self._t0 = time.monotonic()
        self.forward_address = ""  # set when actor traffic is forwarded (forward.py)
        self._removals: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Namespace (if managed), root, bundles; adopt a sandbox left running by an
        earlier agent on the same runtime dir (an agent restart loses no actor)."""
        settings = self.settings
        for sub in ("bundles", "logs", "scratch"):
            (settings.runtime_dir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        settings.runtime_dir.chmod(0o700)
        make_rootfs(settings.runtime_dir / "rootfs")
        for template in settings.templates.values():
            self._write_bundle(template)
        adopted = self._adopt()
        if settings.manage_netns and adopted is None:
            await netns.create(self.w)

    def _ours(self) -> list[tuple[str, str, int]]:
        """``(container id, actor, generation)`` of each actor sandbox of this worker
        that runsc knows (its root may hold other workers' sandboxes too). Raises
        :class:`StateUnreadable` rather than report a partial picture."""
        containers = self.runsc.containers()
        for _ in range(20):  # None: runsc is rewriting a state file; look again
            if containers is not None:
                break
            time.sleep(0.05)
            containers = self.runsc.containers()
        if containers is None:
            raise StateUnreadable("runsc's state files could not be read whole; ask again")
        found = []
        for container in containers:
            parsed = parse_sandbox_id(container.id)
            if (
                parsed is not None and parsed[2] == self.w.instance
                and container.netns_path == self.w.netns_path
            ):  # fmt: skip
                found.append((container.id, parsed[0], parsed[1]))
        return found

    def _adopt(self) -> _Running | None:
        for cid, actor, generation in self._ours():
            if self.runsc.alive(cid) and self._running is None:
                self._running = _Running(actor, generation, cid, None)
                self._fence[actor] = max(self._fence.get(actor, 0), generation)
                log.warning("adopted %s, still running from an earlier agent", cid)
        return self._running

    async def close(self, *, keep_running: bool = False, timeout_s: float = 120.0) -> None:
        """Stop: let orders in flight finish; unless ``keep_running``, remove the
        sandbox (its state is the controller's business: it checkpoints first)."""
        await self.operations.drain(timeout_s)
        await asyncio.gather(*self._removals, return_exceptions=True)
        if not keep_running:
            async with self._lock:
                if self._running is not None:
                    await self._remove(self._running)
                    self._running = None
            for cid, _, _ in self._ours():
                await self.runsc.delete(cid, self.w.netns_path)
            if self.settings.manage_netns:
                await netns.delete(self.w)

    # ------------------------------------------------------------ orders

    async def activate(self, order: Activate) -> Result:
        """Carry out ``order`` once (see the module docstring)."""
        return await self.operations.run(order, lambda: self._timed(order, self._activate))

    async def checkpoint(self, order: Checkpoint) -> Result:
        """Carry out ``order`` once (see the module docstring)."""
        return await self.operations.run(order, lambda: self._timed(order, self._checkpoint))

    async def stop(self, order: Stop) -> Result:
        """Carry out ``order`` once (see the module docstring)."""
        return await self.operations.run(order, lambda: self._timed(order, self._stop))

    async def _timed(self, order: Order, step: Callable[[Order], Awaitable[Result]]) -> Result:
        started = time.monotonic()
        async with self._lock:
            try:
                result = await step(order)
            except Exception as e:  # anything at all: the controller must hear of it
                log.exception("%s %s failed", type(order).__name__, order.op)
                outcome = Outcome.FAILED
                if isinstance(order, Checkpoint):
                    outcome = Outcome.DECLINED if self._alive(order) else Outcome.LOST
                result = Result(order.op, outcome, f"{type(e).__name__}: {e}")
        return replace(result, seconds=time.monotonic() - started)

    def _alive(self, order: Checkpoint) -> bool:
        running = self._running
        return (
            running is not None
            and (running.actor, running.generation) == (order.actor, order.generation)
            and self.runsc.alive(running.sandbox)
        )

    def _fenced(self, actor: str, generation: int) -> str | None:
        newest = self._fence.get(actor, 0)
        if generation < newest:
            return f"generation {generation} of {actor} is fenced by generation {newest}"
        return None

    async def _activate(self, order: Order) -> Result:
        assert isinstance(order, Activate)
        fenced = self._fenced(order.actor, order.generation)
        if fenced is not None:
            return Result(order.op, Outcome.STALE, fenced)
        template = self.settings.templates.get(order.template)
        if template is None:
            known = ", ".join(sorted(self.settings.templates))
            return Result(order.op, Outcome.FAILED, f"unknown template {order.template!r} "
                          f"(this worker has: {known})")  # fmt: skip
        self._fence[order.actor] = order.generation
        running = self._running
        if running is not None:
            same = (running.actor, running.generation) == (order.actor, order.generation)
            if same and self.runsc.alive(running.sandbox):
                return Result(order.op, Outcome.OK, "this activation already runs here")
            if running.actor != order.actor and self.runsc.alive(running.sandbox):
                busy = f"worker {self.w.worker_id} is busy with {running.actor}"
                return Result(order.op, Outcome.FAILED, busy)
            # an older activation of this actor (or a dead sandbox): it goes first
            await self._remove(running)
            self._running = None
        sandbox = sandbox_id(order.actor, order.generation, self.w.instance)
        download = None
        image = None
        transfer_s, cache_hit = 0.0, False
        if order.snapshot is not None:
            scratch = self._scratch(f"fetch-{sandbox}")
            fetch_from = time.monotonic()
            try:
                _, image = await asyncio.to_thread(
                    transfer.fetch, order.snapshot, scratch, actor=order.actor,
                    version=order.version, options=self.settings.storage_options,
                )  # fmt: skip
            except transfer.Unusable as e:
                shutil.rmtree(scratch, ignore_errors=True)
                return Result(order.op, Outcome.UNUSABLE, str(e))
            download = scratch if image == scratch else None
            transfer_s, cache_hit = time.monotonic() - fetch_from, download is None
        running = _Running(order.actor, order.generation, sandbox, download)
        self._running = running
        if self.runsc.known(sandbox):  # a leftover of the same id (a failed attempt)
            await self.runsc.delete(sandbox, self.w.netns_path)
        await netns.restore_address(self.w)
        bundle = self._bundle(template.name)
        try:
            if image is None:
                await self.runsc.run(sandbox, bundle, self.w.netns_path, self._log(sandbox))
            else:
                await self.runsc.restore(
                    sandbox, image, bundle, self.w.netns_path, self._log(sandbox)
                )
            await wait_ready(
                self.w.actor_ip, self.settings.actor_port, actor=order.actor,
                generation=order.generation, timeout_s=self.settings.activation_timeout_s,
            )  # fmt: skip
        except (CommandError, ActorHTTPError, TimeoutError) as e:
            await self._remove(running)
            self._running = None
            return Result(order.op, Outcome.FAILED, str(e))
        return Result(order.op, Outcome.OK, transfer_s=transfer_s, cache_hit=cache_hit)

    async def _checkpoint(self, order: Order) -> Result:
        assert isinstance(order, Checkpoint)
        running = self._running
        if running is None or running.actor != order.actor:
            return Result(order.op, Outcome.LOST, f"{order.actor} does not run here")
        if running.generation != order.generation:
            newer = running.generation > order.generation
            why = f"generation {running.generation} runs here, not {order.generation}"
            return Result(order.op, Outcome.STALE if newer else Outcome.LOST, why)
        if not await asyncio.to_thread(self.runsc.alive, running.sandbox):
            await self._remove(running)
            self._running = None
            return Result(order.op, Outcome.LOST, "its sandbox died")
        why_not = await self._why_not_checkpoint(running)
        if why_not is not None:
            return Result(order.op, Outcome.DECLINED, why_not)
        staging = self._scratch(f"checkpoint-{running.sandbox}-v{order.version}")
        staging.mkdir(mode=0o700)
        steps = [time.monotonic()]
        try:
            await self.runsc.checkpoint(running.sandbox, staging, self.w.netns_path)
        except CommandError as e:
            shutil.rmtree(staging, ignore_errors=True)
            state = await self.runsc.state(running.sandbox, self.w.netns_path)
            if state is not None and state.get("status") == "running":
                return Result(
                    order.op, Outcome.DECLINED, f"runsc checkpoint failed harmlessly: {e}"
                )
            await self._remove(running)
            self._running = None
            return Result(order.op, Outcome.LOST, f"runsc checkpoint failed: {e}")
        steps.append(time.monotonic())
        self._running = None
        # The checkpointed sandbox has stopped; removing it (runsc delete: 1.5-2 s here)
        # need not delay the answer, as in the local backend.
        self._remove_later(running)
        try:
            snapshot = await asyncio.to_thread(
                transfer.describe, staging, actor=order.actor, version=order.version,
                generation=order.generation, requests=order.requests, created_unix=time.time(),
            )  # fmt: skip
            steps.append(time.monotonic())
            await self._publish(staging, snapshot, order.destination)
            steps.append(time.monotonic())
            log.info(
                "checkpoint of %s: runsc %.3f s, hash %.3f s, publish %.3f s",
                order.actor, *(b - a for a, b in itertools.pairwise(steps)),
            )  # fmt: skip
        except (transfer.AlreadyPublishedError, FileNotFoundError) as e:
            return Result(order.op, Outcome.LOST, f"{type(e).__name__}: {e}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return Result(order.op, Outcome.OK, bytes=snapshot.bytes, snapshot=order.destination,
                      transfer_s=steps[-1] - steps[1])  # fmt: skip

    async def _publish(self, staging: Path, snapshot: Snapshot, uri: str) -> None:
        """Publish, retrying transient failures: the image is the only copy now."""
        delay = 0.5
        while True:
            try:
                await asyncio.to_thread(
                    transfer.publish, staging, snapshot, uri, self.settings.storage_options
                )
                return
            except transfer.AlreadyPublishedError:
                raise  # not transient: the controller chose a taken location
            except Exception as e:  # a full disk, a store that is down: worth waiting for
                log.error("publishing %s failed (%s); retrying in %.1f s", uri, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _why_not_checkpoint(self, running: _Running) -> str | None:
        ip, port = self.w.actor_ip, self.settings.actor_port
        open_ = await tcpstate.open_connections(ip, port)
        if open_:
            return f"connections to it are not closed ({', '.join(open_)})"
        memory = await asyncio.to_thread(self.runsc.memory_bytes, running.sandbox) or 0
        need = memory + self.settings.snapshot_reserve_mb * MIB
        scratch = self.settings.runtime_dir / "scratch"
        free = (await asyncio.to_thread(shutil.disk_usage, scratch)).free
        if free < need:
            return f"scratch disk full: needs {need // MIB} MiB, {free // MIB} MiB free"
        return None

    async def _stop(self, order: Order) -> Result:
        assert isinstance(order, Stop)
        running = self._running
        if running is not None and (running.actor, running.generation) == (
            order.actor, order.generation,
        ):  # fmt: skip
            await self._remove(running)
            self._running = None
        else:  # not the one we run: make sure no such sandbox is left behind
            sandbox = sandbox_id(order.actor, order.generation, self.w.instance)
            await self._remove(_Running(order.actor, order.generation, sandbox, None))
        return Result(order.op, Outcome.OK)

    # ------------------------------------------------------------ sandboxes

    def _remove_later(self, running: _Running) -> None:
        """Remove a checkpointed sandbox in the background (awaited by close)."""
        task = asyncio.get_running_loop().create_task(self._remove(running, cut_connections=False))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _remove(self, running: _Running, *, cut_connections: bool = True) -> None:
        """Kill and remove a sandbox by its id; the host's sockets to the worker's actor
        address are cut (not for a checkpointed sandbox, which had none open: by then
        they may be the next actor's on this worker)."""
        self.runsc.kill_process(running.sandbox)
        await self.runsc.kill(running.sandbox, self.w.netns_path)
        await self.runsc.delete(running.sandbox, self.w.netns_path)
        if cut_connections:
            await asyncio.to_thread(
                tcpstate.destroy_connections, self.w.actor_ip, self.settings.actor_port
            )
        if running.download is not None:
            shutil.rmtree(running.download, ignore_errors=True)

    def state(self) -> AgentState:
        """What runs here now, from runsc's own state (not from this agent's memory)."""
        seen = [
            SandboxView(actor, generation, cid)
            for cid, actor, generation in self._ours()
            if self.runsc.alive(cid)
        ]
        return AgentState(
            self.w.worker_id, f"{self.w.actor_ip}:{self.settings.actor_port}", tuple(seen),
            self.forward_address,
        )  # fmt: skip

    def _write_bundle(self, template: Template) -> Path:
        return write_bundle(
            self._bundle(template.name), args=template.args,
            env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"},
            netns_path=self.w.netns_path, rootfs=self.settings.runtime_dir / "rootfs",
            app_dir=template.directory,
        )  # fmt: skip

    def _bundle(self, template: str) -> Path:
        return self.settings.runtime_dir / "bundles" / template

    def _log(self, sandbox: str) -> Path:
        return self.settings.runtime_dir / "logs" / f"{sandbox}.log"

    def _scratch(self, name: str) -> Path:
        return self.settings.runtime_dir / "scratch" / f"{name}-{time.monotonic_ns()}"
