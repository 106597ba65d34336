"""The policy gradient under top-k sampling (issue 13): a small categorical policy (a plain logits
tensor) sampled from its top-k renormalised, as the RFT rollouts are.

- A constant advantage must leave the policy unchanged in expectation. With the sampler's
  log-prob (`sampled` form) E_q[grad log q] = 0; with the model's full-softmax log-prob (the
  paper's literal form, what the code did before) E_q[grad log pi] = grad log Z_k, so a negative
  constant lowers the top-k mass. Shown exactly (expectation over the support) and by Monte
  Carlo with a z-test whose tolerance comes from the sample count.
- A known reward must move the policy toward the rewarded token, under either form.
"""

from __future__ import annotations

import math

import torch

from smart_r1.objectives.logprob import token_logprob, topk_support
from smart_r1.objectives.losses import mpo_loss

V, K = 12, 5


def _logits(seed: int = 0) -> torch.Tensor:
    """SFT-like: a peaked distribution whose top-5 mass is ~0.75. [V]"""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(V, generator=g) * 1.2


def _topk_mass(logits: torch.Tensor) -> float:
    return float(torch.softmax(logits, -1).topk(K).values.sum())


def _sample_topk(logits: torch.Tensor, n: int, g: torch.Generator, temperature: float = 1.0):
    """n draws from softmax(top-k logits / T). -> tokens [n], support [n, K] (ids)."""
    support = topk_support(logits, K)  # [K]
    q = torch.softmax(logits[support] / temperature, -1)  # [K]
    col = torch.multinomial(q, n, replacement=True, generator=g)  # [n]
    return support[col], support.expand(n, K)


def _per_sample_grads(logits: torch.Tensor, tokens, support, form: str, temperature: float = 1.0) -> torch.Tensor:
    """grad_theta log p(x_i) for each sample, one row of logits per sample. [n, V]"""
    rows = logits.detach().expand(tokens.shape[0], V).clone().requires_grad_(True)  # [n, V]
    token_logprob(rows, tokens, form, support, temperature).sum().backward()
    return rows.grad  # [n, V]


def test_expected_score_function_is_zero_only_for_the_sampled_form():
    """Exact expectation over the top-k support: sum_x q(x) grad log q(x) = 0, while
    sum_x q(x) grad log pi(x) = grad log Z_k != 0 (the bias a constant advantage multiplies)."""
    for temperature in (1.0, 0.7):
        logits = _logits(1)
        support = topk_support(logits, K)  # [K]
        q = torch.softmax(logits[support] / temperature, -1)  # [K]
        tokens, sup = support, support.expand(K, K)
        g_sampled = (q[:, None] * _per_sample_grads(logits, tokens, sup, "sampled", temperature)).sum(0)  # [V]
        g_full = (q[:, None] * _per_sample_grads(logits, tokens, sup, "full_softmax")).sum(0)  # [V]
        torch.testing.assert_close(g_sampled, torch.zeros(V), atol=1e-6, rtol=0)
        if temperature == 1.0:  # at T = 1, q = pi / Z_k on the support
            lz = logits.clone().requires_grad_(True)
            torch.logsumexp(lz[support], -1).sub(torch.logsumexp(lz, -1)).backward()  # log Z_k
            torch.testing.assert_close(g_full, lz.grad, atol=1e-6, rtol=0)
        assert float(g_full.norm()) > 0.1


def test_constant_advantage_moves_topk_mass_only_with_full_softmax_form():
    """Monte Carlo: the MPO gradient of a constant advantage A = -0.05 (beta = 0), projected on
    the direction that raises the top-k mass. Sampled form: mean 0 within 4 standard errors
    (n = 4000 draws). Full-softmax form: the projection is positive, i.e. a descent step lowers
    the top-k mass, by far more than the noise."""
    logits = _logits(2)
    lz = logits.clone().requires_grad_(True)
    torch.softmax(lz, -1)[topk_support(logits, K)].sum().backward()
    d_mass = lz.grad  # [V] gradient of the top-k mass
    n, adv = 4000, -0.05
    tokens, support = _sample_topk(logits, n, torch.Generator().manual_seed(0))
    z = {}
    for form in ("sampled", "full_softmax"):
        # per-sample gradient of the MPO loss -(pi/pi_detached * A) == -A * grad log p
        proj = (-adv * _per_sample_grads(logits, tokens, support, form)) @ d_mass  # [n]
        z[form] = float(proj.mean() / (proj.std() / math.sqrt(n)))
    assert abs(z["sampled"]) < 4.0, z
    assert z["full_softmax"] > 20.0, z  # loss gradient along +mass: gradient descent lowers the top-k mass


