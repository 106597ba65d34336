"""The learner's micro-batched gradient (`accumulate_gradients`: micro-batches over rollouts and
scenes, one shared map encoding per scene group, chunked log-probs) equals the one-shot
gradient of `objective.loss(...)` (every rollout in one graph, the map encoded per rollout)."""

from __future__ import annotations

import pytest
import torch

from smart_r1.model.batch import collate, vocab_sizes_of
from smart_r1.model.presets import get_preset
from smart_r1.model.smart import SmartModel
from smart_r1.model.synthetic import SyntheticVocab, synthetic_tokenized_scene
from smart_r1.objectives import get_objective
from smart_r1.objectives.base import Experience, TrainBatch, plan_microbatches, run_rollout
from smart_r1.train.step import accumulate_gradients, make_reference

# 9- and 7-agent scenes: 162 and 126 rows per rollout; 200 rows -> one scene and one rollout per micro-batch.
BUDGET = 200
N_ROLLOUT = 3


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    vocab = SyntheticVocab(sizes=(48, 24, 32), map_size=40, seed=3)
    scenes = [
        synthetic_tokenized_scene(vocab, n_agent=9, n_road=1, extent=60.0, seed=21),
        synthetic_tokenized_scene(vocab, n_agent=7, n_road=1, extent=60.0, seed=22),
    ]
    batch = collate(scenes, vocab)
    torch.manual_seed(0)
    model = SmartModel(get_preset("cpu-demo").replace(dropout=0.0), vocab_sizes_of(vocab))
    reference = make_reference(model)
    with torch.no_grad():  # the policy has moved away from the reference: KL and ratio terms are live
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    train_mask = batch.sim_mask.clone()
    train_mask[0] = False  # an untrained agent
    inputs = TrainBatch(batch, train_mask, list(batch.scenario_id))
    return model, reference, inputs


def _grads(model, objective) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    params += [p for m in objective.modules() for p in m.parameters()]
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def _zero(model, objective):
    model.zero_grad(set_to_none=True)
    for m in objective.modules():
        m.zero_grad(set_to_none=True)


def _experience(name, objective, model, reference, inputs):
    g = torch.Generator().manual_seed(7)
    if name == "bc":
        return Experience(inputs=inputs)
    if name == "catk":
        return objective.collect(model, inputs, generator=g)
    # Sampled by the reference: the ratio to the sampling policy is not 1, so clipping acts.
    rb = run_rollout(reference, inputs.batch, N_ROLLOUT, "topk", {"k": 5}, g)
    rewards = torch.rand(N_ROLLOUT, inputs.n_scene, generator=g)  # distinct per rollout: DPO has pairs
    return objective.make_experience(inputs, rb, rewards)


PARAMS = {
    "bc": {"label_smoothing": 0.1},
    "catk": {"top_k": 8, "n_rollout": 2},
    "mpo": {"alpha": 0.5, "beta": 0.1, "n_rollout": N_ROLLOUT},
    "grpo": {"beta": 0.1, "clip_eps": 0.05, "n_rollout": N_ROLLOUT},
    "ppo": {"beta": 0.1, "clip_eps": 0.05, "n_rollout": N_ROLLOUT},
    "dpo": {"beta": 0.5, "n_rollout": N_ROLLOUT},
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_microbatched_gradient_equals_one_shot(setup, name):
    model, reference, inputs = setup
    objective = get_objective(name, **PARAMS[name])
    exp = _experience(name, objective, model, reference, inputs)
    targets = objective.targets(exp)
    plan = plan_microbatches(inputs.batch.agent_scene, inputs.n_scene, targets.n_sequence, 18, BUDGET)
    assert len(plan) == 2 * targets.n_sequence and len({tuple(mb.scenes) for mb in plan}) == 2  # really split
    model.train(objective.train_mode)
    ref = reference if objective.needs_reference else None

    _zero(model, objective)
    loss_one, metrics_one = objective.loss(model, exp, reference=ref)
    loss_one.backward()
    g_one = _grads(model, objective).clone()

    _zero(model, objective)
    loss_mb, metrics_mb = accumulate_gradients(model, objective, exp, ref, max_tokens=BUDGET)
    g_mb = _grads(model, objective)

    assert float(g_one.norm()) > 0
    rel = float((g_mb - g_one).norm() / g_one.norm())
    assert rel <= 1e-5, (name, rel)
    if name == "ppo":
        assert 0 < metrics_mb["ppo/clip_fraction"] < 1  # the clipped branch is exercised
    assert abs(loss_mb - float(loss_one.detach())) <= 1e-5 * max(1.0, abs(float(loss_one.detach())))
    assert metrics_mb["learner/n_microbatch"] == len(plan)
    assert abs(metrics_mb["policy/entropy"] - metrics_one["policy/entropy"]) < 1e-4 and metrics_mb["policy/entropy"] > 0


@pytest.mark.parametrize("name", ["mpo", "dpo"])  # the sampled-support and the full-softmax reference form
def test_update_with_reference_from_the_rollout_equals_learner_reference(setup, name):
    """`learner.reference_on: rollout` (the engine records the reference log-probs, the learner
    skips its pass) and `learner` (the update's teacher-forced pass) give the same loss, gradients
    and weights after one `update` (<= 1e-5 relative)."""
    import copy
    import dataclasses

    from smart_r1.train.config import StageConfig
    from smart_r1.train.step import build_train_state, update

    model, reference, inputs = setup
    rb = run_rollout(model, inputs.batch, N_ROLLOUT, "topk", {"k": 5}, torch.Generator().manual_seed(11),
                     reference=reference)
    rewards = torch.rand(N_ROLLOUT, inputs.n_scene, generator=torch.Generator().manual_seed(12))
    stage = StageConfig(name="rft", objective=name, steps=4, lr=1e-3)
    out = {}
    for where, batch in (("rollout", rb), ("learner", dataclasses.replace(rb, ref_logprob=None, ref_sample_logprob=None))):
        objective = get_objective(name, **PARAMS[name])
        exp = objective.make_experience(inputs, batch, rewards)
        assert ("logp_ref" in exp.extras) == (where == "rollout")
        policy = copy.deepcopy(model)
        state = build_train_state(policy, stage, objective, total_steps=4, reference=reference)
        # the rollout path never runs the reference model: a broken one must not matter
        state.reference = None if where == "rollout" else reference
        metrics = update(state, objective, exp)
        grads = torch.cat([p.grad.reshape(-1) for p in policy.parameters() if p.grad is not None])
        weights = torch.cat([p.detach().reshape(-1) for p in policy.parameters()])
        out[where] = (metrics["loss"], grads, weights)
    (loss_r, g_r, w_r), (loss_l, g_l, w_l) = out["rollout"], out["learner"]
    assert float(g_l.norm()) > 0
    assert abs(loss_r - loss_l) <= 1e-5 * max(1.0, abs(loss_l))
    assert float((g_r - g_l).norm() / g_l.norm()) <= 1e-5
    assert float((w_r - w_l).norm() / w_l.norm()) <= 1e-5 and not torch.equal(w_l, torch.cat(
        [p.detach().reshape(-1) for p in model.parameters()]))  # the step moved the weights
