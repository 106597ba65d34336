"""The shared real WOMD scene: vocabulary built from it, tokenized, rolled out (32 rollouts) by
`smart-r1 simulate` from a checkpoint; the submission passes the official checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smart_r1.cli import main
from smart_r1.model.presets import get_preset


@pytest.mark.official
def test_simulate_real_scene_passes_official_validation(tmp_path, real_scenario_path):
    from smart_r1.data.scenario_io import load_scene, read_scenario_protos
    from smart_r1.metrics.submission import read_submission, rollouts_to_scenario_rollouts
    from smart_r1.model.batch import vocab_sizes_of
    from smart_r1.model.smart import SmartModel
    from smart_r1.tokens.motion_vocab import VocabConfig, build_motion_vocab

    scene = load_scene(real_scenario_path)
    vocab = build_motion_vocab([scene], VocabConfig(size=128, samples=4000, min_samples=2000), progress=False)
    vdir = vocab.save(tmp_path / "vocab")
    torch.manual_seed(0)
    cfg = get_preset("cpu-demo")
    model = SmartModel(cfg, vocab_sizes_of(vocab))
    ckpt = tmp_path / "model.pt"
    torch.save({"model_state": model.state_dict(), "model_config": cfg.to_dict(), "vocab_dir": str(vdir)}, ckpt)
    out = tmp_path / "submission.tar.gz"
    rc = main(["simulate", "--checkpoint", str(ckpt), "--scenes", str(real_scenario_path), "--num-rollouts", "32",
               "--top-k", "16", "--seed", "3", "--out", str(out)])
    assert rc == 0 and out.exists()
    got = read_submission(out)
    ro = got[scene.scenario_id]
    assert ro.trajectories.shape == (32, len(scene.sim_agent_ids()), 80, 4)
    np.testing.assert_array_equal(np.sort(ro.agent_id), np.sort(scene.sim_agent_ids()))
    assert np.isfinite(ro.trajectories).all()
    # agents with short histories (not valid at step 0) are simulated too
    short = scene.agent_valid[:, 10] & ~scene.agent_valid[:, 0]
    assert set(scene.agent_id[short].tolist()) <= set(ro.agent_id.tolist())
    # simulated motion starts where the log is at the current step (tokenized current pose)
    order = {int(a): i for i, a in enumerate(scene.agent_id)}
    cur = np.stack([scene.agent_states[order[int(a)], 10, :2] for a in ro.agent_id])  # [n_sim, 2]
    first = ro.trajectories[:, :, 0, :2]  # [32, n_sim, 2]
    assert np.median(np.linalg.norm(first - cur[None], axis=-1)) < 3.0
    # rollouts differ (sampling) and the official validation accepts them
    assert not np.allclose(ro.trajectories[0], ro.trajectories[1])
    from waymo_open_dataset.utils.sim_agents import submission_specs

    scenario = next(iter(read_scenario_protos(real_scenario_path)))
    submission_specs.validate_scenario_rollouts(rollouts_to_scenario_rollouts(ro), scenario)
