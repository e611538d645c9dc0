"""Running experiments: configs to run specs, the simulator runner, replications, the
planner, the bench, Locust and workload reports."""
