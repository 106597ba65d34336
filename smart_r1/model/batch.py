"""`AgentBatch`: one or more `TokenizedScene`s as torch tensors, the input of `SmartModel`.

Scenes are concatenated along the agent axis (`agent_scene [n_agent]`) and the map-token axis
(`map_scene [n_map]`); the model never lets information cross scenes (every neighbourhood is
restricted to the same scene). The motion vocabulary travels with the batch
(`vocab_poses [3, max_vocab, 5, 3]`, one row per vocabulary slot: vehicle, pedestrian,
cyclist; UNSET / OTHER agents use the vehicle slot) because the model embeds motion tokens by
their shape and the simulator places sampled tokens with it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from smart_r1.data.scene import AgentType
from smart_r1.tokens.tokenized_scene import N_ANCHOR, N_TOKEN_STEP, TokenizedScene

# Vocabulary slots: row of `vocab_poses` / head index per agent type.
SLOT_TYPES = (int(AgentType.VEHICLE), int(AgentType.PEDESTRIAN), int(AgentType.CYCLIST))
N_SLOT = len(SLOT_TYPES)
N_AGENT_TYPE = max(int(t) for t in AgentType) + 1  # 5
_TYPE_TO_SLOT = np.zeros(N_AGENT_TYPE, np.int64)  # [5] UNSET / OTHER -> vehicle slot 0
for _slot, _t in enumerate(SLOT_TYPES):
    _TYPE_TO_SLOT[_t] = _slot


def type_to_slot(agent_type: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """AgentType values -> vocabulary slot 0/1/2 (UNSET / OTHER -> vehicle)."""
    if isinstance(agent_type, torch.Tensor):
        return torch.as_tensor(_TYPE_TO_SLOT, device=agent_type.device)[agent_type.long()]
    return _TYPE_TO_SLOT[np.asarray(agent_type, np.int64)]


def vocab_tensors(vocab) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A `MotionVocab` (anything with `poses[type]` / `corners[type]`) as padded tensors.

    Returns `poses [3, V, 5, 3]`, `corners [3, V, 5, 4, 2]` (zeros beyond a type's size) and
    `sizes [3]` int64, V = the largest vocabulary.
    """
    sizes = [int(torch.as_tensor(vocab.poses[t]).shape[0]) for t in SLOT_TYPES]
    v = max(sizes)
    poses = torch.zeros(N_SLOT, v, 5, 3)  # [3, V, 5, 3]
    corners = torch.zeros(N_SLOT, v, 5, 4, 2)  # [3, V, 5, 4, 2]
    for s, t in enumerate(SLOT_TYPES):
        poses[s, : sizes[s]] = torch.as_tensor(np.asarray(vocab.poses[t]), dtype=torch.float32)
        corners[s, : sizes[s]] = torch.as_tensor(np.asarray(vocab.corners[t]), dtype=torch.float32)
    return poses, corners, torch.tensor(sizes, dtype=torch.long)


def vocab_sizes_of(vocab) -> dict:
    """`{"vehicle": n, "pedestrian": n, "cyclist": n, "map": n_map}` for `SmartModel(config, vocab_sizes)`."""
    out = {}
    for name, t in zip(("vehicle", "pedestrian", "cyclist"), SLOT_TYPES):
        out[name] = int(torch.as_tensor(vocab.poses[t]).shape[0])
    segs = getattr(vocab, "map_segments", None)
    if segs is not None:
        out["map"] = int(segs.shape[0])
    return out


