"""Fixtures for the runtime tests: a real MLflow server on a free port in a temp dir."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture
def mlflow_server(tmp_path):
    from smart_r1.mlflow_server import start_local_server

    server = start_local_server(tmp_path / "mlflow")
    yield server
    server.stop()
