"""The `womd` synthetic profile and the oracle policy (`baseline:oracle`).

Two womd-profile scenes, written once per module with `write_synthetic_dataset` (shards +
`.synth_state.json`) and read back like any scene file."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from smart_r1.data.scene import AgentType
from smart_r1.data.scenario_io import iter_scenes
from smart_r1.data.synth import SynthConfig, generate_scenario, write_synthetic_dataset
from smart_r1.data.synth.oracle import NoGeneratorStateError, oracle_rollouts
from smart_r1.sim.baselines import get_baseline

SEED = 4  # scenes 0, 1: a grid (79 tracks) and an intersection (76 tracks)
N_ROLLOUTS = 4


@pytest.fixture(scope="module")
def womd_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("womd")
    write_synthetic_dataset(out, num_scenes=2, seed=SEED, progress=False, profile="womd")
    return out


@pytest.fixture(scope="module")
def womd_scenes(womd_dir):
    return list(iter_scenes(str(womd_dir)))


def test_small_profile_is_the_default_config():
    assert SynthConfig.from_profile("small") == SynthConfig()
    cfg = SynthConfig(max_agents=24)
    a = generate_scenario(7, 1, cfg).SerializeToString()
    assert a == generate_scenario(7, 1, SynthConfig.from_profile("small", max_agents=24)).SerializeToString()
    with pytest.raises(KeyError, match="unknown synthetic profile"):
        SynthConfig.from_profile("huge")


def test_womd_shape(womd_scenes):
    cfg = SynthConfig.from_profile("womd")
    assert len(womd_scenes) == 2
    assert max(s.n_agent for s in womd_scenes) >= 40
    for s in womd_scenes:
        cur = s.current_time_index
        assert s.n_agent >= cfg.min_agents
        ttp = np.flatnonzero(s.tracks_to_predict)
        assert 6 <= ttp.size <= 8
        assert s.agent_valid[s.sdc_index].all()
        # moving agents valid over the whole future, the nearest to the SDC first
        assert s.agent_valid[ttp, cur:].all()
        speed = np.hypot(s.agent_states[ttp, :, 4], s.agent_states[ttp, :, 5]).max(1)
        assert (speed > 0.8).all()
        d = np.linalg.norm(s.agent_states[:, cur, :2] - s.agent_states[s.sdc_index, cur, :2], axis=1)
        assert np.median(d[ttp]) < np.median(d[s.agent_valid[:, cur]])
        assert s.objects_of_interest.sum() in (0, 2)
    # validity gaps (occlusions) and parked / static objects somewhere in the two scenes
    runs = [(np.diff(s.agent_valid.astype(int), axis=1) == 1).sum(1) + s.agent_valid[:, 0] for s in womd_scenes]
    assert sum(int((r >= 2).sum()) for r in runs) >= 1  # a track valid again after an invalid run (occlusion)
    static = 0
    for s in womd_scenes:
        veh = (s.agent_type == int(AgentType.VEHICLE)) & s.agent_valid.all(1)
        xy = s.agent_states[veh, :, :2]
        static += int((np.ptp(xy, axis=1).max(-1) < 1.0).sum())  # standing the whole 9.1 s (tracking jitter only)
    assert static >= 1
    assert all(s.generator_state for s in womd_scenes)


def test_oracle_futures_share_the_past_and_differ(womd_scenes):
    scene = womd_scenes[0]
    cur = scene.current_time_index
    rows = np.flatnonzero(scene.sim_agent_mask())
    traj = oracle_rollouts(scene, N_ROLLOUTS, seed=0, include_past=True)  # [R, n_sim, 91, 4]
    assert traj.shape == (N_ROLLOUTS, rows.size, 91, 4) and np.isfinite(traj).all()
    # the restarted generator reproduces the logged past exactly (same draws up to the fork)
    logged = scene.agent_states[rows, : cur + 1][..., [0, 1, 2, 3]]  # [n_sim, 11, 4]
    ok = scene.agent_valid[rows, : cur + 1]
    np.testing.assert_allclose(traj[0, :, : cur + 1][ok], logged[ok], atol=2e-3)
    # ... and draws different futures: from each other and from the log
    fut = traj[:, :, cur + 1 :, :2]  # [R, n_sim, 80, 2]
    moving = np.hypot(scene.agent_states[rows, cur, 4], scene.agent_states[rows, cur, 5]) > 2.0
    spread = np.linalg.norm(fut[0] - fut[1], axis=-1)[:, -1]  # [n_sim] at the last step
    assert np.median(spread[moving]) > 0.05 and (spread[moving] > 0.5).any()
    log_fut = scene.agent_states[rows, cur + 1 :, :2]
    vf = scene.agent_valid[rows, cur + 1 :]
    err = np.linalg.norm(fut - log_fut[None], axis=-1)  # [R, n_sim, 80]
    assert (err[:, vf].mean(-1) > 0.02).all()
    # ... but stay close to it at the first future step (no jump at the fork)
    assert np.median(err[:, vf[:, 0], 0]) < 0.2
    # same seed, same futures
    again = oracle_rollouts(scene, 2, seed=0)
    np.testing.assert_array_equal(again, traj[:2, :, cur + 1 :])


def test_oracle_baseline_reads_the_scene_file_only(womd_dir, womd_scenes):
    shard = next(womd_dir.glob("training.tfrecord-*"))
    before = hashlib.sha256(shard.read_bytes()).hexdigest()
    ro = get_baseline("baseline:oracle")(womd_scenes[1], 2, seed=5)
    assert ro.trajectories.shape[:2] == (2, int(womd_scenes[1].sim_agent_mask().sum()))
    assert list(ro.agent_id) == list(womd_scenes[1].sim_agent_ids())
    assert hashlib.sha256(shard.read_bytes()).hexdigest() == before


def test_oracle_needs_generator_state():
    from tests.data.womd_helpers import REAL_SCENARIO_FILE

    (real,) = list(iter_scenes(str(REAL_SCENARIO_FILE)))
    assert real.generator_state == ""
    with pytest.raises(NoGeneratorStateError, match="no synthetic generator state"):
        get_baseline("oracle")(real, 2)


def test_cache_keeps_generator_state(womd_scenes):
    from smart_r1.data.cache import scenes_to_table, table_to_scenes

    back = table_to_scenes(scenes_to_table(womd_scenes))
    assert [s.generator_state for s in back] == [s.generator_state for s in womd_scenes]
    ro = oracle_rollouts(back[0], 1, seed=0)
    np.testing.assert_array_equal(ro, oracle_rollouts(womd_scenes[0], 1, seed=0))


def test_oracle_scores_well_above_constant_velocity(womd_scenes):
    from smart_r1.eval.evaluate import evaluate_scene
    from smart_r1.eval.sources import make_source
    from smart_r1.metrics.base import get_backend

    backend = get_backend("fast", device="cpu")
    scene = womd_scenes[0]
    meta = {
        name: evaluate_scene(make_source(f"baseline:{name}"), scene, backend, 8, seed=0).scores.metametric
        for name in ("oracle", "constant_velocity")
    }
    assert meta["oracle"] - meta["constant_velocity"] >= 0.15, meta


def test_training_config_profile():
    from pathlib import Path

    from smart_r1.train.config import ConfigError, load_config

    configs = Path(__file__).resolve().parents[2] / "configs"
    cfg = load_config(configs / "experiment_womd.yaml")
    assert cfg.data.synthetic.profile == "womd"
    assert load_config(configs / "cpu_demo.yaml").data.synthetic.profile == "small"  # the main job stays on small
    with pytest.raises(ConfigError, match="data.synthetic.profile"):
        load_config(configs / "experiment_womd.yaml", ["data.synthetic.profile=huge"])
