"""viz.pipeline.load_rollouts_for_scene: .npz and submission files give the same rollouts."""

from __future__ import annotations

import numpy as np
import pytest

from smart_r1.data.scenario_io import load_scene
from smart_r1.metrics.submission import save_rollouts_npz
from smart_r1.viz.pipeline import load_rollouts_for_scene


def test_rollouts_from_npz_and_submission(real_scenario_path, real_submission_path, tmp_path):
    scene = load_scene(real_scenario_path)
    from_sub = load_rollouts_for_scene(scene, rollouts_path=str(real_submission_path))
    assert from_sub.scenario_id == scene.scenario_id
    npz = save_rollouts_npz(from_sub, tmp_path / "r.npz")
    from_npz = load_rollouts_for_scene(scene, rollouts_path=str(npz))
    assert from_npz.scenario_id == scene.scenario_id
    np.testing.assert_array_equal(from_npz.agent_id, from_sub.agent_id)
    np.testing.assert_array_equal(from_npz.trajectories, from_sub.trajectories)
    bad = tmp_path / "bad.npz"
    np.savez(bad, agent_id=np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="bad.npz: rollouts npz lacks field 'scenario_id'"):
        load_rollouts_for_scene(scene, rollouts_path=str(bad))
