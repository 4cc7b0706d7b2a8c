"""Fixtures for exporter tests: a small synthetic run (see synthetic_records.py)."""

from __future__ import annotations

import pytest
from synthetic_records import synthetic_run

from tinyserve_core.observe.record import StepRecord


@pytest.fixture
def run_records() -> list[StepRecord]:
    return synthetic_run([(0.0, 32, 4), (0.0, 48, 6), (0.015, 20, 3), (0.2, 64, 5), (0.21, 16, 1)],
                         preempt_at_step=3)
