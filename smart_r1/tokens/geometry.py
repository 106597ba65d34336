"""2-D pose / box geometry shared by the tokenizer, CAT-K and the simulator.

Poses are (x, y, heading) in the last dimension. Every function takes torch tensors or numpy
arrays (numpy in -> numpy out) and broadcasts over any leading batch shape `[...]`.

Box corners are ordered front-left, front-right, rear-right, rear-left, in the box frame
(+x forward, +y left). Motion tokens are compared by the corners of a fixed-size box per
agent type (`TOKEN_BOX_SIZE`), not the agent's own size, so that the vocabulary and the
tokenizer use one metric.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

from smart_r1.data.scene import AgentType


Array = Union[np.ndarray, torch.Tensor]

# Fixed box (length, width) per agent type used for token corners (SMART / CAT-K convention).
TOKEN_BOX_SIZE: dict[int, tuple[float, float]] = {
    int(AgentType.UNSET): (4.8, 2.0),
    int(AgentType.VEHICLE): (4.8, 2.0),
    int(AgentType.PEDESTRIAN): (1.0, 1.0),
    int(AgentType.CYCLIST): (2.0, 1.0),
    int(AgentType.OTHER): (4.8, 2.0),
}
# Agent types that own a vocabulary; UNSET and OTHER use the vehicle vocabulary.
VOCAB_TYPES: tuple[int, ...] = (int(AgentType.VEHICLE), int(AgentType.PEDESTRIAN), int(AgentType.CYCLIST))


def vocab_type(agent_type: int) -> int:
    """The vocabulary an agent type uses (UNSET / OTHER -> VEHICLE)."""
    t = int(agent_type)
    return t if t in VOCAB_TYPES else int(AgentType.VEHICLE)


def _to_torch(x: Array, dtype=None) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return (x if dtype is None else x.to(dtype)), False
    t = torch.from_numpy(np.ascontiguousarray(x))
    return (t if dtype is None else t.to(dtype)), True


def _back(x: torch.Tensor, was_numpy: bool) -> Array:
    return x.numpy() if was_numpy else x


def wrap_angle(angle: Array) -> Array:
    """Wrap radians into [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


def box_corners(pose: Array, length: float | Array, width: float | Array) -> Array:
    """Corners of boxes centred at `pose`.  pose [..., 3] -> [..., 4, 2].

    `length` / `width` are scalars or broadcast against `pose[..., 0]`.
    """
    p, was_np = _to_torch(pose)
    p = p if p.is_floating_point() else p.float()
    length_t = torch.as_tensor(length, dtype=p.dtype, device=p.device)  # [...] or []
    width_t = torch.as_tensor(width, dtype=p.dtype, device=p.device)  # [...] or []
    half_l = (0.5 * length_t)[..., None]  # [..., 1]
    half_w = (0.5 * width_t)[..., None]  # [..., 1]
    sign_l = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=p.dtype, device=p.device)  # [4]
    sign_w = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=p.dtype, device=p.device)  # [4]
    lx = sign_l * half_l  # [..., 4]
    ly = sign_w * half_w  # [..., 4]
    c = torch.cos(p[..., 2:3])  # [..., 1]
    s = torch.sin(p[..., 2:3])  # [..., 1]
    x = p[..., 0:1] + c * lx - s * ly  # [..., 4]
    y = p[..., 1:2] + s * lx + c * ly  # [..., 4]
    return _back(torch.stack([x, y], dim=-1), was_np)  # [..., 4, 2]


def type_box_corners(pose: Array, agent_type: int) -> Array:
    """Corners of the fixed token box of `agent_type` at `pose`.  [..., 3] -> [..., 4, 2]"""
    length, width = TOKEN_BOX_SIZE[int(agent_type)]
    return box_corners(pose, length, width)


def transform_to_global(anchor_pose: Array, local_poses: Array) -> Array:
    """Poses given in the frame of `anchor_pose` into the global frame.

    anchor_pose [..., 3], local_poses [..., K, 3] (K = 5 for a motion token) -> [..., K, 3].
    The batch shapes broadcast (e.g. anchor [N, 1, 3] with tokens [V, 5, 3] -> [N, V, 5, 3]).
    """
    a, was_np = _to_torch(anchor_pose)
    lp, _ = _to_torch(local_poses, dtype=a.dtype if a.is_floating_point() else None)
    a = a[..., None, :]  # [..., 1, 3]
    c, s = torch.cos(a[..., 2]), torch.sin(a[..., 2])  # [..., 1]
    x = a[..., 0] + c * lp[..., 0] - s * lp[..., 1]  # [..., K]
    y = a[..., 1] + s * lp[..., 0] + c * lp[..., 1]  # [..., K]
    h = wrap_angle(a[..., 2] + lp[..., 2])  # [..., K]
    return _back(torch.stack([x, y, h], dim=-1), was_np)  # [..., K, 3]


