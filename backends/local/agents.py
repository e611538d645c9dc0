"""The local backend with its workers run by worker agents, as a cluster runs them.

:class:`AgentLocalBackend` is :class:`backends.local.driver.LocalBackend` (same
controller, state, snapshot store, recovery, router) except that what happens on a
worker goes through that worker's agent (``backends/agent``), one ``python -m
backends.agent`` process per worker namespace, over HTTP with a bearer token:

* activation: an ``Activate`` order (cold, or from the snapshot's ``file://`` URI; the
  agent checks the snapshot against its manifest, restores, probes ``/healthz``);
* checkpoint: after the driver's own checks (TIME_WAIT, an actor that saw a failed
  connection, the generation fence), a ``Checkpoint`` order; the agent checks the
  connections and its scratch space, checkpoints and publishes into the store's layout
  (commit by one rename, manifest naming the acknowledged requests), then the store
  indexes it;
* stopping a sandbox: a ``Stop`` order;
* observed state: each agent's report of what runs on its worker.

Every order carries an operation id, ``<run>-<controller op>``: a retried order is
carried out once. The agents share runsc's state directory with the driver, so crash
recovery (``recovery.py``), ``actormux cleanup`` and the double-activation monitor see
their sandboxes exactly as they see the in-process backend's; the driver still kills a
sandbox by its id through runsc if its agent cannot be reached (this machine is the
node). Agents die with the backend process (``PR_SET_PDEATHSIG``) and are killed by
the pid files they leave if they outlive it anyway; a restarted backend recovers the
sandboxes they leave behind as it does its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import secrets
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from backends.agent.api import Activate, Outcome, Result, Stop
from backends.agent.api import Checkpoint as CheckpointOrder
from backends.agent.client import AgentClient, AgentRefused, AgentUnreachable, observe_agents
from backends.controlplane import MeasuredParts
from backends.gvisor.names import WorkerNames, parse_sandbox_id
from backends.local.driver import LocalBackend, LocalSettings
from backends.local.failpoints import armed, failpoint
from backends.local.store import SnapshotUnusable
from control.controller import Controller
from control.messages import (
    ActivationOutcome,
    Checkpoint,
    CheckpointOutcome,
    Observed,
    ObservedSnapshot,
    Restore,
)

log = logging.getLogger("actormux.local.agents")
PR_SET_PDEATHSIG = 1
AGENT_START_S = 60.0  # an agent that does not listen by then failed to start
ARMED_CRASH_DELAY_S = 0.2  # an armed crash point waits this long into the agent's order


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_leftover_agents(run_dir: Path, instance: int) -> list[int]:
    """Kill (-9) the worker agents an earlier run of ``instance`` left in ``run_dir``:
    found by their pid files, and each checked to be that agent (its command line is
    ``-m backends.agent`` with that instance and worker) before it is killed. The pids
    killed."""
    killed: list[int] = []
    agents_dir = run_dir / "agents"
    if not agents_dir.is_dir():
        return killed
    for pid_file in agents_dir.glob("w*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text())
            args = [a.decode(errors="replace")
                    for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]  # fmt: skip
            flags = dict(itertools.pairwise(args))
            worker = pid_file.stem.removeprefix("w")
            if (
                flags.get("-m") == "backends.agent" and flags.get("--instance") == str(instance)
                and flags.get("--worker") == worker
            ):  # fmt: skip
                log.warning("killing agent w%s (pid %d) left by an earlier run", worker, pid)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        pid_file.unlink(missing_ok=True)
    return killed


@dataclass
class AgentProcess:
    """One worker's agent: its process and client."""

    worker: WorkerNames
    proc: asyncio.subprocess.Process
    client: AgentClient
    pid_file: Path


