"""CAT-K closed-loop SFT (Zhang et al. 2025, paper section 3.5).

`collect` rolls the policy out with the `catk` sampler: at every token step, among the top-K
tokens by logit (reference K = 32), follow the one whose box corners are closest to the logged
pose; agents with no valid log keep the policy's own sample. The target of each future step
is `RolloutBatch.catk_target`: the closest-to-log token *relative to the rolled-out state*.
`loss` is eq. 6 with those targets (and the logged tokens on the two history steps, where the
rollout is the log), no label smoothing.
"""

from __future__ import annotations

import torch

from smart_r1.objectives.base import Experience, Objective, TokenTargets, run_rollout
from smart_r1.objectives.bc import logged_token_mask, token_accuracy_from_argmax
from smart_r1.objectives.losses import smoothed_cross_entropy_from_logprobs
from smart_r1.objectives.registry import register_objective
from smart_r1.tokens.tokenized_scene import N_HISTORY_TOKEN


def catk_targets(batch, rb, train_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and mask for every rollout: ([R, n_agent, 18] int64, [R, n_agent, 18] bool)."""
    R = rb.token_index.shape[0]
    hist_t = batch.token_index[:, :N_HISTORY_TOKEN].unsqueeze(0).expand(R, -1, -1)  # [R, n_agent, 2]
    hist_m = logged_token_mask(batch, train_mask)[:, :N_HISTORY_TOKEN].unsqueeze(0).expand(R, -1, -1)  # [R, n_agent, 2]
    fut_t = rb.catk_target.long()  # [R, n_agent, 16]
    fut_m = (fut_t >= 0) & rb.token_valid[:, :, N_HISTORY_TOKEN:].bool()  # [R, n_agent, 16]
    fut_m = fut_m & rb.anchor_valid[:, :, N_HISTORY_TOKEN:-1].bool() & train_mask.view(1, -1, 1).bool()
    return torch.cat([hist_t, fut_t], dim=-1), torch.cat([hist_m, fut_m], dim=-1)


@register_objective("catk")
class ClosedLoopSFT(Objective):
    def __init__(self, top_k: int = 32, n_rollout: int = 1, label_smoothing: float = 0.0, sampler: str = "catk"):
        if top_k < 1:
            raise ValueError(f"catk: top_k must be >= 1, got {top_k}")
        self.top_k = int(top_k)
        self.n_rollout = int(n_rollout)
        self.label_smoothing = float(label_smoothing)
        self.sampler = sampler

    def collect(self, policy, inputs, generator=None, reference=None) -> Experience:
        rb = run_rollout(policy, inputs.batch, self.n_rollout, self.sampler, {"k": self.top_k}, generator, catk_target=True)
        return Experience(inputs=inputs, rollout=rb)

    def targets(self, experience):
        """Every rollout re-scored against its CAT-K targets ([R, n_agent, 18])."""
        inputs, rb = experience.inputs, experience.rollout
        target, mask = catk_targets(inputs.batch, rb, inputs.train_mask)  # [R, n_agent, 18]
        return TokenTargets.from_rollouts(rb, target, mask, 0, mean_valid_logp=self.label_smoothing > 0.0)

    def loss_from_logprobs(self, logp, logp_ref, mask, experience, extra=None):
        """logp, mask: [R, n_agent, 18]."""
        loss = smoothed_cross_entropy_from_logprobs(logp, (extra or {}).get("mean_valid_logp"), mask, self.label_smoothing)
        return loss, {"loss": float(loss.detach()), "n_token": float(mask.sum())}

    def score_metrics(self, scores, targets):
        out = super().score_metrics(scores, targets)
        fut = (slice(None), slice(None), slice(N_HISTORY_TOKEN, None))
        out["accuracy"] = token_accuracy_from_argmax(scores.argmax[fut], targets.tokens[fut], targets.mask[fut])
        return out
