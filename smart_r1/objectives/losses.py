"""Pure loss maths of the training objectives: small tensor functions, no model, no data.

Equation numbers refer to the SMART-R1 paper (sections 3.3-3.5). Every function takes
already-gathered per-token quantities plus a boolean `mask` of the tokens that count, and
averages over the masked tokens (a mask with no True entry gives a zero loss, never NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over `mask` (same shape); 0 when nothing is masked in."""
    mask_f = mask.to(x.dtype)  # [...]
    return (x * mask_f).sum() / mask_f.sum().clamp_min(1.0)


def valid_vocab_mask(logits: torch.Tensor) -> torch.Tensor:
    """Entries of the padded vocabulary axis that exist for the agent's type (finite logits)."""
    return torch.isfinite(logits)  # [..., V]


def smoothed_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Next-token cross entropy (eq. 6), optionally label-smoothed, averaged over `mask`.

    logits: [..., V] with -inf beyond the agent type's vocabulary; target: [...] int64
    (ignored where mask is False, may be -1 there); mask: [...] bool.
    Label smoothing spreads `label_smoothing` uniformly over the *valid* entries of the agent
    type's vocabulary only (torch's built-in smoothing would put mass on -inf entries -> inf).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # [..., V]
    safe_target = target.clamp_min(0)  # [...]
    nll = -logp.gather(-1, safe_target.unsqueeze(-1)).squeeze(-1)  # [...]
    if label_smoothing > 0.0:
        valid = valid_vocab_mask(logits)  # [..., V]
        logp_valid = torch.where(valid, logp, torch.zeros_like(logp))  # [..., V]
        uniform_nll = -logp_valid.sum(-1) / valid.sum(-1).clamp_min(1)  # [...]
        per_token = (1.0 - label_smoothing) * nll + label_smoothing * uniform_nll  # [...]
    else:
        per_token = nll  # [...]
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))  # [...] (kills NaN/inf off-mask)
    return masked_mean(per_token, mask)


def smoothed_cross_entropy_from_logprobs(
    logp: torch.Tensor, mean_valid_logp: torch.Tensor | None, mask: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """`smoothed_cross_entropy` from per-token quantities: logp [...] log-prob of the target,
    mean_valid_logp [...] mean log-prob over the agent type's vocabulary (needed when
    label_smoothing > 0), mask [...] bool. Same value as `smoothed_cross_entropy`."""
    nll = -logp  # [...]
    if label_smoothing > 0.0:
        if mean_valid_logp is None:
            raise ValueError("smoothed_cross_entropy_from_logprobs: label smoothing needs mean_valid_logp")
        per_token = (1.0 - label_smoothing) * nll - label_smoothing * mean_valid_logp  # [...]
    else:
        per_token = nll
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))  # [...]
    return masked_mean(per_token, mask)


def k3_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token unbiased KL estimator (eq. 4, Schulman's k3): with x = pi_ref/pi,
    KL ~ x - log x - 1 = pi_ref/pi - log(pi_ref/pi) - 1 >= 0, = 0 iff pi = pi_ref.

    The paper prints "- log(pi/pi_ref)" (and the issue copies it); with that sign the
    estimator is x + log x - 1, which is negative for x < 1 and not a KL at all. We use the
    DeepSeekMath / Schulman form, whose expectation under pi is exactly KL(pi || pi_ref).

    logp, logp_ref: [...] log-probabilities of the *sampled* tokens under policy / reference.
    """
    log_ratio_ref = logp_ref - logp  # [...] log(pi_ref / pi)
    return torch.exp(log_ratio_ref) - log_ratio_ref - 1.0  # [...]


def mpo_loss(
    logp: torch.Tensor,
    logp_ref: torch.Tensor,
    advantage: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    logp_old: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MPO (eq. 5): L = -(pi/pi_old * A - beta * KL(pi || pi_ref)), averaged over tokens.

    `logp_old=None`: the paper's pi/pi_detached, equal to 1 in value, so the gradient is
    A * grad log pi - beta * grad KL. Given the log-prob recorded when the token was sampled
    (`logp_old`, same form as `logp`), the ratio pi/pi_old is the importance weight of a rollout
    drawn by an older policy (async mode's one-step lag); on policy it is 1 up to float noise.
    logp: [...] (with grad), logp_ref: [...] (no grad), advantage: [...] A = r - alpha (eq. 3)
    broadcast to every token, mask: [...] bool.  Returns (loss, per-token KL [...]).
    """
    ratio = importance_ratio(logp, logp.detach() if logp_old is None else logp_old)  # [...] carries grad log pi
    kl = k3_kl(logp, logp_ref.detach())  # [...]
    per_token = -(ratio * advantage.detach() - beta * kl)  # [...]
    return masked_mean(per_token, mask), kl


# A log-ratio beyond this is not a ratio any estimator can use; clamping keeps the loss finite on
# rows an accumulating learner fills with placeholder log-probs.
MAX_LOG_RATIO = 20.0


def importance_ratio(logp: torch.Tensor, logp_old: torch.Tensor) -> torch.Tensor:
    """pi / pi_old = exp(logp - logp_old), logp_old detached, log-ratio clamped to +-20. [...]"""
    return torch.exp((logp - logp_old.detach()).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))


