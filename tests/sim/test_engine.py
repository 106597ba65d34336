"""Rollout engine: shapes, determinism, cached == naive, short histories, CAT-K, samplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smart_r1.model.batch import collate, vocab_sizes_of
from smart_r1.model.presets import get_preset
from smart_r1.model.smart import SmartModel
from smart_r1.model.synthetic import SyntheticVocab, synthetic_tokenized_scene
from smart_r1.sim.engine import naive_rollout, place_tokens, rollout
from smart_r1.sim.samplers import get_sampler, sampler_names
from smart_r1.tokens.tokenized_scene import CURRENT_ANCHOR


@pytest.fixture(scope="module")
def setup():
    vocab = SyntheticVocab(sizes=(64, 32, 48), map_size=40, seed=1)
    scenes = [
        synthetic_tokenized_scene(vocab, n_agent=9, n_road=1, extent=60.0, seed=11, short_history_fraction=0.25),
        synthetic_tokenized_scene(vocab, n_agent=7, n_road=1, extent=60.0, seed=12, short_history_fraction=0.25),
    ]
    batch = collate(scenes, vocab)
    torch.manual_seed(0)
    model = SmartModel(get_preset("cpu-demo"), vocab_sizes_of(vocab)).eval()
    return vocab, scenes, batch, model


def test_samplers_registered():
    assert {"topk", "catk", "argmax"} <= set(sampler_names())
    with pytest.raises(KeyError):
        get_sampler("nope")


def test_rollout_shapes_and_validity(setup):
    vocab, scenes, batch, model = setup
    rb = rollout(model, batch, n_rollout=3, sampler="topk", seed=0)
    n = batch.n_agent
    assert rb.token_index.shape == (3, n, 18) and rb.anchor_pose.shape == (3, n, 19, 3)
    assert rb.logprob.shape == (3, n, 16) and rb.catk_target.shape == (3, n, 16)
    traj = rb.trajectories()
    assert traj.shape == (3, n, 80, 4)
    sim = batch.sim_mask
    fut = rb.token_valid[:, :, CURRENT_ANCHOR:]
    assert fut[:, sim].all() and not fut[:, ~sim].any()
    assert (rb.token_index[:, sim, CURRENT_ANCHOR:] >= 0).all()
    # history untouched, logged future never leaks into the rollout of non-simulated agents
    assert torch.equal(rb.token_index[:, :, :CURRENT_ANCHOR], batch.token_index[None, :, :CURRENT_ANCHOR].expand(3, -1, -1))
    assert torch.isfinite(traj[:, sim]).all()
    assert (rb.logprob[:, sim] <= 0).all()
    # tokens chain: each anchor is the last pose of the previous token; 10 Hz poses placed from anchors
    ap = rb.anchor_pose[:, sim]  # [R, n_sim, 19, 3]
    torch.testing.assert_close(rb.future_pose[:, sim, 4::5], ap[:, :, CURRENT_ANCHOR + 1 :])
    slot = batch.agent_slot[sim][None].expand(3, -1)
    tok = rb.token_index[:, sim, CURRENT_ANCHOR]
    first = place_tokens(ap[:, :, CURRENT_ANCHOR], batch.vocab_poses[slot, tok])  # [R, n_sim, 5, 3]
    torch.testing.assert_close(rb.future_pose[:, sim, :5], first)
    # z held at the current-step z
    torch.testing.assert_close(traj[:, sim, :, 2], batch.agent_z[sim][None, :, None].expand(3, -1, 80))


def test_place_tokens_matches_tokens_geometry(setup):
    from smart_r1.tokens import geometry
    g = torch.Generator().manual_seed(0)
    anchor = torch.randn(6, 3, generator=g) * 10
    local = torch.randn(6, 5, 3, generator=g)
    torch.testing.assert_close(place_tokens(anchor, local), geometry.transform_to_global(anchor, local))


def test_short_history_agents_are_simulated(setup):
    vocab, scenes, batch, model = setup
    sc = scenes[0]
    short = sc.sim_mask & ~sc.anchor_valid[:, 0]
    assert short.any(), "fixture must contain sim agents with short histories"
    rb = rollout(model, batch, n_rollout=2, sampler="topk", seed=3)
    ro = rb.to_rollouts(0)
    assert ro.trajectories.shape == (2, int(sc.sim_mask.sum()), 80, 4)
    np.testing.assert_array_equal(ro.agent_id, sc.agent_id[sc.sim_mask])
    assert np.isfinite(ro.trajectories).all()
    # each short-history agent starts from its current anchor (first 10 Hz pose within one token's reach)
    rows = np.flatnonzero(sc.sim_mask)
    for i in np.flatnonzero(short):
        j = int(np.flatnonzero(rows == i)[0])
        d = np.linalg.norm(ro.trajectories[:, j, 0, :2] - sc.anchor_pose[i, CURRENT_ANCHOR, :2], axis=-1)
        assert (d < 5.0).all()
    ro2 = rb.to_rollouts(1)
    np.testing.assert_array_equal(ro2.agent_id, scenes[1].agent_id[scenes[1].sim_mask])


def test_determinism_per_seed(setup):
    vocab, scenes, batch, model = setup
    a = rollout(model, batch, n_rollout=4, sampler="topk", seed=7, sampler_kwargs={"k": 8})
    b = rollout(model, batch, n_rollout=4, sampler="topk", seed=7, sampler_kwargs={"k": 8})
    c = rollout(model, batch, n_rollout=4, sampler="topk", seed=8, sampler_kwargs={"k": 8})
    assert torch.equal(a.token_index, b.token_index) and torch.equal(a.future_pose, b.future_pose)
    assert not torch.equal(a.token_index, c.token_index)
    # rollouts differ from each other (sampling, not a copy)
    sim = batch.sim_mask
    assert not torch.equal(a.token_index[0, sim], a.token_index[1, sim])


@pytest.mark.parametrize("sampler,kwargs", [("argmax", {}), ("topk", {"k": 6, "temperature": 1.3}), ("catk", {"k": 8})])
def test_cached_engine_equals_naive_loop(setup, sampler, kwargs):
    vocab, scenes, batch, model = setup
    fast = rollout(model, batch, n_rollout=2, sampler=sampler, seed=5, sampler_kwargs=kwargs)
    slow = naive_rollout(model, batch, n_rollout=2, sampler=sampler, seed=5, sampler_kwargs=kwargs)
    assert torch.equal(fast.token_index, slow.token_index)
    assert torch.equal(fast.catk_target, slow.catk_target)
    torch.testing.assert_close(fast.future_pose, slow.future_pose)
    torch.testing.assert_close(fast.logprob, slow.logprob, atol=1e-4, rtol=0)
    assert torch.equal(fast.sample_support, slow.sample_support)
    torch.testing.assert_close(fast.sample_logprob, slow.sample_logprob, atol=1e-4, rtol=0)


def test_engine_logits_equal_teacher_forced_forward(setup):
    """The logprob the engine records equals the forward pass on the rolled-out sequence."""
    vocab, scenes, batch, model = setup
    rb = rollout(model, batch, n_rollout=2, sampler="topk", seed=1)
    logits = model(rb.stacked_batch()).reshape(2, batch.n_agent, 18, -1)  # [R, n, 18, V]
    lp = torch.log_softmax(logits, -1).gather(-1, rb.token_index.clamp(min=0)[..., None])[..., 0][:, :, CURRENT_ANCHOR:]
    sim = batch.sim_mask
    torch.testing.assert_close(lp[:, sim], rb.logprob[:, sim], atol=1e-4, rtol=0)


@pytest.mark.parametrize("sampler,kwargs", [("topk", {"k": 5, "temperature": 0.7}), ("catk", {"k": 8})])
def test_recorded_sample_logprob_equals_teacher_forced_sampled_form(setup, sampler, kwargs):
    """The sampler's log-prob recorded at rollout time equals `token_logprob(..., 'sampled')`
    recomputed by teacher forcing on the same model (the objectives' `sampled` form), it is a
    log-prob of the renormalised support (>= the full-softmax one), and the sampled token is in
    the recorded support."""
    from smart_r1.objectives.logprob import token_logprob

    vocab, scenes, batch, model = setup
    rb = rollout(model, batch, n_rollout=2, sampler=sampler, seed=9, sampler_kwargs=kwargs)
    sim = batch.sim_mask
    k = kwargs["k"]
    assert rb.sample_support.shape == (2, batch.n_agent, 16, k)
    assert rb.sample_temperature == kwargs.get("temperature", 1.0)
    fut = rb.token_index[:, :, CURRENT_ANCHOR:]  # [R, n, 16]
    assert ((rb.sample_support[:, sim] == fut[:, sim, :, None]).any(-1)).all()
    assert (rb.sample_support[:, ~sim] == -1).all()
    with torch.no_grad():
        logits = torch.stack([model(rb.teacher_forced_batch(r))[:, CURRENT_ANCHOR:] for r in range(2)])  # [R, n, 16, V]
    lp = token_logprob(logits[:, sim], fut[:, sim], "sampled", rb.sample_support[:, sim], rb.sample_temperature)
    torch.testing.assert_close(lp, rb.sample_logprob[:, sim], atol=1e-4, rtol=0)
    assert (rb.sample_logprob[:, sim] <= 1e-6).all()
    if sampler == "topk":  # renormalised over 5 tokens at T = 0.7: strictly above the full softmax
        assert (rb.sample_logprob[:, sim] > rb.logprob[:, sim]).all()
    else:  # CAT-K: the closest-to-log pick is deterministic (log q = 0), the others drew from the top-K
        single = (rb.sample_support[:, sim] >= 0).sum(-1) == 1  # [R, n_sim, 16]
        assert single.any() and (~single).any()
        assert torch.equal(rb.sample_logprob[:, sim][single], torch.zeros(int(single.sum())))
        assert torch.equal(single, rb.catk_target[:, sim] >= 0)


def test_catk_with_whole_vocabulary_follows_the_log(setup):
    """CAT-K with K = vocabulary size picks the closest-to-log token, i.e. `catk_target`."""
    vocab, scenes, batch, model = setup
    rb = rollout(model, batch, n_rollout=2, sampler="catk", seed=0, sampler_kwargs={"k": 64})
    sim = batch.sim_mask
    has = rb.catk_target[:, sim] >= 0
    assert has.any()
    fut = rb.token_index[:, sim, CURRENT_ANCHOR:]
    # pedestrians / cyclists have smaller vocabularies: -inf logits are excluded, the rest is the whole vocabulary
    assert torch.equal(fut[has], rb.catk_target[:, sim][has])
    # following the log keeps the rollout close to it
    log_end = batch.anchor_pose[sim][:, CURRENT_ANCHOR + 1 :]
    ok = batch.anchor_valid[sim][:, CURRENT_ANCHOR + 1 :]
    err = (rb.anchor_pose[:, sim, CURRENT_ANCHOR + 1 :, :2] - log_end[None, ..., :2]).norm(dim=-1)[:, ok]
    assert err.max() < 1.0


def test_catk_target_matches_tokens_closest_token(setup):
    from smart_r1.tokens import geometry
    vocab, scenes, batch, model = setup
    rb = rollout(model, batch, n_rollout=1, sampler="topk", seed=2)
    p = CURRENT_ANCHOR + 3
    rows = torch.nonzero(batch.sim_mask & batch.anchor_valid[:, p + 1] & batch.token_valid[:, p]).reshape(-1)
    expect = geometry.closest_token(vocab, batch.agent_type[rows], rb.anchor_pose[0, rows, p], batch.anchor_pose[rows, p + 1])
    assert torch.equal(rb.catk_target[0, rows, p - CURRENT_ANCHOR], torch.as_tensor(expect))


def test_model_mode_restored(setup):
    vocab, scenes, batch, model = setup
    model.train()
    rollout(model, batch, n_rollout=1, sampler="argmax", seed=0)
    assert model.training
    model.eval()


def test_rollout_chunks_do_not_change_results(setup):
    vocab, scenes, batch, model = setup
    whole = rollout(model, batch, n_rollout=3, sampler="topk", seed=4, chunk_rows=None)
    chunked = rollout(model, batch, n_rollout=3, sampler="topk", seed=4, chunk_rows=1)  # one rollout per chunk
    assert torch.equal(whole.token_index, chunked.token_index)
    torch.testing.assert_close(whole.future_pose, chunked.future_pose)
    torch.testing.assert_close(whole.logprob, chunked.logprob, atol=1e-5, rtol=0)


def test_attention_with_all_neighbours_masked_equals_no_neighbours():
    """A query whose neighbour list is all masked must get the same output as one with an empty
    list (K = 0). K is the widest list of the call, so otherwise a scene's rollout depended on the
    other scenes of its batch (seen: a 1-scene rollout chunk on a Ray actor vs the learner's
    2-scene re-scoring, log-probs off by up to 0.05 once `to_out`'s bias had trained)."""
    from smart_r1.model.layers import AttentionBlock

    torch.manual_seed(0)
    blk = AttentionBlock(hidden_dim=16, num_heads=2, head_dim=4, ffn_dim=32, dropout=0.0, cross=False).eval()
    with torch.no_grad():
        blk.to_out.bias.normal_()  # a trained bias (PyTorch / our init may start it at zero)
    x = torch.randn(5, 16)
    empty = blk(x, torch.zeros(5, 0, 8), torch.zeros(5, 0, 8), torch.zeros(5, 0, dtype=torch.bool),
                torch.zeros(5, 0, 8), torch.zeros(5, 0, 8))
    kv = torch.randn(5, 3, 8)
    masked = blk(x, kv, kv, torch.zeros(5, 3, dtype=torch.bool), kv, kv)
    torch.testing.assert_close(masked, empty)
    some = torch.zeros(5, 3, dtype=torch.bool)
    some[0, 1] = True  # a query with a neighbour does attend
    out = blk(x, kv, kv, some, kv, kv)
    torch.testing.assert_close(out[1:], empty[1:])
    assert not torch.allclose(out[0], empty[0])


@pytest.mark.parametrize("chunk_rows", [128, 1])
def test_reference_logprobs_recorded_by_the_engine_equal_the_learners(setup, chunk_rows):
    """`rollout(..., reference=ref)` records the reference's log-probs of the sampled tokens in both
    forms, equal (<= 1e-5) to the learner's teacher-forced `reference_logprobs` of the same
    rollouts, for a reference that differs from the policy; the policy's own tokens and log-probs
    do not change; without a reference both fields are None."""
    import copy

    from smart_r1.objectives import get_objective
    from smart_r1.objectives.base import TrainBatch, reference_logprobs

    vocab, scenes, batch, model = setup
    reference = copy.deepcopy(model)
    with torch.no_grad():  # the policy moved away from the stage-start reference
        for p in reference.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    kwargs = {"k": 5, "temperature": 0.7}
    plain = rollout(model, batch, n_rollout=3, sampler="topk", seed=3, sampler_kwargs=kwargs, chunk_rows=chunk_rows)
    rb = rollout(model, batch, n_rollout=3, sampler="topk", seed=3, sampler_kwargs=kwargs, chunk_rows=chunk_rows,
                 reference=reference)
    assert plain.ref_logprob is None and plain.ref_sample_logprob is None
    assert torch.equal(rb.token_index, plain.token_index) and torch.equal(rb.logprob, plain.logprob)
    sim = batch.sim_mask
    assert rb.ref_logprob.shape == rb.ref_sample_logprob.shape == (3, batch.n_agent, 16)
    assert (rb.ref_logprob[:, ~sim] == 0).all() and (rb.ref_sample_logprob[:, ~sim] == 0).all()
    assert (rb.ref_logprob[:, sim] - rb.logprob[:, sim]).abs().max() > 1e-2  # reference != policy
    inputs = TrainBatch(batch, sim.clone(), list(batch.scenario_id))
    for form, recorded in (("full_softmax", rb.ref_logprob), ("sampled", rb.ref_sample_logprob)):
        objective = get_objective("mpo", alpha=0.0, n_rollout=3, sampler_params=kwargs, logprob=form)
        exp = objective.make_experience(inputs, dataclasses_replace_no_ref(rb), torch.zeros(3, batch.n_scene))
        assert "logp_ref" not in exp.extras  # no engine values: the learner computes them
        learner = reference_logprobs(objective, reference, exp)  # [R, n, 16] teacher-forced, micro-batched
        torch.testing.assert_close(recorded, learner, atol=1e-5, rtol=0)
        shipped = objective.make_experience(inputs, rb, torch.zeros(3, batch.n_scene))
        assert shipped.extras["logp_ref"] is recorded  # the learner uses the engine's form-matched values
        assert reference_logprobs(objective, None, shipped) is recorded


def dataclasses_replace_no_ref(rb):
    import dataclasses

    return dataclasses.replace(rb, ref_logprob=None, ref_sample_logprob=None)
