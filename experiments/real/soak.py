"""``actormux experiment=soak backend=local``: a long real run with a fault every ~30 s.

250 agents on 8 workers for 30 minutes (by default), served by ``actormux serve`` in a
process of its own (so a crash of the control plane is a real ``kill -9``), played by
Locust, watched by the double-activation monitor. A seeded injector takes the faults
of ``soak.faults`` in a shuffled round, one every ``soak.fault_interval_s`` (+-20%),
and records what it hit and how long until the system served that target again
(``recover_s``), with no manual step: only the snapshot faults need an operator's
decision, which the soak takes like one (recover from the newest intact version).

At the end every actor that got requests is read back through the router and
compared with what the clients saw acknowledged, less what the backend reported lost
and named. ``lost_updates`` (silent losses) and ``double_activations`` (from the
monitor) must be 0. Results: ``soak.json`` and ``report.md`` in the run directory.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import cycle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from backends.gvisor.names import sandbox_id
from backends.gvisor.runsc import Runsc
from backends.local.cleanup import RUN_BASE, cleanup
from backends.local.monitor import MonitorProcess
from backends.local.settings import LocalConfig
from backends.state import LossRow
from control.metrics import REQUEST_COLUMNS, percentiles
from experiments.real.run import read_back, reported_losses, unnamed_losses, verify
from experiments.runs.build import ConfigError, RunSpec
from workloads.loadtest import LocustProcess, start_locust
from workloads.plan import Plan

FAULTS = (
    "kill_sandbox_in_request",
    "stop_sandbox_in_request",
    "stop_sandbox_in_restore",
    "kill_serve",
    "kill_serve_in_checkpoint",
    "kill_serve_before_commit",
    "kill_serve_in_restore",
    "corrupt_snapshot",
    "truncate_snapshot",
    "fill_disk",
    "odd_methods",
    "timeout_then_suspend",
    "second_serve",
    "kill_locust",
)
TOKEN = "soak-admin-token"


class CrashedAtFailpointError(RuntimeError):
    """serve reached its armed failpoint (and SIGKILLed itself) before it answered."""

    def __init__(self, failpoint: str) -> None:
        super().__init__(f"serve crashed at {failpoint} while starting")


@dataclass(frozen=True)
class SoakSettings:
    """The ``soak`` config section."""

    fault_interval_s: float = 30.0
    faults: tuple[str, ...] = FAULTS
    stop_s: float = 8.0  # how long a SIGSTOP lasts
    recover_timeout_s: float = 180.0
    disk_mb: int = 4096  # the state dir is a tmpfs of this size (so it can be filled)


def soak_settings(cfg: DictConfig) -> SoakSettings:
    """The checked ``soak`` section (:class:`ConfigError` naming the field)."""
    raw = OmegaConf.to_container(cfg.get("soak") or {}, resolve=True)
    if not isinstance(raw, dict):
        raise ConfigError("soak: must be a mapping")
    unknown = set(raw) - set(SoakSettings.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"soak: unknown {sorted(unknown)}")
    faults = tuple(raw.get("faults", FAULTS))
    bad = [f for f in faults if f not in FAULTS]
    if bad or not faults:
        raise ConfigError(f"soak.faults: unknown {bad}; allowed: {', '.join(FAULTS)}")
    settings = SoakSettings(
        fault_interval_s=float(raw.get("fault_interval_s", 30.0)),
        faults=faults,
        stop_s=float(raw.get("stop_s", 8.0)),
        recover_timeout_s=float(raw.get("recover_timeout_s", 180.0)),
        disk_mb=int(raw.get("disk_mb", 4096)),
    )
    for name in ("fault_interval_s", "stop_s", "recover_timeout_s"):
        if not getattr(settings, name) > 0:
            raise ConfigError(f"soak.{name}: must be > 0")
    if settings.disk_mb < 256:
        raise ConfigError("soak.disk_mb: must be >= 256")
    return settings


@dataclass
class FaultRecord:
    """One injected fault."""

    kind: str
    at_s: float
    target: str
    detail: str
    recovered: bool = False
    recover_s: float | None = None


@dataclass
class SoakReport:
    """What the soak saw (``soak.json``)."""

    duration_s: float
    actors: int
    workers: int
    faults: list[FaultRecord] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    acknowledged_updates: int = 0
    lost_updates: int = 0
    reported_lost_updates: int = 0
    reported_unnamed_updates: int = 0  # missing from actors with a loss it could not name
    losses_reported: int = 0
    unacknowledged_updates: int = 0
    unreadable_actors: int = 0
    verified_actors: int = 0
    double_activations: int = 0
    monitor_samples: int = 0
    monitor_max_gap_s: float = 0.0
    monitor_gaps_over_100ms: int = 0
    serve_starts: int = 0
    locust_starts: int = 0
    unexpected_serve_exits: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # HTTP status (0: no answer)
    losses: list[dict[str, Any]] = field(default_factory=list)  # each reported loss

    def by_kind(self) -> dict[str, dict[str, Any]]:
        """Per fault kind: how many, how many recovered, and recovery time."""
        kinds: dict[str, dict[str, Any]] = {}
        for kind in dict.fromkeys(f.kind for f in self.faults):
            mine = [f for f in self.faults if f.kind == kind]
            times = [f.recover_s for f in mine if f.recover_s is not None]
            kinds[kind] = {
                "injected": len(mine),
                "recovered": sum(f.recovered for f in mine),
                "recover_s": percentiles(times),
            }
        return kinds


def loss_view(loss: LossRow) -> dict[str, Any]:
    """A reported loss for the soak's report."""
    return {"actor": loss.actor, "version": loss.version, "reason": loss.reason,
            "requests": len(loss.requests), "known": loss.known}  # fmt: skip


