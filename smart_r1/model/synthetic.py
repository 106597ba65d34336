"""Synthetic motion vocabularies and tokenized scenes for tests and benchmarks.

`SyntheticVocab` duck-types `smart_r1.tokens.motion_vocab.MotionVocab` (`poses[type]`,
`corners[type]`, `map_segments`, `size`) with kinematically plausible 0.5 s motions
(constant speed / yaw-rate arcs). `synthetic_tokenized_scene` rolls random tokens of that
vocabulary forward from random start poses on a road grid, so anchors and tokens are exactly
consistent, and sprinkles the validity patterns the model must handle: agents that appear at
the current step (short history), agents that vanish before the current step (not simulated),
and agents whose log ends early.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from smart_r1.data.scene import AgentType, MapKind
from smart_r1.tokens.tokenized_scene import CURRENT_ANCHOR, N_ANCHOR, N_TOKEN_STEP, TokenizedScene

_BOX = {int(AgentType.VEHICLE): (4.8, 2.0), int(AgentType.PEDESTRIAN): (1.0, 1.0), int(AgentType.CYCLIST): (2.0, 1.0)}
_SPEED = {int(AgentType.VEHICLE): 20.0, int(AgentType.PEDESTRIAN): 2.5, int(AgentType.CYCLIST): 8.0}


def _corners(poses: np.ndarray, length: float, width: float) -> np.ndarray:
    """poses [..., 3] -> corners [..., 4, 2] (front-left, front-right, rear-right, rear-left)."""
    lx = np.array([1, 1, -1, -1], np.float32) * length / 2  # [4]
    ly = np.array([1, -1, -1, 1], np.float32) * width / 2  # [4]
    c, s = np.cos(poses[..., 2:3]), np.sin(poses[..., 2:3])  # [..., 1]
    x = poses[..., 0:1] + c * lx - s * ly  # [..., 4]
    y = poses[..., 1:2] + s * lx + c * ly  # [..., 4]
    return np.stack([x, y], -1).astype(np.float32)  # [..., 4, 2]


def arc_motions(n: int, max_speed: float, max_yaw_rate: float, rng: np.random.Generator) -> np.ndarray:
    """n constant-speed / yaw-rate 0.5 s motions (token 0 stationary).  # [n, 5, 3]"""
    v = rng.uniform(0, max_speed, n)  # [n]
    w = rng.uniform(-max_yaw_rate, max_yaw_rate, n) * np.exp(-v / max(max_speed, 1e-6))  # [n]
    v[0], w[0] = 0.0, 0.0
    t = np.arange(1, 6) * 0.1  # [5]
    h = w[:, None] * t  # [n, 5]
    safe_w = np.where(np.abs(w) < 1e-6, 1.0, w)[:, None]  # [n, 1]
    x = np.where(np.abs(w)[:, None] < 1e-6, v[:, None] * t, v[:, None] * np.sin(h) / safe_w)  # [n, 5]
    y = np.where(np.abs(w)[:, None] < 1e-6, 0.0, v[:, None] * (1 - np.cos(h)) / safe_w)  # [n, 5]
    return np.stack([x, y, h], -1).astype(np.float32)  # [n, 5, 3]


