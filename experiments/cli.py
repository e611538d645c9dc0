"""The ``actormux`` command.

    actormux [overrides]                   run an experiment (default: simulate)
    actormux workload-report [overrides]   statistics and plots of a workload, no simulation
    actormux locust [overrides]            play the workload with Locust against locust.host
    actormux serve backend=local [...]     real gVisor actors behind a router, until Ctrl-C
    actormux admin COMMAND ...             operate a running `serve` (list, create, suspend, ...)
    actormux cleanup [--instance N]        remove every sandbox and namespace actormux created
    actormux calibrate RUN_DIR [--name N]  fit conf/latency/N.yaml to a run's records
    actormux collect SWEEP_DIR             one table and plots from a multirun sweep
    actormux plan [overrides]              fewest workers meeting an SLO (plan.actors=[...])
    actormux bench SUITE [backend=...]     a regression suite against its baseline
    actormux bench-report [HISTORY]        plots of a bench history

Overrides are Hydra's (``experiment=oversub_250_on_8 policy=substrate``); ``actormux
--help`` lists the config groups.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, Hydra app), and the run directory its outputs go to by default
    "workload-report": ("experiments.runs.workload_report", "run_workload_report"),
    "locust": ("experiments.runs.loadgen", "run_locust_app"),
    "serve": ("experiments.real.serve", "run_serve"),
    "plan": ("experiments.runs.planner", "run_plan"),
}
PLAIN: dict[str, tuple[str, str]] = {  # argparse commands, no Hydra config
    "cleanup": ("experiments.real.ops", "cleanup_main"),
    "admin": ("experiments.real.ops", "admin_main"),
    "calibrate": ("experiments.analysis.calibrate", "main"),
    "collect": ("experiments.analysis.collect", "main"),
    "bench": ("experiments.runs.bench", "bench_main"),
    "bench-report": ("experiments.runs.bench", "report_main"),
}
RUN_DIRS = {
    "workload-report": "reports/workload/${workload.name}/${now:%Y-%m-%d_%H-%M-%S}",
    "locust": "reports/locust/${workload.name}/${now:%Y-%m-%d_%H-%M-%S}",
    "serve": "reports/serve/${now:%Y-%m-%d_%H-%M-%S}",
    "plan": "reports/plan/${now:%Y-%m-%d_%H-%M-%S}",
}


def main() -> None:
    """Entry point of the ``actormux`` console script."""
    app: Callable[[], None]
    if len(sys.argv) > 1 and sys.argv[1] in PLAIN:
        module, attr = PLAIN[sys.argv[1]]
        sys.exit(getattr(__import__(module, fromlist=[attr]), attr)(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        name = sys.argv.pop(1)
        module, attr = SUBCOMMANDS[name]
        if not any(a.startswith("hydra.run.dir=") for a in sys.argv[1:]):
            sys.argv.append(f"hydra.run.dir={RUN_DIRS[name]}")
        app = getattr(__import__(module, fromlist=[attr]), attr)
    else:
        from experiments.app import run_experiment as app
    app()


if __name__ == "__main__":
    main()
