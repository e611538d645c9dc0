"""OCI bundles for actor sandboxes.

The sandbox's root file system is the host's ``/``, read-only (the Python and the
template programs come from there); the network namespace is the worker's. One bundle
per (template, worker) is enough: a restore takes the target worker's bundle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path


def write_bundle(
    directory: Path, *, args: Sequence[str], env: Mapping[str, str], netns_path: str
) -> Path:
    """Write ``config.json`` for a sandbox running ``args``; return the bundle directory."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "ociVersion": "1.0.2",
        "process": {
            "args": list(args),
            "cwd": "/",
            "env": [f"{k}={v}" for k, v in sorted(env.items())],
            "user": {"uid": 0, "gid": 0},
        },
        "root": {"path": "/", "readonly": True},
        "hostname": "actor",
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "network", "path": netns_path},
            ]
        },
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory
