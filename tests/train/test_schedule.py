"""Tiny end-to-end schedule [bc, catk, mpo, catk] with the real model, simulator and fast metrics."""

from __future__ import annotations

import math

import pytest
import torch

from smart_r1.objectives import get_objective
from smart_r1.objectives.base import Experience
from smart_r1.train.checkpoint import Checkpoint
from smart_r1.train.data import make_inputs
from smart_r1.train.loop import derive_seed
from smart_r1.train.config import StageConfig
from smart_r1.train.pipeline import build_model_for, run_pipeline
from smart_r1.train.step import build_train_state, update

from tiny_setup import tiny_config

SCHEDULE = (
    "[{name: bc, objective: bc, steps: 6, lr: 1.0e-2, params: {label_smoothing: 0.1}},"
    " {name: sft, objective: catk, steps: 3, lr: 2.0e-3, params: {top_k: 8}, freeze: [map_encoder, embeddings]},"
    " {name: rft, objective: mpo, steps: 2, lr: 1.0e-3, params: {alpha: calibrate, beta: 0.04, n_rollout: 3, calibration_batches: 1}},"
    " {name: sft2, objective: catk, steps: 2, lr: 2.0e-3, params: {top_k: 8}, freeze: [map_encoder, embeddings]}]"
)
FAST_EVAL = ("eval.n_scenes=1", "eval.n_rollout=2")


def _fixed_loss(model, objective_name, data, params, seed=0):
    """The objective's loss on the whole training split with a fixed rollout seed (no update)."""
    obj = get_objective(objective_name, **params)
    inputs = make_inputs(data.train, range(3), data.vocab)
    gen = torch.Generator().manual_seed(seed)
    exp = obj.collect(model, inputs, generator=gen)
    model.eval()
    with torch.no_grad():
        loss, _ = obj.loss(model, exp)
    return float(loss)


