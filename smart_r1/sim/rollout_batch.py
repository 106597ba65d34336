"""`RolloutBatch`: the output of the rollout engine (R closed-loop futures of an `AgentBatch`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from smart_r1.model.batch import AgentBatch
from smart_r1.sim.rollouts import Rollouts
from smart_r1.tokens.tokenized_scene import N_FUTURE_TOKEN


@dataclass
class RolloutBatch:
    batch: AgentBatch  # the scenes that were rolled out (logged tokens, map, vocabulary)
    token_index: torch.Tensor  # [R, n_agent, 18] int64: history = logged, future = sampled (-1 not simulated)
    token_valid: torch.Tensor  # [R, n_agent, 18] bool
    anchor_pose: torch.Tensor  # [R, n_agent, 19, 3] float32
    anchor_valid: torch.Tensor  # [R, n_agent, 19] bool
    logprob: torch.Tensor  # [R, n_agent, 16] log pi(sampled token) under the full model distribution (T=1), 0 if not simulated
    catk_target: torch.Tensor  # [R, n_agent, 16] int64 closest-to-log token from the rolled-out pose, -1 if no log
    future_pose: torch.Tensor  # [R, n_agent, 80, 3] float32 10 Hz x, y, heading (zeros for agents not simulated)
    sim_mask: torch.Tensor  # [n_agent] bool
    sampler: str = ""
    seed: int | None = None
    # log q(sampled token) under the distribution sampled from (support renormalised, temperature
    # applied; `objectives.logprob.token_logprob(..., "sampled")`), 0 if not simulated
    sample_logprob: torch.Tensor | None = None  # [R, n_agent, 16] float32
    sample_support: torch.Tensor | None = None  # [R, n_agent, 16, k] int32 token ids the sampler drew from, -1 = none
    sample_temperature: float = 1.0
    # log-prob of the sampled token under the frozen reference model, recorded by the engine when
    # given one (`rollout(..., reference=...)`), 0 if not simulated; None without a reference.
    # The learner uses them instead of its own teacher-forced reference pass (`learner.reference_on`).
    ref_logprob: torch.Tensor | None = None  # [R, n_agent, 16] float32 full softmax (T = 1)
    ref_sample_logprob: torch.Tensor | None = None  # [R, n_agent, 16] float32 over `sample_support`, temperature applied

    @property
    def n_rollout(self) -> int:
        return int(self.token_index.shape[0])

    @property
    def n_agent(self) -> int:
        return int(self.token_index.shape[1])

    def trajectories(self) -> torch.Tensor:
        """10 Hz x, y, z, heading of the 80 future steps; z held at the current-step z.  # [R, n_agent, 80, 4]"""
        z = self.batch.agent_z.to(self.future_pose)[None, :, None, None].expand(*self.future_pose.shape[:3], 1)  # [R, n, 80, 1]
        return torch.cat([self.future_pose[..., :2], z, self.future_pose[..., 2:3]], dim=-1)  # [R, n, 80, 4]

    def to_rollouts(self, scene_index: int = 0) -> Rollouts:
        """The simulated agents of one scene as `Rollouts` [R, n_sim_agent, 80, 4] (scene agent order =
        `Scene.sim_agent_ids()` order)."""
        if not 0 <= scene_index < self.batch.n_scene:
            raise IndexError(f"scene_index {scene_index} outside 0..{self.batch.n_scene - 1}")
        rows = torch.nonzero((self.batch.agent_scene == scene_index) & self.sim_mask).reshape(-1)  # [n_sim]
        traj = self.trajectories()[:, rows]  # [R, n_sim, 80, 4]
        return Rollouts(
            scenario_id=self.batch.scenario_id[scene_index],
            agent_id=self.batch.agent_id[rows].cpu().numpy(),
            trajectories=traj.detach().cpu().numpy().astype(np.float32),
        )

    def all_rollouts(self) -> list[Rollouts]:
        return [self.to_rollouts(s) for s in range(self.batch.n_scene)]

    def teacher_forced_batch(self, rollout: int) -> AgentBatch:
        """The batch with rollout `rollout`'s sequences, for teacher-forced re-scoring."""
        return self.batch.with_agent_tokens(
            self.anchor_pose[rollout], self.anchor_valid[rollout], self.token_index[rollout], self.token_valid[rollout]
        )

    def stacked_batch(self) -> AgentBatch:
        """All rollouts as one batch of R x n_scene scenes (rollout-major: scene s of rollout r is
        scene r * n_scene + s); `model(stacked).reshape(R, n_agent, 18, V)` re-scores every rollout."""
        b, r = self.batch, self.n_rollout
        rep = lambda t: t.repeat(r, *([1] * (t.dim() - 1)))  # noqa: E731
        agent_fields = ("agent_id", "agent_type", "agent_slot", "agent_size", "agent_z", "sim_mask", "eval_mask", "is_sdc")
        map_fields = ("map_pose", "map_points", "map_kind", "map_subtype", "map_vocab_index", "map_signal")
        changes = {f: rep(getattr(b, f)) for f in agent_fields + map_fields}
        off = torch.arange(r, device=b.device) * b.n_scene  # [R]
        changes["agent_scene"] = (b.agent_scene[None] + off[:, None]).reshape(-1)
        changes["map_scene"] = (b.map_scene[None] + off[:, None]).reshape(-1)
        changes["scenario_id"] = [f"{sid}#r{i}" for i in range(r) for sid in b.scenario_id]
        changes["anchor_pose"] = self.anchor_pose.reshape(-1, *self.anchor_pose.shape[2:])
        changes["anchor_valid"] = self.anchor_valid.reshape(-1, self.anchor_valid.shape[-1])
        changes["token_index"] = self.token_index.reshape(-1, self.token_index.shape[-1])
        changes["token_valid"] = self.token_valid.reshape(-1, self.token_valid.shape[-1])
        return dataclasses.replace(b, **changes)

    def select_rollouts(self, index: torch.Tensor) -> "RolloutBatch":
        """Rollouts `index` [R'] only (learner minibatches): every tensor field with a leading
        rollout axis is indexed; `sim_mask` [n_agent] and the scenes stay."""
        index = torch.as_tensor(index, dtype=torch.long)
        changes = {f.name: getattr(self, f.name)[index.to(getattr(self, f.name).device)] for f in dataclasses.fields(self)
                   if isinstance(getattr(self, f.name), torch.Tensor) and f.name != "sim_mask"}
        return dataclasses.replace(self, **changes)

    def future_token_valid(self) -> torch.Tensor:
        """Sampled future tokens.  # [R, n_agent, 16] bool"""
        return self.token_valid[:, :, -N_FUTURE_TOKEN:]

    def to(self, device) -> "RolloutBatch":
        changes = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                   if isinstance(getattr(self, f.name), torch.Tensor)}
        changes["batch"] = self.batch.to(device)
        return dataclasses.replace(self, **changes)