@dataclass
class AgentBatch:
    scenario_id: list[str]  # [n_scene]
    # ----- agents -----
    agent_scene: torch.Tensor  # [n_agent] int64 scene index
    agent_id: torch.Tensor  # [n_agent] int64 track id
    agent_type: torch.Tensor  # [n_agent] int64 AgentType
    agent_slot: torch.Tensor  # [n_agent] int64 vocabulary slot 0/1/2
    agent_size: torch.Tensor  # [n_agent, 3] float32 length, width, height
    agent_z: torch.Tensor  # [n_agent] float32 z at the current step
    sim_mask: torch.Tensor  # [n_agent] bool must be simulated
    eval_mask: torch.Tensor  # [n_agent] bool SDC + tracks to predict
    is_sdc: torch.Tensor  # [n_agent] bool
    anchor_pose: torch.Tensor  # [n_agent, 19, 3] float32 x, y, heading
    anchor_valid: torch.Tensor  # [n_agent, 19] bool
    token_index: torch.Tensor  # [n_agent, 18] int64 (-1 invalid)
    token_valid: torch.Tensor  # [n_agent, 18] bool
    # ----- map tokens -----
    map_scene: torch.Tensor  # [n_map] int64
    map_pose: torch.Tensor  # [n_map, 3] float32
    map_points: torch.Tensor  # [n_map, n_map_point, 2] float32 global
    map_kind: torch.Tensor  # [n_map] int64 MapKind
    map_subtype: torch.Tensor  # [n_map] int64
    map_vocab_index: torch.Tensor  # [n_map] int64 (-1 unknown)
    map_signal: torch.Tensor  # [n_map, 19] int64 SignalState per anchor
    # ----- vocabulary -----
    vocab_poses: torch.Tensor  # [3, V, 5, 3] float32
    vocab_corners: torch.Tensor  # [3, V, 5, 4, 2] float32
    vocab_size: torch.Tensor  # [3] int64

    # ----- sizes -----
    @property
    def n_scene(self) -> int:
        return len(self.scenario_id)

    @property
    def n_agent(self) -> int:
        return int(self.agent_scene.shape[0])

    @property
    def n_map(self) -> int:
        return int(self.map_scene.shape[0])

    @property
    def device(self) -> torch.device:
        return self.anchor_pose.device

    def to(self, device) -> "AgentBatch":
        """Every tensor on `device`; from CPU to a GPU through pinned host memory (asynchronous copies)."""
        device = torch.device(device)
        if device == self.device:
            return self
        pin = device.type == "cuda" and self.device.type == "cpu"
        changes = {
            f.name: (getattr(self, f.name).pin_memory().to(device, non_blocking=True) if pin else getattr(self, f.name).to(device))
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **changes)

    def replace(self, **changes) -> "AgentBatch":
        return dataclasses.replace(self, **changes)

    def with_agent_tokens(
        self,
        anchor_pose: torch.Tensor,  # [n_agent, 19, 3]
        anchor_valid: torch.Tensor,  # [n_agent, 19]
        token_index: torch.Tensor,  # [n_agent, 18]
        token_valid: torch.Tensor,  # [n_agent, 18]
    ) -> "AgentBatch":
        """The same scenes with other agent sequences (e.g. a rolled-out one), for teacher forcing."""
        n = self.n_agent
        for name, t, shape in (
            ("anchor_pose", anchor_pose, (n, N_ANCHOR, 3)),
            ("anchor_valid", anchor_valid, (n, N_ANCHOR)),
            ("token_index", token_index, (n, N_TOKEN_STEP)),
            ("token_valid", token_valid, (n, N_TOKEN_STEP)),
        ):
            if tuple(t.shape) != shape:
                raise ValueError(f"AgentBatch.with_agent_tokens: {name} has shape {tuple(t.shape)}, expected {shape}")
        return dataclasses.replace(
            self,
            anchor_pose=anchor_pose.to(self.anchor_pose),
            anchor_valid=anchor_valid.to(device=self.device, dtype=torch.bool),
            token_index=token_index.to(device=self.device, dtype=torch.long),
            token_valid=token_valid.to(device=self.device, dtype=torch.bool),
        )

    def stack_sequences(
        self,
        anchor_pose: torch.Tensor,  # [R, n_agent, 19, 3]
        anchor_valid: torch.Tensor,  # [R, n_agent, 19]
        token_index: torch.Tensor,  # [R, n_agent, 18]
        token_valid: torch.Tensor,  # [R, n_agent, 18]
        share_map: bool = True,
    ) -> tuple["AgentBatch", torch.Tensor]:
        """R agent sequences of the same scenes (rollouts) as one batch of R x n_scene scenes,
        rollout-major (scene s of sequence r is scene r * n_scene + s), for teacher-forced
        re-scoring: `model(stacked, ...).reshape(R, n_agent, 18, V)`.

        `share_map=True` keeps one copy of the map tokens and returns `agent_map_scene [R * n_agent]`
        (the map scene each stacked agent sees) for `SmartModel.forward(..., map_feat=,
        agent_map_scene=)`; `False` repeats the map R times (every copy encoded again).
        Returns (stacked batch, agent_map_scene).
        """
        r = int(token_index.shape[0])
        n = self.n_agent
        if tuple(token_index.shape[1:]) != (n, N_TOKEN_STEP) or tuple(anchor_pose.shape[1:]) != (n, N_ANCHOR, 3):
            raise ValueError(
                f"AgentBatch.stack_sequences: token_index {tuple(token_index.shape)} / anchor_pose "
                f"{tuple(anchor_pose.shape)} do not match {n} agents"
            )
        rep = lambda t: t.repeat(r, *([1] * (t.dim() - 1)))  # noqa: E731
        agent_fields = ("agent_id", "agent_type", "agent_slot", "agent_size", "agent_z", "sim_mask", "eval_mask", "is_sdc")
        changes = {f: rep(getattr(self, f)) for f in agent_fields}
        off = torch.arange(r, device=self.device) * self.n_scene  # [R]
        changes["agent_scene"] = (self.agent_scene[None] + off[:, None]).reshape(-1)  # [R * n]
        changes["scenario_id"] = [f"{sid}#r{i}" for i in range(r) for sid in self.scenario_id]
        changes["anchor_pose"] = anchor_pose.reshape(r * n, N_ANCHOR, 3).to(self.anchor_pose)
        changes["anchor_valid"] = anchor_valid.reshape(r * n, N_ANCHOR).to(device=self.device, dtype=torch.bool)
        changes["token_index"] = token_index.reshape(r * n, N_TOKEN_STEP).to(device=self.device, dtype=torch.long)
        changes["token_valid"] = token_valid.reshape(r * n, N_TOKEN_STEP).to(device=self.device, dtype=torch.bool)
        agent_map_scene = self.agent_scene.repeat(r)  # [R * n] scene index into the shared map
        if not share_map:
            for f in ("map_pose", "map_points", "map_kind", "map_subtype", "map_vocab_index", "map_signal"):
                changes[f] = rep(getattr(self, f))
            changes["map_scene"] = (self.map_scene[None] + off[:, None]).reshape(-1)
            agent_map_scene = changes["agent_scene"]
        return dataclasses.replace(self, **changes), agent_map_scene

    def scene_agents(self, scene_index: int) -> torch.Tensor:
        """Agent rows of one scene, in the scene's agent order.  # [n_agent_scene] int64"""
        return torch.nonzero(self.agent_scene == scene_index).reshape(-1)

    def select_scenes(self, scene_indices: Sequence[int]) -> "AgentBatch":
        """A batch with only the given scenes (renumbered 0..)."""
        idx = torch.as_tensor(list(scene_indices), dtype=torch.long)
        remap = torch.full((self.n_scene,), -1, dtype=torch.long)
        remap[idx] = torch.arange(len(idx))
        a = torch.isin(self.agent_scene.cpu(), idx)
        m = torch.isin(self.map_scene.cpu(), idx)
        changes = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("vocab_") or not isinstance(v, torch.Tensor):
                continue
            if f.name.startswith("map_"):
                changes[f.name] = v[m.to(v.device)]
            else:
                changes[f.name] = v[a.to(v.device)]
        changes["agent_scene"] = remap.to(self.device)[self.agent_scene[a.to(self.device)]]
        changes["map_scene"] = remap.to(self.device)[self.map_scene[m.to(self.device)]]
        changes["scenario_id"] = [self.scenario_id[i] for i in idx.tolist()]
        return dataclasses.replace(self, **changes)


