"""PPO / GRPO epochs over one experience make the ratio clip act (issue 13: with one update per
batch the ratio is 1 and "PPO" is A2C), and MPO's ratio to the recorded sampling log-prob: 1 on
policy, an importance weight once the policy has moved (async mode's one-step lag)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from smart_r1.model.batch import collate, vocab_sizes_of
from smart_r1.model.presets import get_preset
from smart_r1.model.smart import SmartModel
from smart_r1.model.synthetic import SyntheticVocab, synthetic_tokenized_scene
from smart_r1.objectives import get_objective
from smart_r1.objectives.base import TrainBatch
from smart_r1.objectives.losses import mpo_loss
from smart_r1.train.step import build_train_state, update

N_ROLLOUT = 4


@pytest.fixture(scope="module")
def scene():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    vocab = SyntheticVocab(sizes=(48, 24, 32), map_size=40, seed=3)
    batch = collate([synthetic_tokenized_scene(vocab, n_agent=6, n_road=1, extent=60.0, seed=31)], vocab)
    yield vocab, TrainBatch(batch, batch.sim_mask.clone(), list(batch.scenario_id))
    torch.set_num_threads(n)


def _model(vocab):
    torch.manual_seed(0)
    return SmartModel(get_preset("cpu-demo").replace(dropout=0.0), vocab_sizes_of(vocab))


def _stage(lr: float):
    return SimpleNamespace(name="rft", lr=lr, weight_decay=0.0, grad_clip=10.0, freeze=[], lr_final_fraction=1.0,
                           warmup_steps=0, update_epochs=1)


def _experience(objective, model, inputs, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rb = objective.rollout(model, inputs, g)
    rewards = torch.rand(N_ROLLOUT, inputs.n_scene, generator=g)  # distinct per rollout
    return objective.make_experience(inputs, rb, rewards)


@pytest.mark.parametrize("name", ["ppo", "grpo"])
def test_epochs_make_the_clip_act(scene, name):
    """One on-policy step: ratio 1, nothing clipped. 3 epochs x 2 minibatches at a large lr: the
    later steps see ratios beyond 1 +- 0.05 and clip them."""
    vocab, inputs = scene
    fractions = {}
    for epochs, minibatches in ((1, 1), (3, 2)):
        model = _model(vocab)
        objective = get_objective(name, n_rollout=N_ROLLOUT, clip_eps=0.05, ppo_epochs=epochs, n_minibatches=minibatches)
        assert (objective.n_epochs, objective.n_minibatches) == (epochs, minibatches)
        state = build_train_state(model, _stage(3e-3), objective, total_steps=100)
        metrics = update(state, objective, _experience(objective, model, inputs))
        assert metrics["learner/n_optimizer_step"] == epochs * minibatches
        fractions[epochs] = metrics["clip_fraction"]
    assert fractions[1] == 0.0, fractions
    assert fractions[3] > 0.05, fractions


def test_epochs_and_minibatches_are_validated():
    with pytest.raises(ValueError, match="ppo: n_minibatches 5 > n_rollout 4"):
        get_objective("ppo", n_rollout=4, n_minibatches=5)
    with pytest.raises(ValueError, match="grpo: ppo_epochs"):
        get_objective("grpo", ppo_epochs=0)
    with pytest.raises(ValueError, match="mpo.logprob: unknown log-prob form 'topk'"):
        get_objective("mpo", logprob="topk")


def test_mpo_ratio_weights_a_lagged_rollout():
    """logp_old = logp - log 2 (the sampling policy gave the token half today's probability):
    the advantage term's gradient doubles; logp_old = None is the paper's pi/pi_detached."""
    logp = torch.log(torch.tensor([0.2, 0.5, 0.7])).requires_grad_(True)
    adv, mask = torch.tensor([1.0, -0.5, 0.3]), torch.ones(3, dtype=torch.bool)
    g = {}
    for key, old in (("detached", None), ("on_policy", logp.detach()), ("lagged", logp.detach() - math.log(2.0))):
        logp.grad = None
        mpo_loss(logp, logp.detach(), adv, mask, beta=0.0, logp_old=old)[0].backward()
        g[key] = logp.grad.clone()
    torch.testing.assert_close(g["on_policy"], g["detached"])
    torch.testing.assert_close(g["lagged"], 2.0 * g["detached"])


def test_mpo_ratio_is_one_on_policy_and_moves_with_lag(scene):
    """On the experience it just sampled, MPO's ratio to the recorded sampling log-prob is 1
    (sync mode); after an update, the same experience is one step stale (async mode) and the
    ratio is the importance weight that corrects for it."""
    vocab, inputs = scene
    model = _model(vocab)
    for form in ("sampled", "full_softmax"):
        objective = get_objective("mpo", alpha=0.5, n_rollout=N_ROLLOUT, logprob=form)
        state = build_train_state(model, _stage(3e-3), objective, total_steps=100)
        exp = _experience(objective, model, inputs, seed=1)
        on_policy = update(state, objective, exp)
        assert abs(on_policy["mpo/ratio_mean"] - 1.0) < 1e-3 and on_policy["mpo/ratio_max"] < 1.0 + 1e-3, (form, on_policy)
        _, stale = objective.loss(model, exp, reference=state.reference)
        assert abs(stale["mpo/ratio_max"] - 1.0) > 0.01, (form, stale)
