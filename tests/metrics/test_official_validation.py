"""Official backend: config loading, TensorFlow isolation and the validation that runs before
any TF work (no worker is started by these tests)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from smart_r1.metrics.base import LIKELIHOOD_FIELDS, METRIC_WEIGHTS, get_backend
from smart_r1.metrics.official import OfficialBackend, config_path, load_config
from smart_r1.metrics.submission import (
    SubmissionValidationError,
    iter_scenario_protos,
    read_submission,
    validate_rollouts,
)
from smart_r1.sim.rollouts import Rollouts

SID = "637f20cafde22ff8"


@pytest.fixture(scope="module")
def scenario(real_scenario_path):
    (proto,) = list(iter_scenario_protos([real_scenario_path]))
    return proto


@pytest.fixture(scope="module")
def rollouts(real_submission_path) -> Rollouts:
    return read_submission(real_submission_path)[SID]


def test_import_does_not_load_tensorflow():
    code = (
        "import sys\n"
        "import smart_r1.metrics.official as o, smart_r1.metrics.submission as s\n"
        "from smart_r1.metrics.base import get_backend\n"
        "b = get_backend('official')\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout


@pytest.mark.parametrize("year", [2025, 2024])
def test_config_from_installed_wheel_matches_weights(year):
    path = config_path(year)
    assert path.is_absolute() and path.exists()
    config = load_config(year)
    for name in LIKELIHOOD_FIELDS:
        assert getattr(config, name.removesuffix("_likelihood")).metametric_weight == pytest.approx(
            METRIC_WEIGHTS[year][name]
        )


def test_unknown_year_rejected():
    with pytest.raises(ValueError):
        OfficialBackend(config_year=2023)


def test_registered():
    backend = get_backend("official", config_year=2024)
    assert isinstance(backend, OfficialBackend) and backend.config_year == 2024


def test_shared_submission_is_valid(scenario, rollouts):
    assert rollouts.trajectories.shape == (32, 50, 80, 4)
    validate_rollouts(rollouts, scenario=scenario)  # raises if the leaderboard would reject it


def _expect_invalid(backend, scenario, rollouts) -> SubmissionValidationError:
    with pytest.raises(SubmissionValidationError) as info:
        backend.score(None, rollouts, scenario_proto=scenario)
    assert not backend._worker.alive(), "validation must fail before the TF worker starts"
    err = info.value
    assert SID in str(err) and err.scenario_id == SID
    return err


def test_missing_agent_named(scenario, rollouts):
    backend = OfficialBackend()
    drop = int(rollouts.agent_id[7])
    cut = Rollouts(SID, np.delete(rollouts.agent_id, 7), np.delete(rollouts.trajectories, 7, axis=1))
    err = _expect_invalid(backend, scenario, cut)
    assert err.missing_ids == [drop] and str(drop) in str(err)


def test_extra_agent_named(scenario, rollouts):
    backend = OfficialBackend()
    not_sim = [int(t.id) for t in scenario.tracks if not t.states[10].valid][0]  # a track invalid at step 10
    ids = np.append(rollouts.agent_id, [not_sim, 999999])  # [51 + 1]
    traj = np.concatenate([rollouts.trajectories, rollouts.trajectories[:, :2]], axis=1)  # [32, 52, 80, 4]
    err = _expect_invalid(backend, scenario, Rollouts(SID, ids, traj))
    assert err.extra_ids == sorted([not_sim, 999999])
    assert str(not_sim) in str(err) and "999999" in str(err)


def test_79_steps_named(scenario, rollouts):
    backend = OfficialBackend()
    short = Rollouts(SID, rollouts.agent_id, rollouts.trajectories[:, :, :79])
    err = _expect_invalid(backend, scenario, short)
    assert "79 steps" in str(err) and str(int(rollouts.agent_id[0])) in str(err)


def test_nan_named(scenario, rollouts):
    backend = OfficialBackend()
    traj = rollouts.trajectories.copy()  # [32, 50, 80, 4]
    traj[3, 11, 40, 0] = np.nan
    traj[0, 20, 0, 3] = np.inf
    err = _expect_invalid(backend, scenario, Rollouts(SID, rollouts.agent_id, traj))
    assert err.bad_ids == sorted([int(rollouts.agent_id[11]), int(rollouts.agent_id[20])])
    assert "NaN" in str(err)


def test_wrong_rollout_count_and_scene(scenario, rollouts):
    backend = OfficialBackend()
    err = _expect_invalid(backend, scenario, Rollouts(SID, rollouts.agent_id, rollouts.trajectories[:31]))
    assert "31 rollouts" in str(err)
    other = Rollouts("not_this_scene", rollouts.agent_id, rollouts.trajectories)
    with pytest.raises(SubmissionValidationError, match="not_this_scene"):
        validate_rollouts(other, scenario=scenario)


def test_official_checks_run_too(scenario, rollouts):
    """The official submission_specs checks see a proto that our own checks did not build."""
    from smart_r1.metrics.submission import rollouts_to_scenario_rollouts

    proto = rollouts_to_scenario_rollouts(rollouts)
    proto.joint_scenes[5].simulated_trajectories[0].center_x.pop()  # one trajectory 79 long
    with pytest.raises(SubmissionValidationError, match="official submission_specs"):
        validate_rollouts(rollouts, scenario=scenario, scenario_rollouts=proto)
