"""Sequential tokenization of logged trajectories into motion tokens (+ map tokens).

For every agent, anchor 0 (step 0) is the logged pose; then for each token `t` (0.5 s) every
vocabulary token is placed at the *tokenized* anchor-`t` pose and the one whose last pose's
fixed-size box corners are closest (sum of the 4 corner distances) to the logged box at step
`5(t+1)` is taken; its last pose becomes anchor `t+1`. The error therefore never accumulates:
each step corrects towards the log.

- Invalid steps: token `t` is valid iff the logged states at both ends (steps 5t and 5t+5) are
  valid; anchor validity is the logged validity at the anchor step. Intermediate steps may be
  missing (only the end pose is matched).
- Late appearance / reappearance after a gap: the first valid anchor after an invalid one is the
  logged pose (re-anchoring); the token leading into it is invalid.
- Heading flips: logged headings are de-flipped first (`motion_vocab.fix_heading_flips`:
  a per-step jump > `flip_threshold` within 5 steps is a 180 degree label flip). Noisy headings
  of slow agents need no special case: the corner metric trades heading against position, and
  the vocabulary's stationary token (index 0, exact zero motion) absorbs standing agents.
"""

from __future__ import annotations

import numpy as np
import torch

from smart_r1.data.scene import (
    STATE_HEIGHT,
    STATE_LENGTH,
    STATE_WIDTH,
    STATE_X,
    STATE_Y,
    STATE_Z,
    AgentType,
    Scene,
)
from smart_r1.tokens.geometry import (
    TOKEN_BOX_SIZE,
    box_corners,
    closest_token,
    token_poses_global,
    wrap_angle,
)
from smart_r1.tokens.map_tokens import MapConfig, MapTokenizer
from smart_r1.tokens.motion_vocab import MotionVocab, fix_heading_flips
from smart_r1.tokens.tokenized_scene import N_ANCHOR, N_TOKEN_STEP, STEPS_PER_TOKEN, TokenizedScene

ANCHOR_STEPS = np.arange(N_ANCHOR) * STEPS_PER_TOKEN  # [19] steps 0, 5, ..., 90


def logged_poses(scene: Scene, flip_threshold: float = 2.0) -> np.ndarray:
    """Logged x, y, de-flipped heading, float64.  -> [n_agent, n_step, 3]"""
    h = fix_heading_flips(scene.heading, scene.agent_valid, flip_threshold)  # [n_agent, n_step]
    xy = scene.agent_states[..., [STATE_X, STATE_Y]].astype(np.float64)  # [n_agent, n_step, 2]
    return np.concatenate([xy, h[..., None].astype(np.float64)], axis=-1)


def _ref_step_values(scene: Scene, cols: list[int]) -> np.ndarray:
    """Per agent, state columns at the current step, else the last valid step, else the first.  [n_agent, len(cols)]"""
    valid = scene.agent_valid  # [n_agent, n_step]
    cur = scene.current_time_index
    n_step = scene.n_step
    steps = np.arange(n_step)
    last_valid = np.where(valid, steps[None], -1).max(1)  # [n_agent]
    ref = np.where(valid[:, cur], cur, np.where(last_valid >= 0, last_valid, 0))  # [n_agent]
    return scene.agent_states[np.arange(scene.n_agent), ref][:, cols]


