"""SmartModel: presets forward/backward, parameter count, causality, frame invariance, collate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smart_r1.model.batch import collate, vocab_sizes_of
from smart_r1.model.presets import get_preset, preset_names
from smart_r1.model.smart import SmartModel, build_model
from smart_r1.model.synthetic import SyntheticVocab, synthetic_tokenized_scene


@pytest.fixture(scope="module")
def small_vocab():
    return SyntheticVocab(sizes=(64, 32, 48), map_size=40, seed=1)


def _scene(vocab, n_agent=8, seed=0, **kw):
    return synthetic_tokenized_scene(vocab, n_agent=n_agent, n_road=1, extent=60.0, seed=seed, **kw)


def _demo_model(vocab, seed=0, **overrides):
    torch.manual_seed(seed)
    return SmartModel(get_preset("cpu-demo", **overrides), vocab_sizes_of(vocab)).eval()


def test_tiny_has_7m_parameters():
    n = build_model("tiny").num_parameters()
    assert 6.3e6 <= n <= 7.7e6, n


@pytest.mark.parametrize("preset", preset_names())
def test_preset_forward_backward(preset, small_vocab):
    torch.manual_seed(0)
    scenes = [synthetic_tokenized_scene(small_vocab, n_agent=n, n_road=1, extent=30.0, seed=s) for n, s in ((5, 1), (4, 2))]
    batch = collate(scenes, small_vocab)
    model = SmartModel(get_preset(preset), vocab_sizes_of(small_vocab)).train()
    logits = model(batch)  # [n_agent, 18, V]
    assert logits.shape == (9, 18, 64)
    slot = batch.agent_slot
    for s, n in enumerate((64, 32, 48)):
        rows = slot == s
        if rows.any():
            assert torch.isfinite(logits[rows][..., :n]).all()
            assert torch.isneginf(logits[rows][..., n:]).all()
    tgt = batch.token_index.clamp(min=0)  # [n_agent, 18]
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="none")
    loss = (loss * batch.token_valid.flatten()).sum() / batch.token_valid.sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) > 0.8 * len(list(model.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)


def test_causality(small_vocab):
    model = _demo_model(small_vocab)
    sc = _scene(small_vocab, 10, seed=3, short_history_fraction=0.0, not_sim_fraction=0.0)
    batch = collate([sc], small_vocab)
    with torch.no_grad():
        base = model(batch)  # [n, 18, V]
        for t0 in (3, 9):
            tok = batch.token_index.clone()
            tok[:, t0] = (tok[:, t0] + 5) % 32
            anchors = batch.anchor_pose.clone()
            anchors[:, t0 + 1 :, :2] += 3.0  # the future moves too
            changed = model(batch.with_agent_tokens(anchors, batch.anchor_valid, tok, batch.token_valid))
            torch.testing.assert_close(changed[:, : t0 + 1], base[:, : t0 + 1], rtol=0, atol=1e-5)
            fin = torch.isfinite(base[:, t0 + 1])
            assert (changed[:, t0 + 1][fin] - base[:, t0 + 1][fin]).abs().max() > 1e-3


def _transform(sc, angle, shift):
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]], np.float32)

    def pose(p):
        out = p.copy()
        out[..., :2] = p[..., :2] @ rot.T + shift
        out[..., 2] = (p[..., 2] + angle + math.pi) % (2 * math.pi) - math.pi
        return out

    import dataclasses

    return dataclasses.replace(
        sc,
        anchor_pose=np.where(sc.anchor_valid[..., None], pose(sc.anchor_pose), 0).astype(np.float32),
        map_token_pose=pose(sc.map_token_pose).astype(np.float32),
        map_token_points=(sc.map_token_points @ rot.T + shift).astype(np.float32),
    )


@pytest.mark.parametrize("preset", ["cpu-demo", "nano"])
def test_frame_invariance(small_vocab, preset):
    torch.manual_seed(0)
    model = SmartModel(get_preset(preset), vocab_sizes_of(small_vocab)).eval()
    sc = _scene(small_vocab, 12, seed=4)
    moved = _transform(sc, angle=2.1, shift=np.array([137.0, -58.0], np.float32))
    with torch.no_grad():
        a = model(collate([sc], small_vocab))
        b = model(collate([moved], small_vocab))
    finite = torch.isfinite(a)
    assert torch.equal(finite, torch.isfinite(b))
    # positions at invalid anchors are never used (no loss, never keys), compare the valid ones
    finite &= torch.from_numpy(sc.anchor_valid[:, :18])[..., None]
    assert (a[finite] - b[finite]).abs().max() < 2e-3
    # not trivially constant
    assert a[finite].std() > 1e-3


def test_scenes_do_not_interact(small_vocab):
    model = _demo_model(small_vocab)
    s1, s2 = _scene(small_vocab, 6, seed=6), _scene(small_vocab, 7, seed=7)  # same map extent: overlapping coords
    with torch.no_grad():
        joint = model(collate([s1, s2], small_vocab))
        alone = model(collate([s1], small_vocab))
    finite = torch.isfinite(alone)
    assert (joint[:6][finite] - alone[finite]).abs().max() < 1e-4


def test_collate_rejects_tokens_outside_vocabulary(small_vocab):
    sc = _scene(small_vocab, 6, seed=8)
    sc.token_index[sc.token_valid] = 10_000
    with pytest.raises(ValueError, match=r"synthetic-000008.*token_index"):
        collate([sc], small_vocab)


def test_collate_rejects_bad_shapes(small_vocab):
    sc = _scene(small_vocab, 6, seed=9)
    sc.anchor_pose = sc.anchor_pose[:, :5]
    with pytest.raises(ValueError, match="anchor_pose"):
        collate([sc], small_vocab)


def test_model_rejects_other_vocabulary(small_vocab):
    model = SmartModel(get_preset("cpu-demo"), (64, 64, 64))
    with pytest.raises(ValueError, match="vocabular"):
        model(collate([_scene(small_vocab, 4, seed=10)], small_vocab))
