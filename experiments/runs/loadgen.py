"""``actormux locust [overrides]``: play the configured workload with Locust.

An open-loop workload is materialised into a plan (the same requests the simulator
would play for this seed and duration), saved into the run directory (``plan.npz``),
and replayed by Locust against ``locust.host``. Closed-loop sessions are drawn as
scripts (``scripts.npz``), and each Locust user plays one, every call after the
previous answer (``locust_calls.jsonl`` logs each call). Per-request records land in
``locust_requests.parquet`` in the simulator's schema.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from control.metrics import percentiles
from experiments.analysis.report import format_summary
from experiments.app import CONF_DIR, build_or_exit, exit_bad_config
from workloads.loadtest import check_loopback, run_locust
from workloads.plan import Plan
from workloads.sessions import Scripts


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def run_locust_app(cfg: DictConfig) -> None:
    """Materialise the workload and play it with Locust against ``locust.host``."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    spec = build_or_exit(cfg)
    try:
        check_loopback(str(cfg.locust.host))
    except ValueError as e:
        exit_bad_config(e)
    plan: Plan | Scripts
    if getattr(spec.workload, "loop", "open") == "closed":
        plan = spec.workload.scripts(spec.duration_s, spec.seed)  # type: ignore[attr-defined]
        plan.save(out_dir / "scripts.npz")
        what = "closed-loop script calls"
    else:
        plan = Plan.materialize(spec.workload, spec.duration_s, spec.seed)
        what = "requests"
    print(f"playing {len(plan):,} {what} to {len(plan.population):,} actors over "
          f"{spec.duration_s:g} s against {cfg.locust.host} ...", file=sys.stderr)  # fmt: skip
    run = run_locust(
        plan,
        str(cfg.locust.host),
        out_dir,
        actor_domain=str(cfg.locust.actor_domain),
        request_path=str(cfg.locust.path),
        request_timeout_s=float(cfg.locust.request_timeout_s),
    )
    rec = run.records
    outcome = rec["outcome"].to_numpy()
    closed = isinstance(plan, Scripts)
    # open loop: every planned request; closed loop: every call the agents sent
    expected = int((run.client or {}).get("calls", -1)) if closed else len(plan)
    summary = {
        "workload": spec.workload.name,
        "seed": spec.seed,
        "host": str(cfg.locust.host),
        "loop": "closed" if closed else "open",
        "planned": expected,
        "requests": len(rec),
        "ok": int((outcome == "ok").sum()),
        "rejected": int((outcome == "rejected").sum()),
        "timed_out": int((outcome == "timeout").sum()),
        "request_latency_s": percentiles(rec.loc[outcome == "ok", "total_s"]),
        "send_lag_s": None
        if closed
        else percentiles(
            rec["arrival_s"].to_numpy() - plan.times[rec["request"]]  # type: ignore[union-attr]
        ),
        "client": run.client,
        "locust_exit_code": run.returncode,
    }
    (out_dir / "locust_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    print(f"records: {out_dir / 'locust_requests.parquet'}")
    if summary["requests"] != expected or not np.isfinite(rec["total_s"]).all():
        sys.exit(1)
