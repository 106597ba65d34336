"""GRPO (Shao et al. 2024), the table-4 comparison: group-normalised advantages over the G
rollouts of each scene, (r_i - mean_G) / std_G, clipped importance ratio against the sampling
policy's log-probs, and beta * k3 KL to the frozen reference. Shares MPO's rollout and rewards
(per-rollout reward by default: a scene-shared reward would make every advantage 0)."""

from __future__ import annotations

import torch

from smart_r1.objectives.base import RLObjective, per_token_from_scene
from smart_r1.objectives.advantages import get_advantage
from smart_r1.objectives.losses import grpo_loss, masked_mean
from smart_r1.objectives.registry import register_objective


@register_objective("grpo")
class GRPO(RLObjective):
    def __init__(
        self,
        beta: float = 0.04,
        clip_eps: float = 0.2,
        n_rollout: int = 8,
        sampler: str = "topk",
        sampler_params: dict | None = None,
        backend: str = "fast",
        reward: str = "rollout",
        backend_params: dict | None = None,
    ):
        super().__init__(n_rollout, sampler, sampler_params, backend, reward, backend_params)
        if reward == "scene":
            raise ValueError("grpo: reward 'scene' gives every rollout of a group the same reward -> zero advantages")
        self.beta = float(beta)
        self.clip_eps = float(clip_eps)

    def advantages(self, rewards, valid=None):
        if valid is None:
            valid = torch.ones_like(rewards, dtype=torch.bool)  # [G, n_scene]
        return get_advantage("group_normalized")(rewards, valid, None)  # [G, n_scene], over finite rewards only

    def loss_from_logprobs(self, logp, logp_ref, mask, experience, extra=None):
        """logp, logp_ref, mask: [R, n_agent, 16] (sampled future tokens)."""
        rb = experience.rollout
        logp_old = rb.logprob.to(logp.device).float()  # [R, n_agent, 16] sampling policy
        adv_tok = per_token_from_scene(experience.advantages.to(logp.device), experience.inputs.batch.agent_scene, logp.shape[-1])
        loss, kl = grpo_loss(logp, logp_old, logp_ref, adv_tok, mask, self.clip_eps, self.beta)
        return loss, {"loss": float(loss.detach()), "kl": float(masked_mean(kl.detach(), mask)), "n_token": float(mask.sum())}
