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


@pytest.fixture(scope="module")
def ray_local():
    """A private local Ray instance (never another engineer's cluster): address='local',
    own temp dir, 2 CPUs, small object store, token auth off for this in-process cluster."""
    import shutil
    import tempfile

    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    tmp = tempfile.mkdtemp(prefix="srt_", dir="/tmp")
    ray.init(address="local", num_cpus=2, object_store_memory=200_000_000, include_dashboard=False,
             _temp_dir=tmp, log_to_driver=False)
    yield ray
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