class SyntheticVocab:
    """Random motion vocabulary with the `MotionVocab` attributes the model and simulator use."""

    def __init__(self, sizes=(2048, 2048, 2048), map_size: int = 1024, n_map_point: int = 11, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.poses: dict[int, torch.Tensor] = {}
        self.corners: dict[int, torch.Tensor] = {}
        for t, n in zip((1, 2, 3), sizes):
            p = arc_motions(int(n), _SPEED[t], 1.0 if t == 1 else 2.0, rng)  # [n, 5, 3]
            self.poses[t] = torch.from_numpy(p)
            self.corners[t] = torch.from_numpy(_corners(p, *_BOX[t]))  # [n, 5, 4, 2]
        for t in (int(AgentType.UNSET), int(AgentType.OTHER)):
            self.poses[t], self.corners[t] = self.poses[1], self.corners[1]
        segs = np.cumsum(rng.normal(0, 0.05, (map_size, n_map_point, 2)), axis=1)  # [M, P, 2]
        segs[..., 0] += np.linspace(0, 5, n_map_point)
        self.map_segments = torch.from_numpy(segs.astype(np.float32))  # [M, P, 2]
        self.vocab_id = f"synthetic-{seed}"

    def size(self, agent_type: int) -> int:
        t = int(agent_type)
        return int(self.poses[t if t in (1, 2, 3) else 1].shape[0])


def _to_global(anchor: np.ndarray, local: np.ndarray) -> np.ndarray:
    """anchor [..., 3], local [..., K, 3] -> [..., K, 3]."""
    c, s = np.cos(anchor[..., None, 2]), np.sin(anchor[..., None, 2])  # [..., 1]
    x = anchor[..., None, 0] + c * local[..., 0] - s * local[..., 1]
    y = anchor[..., None, 1] + s * local[..., 0] + c * local[..., 1]
    h = (anchor[..., None, 2] + local[..., 2] + math.pi) % (2 * math.pi) - math.pi
    return np.stack([x, y, h], -1)


def synthetic_tokenized_scene(
    vocab,
    n_agent: int = 32,
    n_road: int = 4,
    extent: float = 120.0,
    seed: int = 0,
    scenario_id: str | None = None,
    n_map_point: int = 11,
    short_history_fraction: float = 0.1,
    not_sim_fraction: float = 0.1,
) -> TokenizedScene:
    """A consistent random `TokenizedScene`: `n_road` x `n_road` grid of 2-lane roads over
    `extent` metres (map tokens: 5 m lane / edge segments), agents on the roads."""
    rng = np.random.default_rng(seed)
    # ----- map: horizontal + vertical roads, 2 lanes and 2 edges each, 5 m segments -----
    seg_len = 5.0
    n_seg = int(extent // seg_len)
    pos, pts, kind, sub = [], [], [], []
    for axis in (0, 1):
        for r in range(n_road):
            c = (r + 0.5) * extent / n_road - extent / 2
            for off, k in ((-1.75, MapKind.LANE), (1.75, MapKind.LANE), (-3.5, MapKind.ROAD_EDGE), (3.5, MapKind.ROAD_EDGE)):
                direction = 1.0 if off > 0 else -1.0
                for s_i in range(n_seg):
                    a = -extent / 2 + s_i * seg_len
                    along = a + np.linspace(0, seg_len, n_map_point)  # [P]
                    if direction < 0:
                        along = along[::-1]
                    xy = np.stack([along, np.full(n_map_point, c + off)], -1) if axis == 0 else np.stack(
                        [np.full(n_map_point, c + off), along], -1)  # [P, 2]
                    head = math.atan2(xy[-1, 1] - xy[0, 1], xy[-1, 0] - xy[0, 0])
                    pos.append([xy[0, 0], xy[0, 1], head])
                    pts.append(xy)
                    kind.append(int(k))
                    sub.append(2 if k == MapKind.LANE else 1)
    n_map = len(pos)
    jitter = rng.uniform(-0.3, 0.3, (n_map, 2))  # [n_map, 2] no exact distance ties on the grid
    map_pose = np.asarray(pos, np.float64)  # [n_map, 3]
    map_pose[:, :2] += jitter
    map_points = np.asarray(pts, np.float64) + jitter[:, None, :]  # [n_map, P, 2]
    map_pose, map_points = map_pose.astype(np.float32), map_points.astype(np.float32)
    n_map_vocab = int(vocab.map_segments.shape[0]) if getattr(vocab, "map_segments", None) is not None else 1024
    # ----- agents -----
    types = rng.choice([1, 2, 3], size=n_agent, p=[0.8, 0.12, 0.08]).astype(np.int8)  # [n_agent]
    types[0] = 1
    lane_heads = map_pose[np.asarray(kind) == int(MapKind.LANE)]  # [n_lane, 3]
    start = lane_heads[rng.integers(0, len(lane_heads), n_agent)].astype(np.float64)  # [n_agent, 3]
    start[:, :2] += rng.normal(0, 0.5, (n_agent, 2))
    anchor = np.zeros((n_agent, N_ANCHOR, 3), np.float64)  # [n_agent, 19, 3]
    tokens = np.zeros((n_agent, N_TOKEN_STEP), np.int64)  # [n_agent, 18]
    anchor[:, 0] = start
    for i in range(n_agent):
        t = int(types[i])
        vp = vocab.poses[t].numpy()  # [V, 5, 3]
        # prefer tokens of a persistent speed band so trajectories look like driving
        speed = np.linalg.norm(vp[:, -1, :2], axis=-1)  # [V]
        target = rng.uniform(0, speed.max())
        cand = np.argsort(np.abs(speed - target))[:16]  # [16]
        for p in range(N_TOKEN_STEP):
            tok = int(rng.choice(cand))
            tokens[i, p] = tok
            anchor[i, p + 1] = _to_global(anchor[i, p], vp[tok][None])[0, -1]
    valid = np.ones((n_agent, N_ANCHOR), bool)  # [n_agent, 19]
    n_short = int(round(short_history_fraction * n_agent))
    n_gone = int(round(not_sim_fraction * n_agent))
    order = rng.permutation(np.arange(1, n_agent))
    short, gone = order[:n_short], order[n_short : n_short + n_gone]
    for i in short:
        valid[i, : rng.integers(1, CURRENT_ANCHOR + 1)] = False  # appears at anchor 1 or 2
    for i in gone:
        valid[i, rng.integers(1, CURRENT_ANCHOR + 1) :] = False  # vanishes before the current anchor
    ends = order[n_short + n_gone : n_short + n_gone + max(1, n_agent // 10)]
    for i in ends:
        valid[i, rng.integers(CURRENT_ANCHOR + 2, N_ANCHOR) :] = False  # log ends early
    token_valid = valid[:, :-1] & valid[:, 1:]  # [n_agent, 18]
    sizes = np.array([[4.5, 1.9, 1.6], [0.7, 0.7, 1.8], [1.8, 0.7, 1.6]], np.float32)[types - 1]  # [n_agent, 3]
    sim = valid[:, CURRENT_ANCHOR].copy()  # [n_agent]
    eval_mask = np.zeros(n_agent, bool)
    eval_mask[np.flatnonzero(sim)[:8]] = True
    return TokenizedScene(
        scenario_id=scenario_id or f"synthetic-{seed:06d}",
        agent_id=np.arange(100, 100 + n_agent, dtype=np.int64),
        agent_type=types,
        agent_size=sizes,
        agent_z=rng.normal(0, 0.2, n_agent).astype(np.float32),
        sim_mask=sim,
        eval_mask=eval_mask,
        sdc_index=0,
        token_index=np.where(token_valid, tokens, -1),
        token_valid=token_valid,
        anchor_pose=np.where(valid[..., None], anchor, 0).astype(np.float32),
        anchor_valid=valid,
        map_token_points=map_points,
        map_token_pose=map_pose,
        map_token_kind=np.asarray(kind, np.int8),
        map_token_subtype=np.asarray(sub, np.int8),
        map_token_vocab_index=rng.integers(0, n_map_vocab, n_map).astype(np.int64),
        map_token_signal=rng.integers(0, 9, (n_map, N_ANCHOR)).astype(np.int8),
    )