def transform_to_local(anchor_pose: Array, global_poses: Array) -> Array:
    """Inverse of `transform_to_global`: anchor [..., 3], poses [..., K, 3] -> [..., K, 3]."""
    a, was_np = _to_torch(anchor_pose)
    g, _ = _to_torch(global_poses, dtype=a.dtype if a.is_floating_point() else None)
    a = a[..., None, :]  # [..., 1, 3]
    c, s = torch.cos(a[..., 2]), torch.sin(a[..., 2])  # [..., 1]
    dx = g[..., 0] - a[..., 0]  # [..., K]
    dy = g[..., 1] - a[..., 1]  # [..., K]
    x = c * dx + s * dy  # [..., K]
    y = -s * dx + c * dy  # [..., K]
    h = wrap_angle(g[..., 2] - a[..., 2])  # [..., K]
    return _back(torch.stack([x, y, h], dim=-1), was_np)  # [..., K, 3]


def points_to_local(anchor_pose: Array, points: Array) -> Array:
    """Points [..., K, 2] into the frame of anchor [..., 3] -> [..., K, 2]."""
    a, was_np = _to_torch(anchor_pose)
    p, _ = _to_torch(points, dtype=a.dtype if a.is_floating_point() else None)
    a = a[..., None, :]  # [..., 1, 3]
    c, s = torch.cos(a[..., 2]), torch.sin(a[..., 2])  # [..., 1]
    dx = p[..., 0] - a[..., 0]  # [..., K]
    dy = p[..., 1] - a[..., 1]  # [..., K]
    return _back(torch.stack([c * dx + s * dy, -s * dx + c * dy], dim=-1), was_np)  # [..., K, 2]


