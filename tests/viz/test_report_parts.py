"""Parts of the evaluation report: the non-learned baselines, the per-step event masks the
renders mark, and the per-scene seeds."""

from __future__ import annotations

import numpy as np
import pytest

from smart_r1.data.scene import N_FUTURE_STEP, STATE_HEADING, STATE_X, STATE_Y
from smart_r1.sim.baselines import baseline_names, get_baseline, register_baseline
from smart_r1.sim.rollouts import Rollouts


@pytest.fixture(scope="module")
def synth_scene(tmp_path_factory):
    from smart_r1.data.scenario_io import load_scene
    from smart_r1.data.synth import write_synthetic_dataset

    (shard,) = write_synthetic_dataset(tmp_path_factory.mktemp("parts"), num_scenes=1, seed=3, num_shards=1, progress=False)
    return load_scene(shard)


def test_baseline_registry():
    assert {"constant_velocity", "log_replay", "log_replay_noise"} <= set(baseline_names())
    assert get_baseline("baseline:constant_velocity") is get_baseline("constant_velocity")
    with pytest.raises(KeyError, match="nope"):
        get_baseline("baseline:nope")
    with pytest.raises(ValueError, match="twice"):
        register_baseline("constant_velocity")(lambda scene, n, seed=0: None)


def test_baselines_simulate_the_right_agents(synth_scene):
    scene = synth_scene
    cur = scene.current_time_index
    ids = scene.sim_agent_ids()
    rows = np.flatnonzero(scene.sim_agent_mask())
    for name in ("constant_velocity", "log_replay", "log_replay_noise"):
        ro = get_baseline(name)(scene, 3, seed=1)
        assert isinstance(ro, Rollouts)
        assert ro.trajectories.shape == (3, len(ids), N_FUTURE_STEP, 4)
        assert np.array_equal(ro.agent_id, ids)
        assert np.isfinite(ro.trajectories).all()
    cv = get_baseline("constant_velocity")(scene, 2)
    st = scene.agent_states[rows, cur]  # [n_sim, 9]
    expected_x = st[:, STATE_X] + st[:, 4] * 8.0  # vx * 8 s
    assert np.allclose(cv.trajectories[0, :, -1, 0], expected_x, atol=1e-3)
    assert np.allclose(cv.trajectories[1, :, :, 3], st[:, None, STATE_HEADING])
    log = get_baseline("log_replay")(scene, 1)
    valid = scene.agent_valid[rows, cur + 1 :]  # [n_sim, 80]
    logged = scene.agent_states[rows, cur + 1 :][..., [STATE_X, STATE_Y]]  # [n_sim, 80, 2]
    assert np.allclose(log.trajectories[0, ..., :2][valid], logged[valid])
    noisy_a = get_baseline("log_replay_noise")(scene, 4, seed=5).trajectories
    noisy_b = get_baseline("log_replay_noise")(scene, 4, seed=5).trajectories
    noisy_c = get_baseline("log_replay_noise")(scene, 4, seed=6).trajectories
    assert np.array_equal(noisy_a, noisy_b) and not np.array_equal(noisy_a, noisy_c)
    assert not np.allclose(noisy_a[0], noisy_a[1])  # rollouts differ
    drift = np.linalg.norm(noisy_a[..., :2] - log.trajectories[..., :2], axis=-1)  # [4, n_sim, 80]
    assert 0.1 < drift[..., -1].mean() < 3.0  # ~1 m after 8 s
    accel = np.diff(noisy_a[..., :2] - log.trajectories[..., :2], n=2, axis=2) / 0.01  # [4, n_sim, 78, 2]
    assert np.abs(accel).max() < 3.0  # smooth: no step-to-step jitter


