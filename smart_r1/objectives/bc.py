"""Behaviour cloning: open-loop next-token cross entropy on the logged tokens (paper eq. 6).

Reference recipe: label smoothing 0.1 (smoothed over the agent type's own vocabulary only),
trained agents = `TrainBatch.train_mask` (<= 32 per scene within 100 m of the SDC).
"""

from __future__ import annotations

import torch

from smart_r1.objectives.base import Objective, TokenTargets
from smart_r1.objectives.losses import masked_mean, smoothed_cross_entropy_from_logprobs
from smart_r1.objectives.registry import register_objective


def logged_token_mask(batch, train_mask: torch.Tensor) -> torch.Tensor:
    """Tokens with a logged target whose starting anchor is valid, of trained agents. [n_agent, 18]"""
    valid = batch.token_valid.bool() & (batch.token_index >= 0)  # [n_agent, 18]
    valid = valid & batch.anchor_valid[:, :-1].bool()  # [n_agent, 18] token t starts at anchor t
    return valid & train_mask.view(-1, 1).bool()


def token_accuracy(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of masked tokens whose argmax equals the target."""
    hit = (logits.argmax(-1) == target) & mask  # [...]
    return float(hit.sum()) / max(int(mask.sum()), 1)


def token_accuracy_from_argmax(argmax: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of masked tokens whose most likely token (argmax [...]) equals the target."""
    hit = (argmax == target) & mask  # [...]
    return float(hit.sum()) / max(int(mask.sum()), 1)


@register_objective("bc")
class BehaviourCloning(Objective):
    def __init__(self, label_smoothing: float = 0.1):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"bc: label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def targets(self, experience):
        """The logged tokens of every agent, as one teacher-forced sequence ([1, n_agent, 18])."""
        batch = experience.inputs.batch
        one = lambda t: t.unsqueeze(0)  # noqa: E731
        return TokenTargets(
            one(batch.anchor_pose), one(batch.anchor_valid), one(batch.token_index), one(batch.token_valid),
            tokens=one(batch.token_index), mask=one(logged_token_mask(batch, experience.inputs.train_mask)),
            first_position=0, mean_valid_logp=self.label_smoothing > 0.0,
        )

    def loss_from_logprobs(self, logp, logp_ref, mask, experience, extra=None):
        """logp, mask: [1, n_agent, 18]; extra["mean_valid_logp"] when label smoothing."""
        loss = smoothed_cross_entropy_from_logprobs(logp, (extra or {}).get("mean_valid_logp"), mask, self.label_smoothing)
        ce = masked_mean(-logp.detach(), mask)
        return loss, {"loss": float(loss.detach()), "ce": float(ce), "n_token": float(mask.sum())}

    def score_metrics(self, scores, targets):
        out = super().score_metrics(scores, targets)
        out["accuracy"] = token_accuracy_from_argmax(scores.argmax, targets.tokens, targets.mask)
        return out
