"""Metric-oriented Policy Optimization (paper section 3.3, algorithm 1, eqs. 3-5).

Per step: roll the policy out (R rollouts per scene), score with the realism meta metric
(fast backend by default), advantage A = r - alpha (eq. 3), per-token k3 KL to the frozen
reference (eq. 4), loss = -(pi/pi_old * A - beta * KL) averaged over tokens (eq. 5).

Log-prob form (`logprob:`, `objectives/logprob.py`):
- `sampled` (**default**): pi is the distribution the rollout actually sampled from (top-k
  renormalised, temperature applied), re-computed over the support recorded at rollout time.
  Its score function has zero mean under the sampler, so the constant part of the advantage
  (batch-mean reward - alpha) is gradient-neutral, as eq. 3's baseline intends.
- `full_softmax`: the paper's literal pi (the model's full softmax). Under top-k sampling
  E[grad log pi] = grad log Z_k (the top-k mass), so a negative mean advantage lowers the top-k
  mass and flattens the distribution inside it (issue 13; numbers in docs/training.md).
Kept so the difference can be measured. The KL term uses the same form (both policies' log-probs
renormalised over the recorded support with `sampled`).

The ratio pi/pi_old: pi_old is the log-prob recorded when the token was sampled
(`RolloutBatch.sample_logprob` / `.logprob`), not pi_detached. In sync mode the two are equal
(ratio 1 up to float noise, the paper's eq. 5); in async mode the rollouts come from the policy
one update older and the ratio is the importance weight that corrects that lag (not clipped:
one step of lag keeps it near 1; `mpo/ratio_max` is logged to show it).

Reward unit (`reward:`; the paper is ambiguous) — see `base.py` for the three modes:
- `scene`: the group's distribution-level meta metric, shared by the scene's rollouts,
- `rollout` (**default**): each rollout's own meta metric,
- `leave_one_out`: jackknife pseudo-value of the rollout in the group metric.

Why `rollout` is the default: with `scene` every rollout of a scene gets the same advantage, so
the update cannot tell a good rollout from a bad one inside a scene and mostly learns which
*scenes* are easy (high variance, no within-scene credit assignment). The per-rollout score
ranks the rollouts of one scene against each other at the cost of one backend call per scene,
and the fast backend returns it for free. `leave_one_out` is the same idea measured inside the
distribution-level metric but costs R extra backend calls per scene.

Advantage (`advantage:`, a registry in `advantages.py`): `threshold` (**default**, the paper's
A = r - alpha), or `group_mean` (A = r - mean of the scene's other rollouts, no alpha): a
variance-reduced variant for small batches, where the spread of difficulty between scenes
swamps the within-scene signal of a single global alpha (docs/results.md measures both).

alpha (`alpha:`) is a number (paper: 0.77 = the SFT model's average WOMD reward) or
`"calibrate"` (**default**): before the first update of the stage, the mean reward of the
starting policy over `calibration_batches` batches — on synthetic scenes the reward's scale is
not WOMD's, and the per-rollout reward's scale is not the scene score's, so a hard-coded 0.77
would make every advantage the same sign. The calibrated value is checkpointed.
"""

from __future__ import annotations

import torch

from smart_r1.objectives.advantages import get_advantage, needs_alpha
from smart_r1.objectives.base import RLObjective, per_token_from_scene
from smart_r1.objectives.logprob import check_form, recorded_logprob
from smart_r1.objectives.losses import importance_ratio, masked_mean, mpo_loss
from smart_r1.objectives.registry import register_objective


@register_objective("mpo")
class MPO(RLObjective):
    def __init__(
        self,
        alpha: float | str = "calibrate",
        beta: float = 0.04,
        calibration_batches: int = 4,
        alpha_offset: float = 0.0,
        n_rollout: int = 8,
        sampler: str = "topk",
        sampler_params: dict | None = None,
        backend: str = "fast",
        reward: str = "rollout",
        backend_params: dict | None = None,
        advantage: str = "threshold",
        logprob: str = "sampled",
    ):
        super().__init__(n_rollout, sampler, sampler_params, backend, reward, backend_params)
        self.logprob_form = check_form(logprob, "mpo.logprob")
        get_advantage(advantage)  # fail early, naming the estimator
        self.advantage = advantage
        if isinstance(alpha, str):
            if alpha != "calibrate":
                raise ValueError(f"mpo: alpha must be a number or 'calibrate', got {alpha!r}")
            self.alpha: float | None = None
        else:
            self.alpha = float(alpha)
        self.calibrate = self.alpha is None
        self.calibration_batches = int(calibration_batches)
        self.alpha_offset = float(alpha_offset)  # added to the calibrated alpha (alpha sweeps: c - d, c, c + d)
        self.beta = float(beta)

    @property
    def needs_calibration(self) -> bool:
        return self.alpha is None and needs_alpha(self.advantage)

    def set_alpha(self, mean_reward: float) -> None:
        """Calibration result: alpha = mean reward of the starting policy + alpha_offset."""
        self.alpha = float(mean_reward) + self.alpha_offset

    def advantages(self, rewards: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor | None:
        if self.needs_calibration:
            return None  # calibration pass: rewards only
        if valid is None:
            valid = torch.ones_like(rewards, dtype=torch.bool)  # [R, n_scene]
        return get_advantage(self.advantage)(rewards, valid, self.alpha)  # [R, n_scene] eq. 3 for `threshold`

    def loss_from_logprobs(self, logp, logp_ref, mask, experience, extra=None):
        """logp, logp_ref, mask: [R, n_agent, 16] (sampled future tokens)."""
        if self.needs_calibration:
            raise RuntimeError("mpo: alpha is 'calibrate' but was never calibrated (call set_alpha first)")
        adv = experience.advantages
        if adv is None:
            adv = self.advantages(experience.rewards, experience.extras.get("reward_valid"))  # [R, n_scene]
        adv_tok = per_token_from_scene(adv.to(logp.device), experience.inputs.batch.agent_scene, logp.shape[-1])  # [R, n_agent, 16]
        logp_old = recorded_logprob(experience.rollout, self.logprob_form).to(logp.device)  # [R, n_agent, 16]
        loss, kl = mpo_loss(logp, logp_ref, adv_tok, mask, self.beta, logp_old=logp_old)
        ratio = importance_ratio(logp.detach(), logp_old)  # [R, n_agent, 16]
        return loss, {
            "loss": float(loss.detach()),
            "mpo/ratio_mean": float(masked_mean(ratio, mask)),
            "mpo/ratio_max": float(ratio[mask].max()) if bool(mask.any()) else 1.0,
            "kl": float(masked_mean(kl.detach(), mask)),
            "alpha": self.alpha if self.alpha is not None else float("nan"),
            "advantage/mean": float(adv.mean()),
            "logp/mean": float(masked_mean(logp.detach(), mask)),
            "n_token": float(mask.sum()),
        }

    def state_dict(self):
        return {"alpha": self.alpha}

    def load_state_dict(self, state):
        self.alpha = state.get("alpha", self.alpha)
