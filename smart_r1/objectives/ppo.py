"""PPO (Schulman et al. 2017), the table-4 comparison: a value head, GAE over the 16 future
token steps, clipped importance ratio against the sampling policy, optional k3 KL to the
reference.

MDP: each agent's future is an episode of 16 token steps; the (per-rollout) realism reward
arrives at the agent's last valid future step, all other step rewards are 0. The value head is a
small MLP on per-(agent, step) features: the model's hidden states if the model exposes them
(`forward(batch, return_hidden=True)` -> (logits, hidden [n_agent, 18, d])), detached so the
critic does not disturb the actor's trunk; otherwise a handcrafted state (time, speed and
heading change at the anchor, distance to the logged anchor, agent type), i.e. a separate
critic. Advantages are normalised over the batch by default.

Epochs: GAE advantages and returns are computed once per experience, with the value head as it
is when the experience arrives (`make_experience`, cached in `extras`), and stay fixed while the
learner makes `ppo_epochs` passes over the experience in `n_minibatches` disjoint shares of the
rollouts; the clip acts from the second optimiser step on (`clip_fraction`, of the last step).
The ratio and the optional KL use the sampler's log-prob by default (`logprob: sampled`, see
`objectives/logprob.py`); `full_softmax` is the model's own distribution.
"""

from __future__ import annotations

import torch
from torch import nn

from smart_r1.objectives.base import RLObjective
from smart_r1.objectives.grpo import _epochs_and_minibatches
from smart_r1.objectives.logprob import check_form, recorded_logprob
from smart_r1.objectives.losses import gae, masked_mean, ppo_loss
from smart_r1.objectives.registry import register_objective
from smart_r1.tokens.tokenized_scene import CURRENT_ANCHOR, N_FUTURE_TOKEN

N_STATE_FEATURE = 10


def state_features(batch, rb) -> torch.Tensor:
    """Handcrafted critic input for every (rollout, agent, future step). [R, n_agent, 16, 10]"""
    R = rb.anchor_pose.shape[0]
    pose = rb.anchor_pose[:, :, CURRENT_ANCHOR - 1 : CURRENT_ANCHOR + N_FUTURE_TOKEN].float()  # [R, n_agent, 17, 3]
    step = pose[:, :, 1:, :2] - pose[:, :, :-1, :2]  # [R, n_agent, 16, 2]
    speed = step.norm(dim=-1) / 0.5  # [R, n_agent, 16]
    dhead = torch.remainder(pose[:, :, 1:, 2] - pose[:, :, :-1, 2] + torch.pi, 2 * torch.pi) - torch.pi  # [R, n_agent, 16]
    log = batch.anchor_pose[:, CURRENT_ANCHOR : CURRENT_ANCHOR + N_FUTURE_TOKEN, :2].float()  # [n_agent, 16, 2]
    log_valid = batch.anchor_valid[:, CURRENT_ANCHOR : CURRENT_ANCHOR + N_FUTURE_TOKEN].float()  # [n_agent, 16]
    dev = (pose[:, :, 1:, :2] - log.unsqueeze(0)).norm(dim=-1) * log_valid.unsqueeze(0)  # [R, n_agent, 16]
    t = torch.linspace(0, 1, N_FUTURE_TOKEN, device=pose.device).view(1, 1, -1).expand_as(speed)  # [R, n_agent, 16]
    atype = batch.agent_type.long().clamp(0, 4)  # [n_agent]
    onehot = torch.nn.functional.one_hot(atype, 5).float().view(1, -1, 1, 5).expand(R, -1, N_FUTURE_TOKEN, -1)  # [R, n_agent, 16, 5]
    feats = [t, speed / 10.0, dhead, torch.log1p(dev), log_valid.unsqueeze(0).expand_as(speed)]
    return torch.cat([torch.stack(feats, -1), onehot], dim=-1)  # [R, n_agent, 16, 10]


