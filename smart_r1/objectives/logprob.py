"""Per-token log-probabilities of sampled tokens, in the form an objective chooses (`logprob:`).

Rollouts do not sample from the model's full softmax pi_theta: the `topk` sampler draws from
the k largest logits renormalised (temperature T applied), `catk` from the top-K or, where a
logged future exists, deterministically picks the closest of the top-K tokens. Call the
distribution actually sampled from q_theta. A policy gradient needs the score function of the
*sampler*: E_q[A * grad log q] is unbiased and a constant advantage has zero expected gradient
(E_q[grad log q] = 0). With the full-softmax log-probability instead,

    E_q[grad log pi] = grad log Z_k,   Z_k = the top-k probability mass,

so the constant part of the advantage (batch-mean reward - alpha) pushes the top-k mass up or
down and sharpens / flattens the distribution inside it (issue 13; measured in docs/training.md).

Forms (`token_logprob(..., form=...)`):

- `full_softmax`: log pi_theta(token) = log_softmax(logits)[token], the model's own
  distribution at temperature 1, whatever the sampler's temperature. The paper's literal form
  (eq. 5's pi / pi_detached), kept so the difference can be measured.
- `sampled`: log q_theta(token) = logits[token] / T - logsumexp_{j in support} logits[j] / T,
  the log-probability renormalised over the support the sampler drew from, recorded at rollout
  time (`RolloutBatch.sample_support [R, n_agent, 16, k]`, token ids, -1 = no entry). Using the
  *recorded* support (not a fresh top-k of the current logits) makes the value at the sampling
  parameters exactly the sampler's probability, and its gradient exactly the sampler's score
  function (the support is locally constant in theta). A support with a single entry (CAT-K
  rows that chose the closest token, `argmax`) gives log q = 0 and no gradient: a deterministic
  choice carries no score function.

`sampled` needs only the k support logits of each row, never a log-softmax over the vocabulary,
so it is also the cheaper form for chunked evaluation.
"""

from __future__ import annotations

import torch

LOGPROB_FORMS = ("full_softmax", "sampled")


def check_form(form: str, owner: str = "logprob") -> str:
    """`form` if it is a known log-prob form, else a ValueError naming `owner` (e.g. 'mpo.logprob')."""
    if form not in LOGPROB_FORMS:
        raise ValueError(f"{owner}: unknown log-prob form {form!r}; known: {list(LOGPROB_FORMS)}")
    return form


def topk_support(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Token ids of the k largest logits, -1 where the logit is -inf (outside the agent type's
    vocabulary). logits [..., V] -> [..., min(k, V)] int64 (the order of `torch.topk`)."""
    vals, idx = torch.topk(logits, min(int(k), logits.shape[-1]), dim=-1)  # [..., k]
    return torch.where(torch.isfinite(vals), idx, torch.full_like(idx, -1))


def token_logprob(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    form: str,
    support: torch.Tensor | None = None,
    temperature: float = 1.0,
    check: bool = True,
) -> torch.Tensor:
    """log-probability of `tokens` under the model (`full_softmax`) or the sampler (`sampled`).

    logits [..., V] (-inf outside an agent type's vocabulary allowed), tokens [...] int (-1 =
    no token: the result is 0 there, finite, with zero gradient), support [..., k] int token ids
    (-1 = empty slot; required for `sampled`), temperature: the sampler's T (`sampled` only).
    Returns float32 [...], differentiable w.r.t. `logits`.

    `check`: with `sampled`, raise if a token is not in its row's support (the rollout and the
    re-scoring disagree: wrong support, shifted positions) instead of returning a wrong number.
    """
    check_form(form)
    tokens = tokens.long()
    has_tok = tokens >= 0  # [...]
    safe_tok = tokens.clamp_min(0).unsqueeze(-1)  # [..., 1]
    if form == "full_softmax":
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe_tok).squeeze(-1)  # [...]
        return torch.where(has_tok, logp, torch.zeros_like(logp))
    if support is None:
        raise ValueError("token_logprob(form='sampled') needs the sampler's support (RolloutBatch.sample_support)")
    if support.shape[:-1] != tokens.shape:
        raise ValueError(f"token_logprob: support shape {tuple(support.shape)} does not match tokens {tuple(tokens.shape)} + [k]")
    t = float(temperature)
    if not t > 0:
        raise ValueError(f"token_logprob: temperature must be > 0, got {temperature}")
    support = support.long()
    in_sup = support >= 0  # [..., k]
    sup_logit = logits.gather(-1, support.clamp_min(0)).float() / t  # [..., k]
    sup_ok = in_sup & torch.isfinite(sup_logit)  # [..., k]
    row_ok = has_tok & sup_ok.any(-1)  # [...] a token and a non-empty support
    if check:
        hit = (support == tokens.unsqueeze(-1)) & sup_ok  # [..., k]
        missing = row_ok & ~hit.any(-1)
        if bool(missing.any()):
            where = torch.nonzero(missing)[0].tolist()
            raise ValueError(
                f"token_logprob(form='sampled'): token {int(tokens[tuple(where)])} at index {where} is not in its "
                f"recorded support {support[tuple(where)].tolist()} ({int(missing.sum())} such tokens)"
            )
    # Empty rows: one finite dummy entry, so logsumexp (and its gradient) stays finite.
    first = torch.zeros_like(sup_ok)
    first[..., 0] = True
    keep = torch.where(row_ok.unsqueeze(-1), sup_ok, first)  # [..., k]
    vals = torch.where(row_ok.unsqueeze(-1), sup_logit, torch.zeros_like(sup_logit))  # empty rows: zeros
    vals = torch.where(keep, vals, torch.full_like(vals, float("-inf")))  # [..., k]
    lse = torch.logsumexp(vals, dim=-1)  # [...]
    tok_logit = logits.gather(-1, safe_tok).squeeze(-1).float() / t  # [...]
    tok_logit = torch.where(row_ok, tok_logit, torch.zeros_like(tok_logit))
    lse = torch.where(row_ok, lse, torch.zeros_like(lse))
    return tok_logit - lse  # [...]


def recorded_logprob(rb, form: str) -> torch.Tensor:
    """The log-prob each rollout token was sampled with, in `form`: `RolloutBatch.logprob`
    (full softmax) or `RolloutBatch.sample_logprob` (the sampler's). [R, n_agent, 16] float32"""
    check_form(form)
    lp = rb.logprob if form == "full_softmax" else getattr(rb, "sample_logprob", None)
    if lp is None:
        raise ValueError(f"the rollout batch has no recorded {form!r} log-prob (RolloutBatch.sample_logprob): "
                         "it was made by a simulator that does not record the sampler's distribution")
    return lp.float()


def recorded_reference_logprob(rb, form: str) -> torch.Tensor | None:
    """The reference model's log-prob of each rollout token in `form`, as recorded by the rollout
    engine when it was given the reference (`RolloutBatch.ref_logprob` / `.ref_sample_logprob`),
    or None (no reference at rollout time, or a batch from before these fields). [R, n_agent, 16]"""
    check_form(form)
    lp = getattr(rb, "ref_logprob" if form == "full_softmax" else "ref_sample_logprob", None)
    return None if lp is None else lp.float()
