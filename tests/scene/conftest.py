"""Scene tests load the shipped weights once (no training) and share one SceneLab."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def lab():
    from tinyserve_core.scene.lab import SceneLab

    return SceneLab("room")


@pytest.fixture(scope="session")
def spec(lab):
    return lab.spec
