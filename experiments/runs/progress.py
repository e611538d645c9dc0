"""Progress a person can follow on long runs and sweeps.

* :class:`RunProgress`: one simulated run: simulated time against the run's length,
  controller events per wall second, and the time left (ETA). On a terminal a bar
  (tqdm); otherwise (a log, CI) a line every ``every_s`` wall seconds.
* :class:`SweepProgress`: a Hydra callback (``hydra.callbacks.progress``, on in
  ``conf/config.yaml``) for multirun sweeps: at the start the number of jobs, and as
  each job ends "job #k done in X s: n of N done, ETA". Jobs count themselves in the
  sweep directory (``.progress/``), so this works with the joblib launcher and with a
  Ray cluster whose workers share that directory (on one that does not, each job still
  says when it ended).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

LINE_EVERY_S = 30.0  # off a terminal: a progress line this often (wall seconds)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class RunProgress:
    """Progress of one simulated run of ``total_s`` simulated seconds."""

    def __init__(
        self, total_s: float, name: str, *, tty: bool, stream: IO[str] | None = None,
        every_s: float | None = None,
    ) -> None:  # fmt: skip
        self.total_s = total_s
        self.name = name
        self.stream = stream or sys.stderr
        self.every_s = LINE_EVERY_S if every_s is None else every_s
        self._started = time.perf_counter()
        self._last_line = self._started
        self._last: tuple[float, int] = (0.0, 0)
        self._bar: Any = None
        if tty:
            from tqdm import tqdm

            self._bar = tqdm(
                total=round(total_s), unit="sim-s", desc=name, file=self.stream,
                dynamic_ncols=True,
            )  # fmt: skip

    def update(self, simulated_s: float, events: int) -> None:
        """The run has reached ``simulated_s`` after ``events`` controller events."""
        now = time.perf_counter()
        wall = max(now - self._started, 1e-9)
        self._last = (simulated_s, events)
        if self._bar is not None:
            self._bar.n = min(round(simulated_s), self._bar.total)
            self._bar.set_postfix_str(f"{events / wall:,.0f} events/s", refresh=False)
            self._bar.refresh()
            return
        if now - self._last_line < self.every_s:
            return
        self._last_line = now
        print(self.line(simulated_s, events, wall), file=self.stream, flush=True)

    def line(self, simulated_s: float, events: int, wall_s: float) -> str:
        """One progress line."""
        rate = simulated_s / wall_s if wall_s > 0 else 0.0
        left = (self.total_s - simulated_s) / rate if rate > 0 else math.inf
        share = min(1.0, simulated_s / self.total_s) if self.total_s > 0 else 1.0
        return (
            f"{self.name}: simulated {simulated_s:,.0f} of {self.total_s:,.0f} s ({share:.0%}), "
            f"{events / wall_s:,.0f} events/s, {rate:,.1f} sim-s per s, "
            f"ETA {_clock(max(0.0, left))}"
        )

    def close(self) -> None:
        """End the bar, or print the last line (a log then says how the run went)."""
        if self._bar is not None:
            self._bar.close()
            return
        wall = max(time.perf_counter() - self._started, 1e-9)
        print(self.line(*self._last, wall), file=self.stream, flush=True)


def sweep_size(config: DictConfig) -> int | None:
    """How many jobs a basic sweep of ``config`` runs (None if it cannot tell)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        params = dict(config.hydra.sweeper.get("params") or {})
        lines = [f"{key}={value}" for key, value in params.items()]
        lines += list(config.hydra.overrides.task)
        by_key = {o.get_key_element(): o for o in OverridesParser.create().parse_overrides(lines)}
        return math.prod(
            len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1
            for o in by_key.values()
        )
    except Exception:  # another sweeper's syntax: do without a total
        return None


class SweepProgress(Callback):
    """Says how far a multirun sweep is, as its jobs end (see the module docstring)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self._job_started = 0.0

    def _dir(self, config: DictConfig) -> Path:
        return Path(str(config.hydra.sweep.dir)) / ".progress"

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        total = sweep_size(config)
        folder = self._dir(config)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sweep.json").write_text(json.dumps({"jobs": total, "started": time.time()}))
        print(f"sweep: {total if total is not None else '?'} jobs", file=self.stream, flush=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._job_started = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.get("mode") != RunMode.MULTIRUN:
            return  # a single run has its own progress
        took = time.time() - self._job_started
        number = config.hydra.job.get("num", "?")
        folder = self._dir(config)
        try:
            (folder / f"job-{number}").write_text(f"{took:.3f}\n")
            sweep = json.loads((folder / "sweep.json").read_text())
            done = len(list(folder.glob("job-*")))
        except OSError:  # a worker that does not see the sweep directory
            print(f"sweep: job #{number} done in {took:.1f} s", file=self.stream, flush=True)
            return
        total, elapsed = sweep["jobs"], time.time() - sweep["started"]
        eta = elapsed / done * (total - done) if total and done else math.inf
        of = f" of {total}" if total else ""
        print(
            f"sweep: job #{number} done in {took:.1f} s: {done}{of} done, "
            f"{_clock(elapsed)} so far, ETA {_clock(eta) if total else '?'}",
            file=self.stream, flush=True,
        )  # fmt: skip
