"""Hand-computed cases of the objective loss maths (paper eqs. 3-6, GRPO, DPO, PPO)."""

from __future__ import annotations

import math

import pytest
import torch

from smart_r1.objectives import get_objective, list_objectives
from smart_r1.objectives.losses import (
    clipped_surrogate,
    dpo_loss,
    gae,
    group_normalized_advantages,
    k3_kl,
    masked_mean,
    mpo_loss,
    ppo_loss,
    smoothed_cross_entropy,
)


def test_registry_lists_all_six():
    assert set(list_objectives()) >= {"bc", "catk", "mpo", "grpo", "dpo", "ppo"}
    with pytest.raises(KeyError, match="unknown objective 'nope'"):
        get_objective("nope")
    with pytest.raises(TypeError, match="mpo.*bogus"):
        get_objective("mpo", bogus=1)


def test_k3_kl_nonnegative_and_zero_at_equality():
    torch.manual_seed(0)
    logp = torch.log(torch.rand(1000).clamp_min(1e-4))
    logp_ref = torch.log(torch.rand(1000).clamp_min(1e-4))
    kl = k3_kl(logp, logp_ref)
    assert (kl >= 0).all()
    assert torch.allclose(k3_kl(logp, logp), torch.zeros(1000))
    # Hand case: pi = 0.5, pi_ref = 0.25: ref/pi - log(ref/pi) - 1 = 0.5 + log 2 - 1
    v = k3_kl(torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25)))
    assert v.item() == pytest.approx(0.5 + math.log(2.0) - 1.0, abs=1e-6)
    # The paper's printed sign (- log(pi/pi_ref), i.e. ref/pi + log(ref/pi) - 1) goes negative
    # here (0.5 - log 2 - 1 < 0): a typo. k3_kl must not follow it, in either argument order.
    assert v.item() > 0
    assert k3_kl(torch.tensor(math.log(0.25)), torch.tensor(math.log(0.5))).item() == pytest.approx(2.0 - math.log(2.0) - 1.0, abs=1e-6)
    # Unbiased: E_{x~pi}[k3] equals the exact KL(pi || pi_ref) for categorical distributions.
    pi = torch.tensor([0.7, 0.2, 0.1])
    ref = torch.tensor([0.3, 0.3, 0.4])
    expect = (pi * (pi.log() - ref.log())).sum()
    assert (pi * k3_kl(pi.log(), ref.log())).sum().item() == pytest.approx(expect.item(), abs=1e-6)


def test_mpo_gradient_is_advantage_times_grad_logp_minus_beta_grad_kl():
    torch.manual_seed(1)
    logits = torch.randn(4, 6, requires_grad=True)  # [token, V]
    ref_logits = torch.randn(4, 6)
    tokens = torch.tensor([0, 3, 5, 2])
    adv = torch.tensor([0.3, -0.2, 0.1, 0.05])
    mask = torch.tensor([True, True, False, True])
    beta = 0.04
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1)
    logp_ref = torch.log_softmax(ref_logits, -1).gather(-1, tokens[:, None]).squeeze(-1)
    loss, _ = mpo_loss(logp, logp_ref, adv, mask, beta)
    assert loss.item() == pytest.approx((-(adv - beta * k3_kl(logp, logp_ref)) * mask).sum().item() / 3, abs=1e-6)
    (g,) = torch.autograd.grad(loss, logits)
    # Expected: -(1/n) sum_masked [A grad log pi - beta grad KL]; grad KL wrt logp = 1 - pi_ref/pi.
    logits2 = logits.detach().clone().requires_grad_(True)
    logp2 = torch.log_softmax(logits2, -1).gather(-1, tokens[:, None]).squeeze(-1)
    dkl_dlogp = (1.0 - torch.exp(logp_ref - logp2)).detach()
    surrogate = -((adv * logp2 - beta * dkl_dlogp * logp2) * mask).sum() / 3
    (g_expect,) = torch.autograd.grad(surrogate, logits2)
    assert torch.allclose(g, g_expect, atol=1e-6)
    assert g[2].abs().sum() == 0  # masked-out token gives no gradient


def test_mpo_loss_value_is_minus_advantage_at_reference():
    logp = torch.log(torch.tensor([0.5, 0.25]))
    loss, kl = mpo_loss(logp, logp.clone(), torch.tensor([0.2, 0.4]), torch.tensor([True, True]), beta=0.04)
    assert torch.allclose(kl, torch.zeros(2))
    assert loss.item() == pytest.approx(-0.3)


def test_grpo_advantages_zero_mean_per_group():
    rewards = torch.tensor([[0.1, 0.8], [0.3, 0.8], [0.5, 0.9], [0.7, 0.7]])  # [G, n_scene]
    adv = group_normalized_advantages(rewards)
    assert torch.allclose(adv.mean(0), torch.zeros(2), atol=1e-6)
    # Scene 0: mean 0.4, population std sqrt(0.05)
    s = math.sqrt(0.05)
    assert adv[:, 0].tolist() == pytest.approx([-0.3 / s, -0.1 / s, 0.1 / s, 0.3 / s], rel=1e-4)
    # Constant group -> zero advantages, no NaN
    assert torch.equal(group_normalized_advantages(torch.ones(4, 1)), torch.zeros(4, 1))