def _full_corner_dist(target: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
    """target [n, P, 2], templates [V, P, 2] -> sum over the P points of the point distance [n, V]."""
    d = torch.cdist(
        target.transpose(0, 1).contiguous(), templates.transpose(0, 1).contiguous(), compute_mode="donot_use_mm_for_euclid_dist"
    )  # [P, n, V]
    return d.sum(0)


def _chunked_argmin_corner_dist(
    target: torch.Tensor, templates: torch.Tensor, max_elems: int = 1 << 23
) -> tuple[torch.Tensor, torch.Tensor]:
    """target [N, P, 2], templates [V, P, 2] -> (index [N], sum-of-point-distance [N]).

    Brute force over the vocabulary (P pairwise-distance matrices), chunked over N so that at
    most `max_elems` distances are held at once.
    """
    n, v, p = target.shape[0], templates.shape[0], templates.shape[1]
    idx_out = torch.empty(n, dtype=torch.long, device=target.device)  # [N]
    dist_out = torch.empty(n, dtype=target.dtype, device=target.device)  # [N]
    chunk = max(1, max_elems // max(1, v * p))
    for start in range(0, n, chunk):
        d = _full_corner_dist(target[start : start + chunk], templates)  # [n_c, V]
        best, arg = d.min(dim=1)  # [n_c]
        idx_out[start : start + chunk] = arg
        dist_out[start : start + chunk] = best
    return idx_out, dist_out


def closest_token(
    vocab,  # a smart_r1.tokens.motion_vocab.MotionVocab (geometry imports nothing from tokens)
    agent_type: int | Array,
    anchor_pose: Array,
    target: Array,
    return_distance: bool = False,
):
    """Index of the vocabulary token which, placed at `anchor_pose`, ends closest to `target`.

    Distance: sum over the 4 corners of the fixed token box (per agent type) of the Euclidean
    corner distance, at the token's last pose (0.5 s after the anchor).

    - `agent_type`: an int, or an array broadcastable to the batch shape `B = anchor_pose.shape[:-1]`
      (per-agent types; UNSET / OTHER use the vehicle vocabulary).
    - `anchor_pose [*B, 3]`: the pose the token starts from (global frame).
    - `target`, global frame, one of: `[*B, 3]` end pose, `[*B, 4, 2]` end corners,
      `[*B, 5, 3]` the 5 poses of the 0.5 s (last one used), `[*B, 5, 4, 2]` corners (last used).
    Returns `index [*B]` int64 (and the corner distance sum `[*B]` if `return_distance`).
    Batched: e.g. `[R, n_agent]` during CAT-K rollouts; memory is bounded by chunking.
    """
    a, was_np = _to_torch(anchor_pose)
    a = a if a.is_floating_point() else a.float()
    tg, _ = _to_torch(target, dtype=a.dtype)
    tg = tg.to(a.device)
    batch = a.shape[:-1]
    nb = len(batch)
    tail = tuple(tg.shape[nb:])
    if tail == (5, 3):
        tg, tail = tg[..., -1, :], (3,)
    elif tail == (5, 4, 2):
        tg, tail = tg[..., -1, :, :], (4, 2)
    if tail not in ((3,), (4, 2)):
        raise ValueError(
            f"closest_token: target shape {tuple(target.shape)} does not fit anchor batch {tuple(batch)}: "
            "expected [*B, 3], [*B, 4, 2], [*B, 5, 3] or [*B, 5, 4, 2]"
        )
    types = torch.as_tensor(np.asarray(agent_type) if not isinstance(agent_type, torch.Tensor) else agent_type)
    types = torch.broadcast_to(types.to(device=a.device, dtype=torch.long), batch).reshape(-1)  # [N]
    a_flat = a.reshape(-1, 3)  # [N, 3]
    tg_flat = tg.reshape((-1,) + tail)  # [N, 3] or [N, 4, 2]
    vt = types.clone()
    vt[~torch.isin(vt, torch.tensor(VOCAB_TYPES, device=a.device))] = int(AgentType.VEHICLE)
    index = torch.zeros(a_flat.shape[0], dtype=torch.long, device=a.device)  # [N]
    dist = torch.zeros(a_flat.shape[0], dtype=a.dtype, device=a.device)  # [N]
    for t in VOCAB_TYPES:
        sel = torch.nonzero(vt == t).reshape(-1)  # [n_t]
        if sel.numel() == 0:
            continue
        anchors = a_flat[sel]  # [n_t, 3]
        if tail == (3,):
            corners = box_corners(tg_flat[sel], *TOKEN_BOX_SIZE[t])  # [n_t, 4, 2]
        else:
            corners = tg_flat[sel]  # [n_t, 4, 2]
        local = points_to_local(anchors, corners)  # [n_t, 4, 2]
        templates = vocab.corners[t][:, -1].to(device=a.device, dtype=a.dtype)  # [V_t, 4, 2]
        idx, d = _chunked_argmin_corner_dist(local, templates)
        index[sel] = idx
        dist[sel] = d
    index = index.reshape(batch)
    dist = dist.reshape(batch)
    if return_distance:
        return _back(index, was_np), _back(dist, was_np)
    return _back(index, was_np)


def token_poses_global(vocab, agent_type: int | Array, anchor_pose: Array, index: Array) -> Array:
    """The 5 global poses of token `index [*B]` of each agent's vocabulary placed at
    `anchor_pose [*B, 3]` -> `[*B, 5, 3]`. Negative indices (invalid) give NaN poses."""
    a, was_np = _to_torch(anchor_pose)
    a = a if a.is_floating_point() else a.float()
    idx, _ = _to_torch(index)
    batch = a.shape[:-1]
    types = torch.as_tensor(np.asarray(agent_type) if not isinstance(agent_type, torch.Tensor) else agent_type)
    types = torch.broadcast_to(types.to(device=a.device, dtype=torch.long), batch).reshape(-1)  # [N]
    idx = torch.broadcast_to(idx.to(device=a.device, dtype=torch.long), batch).reshape(-1)  # [N]
    local = torch.full((idx.shape[0], 5, 3), float("nan"), dtype=a.dtype, device=a.device)  # [N, 5, 3]
    vt = types.clone()
    vt[~torch.isin(vt, torch.tensor(VOCAB_TYPES, device=a.device))] = int(AgentType.VEHICLE)
    for t in VOCAB_TYPES:
        sel = torch.nonzero((vt == t) & (idx >= 0)).reshape(-1)  # [n_t]
        if sel.numel():
            local[sel] = vocab.poses[t].to(device=a.device, dtype=a.dtype)[idx[sel]]
    out = transform_to_global(a.reshape(-1, 3), local)  # [N, 5, 3]
    return _back(out.reshape(batch + (5, 3)), was_np)