def _check(scene: TokenizedScene, name: str, arr: np.ndarray, shape: tuple) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
        raise ValueError(
            f"collate: tokenized scene {scene.scenario_id!r}: field {name} has shape {arr.shape}, expected {shape} "
            "(None = any)"
        )
    return arr


def collate(tokenized_scenes: Sequence[TokenizedScene], vocab) -> AgentBatch:
    """Concatenate tokenized scenes into one `AgentBatch` (CPU tensors; `.to(device)` after).

    Raises ValueError naming the scene and field on malformed input (wrong shape, token index
    outside the agent type's vocabulary).
    """
    if len(tokenized_scenes) == 0:
        raise ValueError("collate: no tokenized scenes")
    vposes, vcorners, vsizes = vocab_tensors(vocab)
    cols: dict[str, list] = {k: [] for k in (
        "agent_scene", "agent_id", "agent_type", "agent_size", "agent_z", "sim_mask", "eval_mask", "is_sdc",
        "anchor_pose", "anchor_valid", "token_index", "token_valid", "map_scene", "map_pose", "map_points",
        "map_kind", "map_subtype", "map_vocab_index", "map_signal")}
    n_point = None
    for s_i, sc in enumerate(tokenized_scenes):
        n = sc.n_agent
        nm = sc.n_map_token
        _check(sc, "agent_type", sc.agent_type, (n,))
        _check(sc, "agent_size", sc.agent_size, (n, 3))
        _check(sc, "anchor_pose", sc.anchor_pose, (n, N_ANCHOR, 3))
        _check(sc, "anchor_valid", sc.anchor_valid, (n, N_ANCHOR))
        _check(sc, "token_index", sc.token_index, (n, N_TOKEN_STEP))
        _check(sc, "token_valid", sc.token_valid, (n, N_TOKEN_STEP))
        _check(sc, "map_token_pose", sc.map_token_pose, (nm, 3))
        pts = _check(sc, "map_token_points", sc.map_token_points, (nm, None, 2))
        _check(sc, "map_token_signal", sc.map_token_signal, (nm, N_ANCHOR))
        if n_point is None:
            n_point = pts.shape[1]
        elif pts.shape[1] != n_point and nm > 0:
            raise ValueError(
                f"collate: tokenized scene {sc.scenario_id!r}: field map_token_points has {pts.shape[1]} points per "
                f"token, other scenes have {n_point}"
            )
        types = np.asarray(sc.agent_type, np.int64)  # [n]
        if ((types < 0) | (types >= N_AGENT_TYPE)).any():
            raise ValueError(f"collate: tokenized scene {sc.scenario_id!r}: field agent_type has values outside 0..4")
        slots = _TYPE_TO_SLOT[types]  # [n]
        tok = np.asarray(sc.token_index, np.int64)  # [n, 18]
        tv = np.asarray(sc.token_valid, bool)  # [n, 18]
        limit = vsizes.numpy()[slots][:, None]  # [n, 1]
        bad = tv & ((tok < 0) | (tok >= limit))  # [n, 18]
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(
                f"collate: tokenized scene {sc.scenario_id!r}: field token_index[{r}, {c}] = {tok[r, c]} is outside the "
                f"vocabulary of agent type {AgentType(int(types[r])).name} (size {int(limit[r, 0])}); "
                "was the scene tokenized with another vocabulary?"
            )
        sdc = np.zeros(n, bool)
        if 0 <= sc.sdc_index < n:
            sdc[sc.sdc_index] = True
        cols["agent_scene"].append(np.full(n, s_i, np.int64))
        cols["agent_id"].append(np.asarray(sc.agent_id, np.int64))
        cols["agent_type"].append(types)
        cols["agent_size"].append(np.asarray(sc.agent_size, np.float32))
        cols["agent_z"].append(np.asarray(sc.agent_z, np.float32).reshape(n))
        cols["sim_mask"].append(np.asarray(sc.sim_mask, bool))
        cols["eval_mask"].append(np.asarray(sc.eval_mask, bool))
        cols["is_sdc"].append(sdc)
        cols["anchor_pose"].append(np.asarray(sc.anchor_pose, np.float32))
        cols["anchor_valid"].append(np.asarray(sc.anchor_valid, bool))
        cols["token_index"].append(np.where(tv, tok, -1))
        cols["token_valid"].append(tv)
        cols["map_scene"].append(np.full(nm, s_i, np.int64))
        cols["map_pose"].append(np.asarray(sc.map_token_pose, np.float32))
        cols["map_points"].append(pts.astype(np.float32))
        cols["map_kind"].append(np.asarray(sc.map_token_kind, np.int64))
        cols["map_subtype"].append(np.asarray(sc.map_token_subtype, np.int64))
        cols["map_vocab_index"].append(np.asarray(sc.map_token_vocab_index, np.int64))
        cols["map_signal"].append(np.asarray(sc.map_token_signal, np.int64))
    t = {k: torch.from_numpy(np.ascontiguousarray(np.concatenate(v, axis=0))) for k, v in cols.items()}
    # Invalid anchors carry zeros (never NaN) so that masked arithmetic stays finite.
    t["anchor_pose"] = torch.where(t["anchor_valid"][..., None], t["anchor_pose"], torch.zeros(()))
    return AgentBatch(
        scenario_id=[sc.scenario_id for sc in tokenized_scenes],
        agent_slot=torch.from_numpy(_TYPE_TO_SLOT[t["agent_type"].numpy()]),
        vocab_poses=vposes,
        vocab_corners=vcorners,
        vocab_size=vsizes,
        **t,
    )
