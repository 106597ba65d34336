"""Shared test fixtures. Telemetry off for everything the tests start.

Shared start-ups (reuse them in new tests instead of starting your own):

- `ray_local`: one private local Ray instance for every test that asks for it, started on the
  first such test and stopped after the last one. After each test it waits until the test's
  actors are gone and every CPU is free again; a test that leaves actors behind gets an error
  naming them, and the instance is restarted so the next test starts clean.
- `mlflow_server` (session): one real MLflow tracking server; tests use their own experiment
  names (the `unique_name` fixture). `mlflow_server_fresh` is a server of the test's own, for
  tests that stop and restart it or need an empty store.
- `official_backend`: one official-scorer worker (TensorFlow imported once) for the tests
  that score with the official code.
- `tiny_data` (session): the tiny_test config's data; `tiny_setup.tiny_config(*overrides)`
  gives the config (tests/tiny_setup.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
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


@pytest.fixture
def unique_name():
    """unique_name(prefix) -> a name no other test uses (MLflow experiments / registered models
    on the shared server)."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """Where `tiny_data` was prepared (scenes/, vocab/, cache/ of the tiny_test config)."""
    return tmp_path_factory.mktemp("tiny_data")


@pytest.fixture(scope="session")
def tiny_data(tiny_data_dir):
    """The tiny_test config's data (synthetic scenes, vocabulary, tokens: a PreparedData), built
    once per session. Read-only: a test that changes data prepares its own."""
    from smart_r1.train.pipeline import prepare_data
    from tiny_setup import tiny_config

    return prepare_data(tiny_config(), tiny_data_dir)


# ----------------------------------------------------------------------------------------------
# Ray: one private local instance shared by the tests that need it
# ----------------------------------------------------------------------------------------------

RAY_CPUS = 2
_ray_state: dict = {"tmp": None, "last_item": None}
_LIVE_ACTOR_STATES = ("DEPENDENCIES_UNREADY", "PENDING_CREATION", "ALIVE", "RESTARTING")
# Ray Train's own bookkeeping actors outlive `TorchTrainer.fit` (the autoscaling coordinator is a
# named singleton): not a test's leak, but the next test gets a fresh instance all the same.
_RAY_LIBRARY_ACTORS = {"TrainController", "DatasetManager", "_AutoscalingCoordinatorActor", "SynchronizationActor",
                       "PlacementGroupCleaner"}


def _ray_start():
    """Start the shared private instance (address='local': never another engineer's cluster;
    own temp dir, 2 CPUs, small object store, token auth off for this in-process cluster)."""
    import ray

    if not ray.is_initialized():
        os.environ["RAY_AUTH_MODE"] = "disabled"
        tmp = tempfile.mkdtemp(prefix="srt_", dir="/tmp")
        try:
            ray.init(address="local", num_cpus=RAY_CPUS, object_store_memory=200_000_000, include_dashboard=False,
                     _temp_dir=tmp, log_to_driver=False)
        except BaseException:
            ray.shutdown()  # stops whatever part of the instance did start
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _ray_state["tmp"] = tmp
    return ray


def _ray_stop() -> None:
    import ray

    if _ray_state["tmp"] is not None:
        ray.shutdown()
        shutil.rmtree(_ray_state["tmp"], ignore_errors=True)
        _ray_state["tmp"] = None


def _ray_leftovers(ray, timeout: float = 30.0) -> list[tuple[str, str]]:
    """Wait until no actor of this instance is alive and all CPUs are free (actors whose handles
    went out of scope are destroyed by Ray); what is still there after `timeout` s, as
    (actor class, description)."""
    import gc

    from ray._private import state  # the GCS actor table: works without the dashboard

    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        live = [a for a in state.actors().values() if a["State"] in _LIVE_ACTOR_STATES]
        free = ray.available_resources().get("CPU", 0.0) >= ray.cluster_resources().get("CPU", 0.0) - 1e-6
        if free and all(a["ActorClassName"] in _RAY_LIBRARY_ACTORS for a in live):
            return [(a["ActorClassName"], a["ActorClassName"]) for a in live]  # [] when clean
        if time.monotonic() > deadline:
            names = [(a["ActorClassName"], f"{a['ActorClassName']}{'(' + a['Name'] + ')' if a['Name'] else ''} pid {a['Pid']} {a['State']}")
                     for a in live]
            return names or [("", f"{ray.available_resources().get('CPU', 0.0)} of {RAY_CPUS} CPUs free (placement group?)")]
        time.sleep(0.1)


@pytest.fixture
def ray_local(request):
    """The shared private Ray instance (the `ray` module, initialised). Kill or drop the
    actors a test starts; anything left after it is an error of that test."""
    ray = _ray_start()
    yield ray
    left = _ray_leftovers(ray)
    if left or request.node.nodeid == _ray_state["last_item"]:
        _ray_stop()  # the last Ray test, or a test that left actors: the next one starts a fresh instance
    leftovers = [desc for cls, desc in left if cls not in _RAY_LIBRARY_ACTORS]
    if leftovers:
        pytest.fail(f"{request.node.nodeid} left Ray actors/resources behind (kill them, or drop their handles, also "
                    f"when the test fails): {leftovers}", pytrace=False)


# ----------------------------------------------------------------------------------------------
# MLflow: one real tracking server shared by the tests that need it
# ----------------------------------------------------------------------------------------------

_mlflow_state: dict = {"server": None, "tmp": None, "last_item": None}


def _mlflow_stop() -> None:
    if _mlflow_state["server"] is not None:
        _mlflow_state["server"].stop()
        shutil.rmtree(_mlflow_state["tmp"], ignore_errors=True)
        _mlflow_state["server"] = _mlflow_state["tmp"] = None


@pytest.fixture
def mlflow_server(request):
    """The shared MLflow server (free port, own temp dir), started on first use and stopped after
    the last test that uses it. Other tests' runs are on it too: use your own experiment name
    (the `unique_name` fixture). A test that stops or restarts the server needs `mlflow_server_fresh`."""
    from smart_r1.mlflow_server import start_local_server

    if _mlflow_state["server"] is None:
        _mlflow_state["tmp"] = tempfile.mkdtemp(prefix="srt_mlflow_", dir="/tmp")
        _mlflow_state["server"] = start_local_server(Path(_mlflow_state["tmp"]) / "mlflow")
    yield _mlflow_state["server"]
    if request.node.nodeid == _mlflow_state["last_item"]:
        _mlflow_stop()


@pytest.fixture
def mlflow_server_fresh(tmp_path):
    """An MLflow server of this test's own (empty store), stopped after it."""
    from smart_r1.mlflow_server import start_local_server

    server = start_local_server(tmp_path / "mlflow")
    yield server
    server.stop()


