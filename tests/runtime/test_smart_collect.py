"""An MPO stage of the real library run by `run_distributed`: rollouts on 2 rollout actors
(chunks of the batch, merged back), rewards from the fast backend on 2 scorer actors,
`make_experience` + the library update in the learner."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_distributed_mpo_stage(tmp_path):
    from learner.driver import load_config_with_runtime, run_distributed

    cfg_path = tmp_path / "mpo.yaml"
    cfg_path.write_text(
        f"include: {REPO}/configs/tiny_test.yaml\n"
        f"output_dir: {tmp_path}/out\n"
        "stages!:\n  - {name: rft, objective: mpo, steps: 2, lr: 1.0e-3, params: {alpha: 0.5, beta: 0.04, n_rollout: 4}}\n"
        "eval: {after_each_stage: false}\n"
        "tracking: {enabled: false}\n"
        "runtime: {num_rollout_actors: 2, num_scorers: 2, rollout_cpus: 0.5, scorer_cpus: 0.25}\n"
    )
    cfg, runtime = load_config_with_runtime(str(cfg_path))
    result = run_distributed(cfg, runtime=runtime)
    hist = result.history
    assert [h["step"] for h in hist] == [0, 1]
    assert [h["runtime/weights_version"] for h in hist] == [0.0, 1.0]  # new weights published after the update
    assert all(h["runtime/policy_lag"] == 0.0 for h in hist)
    assert all(math.isfinite(h["loss"]) and 0.0 <= h["reward/mean"] <= 1.0 for h in hist)
    assert hist[1]["kl"] > 0.0  # after one update the policy has moved away from the stage reference
    # the sampler's log-probs and supports travelled from the 2 actors (one scene each) and merged
    # in agent order, and the actors' 1-scene rollouts score like the learner's 2-scene re-scoring:
    # the re-scored sampled-form log-prob equals the recorded one, MPO's ratio is 1 at every step
    assert all(abs(h["mpo/ratio_mean"] - 1.0) < 1e-4 and h["mpo/ratio_max"] < 1.0 + 1e-3 for h in hist), \
        [(h["mpo/ratio_mean"], h["mpo/ratio_max"]) for h in hist]
