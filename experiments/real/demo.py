"""The second half of ``make demo``: the 250-on-8 experiment on real gVisor, if it can run.

Installs runsc with apt when running as root on Linux without it; otherwise says why
the real run is skipped (the simulated run has already been shown).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from backends.local.settings import runsc_unusable_reason


def main() -> int:
    """Run ``actormux experiment=oversub_250_on_8 backend=local`` when possible."""
    if sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("runsc") is None:
        print("installing gVisor (apt-get install -y runsc) ...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "runsc"], check=False)
    reason = runsc_unusable_reason()
    if reason:
        print(f"\nskipping the real run (simulation only): {reason}")
        return 0
    print("\n250 actors on 8 real gVisor workers (backend=local; about 3 minutes) ...", flush=True)
    actormux = str(Path(sys.executable).parent / "actormux")
    args = [actormux, "experiment=oversub_250_on_8", "backend=local"]
    return subprocess.run(args, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
