import json

import numpy as np
import pytest
import torch

from smart_r1.tokens.geometry import VOCAB_TYPES
from smart_r1.tokens.motion_vocab import (
    MotionVocab,
    VocabConfig,
    _flat_corners,
    _nearest_centre_distance,
    build_motion_vocab,
    fix_heading_flips,
    kdisks_vocab,
    synthetic_motions,
)

from .conftest import SMALL_CONFIG


def test_vocab_shapes_and_stationary(small_vocab):
    for t in (0, 1, 2, 3, 4):
        assert small_vocab.poses[t].shape == (128, 5, 3)
        assert small_vocab.corners[t].shape == (128, 5, 4, 2)
        assert small_vocab.size(t) == 128
        assert torch.equal(small_vocab.poses[t][0], torch.zeros(5, 3))  # exact stationary token
    assert torch.equal(small_vocab.poses[4], small_vocab.poses[1])  # OTHER -> vehicle
    padded, valid = small_vocab.padded_poses()
    assert padded.shape == (5, 128, 5, 3) and valid.all()
    for name, info in small_vocab.meta["types"].items():
        assert info["covered"], name
        assert info["n_real_samples"] > 0 and info["n_real_samples"] + info["n_synthetic_samples"] >= 4000


def test_build_deterministic_per_seed(synthetic_scenes):
    cfg = dict(size=32, samples=1000, min_samples=600, max_tolerance_steps=3, map={"vocab_size": 16, "samples": 500})
    a = build_motion_vocab(synthetic_scenes[:3], VocabConfig(**cfg), progress=False)
    b = build_motion_vocab(synthetic_scenes[:3], VocabConfig(**cfg), progress=False)
    assert a.vocab_id == b.vocab_id
    for t in VOCAB_TYPES:
        assert torch.equal(a.poses[t], b.poses[t])
    assert torch.equal(a.map_segments, b.map_segments)
    c = build_motion_vocab(synthetic_scenes[:3], VocabConfig(**dict(cfg, seed=1)), progress=False)
    assert c.vocab_id != a.vocab_id
    assert c.data_hash == a.data_hash  # same scenes
    d = build_motion_vocab(synthetic_scenes[1:4], VocabConfig(**cfg), progress=False)
    assert d.data_hash != a.data_hash


def test_kdisks_every_sample_within_tolerance():
    samples = synthetic_motions(1, 3000, seed=3)  # [3000, 5, 3]
    x = _flat_corners(samples, 1)  # [3000, 20, 2]
    forced = _flat_corners(np.zeros((1, 5, 3), np.float32), 1)[0]
    for size, tol in ((64, 0.05), (400, 0.5)):  # first: tolerance must rise; second: must fall
        centres, info = kdisks_vocab(x, size, tol, seed=0, forced=forced, max_steps=6)
        assert len(centres) == size and len(set(centres.tolist())) == size
        assert info["covered"]
        cc = x[torch.as_tensor(np.maximum(centres, 0))].clone()
        cc[torch.as_tensor(centres < 0)] = forced
        nearest = _nearest_centre_distance(x, cc)
        assert float(nearest.max()) <= info["tolerance_final"] + 1e-6
        if size == 64:
            assert info["tolerance_final"] > tol
        else:
            assert info["tolerance_final"] < tol


def test_save_load_round_trip(tmp_path, small_vocab):
    d = small_vocab.save(tmp_path / "v")
    meta = json.loads((d / "vocab.json").read_text())
    assert meta["vocab_id"] == small_vocab.vocab_id == meta["content_hash"]
    assert meta["data_hash"] == small_vocab.data_hash and len(meta["data_hash"]) == 16
    assert meta["config"]["size"] == 128
    loaded = MotionVocab.load(d)
    assert loaded.vocab_id == small_vocab.vocab_id
    for t in VOCAB_TYPES:
        assert torch.equal(loaded.poses[t], small_vocab.poses[t])
    assert torch.equal(loaded.map_segments, small_vocab.map_segments)
    # tampering with the arrays is detected
    with np.load(d / "vocab.npz") as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["vehicle_poses"][5, 0, 0] += 0.01
    np.savez(d / "vocab.npz", **arrays)
    with pytest.raises(ValueError, match="vocab_id"):
        MotionVocab.load(d)
    with pytest.raises(FileNotFoundError, match="missing vocab"):
        MotionVocab.load(tmp_path / "nowhere")


def test_fix_heading_flips():
    h = np.full((1, 20), 0.5)
    h[0, 7:10] += np.pi  # flipped labels for 3 steps
    valid = np.ones((1, 20), bool)
    fixed = fix_heading_flips(h, valid)
    np.testing.assert_allclose(np.cos(fixed - 0.5), 1.0, atol=1e-6)
    # flipped labels at the start: the start is fixed, the rest kept
    h3 = np.full((2, 20), -1.0)
    h3[0, :4] += np.pi
    h3[1, 12:] += np.pi  # most of the track after step 12 is "flipped": still the minority is changed
    fixed = fix_heading_flips(h3, np.ones((2, 20), bool))
    np.testing.assert_allclose(np.cos(fixed[0] + 1.0), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.cos(fixed[1] + 1.0), 1.0, atol=1e-6)
    # across a long gap the logged heading is kept
    valid[0, 5:15] = False
    h2 = np.full((1, 20), 0.5)
    h2[0, 15:] += np.pi
    np.testing.assert_allclose(np.cos(fix_heading_flips(h2, valid)[0, 15:] - h2[0, 15:]), 1.0, atol=1e-6)


def test_synthetic_motions_plausible():
    for t, vmax in ((1, 38.0), (2, 3.7), (3, 13.0)):
        m = synthetic_motions(t, 2000, seed=0)  # [2000, 5, 3]
        assert np.isfinite(m).all()
        step = np.linalg.norm(np.diff(np.concatenate([np.zeros((2000, 1, 3)), m], 1)[..., :2], axis=1), axis=-1)
        assert step.max() <= vmax * 0.1 + 1e-4


def test_config_from_dict_strict():
    assert VocabConfig.from_dict({"size": 3, "map": {"vocab_size": 8}}).size == 3
    with pytest.raises(ValueError, match="sizes"):
        VocabConfig.from_dict({"sizes": 3})
    with pytest.raises(ValueError, match="vocab_sizes"):
        VocabConfig.from_dict({"map": {"vocab_sizes": 3}})


def test_build_without_scenes_is_an_error():
    with pytest.raises(ValueError, match="no scenes"):
        build_motion_vocab([], VocabConfig(size=8), progress=False)
