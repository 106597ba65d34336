"""Shared test fixtures. Telemetry off for everything the tests start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FIXTURES = Path(__file__).parent / "fixtures"
REAL_SCENARIO_ID = "637f20cafde22ff8"
REAL_SCENARIO_FILE = FIXTURES / "womd" / "scenario_637f20cafde22ff8.tfrecord"
REAL_SUBMISSION_FILE = FIXTURES / "womd" / "constant_velocity_submission_637f20cafde22ff8.binproto"


@pytest.fixture(scope="session")
def real_scenario_path() -> Path:
    return REAL_SCENARIO_FILE


@pytest.fixture(scope="session")
def real_submission_path() -> Path:
    return REAL_SUBMISSION_FILE
