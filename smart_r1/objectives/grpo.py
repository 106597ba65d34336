"""GRPO (Shao et al. 2024), the table-4 comparison: group-normalised advantages over the G
rollouts of each scene, (r_i - mean_G) / std_G, clipped importance ratio against the sampling
policy's log-probs, and beta * k3 KL to the frozen reference. Shares MPO's rollout and rewards
(per-rollout reward by default: a scene-shared reward would make every advantage 0).

Log-probs in the sampler's form by default (`logprob: sampled`, see `objectives/logprob.py`):
the ratio is q_theta / q_old of the distribution the rollout sampled from, q_old the log-prob
recorded at rollout time, and the k3 KL compares q_theta and q_ref renormalised over the same
recorded support. `ppo_epochs` passes over each experience in `n_minibatches` disjoint shares of
the rollouts (the learner's `n_epochs` / `n_minibatches`): from the second optimiser step on the
ratio leaves 1 and the clip acts; `clip_fraction` reports it (of the last step)."""

from __future__ import annotations

import torch

from smart_r1.objectives.base import RLObjective, per_token_from_scene
from smart_r1.objectives.advantages import get_advantage
from smart_r1.objectives.logprob import check_form, recorded_logprob
from smart_r1.objectives.losses import clipped_surrogate, grpo_loss, masked_mean
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
        logprob: str = "sampled",
        ppo_epochs: int = 2,
        n_minibatches: int = 2,
    ):
        super().__init__(n_rollout, sampler, sampler_params, backend, reward, backend_params)
        self.logprob_form = check_form(logprob, "grpo.logprob")
        self.n_epochs, self.n_minibatches = _epochs_and_minibatches("grpo", ppo_epochs, n_minibatches, self.n_rollout)
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
        logp_old = recorded_logprob(rb, self.logprob_form).to(logp.device)  # [R, n_agent, 16] sampling policy
        adv_tok = per_token_from_scene(experience.advantages.to(logp.device), experience.inputs.batch.agent_scene, logp.shape[-1])
        loss, kl = grpo_loss(logp, logp_old, logp_ref, adv_tok, mask, self.clip_eps, self.beta)
        _, clipped = clipped_surrogate(logp.detach(), logp_old, adv_tok, self.clip_eps)  # [R, n_agent, 16]
        return loss, {"loss": float(loss.detach()), "kl": float(masked_mean(kl.detach(), mask)), "n_token": float(mask.sum()),
                      "clip_fraction": float(masked_mean(clipped, mask))}


def _epochs_and_minibatches(owner: str, ppo_epochs, n_minibatches, n_rollout: int) -> tuple[int, int]:
    """Validated (n_epochs, n_minibatches): >= 1 each, at most one minibatch per rollout."""
    e, m = int(ppo_epochs), int(n_minibatches)
    if e < 1 or m < 1:
        raise ValueError(f"{owner}: ppo_epochs and n_minibatches must be >= 1, got {ppo_epochs}, {n_minibatches}")
    if m > n_rollout:
        raise ValueError(f"{owner}: n_minibatches {m} > n_rollout {n_rollout} (minibatches are shares of the rollouts)")
    return e, m
