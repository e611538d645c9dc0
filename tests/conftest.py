"""Shared fixtures: composing the project's Hydra configs, as a user's run would."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


@pytest.fixture
def compose_cfg():
    """Compose ``conf/config.yaml`` with overrides; progress bars off."""

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(
                "config",
                overrides=["backend.progress=false", *overrides],
                return_hydra_config=True,
            )

    return _compose
