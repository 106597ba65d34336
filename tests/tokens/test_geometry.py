import math

import numpy as np
import torch

from smart_r1.data.scene import AgentType
from smart_r1.tokens.geometry import (
    box_corners,
    closest_token,
    token_poses_global,
    transform_to_global,
    transform_to_local,
)


def test_transform_round_trip_numpy_and_torch():
    rng = np.random.default_rng(0)
    anchor = rng.normal(size=(7, 3)) * [50, 50, 2]  # [7, 3]
    local = rng.normal(size=(7, 5, 3))  # [7, 5, 3]
    g = transform_to_global(anchor, local)
    assert isinstance(g, np.ndarray) and g.shape == (7, 5, 3)
    back = transform_to_local(anchor, g)
    np.testing.assert_allclose(back[..., :2], local[..., :2], atol=1e-9)
    np.testing.assert_allclose(np.cos(back[..., 2] - local[..., 2]), 1.0, atol=1e-9)
    gt = transform_to_global(torch.as_tensor(anchor), torch.as_tensor(local))
    assert isinstance(gt, torch.Tensor)
    np.testing.assert_allclose(gt.numpy(), g)


def test_transform_known_values():
    g = transform_to_global(np.array([1.0, 2.0, math.pi / 2]), np.array([[1.0, 0.0, 0.1]]))
    np.testing.assert_allclose(g, [[1.0, 3.0, math.pi / 2 + 0.1]], atol=1e-12)


def test_box_corners_order_and_size():
    c = box_corners(np.array([0.0, 0.0, 0.0]), 4.0, 2.0)
    np.testing.assert_allclose(c, [[2, 1], [2, -1], [-2, -1], [-2, 1]])
    c = box_corners(np.array([1.0, 1.0, math.pi / 2]), 4.0, 2.0)
    np.testing.assert_allclose(c[0], [0.0, 3.0], atol=1e-12)  # front-left now up-left


def test_closest_token_batched_matches_loop(small_vocab):
    rng = np.random.default_rng(1)
    r, n = 3, 10
    types = np.array([1, 2, 3, 4, 0, 1, 2, 3, 1, 1])  # OTHER / UNSET use the vehicle vocabulary
    anchor = rng.normal(size=(r, n, 3)) * [20, 20, 3]
    idx_true = rng.integers(0, 64, size=(r, n))
    target = token_poses_global(small_vocab, types[None], anchor, idx_true)  # [r, n, 5, 3]
    idx = closest_token(small_vocab, types[None], anchor, target)
    assert idx.shape == (r, n)
    np.testing.assert_array_equal(idx, idx_true)  # exact token placed -> found again
    # single-element calls agree with the batch, and corner targets give the same answer
    end_corners = np.stack([[box_corners(target[i, j, -1], *((4.8, 2.0) if types[j] not in (2, 3) else (1.0, 1.0) if types[j] == 2 else (2.0, 1.0))) for j in range(n)] for i in range(r)])
    np.testing.assert_array_equal(closest_token(small_vocab, types[None], anchor, end_corners), idx_true)
    for i in range(r):
        for j in range(n):
            assert closest_token(small_vocab, int(types[j]), anchor[i, j], target[i, j, -1]) == idx_true[i, j]
    # torch in, torch out
    it = closest_token(small_vocab, torch.as_tensor(types)[None], torch.as_tensor(anchor), torch.as_tensor(target))
    assert isinstance(it, torch.Tensor) and it.dtype == torch.long


def test_closest_token_minimises_corner_distance(small_vocab):
    rng = np.random.default_rng(2)
    anchor = np.zeros(3)
    target = np.array([3.1, 0.2, 0.05])
    idx, dist = closest_token(small_vocab, AgentType.VEHICLE, anchor, target, return_distance=True)
    ends = small_vocab.poses[1][:, -1].double().numpy()  # [V, 3]
    all_d = np.linalg.norm(box_corners(ends, 4.8, 2.0) - box_corners(target, 4.8, 2.0)[None], axis=-1).sum(-1)
    assert int(idx) == int(np.argmin(all_d))
    assert abs(float(dist) - all_d.min()) < 1e-6