def group_normalized_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO advantages: (r - mean_group) / (std_group + eps) over the G rollouts of each scene.

    rewards: [G, n_scene] -> [G, n_scene], zero-mean along the group axis (dim 0).
    std is the population std (unbiased=False) so G=2 gives +-1.
    """
    mean = rewards.mean(dim=0, keepdim=True)  # [1, n_scene]
    std = rewards.std(dim=0, unbiased=False, keepdim=True)  # [1, n_scene]
    return (rewards - mean) / (std + eps)  # [G, n_scene]


def clipped_surrogate(
    logp: torch.Tensor, logp_old: torch.Tensor, advantage: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate per token: -min(rho * A, clip(rho, 1-eps, 1+eps) * A).

    logp, logp_old, advantage: [...]. Returns (per-token loss [...], clipped indicator [...]).
    """
    ratio = importance_ratio(logp, logp_old)  # [...]
    adv = advantage.detach()  # [...]
    unclipped = ratio * adv  # [...]
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv  # [...]
    per_token = -torch.minimum(unclipped, clipped)  # [...]
    was_clipped = (clipped < unclipped).to(logp.dtype)  # [...]
    return per_token, was_clipped


def grpo_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    logp_ref: torch.Tensor,
    advantage: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO (Shao et al. 2024): clipped surrogate on group-normalised advantages + beta * k3 KL.

    All inputs [...]; returns (loss, per-token KL [...]).
    """
    surrogate, _ = clipped_surrogate(logp, logp_old, advantage, clip_eps)  # [...]
    kl = k3_kl(logp, logp_ref.detach())  # [...]
    return masked_mean(surrogate + beta * kl, mask), kl


def dpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    logp_ref_chosen: torch.Tensor,
    logp_ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al. 2023): -log sigmoid(beta * [(lp_w - lp_ref_w) - (lp_l - lp_ref_l)]).

    Inputs: [n_pair] sequence log-probabilities of the chosen / rejected rollouts under the
    policy and the reference. Returns (mean loss, implicit reward margin [n_pair]).
    """
    margin = (logp_chosen - logp_ref_chosen.detach()) - (logp_rejected - logp_ref_rejected.detach())  # [n_pair]
    return -F.logsigmoid(beta * margin).mean(), margin


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation along the last (token-step) axis.

    rewards, values: [..., T]; mask: [..., T] bool (a step counts / the episode continues only
    while mask is True; the value after the last valid step is 0: the episode ends there).
    Returns (advantages [..., T], returns [..., T] = advantages + values), zero off-mask.
    """
    T = rewards.shape[-1]
    mask_f = mask.to(rewards.dtype)  # [..., T]
    adv = torch.zeros_like(rewards)  # [..., T]
    next_adv = torch.zeros_like(rewards[..., 0])  # [...]
    next_value = torch.zeros_like(rewards[..., 0])  # [...]
    for t in range(T - 1, -1, -1):
        m = mask_f[..., t]  # [...]
        delta = rewards[..., t] + gamma * next_value - values[..., t]  # [...]
        a = delta + gamma * lam * next_adv  # [...]
        adv[..., t] = a * m
        # Off-mask steps are transparent to nothing: they reset the recursion.
        next_adv = a * m
        next_value = values[..., t] * m
    returns = (adv + values) * mask_f  # [..., T]
    return adv, returns


def ppo_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    advantage: torch.Tensor,
    values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    value_coef: float,
    logp_ref: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO (Schulman et al. 2017): clipped surrogate + value_coef * (V - R)^2 [+ beta * k3 KL].

    All inputs [...]. Returns (loss, parts) with parts policy / value / kl / clip_fraction.
    """
    surrogate, was_clipped = clipped_surrogate(logp, logp_old, advantage, clip_eps)  # [...]
    value_err = (values - returns.detach()) ** 2  # [...]
    total = surrogate + value_coef * value_err  # [...]
    kl = torch.zeros_like(logp)  # [...]
    if logp_ref is not None and beta > 0.0:
        kl = k3_kl(logp, logp_ref.detach())  # [...]
        total = total + beta * kl
    parts = {
        "policy": masked_mean(surrogate, mask),
        "value": masked_mean(value_err, mask),
        "kl": masked_mean(kl, mask),
        "clip_fraction": masked_mean(was_clipped, mask),
    }
    return masked_mean(total, mask), parts
