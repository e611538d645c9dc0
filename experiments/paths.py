"""Where the project's files are, for the code under ``experiments/`` (one place, so
that moving a module between its subfolders changes nothing)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout (or installed tree)
CONF_DIR = str(ROOT / "conf")  # Hydra's config directory
LATENCY_DIR = ROOT / "conf" / "latency"  # latency profiles, calibrated ones too
