"""Real runs: deployments (backend=local|kind|gke), one real run, serve, the soak, the
demo's second half, and operating a running serve."""