# ---------------------------------------------------------------- the parts


class Serve:
    """``actormux serve`` for the soak, restartable, armed with a failpoint or not."""

    def __init__(self, overrides: list[str], out_dir: Path, port: int, admin_port: int) -> None:
        self.overrides = overrides
        self.out_dir = out_dir
        self.port, self.admin_port = port, admin_port
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0
        self.expected_exit = False

    def start(self, failpoint: str | None = None, timeout_s: float = 300.0) -> None:
        """Start serve and wait until its admin API and router answer."""
        self.starts += 1
        log = (self.out_dir / f"serve-{self.starts}.log").open("w")
        env = {**os.environ, **({"ACTORMUX_FAILPOINT": failpoint} if failpoint else {})}
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "actormux"), "serve", *self.overrides,
             f"hydra.run.dir={self.out_dir / f'serve-{self.starts}'}"],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        self.expected_exit = False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if failpoint is not None and self.proc.returncode == -signal.SIGKILL:
                    raise CrashedAtFailpointError(failpoint)
                raise RuntimeError(f"serve exited {self.proc.returncode} while starting")
            if self.admin("GET", "/stats")[0] == 200:
                return
            time.sleep(0.2)
        raise RuntimeError("serve did not start")

    def kill9(self) -> None:
        """Crash it: kill -9, no chance to save anything."""
        assert self.proc is not None
        self.expected_exit = True
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        """SIGINT: it saves running actors and tears down."""
        if self.proc is not None and self.proc.poll() is None:
            self.expected_exit = True
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def died(self) -> bool:
        """It exited although nobody asked it to."""
        return self.proc is not None and self.proc.poll() is not None and not self.expected_exit

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """Call the admin API: (status, JSON answer); status 0 if it cannot be reached."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            try:
                return e.code, json.loads(e.read() or b"null")
            except ValueError:
                return e.code, None
        except (OSError, ValueError):
            return 0, None

    def call(self, actor: str, method: str = "GET", **headers: str) -> int:
        """One request through the router; its status (0: no answer at all)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, "/", body=b"" if method != "GET" else None,
                         headers={"Host": f"{actor}.actors.local", **headers})  # fmt: skip
            response = conn.getresponse()
            response.read()
            return response.status
        except OSError:
            return 0
        finally:
            conn.close()