class AgentLocalBackend(LocalBackend):
    """The local backend, its workers run by worker agent processes."""

    def __init__(self, settings: LocalSettings, controller: Controller) -> None:
        super().__init__(settings, controller)
        self.agents: dict[str, AgentProcess] = {}
        self._run = secrets.token_hex(4)  # op ids of this run never repeat an earlier one
        self._extra_ops = itertools.count(1)
        # how agents log in: the token's file, the token, the state sizes they serve
        self._agent_login: tuple[Path, str, int | tuple[int, ...]] | None = None

    # ------------------------------------------------------------ agent processes

    @property
    def _agents_dir(self) -> Path:
        return self.settings.runtime_dir / "agents"

    async def _before_recovery(self) -> None:
        """Agents of an earlier run that outlived it are killed before recovery reads
        runsc's state (see :func:`kill_leftover_agents`)."""
        kill_leftover_agents(self.settings.runtime_dir, self.settings.instance)

    async def _start_workers(self) -> None:
        settings = self.settings
        self._agents_dir.mkdir(mode=0o700, exist_ok=True)
        token = secrets.token_urlsafe(32)
        token_file = self._agents_dir / "token"
        token_file.touch(mode=0o600)
        token_file.write_text(token)
        sizes = settings.agent_state_mb
        self._agent_login = (token_file, token, sizes)
        started = await asyncio.gather(
            *(self._start_agent(w, token_file, token, sizes) for w in self.workers.values()),
            return_exceptions=True,
        )
        failed = [e for e in started if isinstance(e, BaseException)]
        if failed:
            await self._close_workers()
            raise RuntimeError(f"{len(failed)} worker agents did not start: {failed[0]}")

    async def _start_agent(
        self, w: WorkerNames, token_file: Path, token: str, sizes: int | tuple[int, ...]
    ) -> None:
        settings = self.settings
        index = w.worker_id.removeprefix("w")
        state_mb = sizes if isinstance(sizes, tuple) else (sizes,)
        argv = [
            sys.executable, "-m", "backends.agent", "--instance", str(settings.instance),
            "--worker", index, "--listen", "127.0.0.1:0",
            "--runtime-dir", str(self._agents_dir / w.worker_id),
            "--runsc-root", str(self.runsc.root), "--token-file", str(token_file),
            "--python", settings.python, "--actor-port", str(settings.actor_port),
            "--agent-state-mb", *(str(mb) for mb in state_mb),
            "--activation-timeout-s", str(settings.activation_timeout_s),
            "--runsc", settings.runsc, "--no-netns",
        ]  # fmt: skip
        log_path = settings.runtime_dir / "logs" / f"agent-{w.worker_id}.log"
        with log_path.open("ab") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=log_file,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        pid_file = self._agents_dir / f"{w.worker_id}.pid"
        pid_file.write_text(f"{proc.pid}\n")
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), AGENT_START_S)
        except TimeoutError:
            proc.kill()
            raise RuntimeError(f"agent {w.worker_id} did not start; see {log_path}") from None
        text = line.decode(errors="replace")
        if "listening on" not in text:
            proc.kill()
            raise RuntimeError(f"agent {w.worker_id} did not start: {text!r}; see {log_path}")
        client = AgentClient(text.split()[-1], token, give_up_s=settings.activation_timeout_s)
        self.agents[w.worker_id] = AgentProcess(w, proc, client, pid_file)

    async def _close_workers(self) -> None:
        """Stop every agent (SIGTERM: it finishes its orders and removes its sandboxes)."""
        for agent in list(self.agents.values()):
            await self._stop_agent(agent)

    async def _stop_agent(self, agent: AgentProcess) -> None:
        await agent.client.close()
        if agent.proc.returncode is None:
            agent.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(agent.proc.wait(), 120)
            except TimeoutError:
                agent.proc.kill()
                await agent.proc.wait()
        agent.pid_file.unlink(missing_ok=True)
        self.agents.pop(agent.worker.worker_id, None)

    async def _start_worker(self, w: WorkerNames) -> None:
        """A provisioned worker gets its agent, as the first ones did."""
        if self._agent_login is None:
            raise RuntimeError("the first agents have not started")
        token_file, token, sizes = self._agent_login
        await self._start_agent(w, token_file, token, sizes)

    async def _retire_worker(self, worker: str) -> None:
        agent = self.agents.get(worker)
        if agent is not None:
            await self._stop_agent(agent)
        await super()._retire_worker(worker)

    # ------------------------------------------------------------ orders

    def _op(self, name: str | int) -> str:
        return f"{self._run}-{name}"

    def _snapshot_uri(self, actor: str, version: int) -> str:
        return self.store.path(actor, version).as_uri()

    async def _order(self, w: WorkerNames, order: Activate | CheckpointOrder, crash: str) -> Result:
        """Give ``order`` to ``w``'s agent and wait for its result; with the ``crash``
        failpoint armed, serve dies while the agent is carrying the order out."""
        client = self.agents[w.worker_id].client
        if not armed(crash):
            return await client.order(order)
        task = asyncio.ensure_future(client.order(order))
        await asyncio.sleep(ARMED_CRASH_DELAY_S)  # the agent has the order and runs runsc
        failpoint(crash)
        return await task

    async def _start_sandbox(
        self, cmd: Restore, sandbox: str, w: WorkerNames, template: str, measured: MeasuredParts
    ) -> tuple[ActivationOutcome, str] | None:
        snapshot = None if cmd.cold else self._snapshot_uri(cmd.actor, cmd.version)
        order = Activate(
            self._op(cmd.op), cmd.actor, cmd.generation, template, snapshot, cmd.version
        )
        result = await self._order(w, order, "restore.runsc_started")
        if result.outcome is Outcome.OK:
            measured.transfer_s, measured.cache_hit = result.transfer_s, result.cache_hit
            return None
        if result.outcome is Outcome.UNUSABLE:
            try:  # the store says precisely what is wrong and what is lost
                await asyncio.to_thread(self.store.verify, cmd.actor, cmd.version)
                reason = result.reason
            except SnapshotUnusable as e:
                reason = str(e)
            log.error("%s (the agent: %s)", reason, result.reason)
            return ActivationOutcome.UNUSABLE, reason
        return ActivationOutcome.FAILED, f"{result.outcome}: {result.reason}"

    async def _take_checkpoint(
        self, cmd: Checkpoint, sandbox: str, w: WorkerNames, measured: MeasuredParts
    ) -> tuple[CheckpointOutcome, str, int]:
        order = CheckpointOrder(
            self._op(cmd.op), cmd.actor, cmd.generation, cmd.version,
            self._snapshot_uri(cmd.actor, cmd.version), tuple(self._acked.get(cmd.actor, ())),
        )  # fmt: skip
        result = await self._order(w, order, "checkpoint.runsc_started")
        if result.outcome is Outcome.OK:
            measured.transfer_s = result.transfer_s
            failpoint("checkpoint.before_commit")
            try:
                await asyncio.to_thread(self.store.record_published, cmd.actor, cmd.version)
            except SnapshotUnusable as e:  # the agent said ok, the store disagrees
                return CheckpointOutcome.LOST, str(e), 0
            return CheckpointOutcome.OK, "", result.bytes
        if result.outcome is Outcome.DECLINED:
            return CheckpointOutcome.DECLINED, result.reason, 0
        return CheckpointOutcome.LOST, f"{result.outcome}: {result.reason}", 0

    async def _kill(self, actor: str, sandbox: str) -> None:
        """Stop the sandbox through its agent; then make sure, by id, that it is gone."""
        worker = self._sandbox_worker.get(sandbox)
        parsed = parse_sandbox_id(sandbox)
        agent = self.agents.get(worker or "")
        if agent is not None and parsed is not None:
            try:
                await agent.client.order(Stop(self._op(f"stop{next(self._extra_ops)}"),
                                              actor, parsed[1]))  # fmt: skip
            except (AgentUnreachable, AgentRefused) as e:
                log.error("agent %s could not stop %s: %s", worker, sandbox, e)
        await super()._kill(actor, sandbox)

    # ------------------------------------------------------------ observed state

    async def observe(self) -> None:
        """Report what each agent says runs on its worker, and the committed snapshots;
        nothing at all if any agent cannot say (a partial picture would mislead)."""
        taken = self.now()
        seen = await observe_agents([(w, agent.client) for w, agent in self.agents.items()])
        if seen is None or self._stopped:
            return
        snapshots = tuple(ObservedSnapshot(a, self.store.latest(a)) for a in self.store.actors())
        self._dispatch(Observed(taken, seen, snapshots))
