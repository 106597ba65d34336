"""MPO / GRPO / DPO on a toy categorical policy where the better behaviour is known: a reward
that is the share of sampled tokens in a preferred set. The policy must move its mass there,
and a larger KL coefficient must keep it closer to the reference."""

from __future__ import annotations

import torch

from smart_r1.objectives.losses import (
    dpo_loss,
    group_normalized_advantages,
    grpo_loss,
    k3_kl,
    masked_mean,
    mpo_loss,
)

V, T, R = 8, 16, 16
PREFERRED = torch.tensor([0, 1])


def _reward(tokens: torch.Tensor) -> torch.Tensor:
    """tokens [R, T] -> share of preferred tokens per rollout [R]"""
    return torch.isin(tokens, PREFERRED).float().mean(-1)


def _train(method: str, beta: float, iters: int = 60, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ref_logits = torch.zeros(T, V)  # uniform reference: expected reward 2/8
    logits = ref_logits.clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=0.1)
    alpha = None
    for _ in range(iters):
        with torch.no_grad():
            probs = torch.softmax(logits, -1)  # [T, V]
            tokens = torch.multinomial(probs.repeat(R, 1), 1, generator=g).view(R, T)  # [R, T]
            logp_old = torch.log_softmax(logits, -1).gather(-1, tokens.T).T  # [R, T]
        r = _reward(tokens)  # [R]
        if alpha is None:
            alpha = float(r.mean())  # calibrate: mean reward of the starting policy
        logp = torch.log_softmax(logits, -1).unsqueeze(0).expand(R, -1, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [R, T]
        logp_ref = torch.log_softmax(ref_logits, -1).unsqueeze(0).expand(R, -1, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        mask = torch.ones(R, T, dtype=torch.bool)
        if method == "mpo":
            loss, _ = mpo_loss(logp, logp_ref, (r - alpha).view(R, 1).expand(R, T), mask, beta)
        elif method == "grpo":
            adv = group_normalized_advantages(r.view(R, 1)).view(R, 1).expand(R, T)
            loss, _ = grpo_loss(logp, logp_old, logp_ref, adv, mask, 0.2, beta)
        elif method == "dpo":
            w, l_ = int(r.argmax()), int(r.argmin())
            seq, seq_ref = logp.mean(-1), logp_ref.mean(-1)
            loss, _ = dpo_loss(seq[w : w + 1], seq[l_ : l_ + 1], seq_ref[w : w + 1], seq_ref[l_ : l_ + 1], beta=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    probs = torch.softmax(logits.detach(), -1)
    expected_reward = float(probs[:, PREFERRED].sum(-1).mean())
    kl = float((probs * (probs.log() - torch.log_softmax(ref_logits, -1))).sum(-1).mean())
    return expected_reward, kl


def test_mpo_raises_reward_on_toy_policy():
    reward, kl = _train("mpo", beta=0.04)
    assert reward > 0.5, reward  # from 0.25
    assert kl > 0.1


def test_mpo_kl_coefficient_limits_drift():
    r_small, kl_small = _train("mpo", beta=0.04)
    r_big, kl_big = _train("mpo", beta=2.0)
    assert kl_big < kl_small
    assert r_big < r_small


def test_grpo_and_dpo_raise_reward_on_toy_policy():
    for method in ("grpo", "dpo"):
        reward, _ = _train(method, beta=0.04)
        assert reward > 0.4, (method, reward)