def test_event_masks_flag_a_collision_where_it_happens(synth_scene):
    """Drive the first two simulated agents onto the same spot from step 50: the collision mask
    turns on for both there and stays off before."""
    from smart_r1.viz.events import rollout_events
    from smart_r1.viz.pipeline import event_masks_for

    scene = synth_scene
    ro = get_baseline("log_replay")(scene, 1)
    traj = ro.trajectories.copy()  # [1, n_sim, 80, 4]
    cur = scene.current_time_index
    k = 50 - (cur + 1)  # index of step 50 in the future axis
    traj[0, 1, k:, :2] = traj[0, 0, k:, :2]
    traj[0, 1, k:, 3] = traj[0, 0, k:, 3]
    crash = Rollouts(ro.scenario_id, ro.agent_id, traj)
    base = rollout_events(scene, ro)[0].masks["collision"]
    events = rollout_events(scene, crash)[0]
    rows = [int(np.flatnonzero(scene.agent_id == a)[0]) for a in ro.agent_id[:2]]
    coll = events.masks["collision"]  # [n_agent, n_step]
    assert coll.shape == (scene.n_agent, scene.n_step)
    assert coll[rows, 50:].all()
    assert not coll[:, : cur + 1].any()
    assert not (coll[rows, :50] & ~base[rows, :50]).any()
    assert events.counts()["collision"] >= 2
    (mask,) = event_masks_for(scene, crash)
    assert mask[rows, 50:].all() and mask.dtype == bool


def test_scene_seed_is_stable():
    from smart_r1.eval.sources import scene_seed

    assert scene_seed(0, "abc") == scene_seed(0, "abc")
    assert scene_seed(0, "abc") != scene_seed(1, "abc") != scene_seed(0, "abd")
    assert 0 <= scene_seed(123, "x") < 2**31


def test_failing_scene_is_reported_not_fatal(synth_scene, tmp_path):
    """A scene the metrics cannot score (no map, so no road edges: scene validation refuses it)
    is listed in `failed` (the report names it); `fail_fast` raises instead. Scenes may be given
    as an iterator of `Scene`s."""
    from smart_r1.data.scene import MapData, SceneValidationError
    from smart_r1.eval.evaluate import evaluate

    bare = synth_scene.replace(map=MapData.empty())
    result = evaluate(["baseline:constant_velocity"], iter([bare]), num_rollouts=2, out_dir=tmp_path, report=False, progress=False)
    assert result.n_scored == 0 and result.rows == []
    (msg,) = result.failed["baseline:constant_velocity"].values()
    assert "map_features" in msg and bare.scenario_id in result.failed["baseline:constant_velocity"]
    with pytest.raises(SceneValidationError, match="no map features"):
        evaluate(["baseline:constant_velocity"], [bare], num_rollouts=2, out_dir=tmp_path, report=False, progress=False, fail_fast=True)


def test_scores_written_before_a_crash_are_kept(synth_scene, tmp_path):
    """The run dies on its second scene: the first scene's row is on disk, and the re-run skips it."""
    from smart_r1.data.scene import MapData, SceneValidationError
    from smart_r1.eval.evaluate import ScoreStore, evaluate

    bare = synth_scene.replace(map=MapData.empty(), scenario_id="no_road_edges")
    with pytest.raises(SceneValidationError):
        evaluate(["baseline:constant_velocity"], [synth_scene, bare], num_rollouts=2, out_dir=tmp_path, report=False,
                 progress=False, fail_fast=True)
    (row,) = ScoreStore(tmp_path / "scores.parquet").rows
    assert row["scenario_id"] == synth_scene.scenario_id and row["source"] == "baseline:constant_velocity"
    again = evaluate(["baseline:constant_velocity"], [synth_scene], num_rollouts=2, out_dir=tmp_path, report=False, progress=False)
    assert again.n_scored == 0 and again.n_skipped == 1 and len(again.rows) == 1


def test_store_spaces_out_writes(tmp_path):
    from smart_r1.eval.evaluate import ScoreStore

    store = ScoreStore(tmp_path / "s.parquet", overhead_factor=1e9)
    row = {"source": "a", "scenario_id": "x", "backend": "fast", "config_year": 2025, "num_rollouts": 2, "seed": 0, "metametric": 0.5}
    store.add([row])
    assert store.maybe_flush()  # first write: nothing to amortise yet
    store.add([dict(row, scenario_id="y")])
    assert not store.maybe_flush()  # the last write's cost x 1e9 has not passed
    assert len(ScoreStore(tmp_path / "s.parquet").rows) == 1
    store.flush()
    assert {r["scenario_id"] for r in ScoreStore(tmp_path / "s.parquet").rows} == {"x", "y"}