def test_ppo_clipping():
    logp_old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.5, 0.5, 1.5, 0.5]))  # ratios 1.5, 0.5, 1.5, 0.5
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    per_token, clipped = clipped_surrogate(logp, logp_old, adv, clip_eps=0.2)
    # A>0, r=1.5 -> min(1.5, 1.2) = 1.2; A>0, r=0.5 -> min(0.5, 0.8) = 0.5;
    # A<0, r=1.5 -> min(-1.5, -1.2) = -1.5; A<0, r=0.5 -> min(-0.5, -0.8) = -0.8
    assert per_token.tolist() == pytest.approx([-1.2, -0.5, 1.5, 0.8])
    assert clipped.tolist() == [1.0, 0.0, 0.0, 1.0]
    # No gradient through a clipped token
    lp = logp.clone().requires_grad_(True)
    pt, _ = clipped_surrogate(lp, logp_old, adv, 0.2)
    (g,) = torch.autograd.grad(pt.sum(), lp)
    assert g[0] == 0 and g[3] == 0 and g[1] != 0 and g[2] != 0
    loss, parts = ppo_loss(lp, logp_old, adv, torch.zeros(4), torch.ones(4), torch.ones(4, dtype=torch.bool), 0.2, 0.5)
    assert parts["value"].item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(per_token.mean().item() + 0.5)


def test_gae_hand_case():
    # One episode, 3 steps, terminal reward 1 at the end, gamma 1, lambda 0.5, values .2 .4 .6
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.2, 0.4, 0.6]])
    adv, ret = gae(rewards, values, torch.ones(1, 3, dtype=torch.bool), gamma=1.0, lam=0.5)
    d2 = 1.0 - 0.6
    d1 = 0.0 + 0.6 - 0.4
    d0 = 0.0 + 0.4 - 0.2
    a2 = d2
    a1 = d1 + 0.5 * a2
    a0 = d0 + 0.5 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    assert ret[0].tolist() == pytest.approx([a0 + 0.2, a1 + 0.4, a2 + 0.6])
    # lambda = 1, gamma = 1: advantage = return-to-go - V
    adv1, _ = gae(rewards, values, torch.ones(1, 3, dtype=torch.bool), 1.0, 1.0)
    assert adv1[0].tolist() == pytest.approx([0.8, 0.6, 0.4])


def test_dpo_prefers_preferred_rollout():
    ref_w, ref_l = torch.tensor([-3.0]), torch.tensor([-3.0])
    at_ref, _ = dpo_loss(ref_w, ref_l, ref_w, ref_l, beta=0.5)
    assert at_ref.item() == pytest.approx(math.log(2.0))
    prefers, m1 = dpo_loss(torch.tensor([-2.0]), torch.tensor([-4.0]), ref_w, ref_l, beta=0.5)
    dislikes, m2 = dpo_loss(torch.tensor([-4.0]), torch.tensor([-2.0]), ref_w, ref_l, beta=0.5)
    assert prefers.item() < at_ref.item() < dislikes.item()
    assert prefers.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))
    assert m1.item() == 2.0 and m2.item() == -2.0


def test_smoothed_cross_entropy_ignores_padded_vocab():
    logits = torch.tensor([[2.0, 0.0, -float("inf")], [0.0, 1.0, 3.0]])  # type A has 2 tokens, B has 3
    target = torch.tensor([0, 2])
    mask = torch.tensor([True, True])
    lp0 = torch.log_softmax(torch.tensor([2.0, 0.0]), -1)
    lp1 = torch.log_softmax(torch.tensor([0.0, 1.0, 3.0]), -1)
    plain = smoothed_cross_entropy(logits, target, mask, 0.0)
    assert plain.item() == pytest.approx((-lp0[0] - lp1[2]).item() / 2, abs=1e-6)
    eps = 0.1
    sm = smoothed_cross_entropy(logits, target, mask, eps)
    e0 = (1 - eps) * -lp0[0] + eps * -lp0.mean()
    e1 = (1 - eps) * -lp1[2] + eps * -lp1.mean()
    assert torch.isfinite(sm)
    assert sm.item() == pytest.approx(((e0 + e1) / 2).item(), abs=1e-6)
    # Off-mask targets of -1 are ignored, an empty mask gives 0
    assert smoothed_cross_entropy(logits, torch.tensor([-1, 2]), torch.tensor([False, True]), 0.0).item() == pytest.approx(-lp1[2].item(), abs=1e-6)
    assert smoothed_cross_entropy(logits, target, torch.zeros(2, dtype=torch.bool), eps).item() == 0.0


def test_masked_mean_empty():
    assert masked_mean(torch.ones(3), torch.zeros(3, dtype=torch.bool)).item() == 0.0