def _train_constant_advantage(form: str, adv: float, steps: int = 20, n: int = 2000, lr: float = 2.0, seed: int = 0):
    """SGD on the MPO loss (beta = 0) with a constant advantage. -> (top-k mass before, after,
    standard deviation of the mass change predicted from the sampling noise of the steps)."""
    g = torch.Generator().manual_seed(seed)
    logits = _logits(3).requires_grad_(True)
    mass0 = _topk_mass(logits.detach())
    noise_sd = 0.0
    for _ in range(steps):
        tokens, support = _sample_topk(logits.detach(), n, g)
        logp = token_logprob(logits.expand(n, V), tokens, form, support)  # [n]
        mask = torch.ones(n, dtype=torch.bool)
        loss, _ = mpo_loss(logp, logp.detach(), torch.full((n,), adv), mask, beta=0.0)
        # sd of this step's mass change, from the spread of the per-sample gradients
        lz = logits.detach().clone().requires_grad_(True)
        torch.softmax(lz, -1)[topk_support(lz.detach(), K)].sum().backward()
        proj = (-adv * _per_sample_grads(logits, tokens, support, form)) @ lz.grad  # [n]
        noise_sd = math.sqrt(noise_sd**2 + (lr * float(proj.std()) / math.sqrt(n)) ** 2)
        logits.grad = None
        loss.backward()
        with torch.no_grad():
            logits -= lr * logits.grad
    return mass0, _topk_mass(logits.detach()), noise_sd


def test_constant_advantage_training_leaves_sampled_policy_in_place():
    """20 SGD steps with A = -0.5 for every sample: the full-softmax form cuts the top-k mass far
    beyond the sampling noise; the sampled form leaves it within 4 noise standard deviations."""
    m0, m_full, sd_full = _train_constant_advantage("full_softmax", -0.5)
    s0, m_sampled, sd_sampled = _train_constant_advantage("sampled", -0.5)
    assert m0 == s0
    assert m0 - m_full > 0.05 and m0 - m_full > 10 * sd_full, (m0, m_full, sd_full)
    assert abs(m_sampled - s0) < 4 * sd_sampled + 1e-3, (s0, m_sampled, sd_sampled)
    # and a positive constant pushes the full-softmax form the other way (sharpens onto the top-k)
    p0, p_full, _ = _train_constant_advantage("full_softmax", +0.5)
    assert p_full > p0 + 0.05


def test_known_reward_moves_policy_toward_rewarded_token():
    """Reward 1 for one token inside the top-k that is not the mode, 0 otherwise, threshold
    advantage A = r - alpha with alpha = the starting policy's mean reward (paper eq. 3): Adam on
    the MPO loss raises the sampler's probability of that token under both forms; with the
    sampled form the top-k mass is not what moves."""
    for form in ("sampled", "full_softmax"):
        g = torch.Generator().manual_seed(5)
        logits = _logits(4).requires_grad_(True)
        support0 = topk_support(logits.detach(), K)
        target = int(support0[2])  # third most likely
        q0 = float(torch.softmax(logits.detach()[support0], -1)[2])
        opt = torch.optim.Adam([logits], lr=0.05)
        alpha = None
        for _ in range(40):
            tokens, support = _sample_topk(logits.detach(), 256, g)
            r = (tokens == target).float()  # [n]
            alpha = float(r.mean()) if alpha is None else alpha
            logp = token_logprob(logits.expand(256, V), tokens, form, support)
            loss, _ = mpo_loss(logp, logp.detach(), r - alpha, torch.ones(256, dtype=torch.bool), beta=0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sup = topk_support(logits.detach(), K)
        q1 = torch.softmax(logits.detach()[sup], -1)
        assert target in sup.tolist(), form
        q_target = float(q1[sup.tolist().index(target)])
        assert q_target > q0 + 0.3, (form, q0, q_target)
