"""Next-token samplers for closed-loop rollouts (registry `@register_sampler`).

A sampler maps masked logits `[N, V]` (-inf outside an agent's vocabulary) to token indices
`[N]` (`__call__`); `sample(logits, ctx)` also returns the support it drew from, token ids
`[N, k]` (-1 = empty slot), and `temperature` is the T it applied: the rollout engine records
both so the objectives can score a token under the distribution actually sampled from
(`smart_r1.objectives.logprob.token_logprob(..., "sampled", support, temperature)`). Randomness comes from `SampleContext.uniform`, which draws each rollout's rows from that
rollout's own `torch.Generator`: the batched engine (all rollouts at once) and the naive
per-rollout loop therefore draw identical random numbers for the same seed. Sampling from
the top-k uses the Gumbel-max trick (argmax of logits / T + Gumbel noise == a categorical draw
from softmax(logits / T) restricted to the top-k).

- `topk(k=5, temperature=1.0)`: sample among the k largest logits.
- `catk(k=32, temperature=1.0)`: CAT-K (closest among top-K): among the K largest logits, the
  token whose end-of-token box corners, placed at the agent's current rolled-out pose, are
  closest to the logged pose 0.5 s later (sum of the 4 corner distances, fixed box per type);
  rows without a valid log keep the policy's own top-K sample. The support of a row with a log
  is the chosen token alone (a deterministic pick: log-prob 0, no score function).
- `argmax()`: the most likely token (deterministic; support = the token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

_SAMPLERS: dict[str, type] = {}


def register_sampler(name: str):
    def deco(cls):
        if name in _SAMPLERS:
            raise ValueError(f"sampler {name!r} registered twice")
        cls.name = name
        _SAMPLERS[name] = cls
        return cls

    return deco


def sampler_names() -> list[str]:
    return sorted(_SAMPLERS)


def get_sampler(sampler, **kwargs):
    """A sampler instance from a name (+ kwargs) or an instance (returned as is)."""
    if not isinstance(sampler, str):
        if kwargs:
            raise ValueError("sampler kwargs given together with a sampler instance")
        return sampler
    if sampler not in _SAMPLERS:
        raise KeyError(f"unknown sampler {sampler!r}; known: {sampler_names()}")
    return _SAMPLERS[sampler](**kwargs)


def rollout_generators(seed: int, n_rollout: int, first: int = 0) -> list[torch.Generator]:
    """One CPU generator per rollout; rollout r's stream depends only on (seed, r)."""
    out = []
    for r in range(first, first + n_rollout):
        s = int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, r]).generate_state(1, np.uint64)[0]) >> 1
        out.append(torch.Generator().manual_seed(s))
    return out


@dataclass
class SampleContext:
    """What a sampler may use besides the logits. Rows are rollout-major: `n_rollout` blocks of
    `rows_per_rollout` rows, block r drawing from `generators[r]`."""

    generators: list  # [n_rollout] torch.Generator
    rows_per_rollout: int
    # CAT-K: candidate token indices [N, K] -> corner distance to the logged future [N, K]
    candidate_distance: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    has_log: Optional[torch.Tensor] = None  # [N] bool, a logged pose exists 0.5 s ahead
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def uniform(self, k: int) -> torch.Tensor:
        """Uniform (0, 1) numbers, [N, k], rollout r's rows from generator r."""
        u = torch.cat([torch.rand(self.rows_per_rollout, k, generator=g) for g in self.generators], 0)  # [N, k]
        return u.clamp_(1e-12, 1.0 - 1e-7).to(self.device)


def _gumbel_pick(values: torch.Tensor, u: torch.Tensor, temperature: float) -> torch.Tensor:
    """values [N, k] (may hold -inf), u [N, k] uniform -> column index [N] of a softmax(values / T) draw."""
    g = -torch.log(-torch.log(u))  # [N, k]
    return torch.argmax(values / max(float(temperature), 1e-6) + g, dim=-1)  # [N]


def _support(vals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Top-k ids [N, k] with -1 where the logit is -inf (outside the agent type's vocabulary)."""
    return torch.where(torch.isfinite(vals), idx, torch.full_like(idx, -1))


@register_sampler("topk")
class TopKSampler:
    def __init__(self, k: int = 5, temperature: float = 1.0):
        if k < 1 or temperature <= 0:
            raise ValueError(f"topk sampler: k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}")
        self.k, self.temperature = int(k), float(temperature)

    def sample(self, logits: torch.Tensor, ctx: SampleContext) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (tokens [N], support [N, k] the k largest logits' ids, -1 where the logit is -inf)."""
        k = min(self.k, logits.shape[-1])
        vals, idx = torch.topk(logits, k, dim=-1)  # [N, k]
        col = _gumbel_pick(vals, ctx.uniform(k), self.temperature)  # [N]
        return idx.gather(1, col[:, None])[:, 0], _support(vals, idx)  # [N], [N, k]

    def __call__(self, logits: torch.Tensor, ctx: SampleContext) -> torch.Tensor:
        return self.sample(logits, ctx)[0]

    def __repr__(self) -> str:
        return f"topk(k={self.k}, temperature={self.temperature})"


@register_sampler("catk")
class CatKSampler:
    def __init__(self, k: int = 32, temperature: float = 1.0):
        if k < 1 or temperature <= 0:
            raise ValueError(f"catk sampler: k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}")
        self.k, self.temperature = int(k), float(temperature)

    def sample(self, logits: torch.Tensor, ctx: SampleContext) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (tokens [N], support [N, k]): the top-K ids for rows that drew their own sample,
        the chosen token alone (then -1) for rows that picked the closest token."""
        if ctx.candidate_distance is None or ctx.has_log is None:
            raise ValueError("catk sampler needs the logged future (candidate_distance / has_log in the context)")
        k = min(self.k, logits.shape[-1])
        vals, idx = torch.topk(logits, k, dim=-1)  # [N, k]
        own = _gumbel_pick(vals, ctx.uniform(k), self.temperature)  # [N] policy's own draw (no log)
        dist = ctx.candidate_distance(idx)  # [N, k]
        dist = dist.masked_fill(~torch.isfinite(vals), float("inf"))  # never pick outside the vocabulary
        closest = torch.argmin(dist, dim=-1)  # [N]
        col = torch.where(ctx.has_log, closest, own)  # [N]
        tok = idx.gather(1, col[:, None])[:, 0]  # [N]
        alone = torch.full_like(idx, -1)  # [N, k]
        alone[:, 0] = tok
        support = torch.where(ctx.has_log[:, None], alone, _support(vals, idx))  # [N, k]
        return tok, support

    def __call__(self, logits: torch.Tensor, ctx: SampleContext) -> torch.Tensor:
        return self.sample(logits, ctx)[0]

    def __repr__(self) -> str:
        return f"catk(k={self.k}, temperature={self.temperature})"


@register_sampler("argmax")
class ArgmaxSampler:
    temperature = 1.0

    def __init__(self):
        pass

    def sample(self, logits: torch.Tensor, ctx: SampleContext) -> tuple[torch.Tensor, torch.Tensor]:
        tok = torch.argmax(logits, dim=-1)  # [N]
        return tok, tok[:, None]  # [N], [N, 1]

    def __call__(self, logits: torch.Tensor, ctx: SampleContext) -> torch.Tensor:
        return self.sample(logits, ctx)[0]

    def __repr__(self) -> str:
        return "argmax()"