# ----------------------------------------------------------------------------------------------
# The official scorer: one worker process (TensorFlow loaded once) for the tests that score
# ----------------------------------------------------------------------------------------------

_official_state: dict = {"backend": None, "last_item": None}


def _official_stop() -> None:
    if _official_state["backend"] is not None:
        _official_state["backend"].close()
        _official_state["backend"] = None


@pytest.fixture
def official_backend(request):
    """A shared `OfficialBackend(config_year=2025, n_rollouts=None)` (any rollout count; its
    worker process imports TensorFlow once), started on first use and closed after the last test
    that uses it. Tests of start-up, validation rules or other years build their own."""
    from smart_r1.metrics.official import OfficialBackend

    if _official_state["backend"] is None:
        _official_state["backend"] = OfficialBackend(config_year=2025, n_rollouts=None)
    yield _official_state["backend"]
    if request.node.nodeid == _official_state["last_item"]:
        _official_stop()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Remember the last selected test that uses each shared service (it stops after that test)."""
    for state, fixture in ((_ray_state, "ray_local"), (_mlflow_state, "mlflow_server"), (_official_state, "official_backend")):
        users = [it.nodeid for it in items if fixture in getattr(it, "fixturenames", ())]
        state["last_item"] = users[-1] if users else None


def pytest_sessionfinish(session, exitstatus):
    _ray_stop()
    _mlflow_stop()
    _official_stop()