class Tokenizer:
    """`Tokenizer(vocab, map_config).tokenize(scene) -> TokenizedScene`."""

    def __init__(self, vocab: MotionVocab, map_config: MapConfig | None = None, flip_threshold: float = 2.0):
        self.vocab = vocab
        if map_config is None:
            map_config = MapConfig.from_dict(vocab.meta.get("map", {}).get("config", {}))
        self.map_config = map_config
        self.map_tokenizer = MapTokenizer(vocab.map_segments, map_config)
        self.flip_threshold = flip_threshold

    def tokenize_agents(self, scene: Scene) -> dict[str, np.ndarray]:
        """Motion tokens only: token_index, token_valid, anchor_pose, anchor_valid."""
        if scene.n_step < ANCHOR_STEPS[-1] + 1:
            raise ValueError(
                f"scene {scene.scenario_id!r}: field agent_states: {scene.n_step} steps, tokenization needs {ANCHOR_STEPS[-1] + 1}"
            )
        n = scene.n_agent
        logged = logged_poses(scene, self.flip_threshold)  # [n_agent, n_step, 3]
        lv = scene.agent_valid[:, ANCHOR_STEPS]  # [n_agent, 19]
        lp = logged[:, ANCHOR_STEPS]  # [n_agent, 19, 3]
        types = torch.as_tensor(scene.agent_type.astype(np.int64))  # [n_agent]
        anchor = np.zeros((n, N_ANCHOR, 3), np.float64)  # [n_agent, 19, 3]
        anchor[lv[:, 0], 0] = lp[lv[:, 0], 0]
        token_index = np.full((n, N_TOKEN_STEP), -1, np.int64)  # [n_agent, 18]
        token_valid = lv[:, :-1] & lv[:, 1:]  # [n_agent, 18]
        for t in range(N_TOKEN_STEP):
            rows = np.flatnonzero(token_valid[:, t])  # [n_t]
            if rows.size:
                a = torch.as_tensor(anchor[rows, t])  # [n_t, 3] float64
                idx = closest_token(self.vocab, types[rows], a, torch.as_tensor(lp[rows, t + 1]))  # [n_t]
                end = token_poses_global(self.vocab, types[rows], a, idx)[:, -1]  # [n_t, 3]
                token_index[rows, t] = idx.numpy()
                anchor[rows, t + 1] = end.numpy()
            re = ~lv[:, t] & lv[:, t + 1]  # [n_agent] (re)appearing: anchor on the log
            anchor[re, t + 1] = lp[re, t + 1]
        anchor[..., 2] = wrap_angle(anchor[..., 2])
        anchor[~lv] = 0.0
        return {"token_index": token_index, "token_valid": token_valid, "anchor_pose": anchor.astype(np.float32), "anchor_valid": lv.copy()}

    def tokenize(self, scene: Scene) -> TokenizedScene:
        agents = self.tokenize_agents(scene)
        size = _ref_step_values(scene, [STATE_LENGTH, STATE_WIDTH, STATE_HEIGHT]).astype(np.float32)  # [n_agent, 3]
        z = _ref_step_values(scene, [STATE_Z])[:, 0].astype(np.float32)  # [n_agent]
        maps = self.map_tokenizer.tokenize(scene)
        return TokenizedScene(
            scenario_id=scene.scenario_id,
            agent_id=scene.agent_id.astype(np.int64),
            agent_type=scene.agent_type.astype(np.int8),
            agent_size=size,
            agent_z=z,
            sim_mask=scene.sim_agent_mask(),
            eval_mask=scene.eval_agent_mask(),
            sdc_index=int(scene.sdc_index),
            **agents,
            **maps,
            vocab_id=self.vocab.vocab_id,
        )


def reconstruct_trajectories(tokenized: TokenizedScene, vocab: MotionVocab) -> tuple[np.ndarray, np.ndarray]:
    """10 Hz poses implied by the tokens: anchors plus each valid token's 5 poses.

    Returns poses `[n_agent, 91, 3]` (float64) and valid `[n_agent, 91]` (anchor valid, or inside a valid token).
    """
    n = tokenized.n_agent
    n_step = ANCHOR_STEPS[-1] + 1
    poses = np.zeros((n, n_step, 3))  # [n_agent, 91, 3]
    valid = np.zeros((n, n_step), bool)  # [n_agent, 91]
    poses[:, ANCHOR_STEPS] = tokenized.anchor_pose
    valid[:, ANCHOR_STEPS] = tokenized.anchor_valid
    if n == 0:
        return poses, valid
    a = torch.as_tensor(tokenized.anchor_pose[:, :-1].astype(np.float64))  # [n_agent, 18, 3]
    types = torch.as_tensor(tokenized.agent_type.astype(np.int64))[:, None].expand(n, N_TOKEN_STEP)  # [n_agent, 18]
    idx = torch.as_tensor(np.where(tokenized.token_valid, tokenized.token_index, -1))  # [n_agent, 18]
    steps = token_poses_global(vocab, types, a, idx).numpy()  # [n_agent, 18, 5, 3]
    for k in range(STEPS_PER_TOKEN - 1):  # intermediate poses; the 5th is the next anchor
        s = ANCHOR_STEPS[:-1] + k + 1  # [18]
        poses[:, s] = np.where(tokenized.token_valid[..., None], steps[:, :, k], 0.0)
        valid[:, s] = tokenized.token_valid
    return poses, valid


def _type_name(t: int) -> str:
    try:
        return AgentType(int(t)).name.lower()
    except ValueError:
        return f"type{int(t)}"


