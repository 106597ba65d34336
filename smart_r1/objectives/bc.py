"""Behaviour cloning: open-loop next-token cross entropy on the logged tokens (paper eq. 6).

Reference recipe: label smoothing 0.1 (smoothed over the agent type's own vocabulary only),
trained agents = `TrainBatch.train_mask` (<= 32 per scene within 100 m of the SDC).
"""

from __future__ import annotations

import torch

from smart_r1.objectives.base import Objective
from smart_r1.objectives.losses import masked_mean, smoothed_cross_entropy
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


@register_objective("bc")
class BehaviourCloning(Objective):
    def __init__(self, label_smoothing: float = 0.1):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"bc: label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def loss(self, policy, experience, reference=None):
        inputs = experience.inputs
        batch = inputs.batch
        logits = policy(batch)  # [n_agent, 18, V]
        mask = logged_token_mask(batch, inputs.train_mask)  # [n_agent, 18]
        loss = smoothed_cross_entropy(logits, batch.token_index, mask, self.label_smoothing)
        with torch.no_grad():
            ce = smoothed_cross_entropy(logits, batch.token_index, mask, 0.0)
        return loss, {
            "loss": float(loss.detach()),
            "ce": float(ce),
            "accuracy": token_accuracy(logits.detach(), batch.token_index, mask),
            "n_token": float(mask.sum()),
        }
