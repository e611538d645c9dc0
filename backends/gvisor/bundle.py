"""OCI bundles for actor sandboxes.

The sandbox's root is a minimal, read-only directory (``rootfs.py``): the host's
``/usr`` read-only (the interpreter and its libraries), the template's own directory
at ``/app`` read-only, ``/proc`` and a small ``/tmp``; the process runs as uid/gid
65534 (nobody). The network namespace is the worker's. One bundle per (template,
worker) is enough: a restore takes the target worker's bundle, which differs only in
its network namespace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

NOBODY = 65534
TMP_SIZE = "64m"


def write_bundle(
    directory: Path,
    *,
    args: Sequence[str],
    env: Mapping[str, str],
    netns_path: str,
    rootfs: Path,
    app_dir: Path,
    uid: int = NOBODY,
) -> Path:
    """Write ``config.json`` for a sandbox running ``args``; return the bundle directory."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = {
        "ociVersion": "1.0.2",
        "process": {
            "args": list(args),
            "cwd": "/",
            "env": [f"{k}={v}" for k, v in sorted(env.items())],
            "user": {"uid": uid, "gid": uid},
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "actor",
        "mounts": [
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
            {
                "destination": "/app",
                "type": "bind",
                "source": str(app_dir),
                "options": ["rbind", "ro"],
            },
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": [f"size={TMP_SIZE}", "mode=1777"],
            },
        ],
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