def reconstruction_error(scene: Scene, tokenized: TokenizedScene, vocab: MotionVocab | None = None, flip_threshold: float = 2.0) -> dict:
    """Tokenization error against the log, per agent type and overall.

    Per type (and "all"): at token-end anchors (anchors reached by a valid token; re-anchored ones
    are exact and excluded): `corner_anchor_mean` / `_max` (mean over the 4 corners of the fixed
    type box, metres), `pos_anchor_mean` / `_max` (centre distance, m), `heading_anchor_mean` (rad),
    `n_tokens`. With `vocab`: `corner_step_mean` / `pos_step_mean` over every 10 Hz step inside a
    valid token where the log is valid (intermediate poses of the tokens). Logged headings are
    de-flipped as in the tokenizer.
    """
    logged = logged_poses(scene, flip_threshold)  # [n_agent, n_step, 3]
    end_valid = tokenized.token_valid & scene.agent_valid[:, ANCHOR_STEPS[1:]]  # [n_agent, 18]
    tok = tokenized.anchor_pose[:, 1:].astype(np.float64)  # [n_agent, 18, 3]
    ref = logged[:, ANCHOR_STEPS[1:]]  # [n_agent, 18, 3]
    if vocab is not None:
        rec, rec_valid = reconstruct_trajectories(tokenized, vocab)  # [n_agent, 91, 3], [n_agent, 91]
        step_valid = rec_valid & scene.agent_valid[:, : rec.shape[1]]  # [n_agent, 91]
        step_valid[:, ANCHOR_STEPS] = False
        step_valid[:, ANCHOR_STEPS[1:]] = end_valid
    out: dict = {}
    groups = {_type_name(t): scene.agent_type == t for t in np.unique(scene.agent_type)}
    groups["all"] = np.ones(scene.n_agent, bool)
    for name, rows in groups.items():
        sums = {"corner": [], "pos": [], "head": [], "corner_step": [], "pos_step": []}
        for t in np.unique(scene.agent_type[rows]):
            r = rows & (scene.agent_type == t)
            m = end_valid & r[:, None]  # [n_agent, 18]
            length, width = TOKEN_BOX_SIZE.get(int(t), TOKEN_BOX_SIZE[int(AgentType.VEHICLE)])
            if m.any():
                ca = box_corners(tok[m], length, width)  # [k, 4, 2]
                cb = box_corners(ref[m], length, width)  # [k, 4, 2]
                sums["corner"].append(np.linalg.norm(ca - cb, axis=-1).mean(-1))
                sums["pos"].append(np.linalg.norm(tok[m][:, :2] - ref[m][:, :2], axis=-1))
                sums["head"].append(np.abs(wrap_angle(tok[m][:, 2] - ref[m][:, 2])))
            if vocab is not None:
                ms = step_valid & r[:, None]  # [n_agent, 91]
                if ms.any():
                    ca = box_corners(rec[ms], length, width)
                    cb = box_corners(logged[:, : rec.shape[1]][ms], length, width)
                    sums["corner_step"].append(np.linalg.norm(ca - cb, axis=-1).mean(-1))
                    sums["pos_step"].append(np.linalg.norm(rec[ms][:, :2] - logged[:, : rec.shape[1]][ms][:, :2], axis=-1))
        cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in sums.items()}
        entry = {
            "n_agents": int(rows.sum()),
            "n_tokens": int(cat["corner"].size),
            "corner_anchor_mean": float(cat["corner"].mean()) if cat["corner"].size else float("nan"),
            "corner_anchor_max": float(cat["corner"].max()) if cat["corner"].size else float("nan"),
            "pos_anchor_mean": float(cat["pos"].mean()) if cat["pos"].size else float("nan"),
            "pos_anchor_max": float(cat["pos"].max()) if cat["pos"].size else float("nan"),
            "heading_anchor_mean": float(cat["head"].mean()) if cat["head"].size else float("nan"),
        }
        if vocab is not None:
            entry["corner_step_mean"] = float(cat["corner_step"].mean()) if cat["corner_step"].size else float("nan")
            entry["pos_step_mean"] = float(cat["pos_step"].mean()) if cat["pos_step"].size else float("nan")
        out[name] = entry
    return out


def merge_errors(per_scene: list[dict]) -> dict:
    """Token-weighted average of `reconstruction_error` dicts over scenes (max of maxima)."""
    out: dict = {}
    names = sorted({k for d in per_scene for k in d})
    for name in names:
        entries = [d[name] for d in per_scene if name in d and d[name]["n_tokens"] > 0]
        n_tok = sum(e["n_tokens"] for e in entries)
        merged = {"n_agents": sum(d[name]["n_agents"] for d in per_scene if name in d), "n_tokens": n_tok}
        for key in entries[0].keys() if entries else []:
            if key in ("n_agents", "n_tokens"):
                continue
            vals = [(e[key], e["n_tokens"]) for e in entries if np.isfinite(e[key])]
            if key.endswith("_max"):
                merged[key] = max(v for v, _ in vals) if vals else float("nan")
            else:
                w = sum(n for _, n in vals)
                merged[key] = sum(v * n for v, n in vals) / w if w else float("nan")
        out[name] = merged
    return out