class Soak:
    """One soak run (see the module docstring)."""

    def __init__(
        self, spec: RunSpec, lc: LocalConfig, settings: SoakSettings, plan: Plan,
        *, out_dir: Path, overrides: list[str],
    ) -> None:  # fmt: skip
        self.spec, self.lc, self.settings, self.plan = spec, lc, settings, plan
        self.out_dir = out_dir
        self.rng = np.random.default_rng([spec.seed, 0x534F414B])  # stream tag "SOAK"
        self.disk = out_dir / "state-disk"
        self.state_dir = self.disk / "state"
        self.serve = Serve(
            [*overrides, f"backend.state_dir={self.state_dir}",
             f"backend.admin_token={TOKEN}"], out_dir, lc.port, lc.admin_port,
        )  # fmt: skip
        self.runsc = Runsc(RUN_BASE / str(lc.settings.instance) / "runsc")
        self.actors = list(plan.population.ids)
        self.locusts: list[LocustProcess] = []
        self.unexpected_exits = 0
        self.t0 = 0.0
        self._threads: list[threading.Thread] = []

    def elapsed(self) -> float:
        """Seconds since the load started."""
        return time.monotonic() - self.t0

    # ------------------------------------------------------------ the run

    def run(self) -> SoakReport:
        """Set up, play the load under faults, verify, tear down."""
        lc = self.lc
        cleanup(lc.settings.instance, discard=True)
        self.disk.mkdir(parents=True, exist_ok=True)
        mount = ["mount", "-t", "tmpfs", "-o", f"size={self.settings.disk_mb}m,mode=0700"]
        subprocess.run([*mount, "none", str(self.disk)], check=True)
        monitor = None
        try:
            self.serve.start()
            for actor in self.actors:
                status, answer = self.serve.admin(
                    "POST", "/actors", {"id": actor, "template": "counter"}
                )
                if status != 201:
                    raise RuntimeError(f"cannot create {actor}: {status} {answer}")
            monitor = MonitorProcess(
                self.runsc.root, lc.settings.instance, self.out_dir / "monitor.jsonl"
            )
            self.t0 = time.monotonic()
            self._start_locust(0.0)
            faults = self._inject_until_the_end()
            for locust in self.locusts[-1:]:
                locust.wait()
            for thread in self._threads:
                thread.join(timeout=120)
            report = self._verify(faults, monitor)
        finally:
            if monitor is not None and monitor.proc.poll() is None:
                monitor.proc.kill()
            for locust in self.locusts:
                if locust.proc.poll() is None:
                    locust.kill()
            self.serve.stop()
            cleanup(lc.settings.instance, discard=True)
            subprocess.run(["umount", "-l", str(self.disk)], check=False)
        return report

    def _start_locust(self, at_s: float) -> None:
        out = self.out_dir / "locust" / str(len(self.locusts))
        self.locusts.append(
            start_locust(
                self.plan, f"http://127.0.0.1:{self.lc.port}", out,
                actor_domain=self.lc.actor_domain, start_at_s=at_s,
                request_timeout_s=self.lc.settings.request_timeout_s + 30,
            )
        )  # fmt: skip

    def _inject_until_the_end(self) -> list[FaultRecord]:
        settings = self.settings
        kinds = cycle(self.rng.permutation(list(settings.faults)).tolist())
        faults: list[FaultRecord] = []
        stop_at = self.plan.duration_s - 10
        next_at = settings.fault_interval_s * float(self.rng.uniform(0.8, 1.2))
        unexpected = 0
        while self.elapsed() < stop_at:
            while self.elapsed() < min(next_at, stop_at):
                if self.serve.died():
                    unexpected += 1
                    print("soak: serve exited unexpectedly; restarting", file=sys.stderr)
                    self.serve.start()
                time.sleep(0.5)
            if self.elapsed() >= stop_at:
                break
            kind = str(next(kinds))
            record = FaultRecord(kind, round(self.elapsed(), 1), "", "")
            try:
                getattr(self, f"_fault_{kind}")(record)
            except Exception as e:  # the soak goes on; the record says what went wrong
                record.detail += f" injector error: {type(e).__name__}: {e}"
            faults.append(record)
            outcome = f"recovered in {record.recover_s} s" if record.recovered else "NOT recovered"
            print(
                f"soak {self.elapsed():6.0f} s: {kind} on {record.target or '-'}: {outcome}. "
                f"{record.detail}", file=sys.stderr, flush=True,
            )  # fmt: skip
            next_at = max(self.elapsed(), next_at) + settings.fault_interval_s * float(
                self.rng.uniform(0.8, 1.2)
            )
        self.unexpected_exits = unexpected
        return faults

    def _verify(self, faults: list[FaultRecord], monitor: MonitorProcess) -> SoakReport:
        touched = sorted(set(np.asarray(self.actors)[self.plan.actors].tolist()))
        held = asyncio.run(read_back(self.lc.port, self.lc.actor_domain, touched,
                                     parallel=self.lc.settings.workers))  # fmt: skip
        _, rows = self.serve.admin("GET", "/losses")
        losses = [LossRow(**{**r, "requests": tuple(r["requests"])}) for r in (rows or [])]
        watched = monitor.stop()
        frames = [locust.streamed() for locust in self.locusts]
        records = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=list(REQUEST_COLUMNS))
        )
        records["request"] = records["request"].astype(str)
        checked = verify(records, held, "counter", reported_losses(losses), unnamed_losses(losses))
        outcomes = records["outcome"].value_counts().to_dict()
        statuses = records["status"].astype(int).value_counts().sort_index().to_dict()
        return SoakReport(
            duration_s=round(self.elapsed(), 1),
            actors=len(self.actors),
            workers=self.lc.settings.workers,
            faults=faults,
            requests={str(k): int(v) for k, v in outcomes.items()},
            acknowledged_updates=int((records["outcome"] == "ok").sum()),
            lost_updates=checked.lost_updates,
            reported_lost_updates=checked.reported_lost_updates,
            reported_unnamed_updates=checked.reported_unnamed_updates,
            losses_reported=len(losses),
            unacknowledged_updates=checked.unacknowledged_updates,
            unreadable_actors=checked.unreadable,
            verified_actors=checked.actors_checked,
            double_activations=watched.double_activations,
            monitor_samples=watched.samples,
            monitor_max_gap_s=watched.max_gap_s,
            monitor_gaps_over_100ms=watched.gaps_over_100ms,
            serve_starts=self.serve.starts,
            locust_starts=len(self.locusts),
            unexpected_serve_exits=self.unexpected_exits,
            statuses={str(k): int(v) for k, v in statuses.items()},
            losses=[loss_view(r) for r in losses],
        )

    # ------------------------------------------------------------ helpers

    def _actors_in(self, state: str) -> list[dict[str, Any]]:
        status, listed = self.serve.admin("GET", "/actors")
        return [a for a in (listed or []) if a["state"] == state] if status == 200 else []

    def _pick(self, candidates: list[Any]) -> Any:
        return candidates[int(self.rng.integers(len(candidates)))] if candidates else None

    def _running_actor(self) -> dict[str, Any] | None:
        running = self._actors_in("running")
        if not running:
            suspended = self._actors_in("suspended")
            actor = self._pick(suspended)
            if actor is None or self.serve.call(actor["id"]) != 200:
                return None
            running = [a for a in self._actors_in("running") if a["id"] == actor["id"]]
        return self._pick(running)

    def _sandbox_pid(self, actor: str, generation: int) -> int | None:
        return self.runsc.pid(sandbox_id(actor, generation, self.lc.settings.instance))

    def _in_background(self, work: Callable[[], Any]) -> None:
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _until(self, record: FaultRecord, ready: Callable[[], bool], since: float) -> None:
        deadline = since + self.settings.recover_timeout_s
        while time.monotonic() < deadline:
            if ready():
                record.recovered = True
                record.recover_s = round(time.monotonic() - since, 2)
                return
            time.sleep(0.25)

    def _serves(self, actor: str) -> Callable[[], bool]:
        return lambda: self.serve.call(actor) == 200

    def _losses(self) -> int:
        status, rows = self.serve.admin("GET", "/losses")
        return len(rows) if status == 200 and rows is not None else -1

    # ------------------------------------------------------------ the faults

    def _mid_request(
        self, record: FaultRecord, service_s: float, hit_after_s: float,
        hit: Callable[[int], None],
    ) -> None:  # fmt: skip
        """Send a running actor a request it works on for ``service_s``; ``hit_after_s``
        into it, ``hit`` its sandbox's pid; then time the recovery."""
        actor = self._running_actor()
        if actor is None:
            record.detail = "no actor to hit"
            return
        record.target = actor["id"]
        pid = self._sandbox_pid(actor["id"], actor["generation"])
        service = {"X-Actormux-Service": str(service_s)}
        self._in_background(lambda: self.serve.call(actor["id"], "POST", **service))
        time.sleep(hit_after_s)
        since = time.monotonic()
        if pid is not None:
            hit(pid)
        self._until(record, self._serves(actor["id"]), since)

    def _fault_kill_sandbox_in_request(self, record: FaultRecord) -> None:
        self._mid_request(record, 3, 0.5, lambda pid: os.kill(pid, signal.SIGKILL))

    def _fault_stop_sandbox_in_request(self, record: FaultRecord) -> None:
        def freeze(pid: int) -> None:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(self.settings.stop_s)
            os.kill(pid, signal.SIGCONT)

        self._mid_request(record, 1, 0.3, freeze)

    def _fault_stop_sandbox_in_restore(self, record: FaultRecord) -> None:
        actor = self._pick(self._actors_in("suspended"))
        if actor is None:
            record.detail = "no suspended actor"
            return
        record.target = actor["id"]
        self._in_background(lambda: self.serve.call(actor["id"]))
        since = time.monotonic()
        pid = None
        while pid is None and time.monotonic() < since + 10:
            pid = self._sandbox_pid(actor["id"], actor["generation"] + 1)
            time.sleep(0.005)
        if pid is None:
            record.detail = "its restore was not seen"
        else:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(self.settings.stop_s)
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                record.detail = "the frozen restore was abandoned and killed"
        self._until(record, self._serves(actor["id"]), since)

    def _fault_kill_serve(self, record: FaultRecord) -> None:
        record.target = "serve"
        since = time.monotonic()
        self.serve.kill9()
        self.serve.start()
        probe = self._pick(self.actors)
        self._until(record, self._serves(probe), since)

    def _crash_at(
        self, record: FaultRecord, failpoint: str, trigger: Callable[[], str | None]
    ) -> None:
        record.target = "serve"
        since = time.monotonic()
        self.serve.kill9()
        actor = None
        try:
            self.serve.start(failpoint=failpoint)
        except CrashedAtFailpointError:  # the load got there before the trigger: as wanted
            record.detail = f"crashed at {failpoint} while starting"
        else:
            actor = trigger()
            record.target = f"serve via {actor}"
            assert self.serve.proc is not None
            try:
                self.serve.proc.wait(timeout=60)
                record.detail = f"crashed at {failpoint}"
            except subprocess.TimeoutExpired:
                record.detail = f"{failpoint} not reached; killed"
        self.serve.kill9()
        self.serve.start()
        self._until(record, self._serves(actor or self._pick(self.actors)), since)

    def _fault_kill_serve_in_checkpoint(self, record: FaultRecord) -> None:
        def trigger() -> str | None:
            actor = self._running_actor()
            if actor is not None:
                self.serve.admin("POST", f"/actors/{actor['id']}/suspend")
            return None if actor is None else actor["id"]

        self._crash_at(record, "checkpoint.runsc_started", trigger)

    def _fault_kill_serve_before_commit(self, record: FaultRecord) -> None:
        def trigger() -> str | None:
            actor = self._running_actor()
            if actor is not None:
                self.serve.admin("POST", f"/actors/{actor['id']}/suspend")
            return None if actor is None else actor["id"]

        self._crash_at(record, "checkpoint.before_commit", trigger)

    def _fault_kill_serve_in_restore(self, record: FaultRecord) -> None:
        def trigger() -> str | None:
            actor = self._pick(self._actors_in("suspended"))
            if actor is not None:
                self._in_background(lambda: self.serve.call(actor["id"]))
            return None if actor is None else actor["id"]

        self._crash_at(record, "restore.runsc_started", trigger)

    def _damage(self, record: FaultRecord, how: str) -> None:
        candidates = []
        for actor in self._actors_in("suspended"):
            versions = sorted((self.state_dir / "snapshots" / actor["id"]).glob("v*"))
            if len(versions) >= 2:
                candidates.append((actor, versions[-1]))
        if not candidates:
            record.detail = "no suspended actor with two snapshots"
            return
        actor, newest = self._pick(candidates)
        record.target = f"{actor['id']} {newest.name}"
        image = newest / "checkpoint.img"
        data = bytearray(image.read_bytes())
        if how == "corrupt":
            data[len(data) // 2] ^= 0xFF
        else:
            data = data[: len(data) // 2]
        image.write_bytes(bytes(data))
        since = time.monotonic()
        status = self.serve.call(actor["id"])
        if status != 503:
            record.detail = f"not detected (status {status}): the actor had moved on"
            self._until(record, self._serves(actor["id"]), since)
            return
        status, shown = self.serve.admin("GET", f"/actors/{actor['id']}")
        record.detail = str((shown or {}).get("failure", ""))[:160]
        older = int(newest.name[1:]) - 1  # the operator's decision: the newest intact one
        self.serve.admin("POST", f"/actors/{actor['id']}/recover", {"version": older})
        self._until(record, self._serves(actor["id"]), since)

    def _fault_corrupt_snapshot(self, record: FaultRecord) -> None:
        self._damage(record, "corrupt")

    def _fault_truncate_snapshot(self, record: FaultRecord) -> None:
        self._damage(record, "truncate")

    def _fault_fill_disk(self, record: FaultRecord) -> None:
        record.target = str(self.disk)
        ballast = self.disk / "ballast"
        stats = os.statvfs(self.disk)
        reserve = self.lc.settings.snapshot_reserve_mb << 20
        keep = reserve // 4
        size = stats.f_bavail * stats.f_frsize - keep
        with ballast.open("wb") as f:
            f.truncate(0)
            chunk = b"\0" * (1 << 20)
            for _ in range(max(0, size) >> 20):
                f.write(chunk)
        time.sleep(2 * self.settings.stop_s)
        ballast.unlink()
        since = time.monotonic()

        def a_checkpoint_goes_through() -> bool:
            actor = self._running_actor()
            if actor is None:
                return True
            self.serve.admin("POST", f"/actors/{actor['id']}/suspend")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status, shown = self.serve.admin("GET", f"/actors/{actor['id']}")
                if status == 200 and shown["state"] != "running":
                    return True
                time.sleep(0.2)
            return False

        self._until(record, a_checkpoint_goes_through, since)

    def _fault_odd_methods(self, record: FaultRecord) -> None:
        before = self._losses()
        targets = [self._running_actor() for _ in range(3)]
        names = sorted({a["id"] for a in targets if a is not None})
        record.target = ", ".join(names)
        statuses = {
            self.serve.call(a, m) for a in names for m in ("HEAD", "OPTIONS", "TRACE", "BREW")
        }
        record.detail = f"statuses {sorted(statuses)}"
        since = time.monotonic()
        for actor in names:
            self.serve.admin("POST", f"/actors/{actor}/suspend")
        self._until(record, lambda: self._all_suspended(names) and self._losses() == before, since)

    def _all_suspended(self, names: list[str]) -> bool:
        for actor in names:
            status, shown = self.serve.admin("GET", f"/actors/{actor}")
            if status != 200 or shown["state"] == "running":
                return False
        return True

    def _fault_timeout_then_suspend(self, record: FaultRecord) -> None:
        actor = self._running_actor()
        if actor is None:
            record.detail = "no actor to hit"
            return
        record.target = actor["id"]
        before = self._losses()
        slow = str(self.lc.settings.request_timeout_s + 5)
        status = self.serve.call(actor["id"], "POST", **{"X-Actormux-Service": slow})
        record.detail = f"status {status}"
        since = time.monotonic()
        self.serve.admin("POST", f"/actors/{actor['id']}/suspend")
        self._until(
            record, lambda: self._all_suspended([actor["id"]]) and self._losses() == before, since
        )

    def _fault_second_serve(self, record: FaultRecord) -> None:
        record.target = "serve"
        since = time.monotonic()
        second = subprocess.run(
            [str(Path(sys.executable).parent / "actormux"), "serve", *self.serve.overrides,
             f"hydra.run.dir={self.out_dir / 'second-serve'}"],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        refused = second.returncode == 1 and "in use by pid" in second.stdout + second.stderr
        record.detail = "refused" if refused else f"exit {second.returncode}"
        probe = self._pick(self.actors)
        self._until(record, lambda: refused and self.serve.call(probe) == 200, since)

    def _fault_kill_locust(self, record: FaultRecord) -> None:
        record.target = "locust"
        since = time.monotonic()
        self.locusts[-1].kill()
        self._start_locust(self.elapsed())
        new = self.locusts[-1]
        self._until(record, lambda: len(new.streamed()) > 0 or new.proc.poll() is not None, since)


# ---------------------------------------------------------------- entry point


def run_soak(cfg: DictConfig, spec: RunSpec, lc: LocalConfig, out_dir: Path) -> SoakReport:
    """The ``experiment=soak backend=local`` run; writes soak.json and report.md."""
    settings = soak_settings(cfg)
    duration = lc.duration_s or spec.duration_s
    plan = Plan.materialize(spec.workload, duration, spec.seed)
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.")]
    overrides += [f"backend.port={lc.port}", f"backend.admin_port={lc.admin_port}"]
    print(f"soak: {len(plan):,} requests to {len(plan.population):,} actors on "
          f"{lc.settings.workers} workers for {duration:g} s, a fault every "
          f"~{settings.fault_interval_s:g} s", file=sys.stderr, flush=True)  # fmt: skip
    report = Soak(spec, lc, settings, plan, out_dir=out_dir, overrides=overrides).run()
    data = {**asdict(report), "by_kind": report.by_kind()}
    (out_dir / "soak.json").write_text(json.dumps(data, indent=2) + "\n")
    (out_dir / "report.md").write_text(soak_markdown(report, settings))
    shutil.rmtree(out_dir / "state-disk", ignore_errors=True)
    return report


def soak_markdown(report: SoakReport, settings: SoakSettings) -> str:
    """The soak's one-page report."""
    lines = [
        "# Soak: faults under load on real gVisor actors",
        "",
        f"{report.actors} actors on {report.workers} workers for {report.duration_s:.0f} s, "
        f"a fault every ~{settings.fault_interval_s:g} s ({len(report.faults)} in all).",
        "",
        "| check | value |",
        "|---|---|",
        f"| acknowledged updates | {report.acknowledged_updates:,} |",
        f"| lost updates (silent) | {report.lost_updates} |",
        f"| lost updates reported and named by the backend | {report.reported_lost_updates} "
        f"({report.losses_reported} loss reports) |",
        f"| lost updates reported, not named (state saved after a crash) | "
        f"{report.reported_unnamed_updates} |",
        f"| unacknowledged updates (applied, never acknowledged) | "
        f"{report.unacknowledged_updates} |",
        f"| double activations (independent monitor) | {report.double_activations} |",
        f"| monitor samples, largest gap, gaps over 100 ms | {report.monitor_samples:,}, "
        f"{report.monitor_max_gap_s} s, {report.monitor_gaps_over_100ms} |",
        f"| actors read back / unreadable | {report.verified_actors} / "
        f"{report.unreadable_actors} |",
        f"| serve starts / Locust starts / unexpected serve exits | {report.serve_starts} / "
        f"{report.locust_starts} / {report.unexpected_serve_exits} |",
        f"| requests by outcome | {report.requests} |",
        f"| requests by HTTP status (0: no answer, e.g. serve down) | {report.statuses} |",
        "",
        "| fault | injected | recovered | recovery p50 | recovery max |",
        "|---|---|---|---|---|",
    ]
    for kind, row in report.by_kind().items():
        p = row["recover_s"]
        fmt = lambda v: "-" if v is None else f"{v:.1f} s"  # noqa: E731
        lines.append(
            f"| {kind} | {row['injected']} | {row['recovered']} | {fmt(p['p50'])} | "
            f"{fmt(p['max'])} |"
        )
    lines += ["", "Every reported loss:", ""]
    for loss in report.losses:
        named = "named" if loss["known"] else "not all named"
        lines.append(
            f"- {loss['actor']}: {loss['requests']} acknowledged requests after "
            f"v{loss['version']} ({named}): {loss['reason'][:200]}"
        )
    lines += ["", "Every fault, in order:", ""]
    for f in report.faults:
        took = f"{f.recover_s:.1f} s" if f.recover_s is not None else "not recovered"
        lines.append(f"- {f.at_s:.0f} s {f.kind} on {f.target or '-'}: {took}. {f.detail}")
    return "\n".join(lines) + "\n"
