"""Behaviour of the `fast` metric backend beyond parity: registry, input checks, agent-order
independence, per-rollout meta metric, log-replay rates, batching, config years."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # repo root: `benchmarks`

from benchmarks.make_parity_fixtures import load_real_scene, policy_rollouts
from smart_r1.metrics.base import LIKELIHOOD_FIELDS, get_backend
from smart_r1.metrics.fast import FastBackend, FastMetricsError
from smart_r1.sim.rollouts import Rollouts


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def scene():
    return load_real_scene()[1]


@pytest.fixture(scope="module")
def backend():
    return get_backend("fast", device="cpu")


@pytest.fixture(scope="module")
def noisy(scene):
    return policy_rollouts(scene, "perturbed", n_rollout=4, seed=3)


def test_registry_builds_fast_backend_on_requested_device(backend):
    assert isinstance(backend, FastBackend)
    assert backend.device == torch.device("cpu")
    assert FastBackend().device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_scores_are_in_range_and_named(backend, scene, noisy):
    s = backend.score(scene, noisy)
    assert set(s.likelihoods) == set(LIKELIHOOD_FIELDS)
    assert all(0.0 < v <= 1.0 for v in s.likelihoods.values())
    assert 0.0 < s.metametric < 1.0 and s.backend == "fast"
    assert s.min_average_displacement_error <= s.average_displacement_error


def test_agent_order_of_rollouts_does_not_matter(backend, scene, noisy):
    perm = np.random.default_rng(0).permutation(noisy.n_agent)
    shuffled = Rollouts(noisy.scenario_id, noisy.agent_id[perm], noisy.trajectories[:, perm])
    a, b = backend.score(scene, noisy), backend.score(scene, shuffled)
    assert a.as_flat_dict() == b.as_flat_dict()
    np.testing.assert_array_equal(a.per_rollout_metametric, b.per_rollout_metametric)


def test_missing_extra_and_nan_agents_are_named(backend, scene, noisy):
    with pytest.raises(FastMetricsError, match=str(int(noisy.agent_id[3]))):
        backend.score(scene, Rollouts(noisy.scenario_id, np.delete(noisy.agent_id, 3), np.delete(noisy.trajectories, 3, axis=1)))
    extra = Rollouts(noisy.scenario_id, np.append(noisy.agent_id, 999999), np.concatenate([noisy.trajectories, noisy.trajectories[:, :1]], 1))
    with pytest.raises(FastMetricsError, match="999999"):
        backend.score(scene, extra)
    bad = noisy.trajectories.copy()
    bad[1, 5, 40, 0] = np.nan
    with pytest.raises(FastMetricsError, match=str(int(noisy.agent_id[5]))):
        backend.score(scene, Rollouts(noisy.scenario_id, noisy.agent_id, bad))
    with pytest.raises(FastMetricsError, match="80"):
        backend.score(scene, Rollouts(noisy.scenario_id, noisy.agent_id, noisy.trajectories[:, :, :79]))


def test_per_rollout_metametric_ranks_rollouts(backend, scene):
    """Per-rollout meta metric: each rollout scored as a 1-rollout submission. A log-replay
    rollout must beat a frozen one in the same set."""
    log = policy_rollouts(scene, "log", n_rollout=1)
    frozen = policy_rollouts(scene, "frozen", n_rollout=1)
    mixed = Rollouts(log.scenario_id, log.agent_id, np.concatenate([log.trajectories, frozen.trajectories], 0))
    s = backend.score(scene, mixed)
    assert s.per_rollout_metametric.shape == (2,)
    assert s.per_rollout_metametric[0] > s.per_rollout_metametric[1]
    alone = backend.score(scene, frozen).metametric
    assert s.per_rollout_metametric[1] == pytest.approx(alone, abs=1e-6)


def test_log_replay_rates_of_real_scene(backend, scene):
    rates = backend.log_replay_rates(scene)
    # In 637f20cafde22ff8 one of the 4 evaluated agents (a pedestrian) overlaps another box in the log.
    assert rates == {"log_collision_rate": 0.25, "log_offroad_rate": 0.0, "log_traffic_light_violation_rate": 0.0}


def test_score_many_equals_score(backend, scene, noisy):
    frozen = policy_rollouts(scene, "frozen", n_rollout=2)
    many = backend.score_many([scene, scene], [noisy, frozen])
    assert [m.as_flat_dict() for m in many] == [backend.score(scene, noisy).as_flat_dict(), backend.score(scene, frozen).as_flat_dict()]


def test_2024_weights(scene, noisy):
    s24 = FastBackend(config_year=2024, device="cpu").score(scene, noisy)
    s25 = FastBackend(config_year=2025, device="cpu").score(scene, noisy)
    assert s24.likelihoods == s25.likelihoods
    assert s24.metametric != s25.metametric
    with pytest.raises(ValueError):
        FastBackend(config_year=2023)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(scene, noisy):
    a = FastBackend(device="cpu").score(scene, noisy).as_flat_dict()
    b = FastBackend(device="cuda").score(scene, noisy).as_flat_dict()
    for k, v in a.items():
        if isinstance(v, float):
            assert b[k] == pytest.approx(v, abs=1e-5), k


def test_read_only_inputs_score_the_same_without_warning(scene, noisy):
    """Scenes and rollouts that arrive through Ray's shared memory are read-only numpy arrays:
    scored as they are, with no torch 'non-writable array' warning and the same numbers."""
    import copy
    import dataclasses
    import warnings

    def freeze(obj, seen):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            obj.setflags(write=False)
        elif dataclasses.is_dataclass(obj):
            for f in dataclasses.fields(obj):
                freeze(getattr(obj, f.name), seen)
        elif isinstance(obj, (list, tuple)):
            for x in obj:
                freeze(x, seen)
        elif isinstance(obj, dict):
            for x in obj.values():
                freeze(x, seen)

    ro_scene, ro_rollouts = copy.deepcopy(scene), copy.deepcopy(noisy)
    freeze(ro_scene, set())
    freeze(ro_rollouts, set())
    assert not ro_scene.agent_states.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        got = FastBackend(device="cpu").score(ro_scene, ro_rollouts)  # a fresh backend: no cached map context
    want = get_backend("fast", device="cpu").score(scene, noisy)
    assert got.metametric == want.metametric
    assert got.likelihoods == want.likelihoods
