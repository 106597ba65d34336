"""DPO (Rafailov et al. 2023), the table-4 comparison: for each scene, the best and the worst of
its R rollouts by reward form a preference pair (chosen, rejected); loss
-log sigmoid(beta * [(log pi_w - log pi_ref_w) - (log pi_l - log pi_ref_l)]).

A rollout's log-probability is the joint one over all trained agents' future tokens. By default
it is length-normalised (mean per token, `normalize: mean`) because a joint rollout holds
hundreds of tokens and a summed log-ratio saturates the sigmoid after one step; `sum` is the
textbook form.

Log-prob form (`logprob:`): `full_softmax` (**default**) or `sampled` (the top-k sampler's
renormalised log-prob, `objectives/logprob.py`). Unlike MPO / GRPO / PPO, DPO is not a
score-function estimate of an expectation under the sampler: its loss is a deterministic
function of two sequences' log-ratios to the reference, and a constant shift of the rewards does
not change the pair. The top-k bias of issue 13 does not arise, so the default stays the
textbook form; `sampled` makes the implicit reward that of the sampling distribution.
"""

from __future__ import annotations

import torch

from smart_r1.objectives.base import RLObjective
from smart_r1.objectives.logprob import check_form
from smart_r1.objectives.losses import dpo_loss
from smart_r1.objectives.registry import register_objective


def sequence_logprob(logp: torch.Tensor, mask: torch.Tensor, agent_scene: torch.Tensor, n_scene: int, normalize: str) -> torch.Tensor:
    """Per (rollout, scene) log-probability from per-token ones. logp, mask: [R, n_agent, T] -> [R, n_scene]."""
    R = logp.shape[0]
    per_agent = (logp * mask).sum(-1)  # [R, n_agent]
    count_agent = mask.sum(-1).to(logp.dtype)  # [R, n_agent]
    idx = agent_scene.long().view(1, -1).expand(R, -1)  # [R, n_agent]
    total = torch.zeros(R, n_scene, dtype=logp.dtype, device=logp.device).scatter_add(1, idx, per_agent)  # [R, n_scene]
    count = torch.zeros(R, n_scene, dtype=logp.dtype, device=logp.device).scatter_add(1, idx, count_agent)  # [R, n_scene]
    if normalize == "mean":
        return total / count.clamp_min(1.0)
    if normalize == "sum":
        return total
    raise ValueError(f"dpo: normalize must be 'mean' or 'sum', got {normalize!r}")


@register_objective("dpo")
class DPO(RLObjective):
    def __init__(
        self,
        beta: float = 0.1,
        normalize: str = "mean",
        n_rollout: int = 8,
        sampler: str = "topk",
        sampler_params: dict | None = None,
        backend: str = "fast",
        reward: str = "rollout",
        backend_params: dict | None = None,
        logprob: str = "full_softmax",
    ):
        super().__init__(n_rollout, sampler, sampler_params, backend, reward, backend_params)
        self.logprob_form = check_form(logprob, "dpo.logprob")
        if n_rollout < 2:
            raise ValueError("dpo: needs n_rollout >= 2 for a preference pair")
        if reward == "scene":
            raise ValueError("dpo: reward 'scene' cannot rank the rollouts of a scene")
        if normalize not in ("mean", "sum"):
            raise ValueError(f"dpo: normalize must be 'mean' or 'sum', got {normalize!r}")
        self.beta = float(beta)
        self.normalize = normalize

    token_separable = False  # a sigmoid of per-sequence sums: dL/dlogp needs every log-prob first

    def loss_from_logprobs(self, logp, logp_ref, mask, experience, extra=None):
        """logp, logp_ref, mask: [R, n_agent, 16] (sampled future tokens)."""
        inputs = experience.inputs
        maskf = mask.to(logp.dtype)
        seq = sequence_logprob(logp, maskf, inputs.batch.agent_scene, inputs.n_scene, self.normalize)  # [R, n_scene]
        seq_ref = sequence_logprob(logp_ref, maskf, inputs.batch.agent_scene, inputs.n_scene, self.normalize)  # [R, n_scene]
        rewards = experience.rewards.to(logp.device)  # [R, n_scene]
        best = rewards.argmax(0)  # [n_scene]
        worst = rewards.argmin(0)  # [n_scene]
        scenes = torch.arange(inputs.n_scene, device=logp.device)
        distinct = rewards[best, scenes] > rewards[worst, scenes]  # [n_scene] ties give no pair
        valid = experience.extras.get("reward_valid")
        if valid is not None:
            distinct = distinct & valid.to(distinct.device).all(0)  # a scene with an unscored rollout gives no pair
        if not bool(distinct.any()):
            zero = logp.sum() * 0.0
            return zero, {"loss": 0.0, "n_pair": 0.0}
        b, w, sc = best[distinct], worst[distinct], scenes[distinct]
        loss, margin = dpo_loss(seq[b, sc], seq[w, sc], seq_ref[b, sc], seq_ref[w, sc], self.beta)
        return loss, {
            "loss": float(loss.detach()),
            "margin": float(margin.detach().mean()),
            "preference_accuracy": float((margin.detach() > 0).float().mean()),
            "n_pair": float(distinct.sum()),
        }