class ValueHead(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # [...]


@register_objective("ppo")
class PPO(RLObjective):
    def __init__(
        self,
        clip_eps: float = 0.2,
        value_coef: float = 0.5,
        gamma: float = 1.0,
        lam: float = 0.95,
        beta: float = 0.0,
        normalize_advantages: bool = True,
        value_hidden: int = 64,
        n_rollout: int = 8,
        sampler: str = "topk",
        sampler_params: dict | None = None,
        backend: str = "fast",
        reward: str = "rollout",
        backend_params: dict | None = None,
        seed: int = 0,
        logprob: str = "sampled",
        ppo_epochs: int = 4,
        n_minibatches: int = 2,
    ):
        super().__init__(n_rollout, sampler, sampler_params, backend, reward, backend_params)
        self.logprob_form = check_form(logprob, "ppo.logprob")
        self.n_epochs, self.n_minibatches = _epochs_and_minibatches("ppo", ppo_epochs, n_minibatches, self.n_rollout)
        self.clip_eps, self.value_coef = float(clip_eps), float(value_coef)
        self.gamma, self.lam, self.beta = float(gamma), float(lam), float(beta)
        self.normalize_advantages = bool(normalize_advantages)
        # Built from the handcrafted state so its size is known before the model is seen.
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(seed)
            self.value_head = ValueHead(N_STATE_FEATURE, value_hidden)

    def modules(self):
        return [self.value_head]

    def state_dict(self):
        return {"value_head": self.value_head.state_dict()}

    def load_state_dict(self, state):
        if "value_head" in state:
            self.value_head.load_state_dict(state["value_head"])

    @property
    def needs_reference(self) -> bool:  # the KL term only
        return self.beta > 0.0

    def make_experience(self, inputs, rb, rewards, all_scores=None):
        """The RL experience plus the fixed GAE targets of the epochs (`extras`, [R, n_agent, 16])."""
        exp = super().make_experience(inputs, rb, rewards, all_scores)
        exp.extras.update(self.gae_targets(exp))
        return exp

    @torch.no_grad()
    def gae_targets(self, experience) -> dict[str, torch.Tensor]:
        """GAE advantages (normalised over the experience's tokens if `normalize_advantages`) and
        returns from the current value head: {"ppo_advantage", "ppo_return"} [R, n_agent, 16]."""
        rb = experience.rollout
        batch = experience.inputs.batch
        mask = self.targets(experience).mask  # [R, n_agent, 16]
        dev = next(self.value_head.parameters()).device
        values = self.value_head(state_features(batch, rb).to(dev))  # [R, n_agent, 16]
        mask = mask.to(dev)
        # Terminal reward at each agent's last valid future step.
        maskf = mask.float()
        last = (maskf * torch.arange(1, maskf.shape[-1] + 1, device=dev)).argmax(-1, keepdim=True)  # [R, n_agent, 1]
        r_agent = experience.rewards.to(dev)[:, batch.agent_scene.long().to(dev)]  # [R, n_agent]
        rewards = torch.zeros_like(maskf).scatter(-1, last, r_agent.unsqueeze(-1)) * maskf  # [R, n_agent, 16]
        adv, returns = gae(rewards, values, mask, self.gamma, self.lam)  # [R, n_agent, 16]
        if self.normalize_advantages:
            m = masked_mean(adv, mask)
            s = masked_mean((adv - m) ** 2, mask).sqrt()
            adv = (adv - m) / (s + 1e-6) * maskf
        return {"ppo_advantage": adv, "ppo_return": returns}

    def loss_from_logprobs(self, logp, logp_ref, mask, experience, extra=None):
        """logp, logp_ref (None when beta = 0), mask: [R, n_agent, 16] (sampled future tokens)."""
        rb = experience.rollout
        batch = experience.inputs.batch
        if "ppo_advantage" not in experience.extras:  # an experience not made by make_experience
            experience.extras.update(self.gae_targets(experience))
        adv = experience.extras["ppo_advantage"].to(logp.device)  # [R, n_agent, 16]
        returns = experience.extras["ppo_return"].to(logp.device)  # [R, n_agent, 16]
        values = self.value_head(state_features(batch, rb).to(logp.device))  # [R, n_agent, 16] (with grad)
        logp_old = recorded_logprob(rb, self.logprob_form).to(logp.device)  # [R, n_agent, 16]
        loss, parts = ppo_loss(logp, logp_old, adv, values, returns, mask, self.clip_eps, self.value_coef, logp_ref, self.beta)
        out = {f"ppo/{k}": float(v.detach()) for k, v in parts.items()}
        out.update({"loss": float(loss.detach()), "kl": float(parts["kl"].detach()), "clip_fraction": out["ppo/clip_fraction"],
                    "value/mean": float(masked_mean(values.detach(), mask))})
        return loss, out