def test_schedule_runs_and_objectives_decrease_losses(tiny_data, tmp_path):
    cfg = tiny_config(f"stages={SCHEDULE}", f"output_dir={tmp_path}", "data.batch_size=3", *FAST_EVAL)
    model0 = build_model_for(cfg, tiny_data.vocab)
    bc0 = _fixed_loss(model0, "bc", tiny_data, {"label_smoothing": 0.1})
    res = run_pipeline(cfg, data=tiny_data)
    assert [h["stage"] for h in res.history] == ["bc"] * 6 + ["sft"] * 3 + ["rft"] * 2 + ["sft2"] * 2
    assert all(math.isfinite(h["loss"]) for h in res.history)
    ck = {n: Checkpoint.load(tmp_path / "checkpoints" / f"{i:02d}_{n}.pt") for i, n in enumerate(["bc", "sft", "rft", "sft2"])}
    model = build_model_for(cfg, tiny_data.vocab)
    model.load_state_dict(ck["bc"].model)
    bc1 = _fixed_loss(model, "bc", tiny_data, {"label_smoothing": 0.1})
    assert bc1 < bc0 - 0.1, (bc0, bc1)
    catk0 = _fixed_loss(model, "catk", tiny_data, {"top_k": 8})
    model.load_state_dict(ck["sft"].model)
    catk1 = _fixed_loss(model, "catk", tiny_data, {"top_k": 8})
    assert catk1 < catk0, (catk0, catk1)
    # RFT stage: reference snapshot saved, alpha calibrated and saved, guards and rewards logged.
    assert ck["rft"].reference_model is not None and ck["rft"].objective["alpha"] is not None
    rft = [h for h in res.history if h["stage"] == "rft"]
    for key in ("reward/mean", "reward/std", "advantage/mean", "kl", "guard/rollout_distance_m", "guard/log_distance_m",
                "guard/rollout_speed_mps", "realism/metametric", "realism/collision_indication_likelihood"):
        assert key in rft[0] and math.isfinite(rft[0][key]), key
    assert rft[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # first step: policy == reference
    assert rft[1]["kl"] > 0.0
    # Evaluation after every stage, with the realism table fields.
    assert set(res.evaluations) == {"bc", "sft", "rft", "sft2"}
    for ev in res.evaluations.values():
        assert 0.0 < ev["metametric"] < 1.0 and ev["min_average_displacement_error"] > 0
        assert 0.0 <= ev["next_token_accuracy"] <= 1.0
    assert (tmp_path / "evaluation.md").exists()


def test_other_rft_objectives_step(tiny_data, tmp_path):
    stages = ("[{name: g, objective: grpo, steps: 1, lr: 1.0e-3, params: {n_rollout: 3}},"
              " {name: d, objective: dpo, steps: 1, lr: 1.0e-3, params: {n_rollout: 3}},"
              " {name: p, objective: ppo, steps: 1, lr: 1.0e-3, params: {n_rollout: 3}}]")
    cfg = tiny_config(f"stages={stages}", f"output_dir={tmp_path}", "eval.after_each_stage=false")
    res = run_pipeline(cfg, data=tiny_data)
    assert [h["stage"] for h in res.history] == ["g", "d", "p"]
    for h in res.history:
        assert math.isfinite(h["loss"]) and "reward/mean" in h and "guard/distance_ratio" in h
    ck = Checkpoint.load(tmp_path / "checkpoints" / "02_p.pt")
    assert "value_head" in ck.objective  # PPO critic saved for resume


def _rollout_logprob(model, exp, objective) -> torch.Tensor:
    """Mean log-prob of each rollout's sampled future tokens, per scene, in the form the objective
    optimises (`sampled`: renormalised over the recorded top-k support; DPO: full softmax). -> [R, n_scene]"""
    from smart_r1.objectives.base import score_tokens
    from smart_r1.objectives.dpo import sequence_logprob

    targets = objective.targets(exp)
    with torch.no_grad():
        logp = score_tokens(model, exp.inputs.batch, targets).logp  # [R, n_agent, 16]
    return sequence_logprob(logp, targets.mask.float(), exp.inputs.batch.agent_scene, exp.inputs.n_scene, "mean")  # [R, n_scene]


@pytest.mark.parametrize("objective", ["grpo", "dpo", "ppo"])
def test_rft_step_moves_policy_toward_higher_reward(tiny_data, objective):
    """One optimiser step of GRPO / DPO / PPO on real rollouts scored by the fast backend: on
    the same rollouts, the log-prob of each scene's best rollout rises relative to its worst,
    and the reward-weighted change of the rollouts' log-probs is positive (an update that does
    nothing, or goes the wrong way, fails). PPO starts from a zero critic (V = 0) so its
    advantages are the rewards' returns, not a random critic's noise; its advantages are whitened
    over the whole batch, not per scene, so for PPO only the reward-weighted change is claimed."""
    torch.set_num_threads(1)
    cfg = tiny_config()
    model = build_model_for(cfg, tiny_data.vocab)
    # One optimiser step each (PPO / GRPO default to several epochs x minibatches, whose clipping
    # is tested in tests/objectives/test_rl_epochs.py): the direction of the first step is the claim.
    one_step = {"ppo_epochs": 1, "n_minibatches": 1} if objective in ("ppo", "grpo") else {}
    obj = get_objective(objective, n_rollout=4, **one_step)
    if objective == "ppo":
        torch.nn.init.zeros_(obj.value_head.net[-1].weight)
        torch.nn.init.zeros_(obj.value_head.net[-1].bias)
    state = build_train_state(model, StageConfig(name=objective, objective=objective, steps=1, lr=1e-3), obj, total_steps=1)
    inputs = make_inputs(tiny_data.train, range(3), tiny_data.vocab)
    exp = obj.collect(model, inputs, generator=torch.Generator().manual_seed(0), reference=state.reference)
    rewards = exp.rewards  # [R, n_scene]
    scenes = torch.arange(rewards.shape[1])
    best, worst = rewards.argmax(0), rewards.argmin(0)  # [n_scene]
    assert bool((rewards[best, scenes] > rewards[worst, scenes]).all()), rewards  # every scene ranks its rollouts

    before = _rollout_logprob(model, exp, obj)  # [R, n_scene]
    metrics = update(state, obj, exp)
    assert math.isfinite(metrics["loss"])
    change = _rollout_logprob(model, exp, obj) - before  # [R, n_scene]
    weighted = float(((rewards - rewards.mean(0)) * change).sum())
    assert weighted > 0, (objective, weighted)
    if objective != "ppo":  # group-relative objectives: each scene's best rollout gains on its worst
        gain = change[best, scenes] - change[worst, scenes]  # [n_scene]
        assert bool((gain > 0).all()), (objective, gain.tolist(), rewards.tolist())
