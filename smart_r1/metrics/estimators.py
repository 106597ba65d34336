"""Histogram and Bernoulli likelihood estimators of the WOSAC metrics (torch, float32).

Same semantics as `waymo_open_dataset/wdl_limited/sim_agents_metrics/estimators.py`:
- edges = linspace(min, max, n_bins + 1) in float32 (TF LinSpace kernel: start + i * step,
  last = stop); values clipped into [min, max]; bin = searchsorted(edges, x, right) - 1
  clipped to [0, n_bins - 1], i.e. half-open bins with the last one closed on the right.
- QUIRK: NaN values (the kinematic NaN padding of the first/last steps) land in the LAST bin
  (NaN compares false everywhere, so searchsorted returns n_bins + 1, clipped to n_bins - 1).
- counts + additive pseudocount, normalised (tfp Categorical with `probs`), log-prob of the
  logged value's bin.
- Bernoulli = the same histogram on {0, 1} with edges (-0.5, 0.5, 1.5).

Samples are grouped: `sim` [G, S, E, T] scores each logged value against the pooled S * T
simulated values of its agent, separately for each group G. G = 1 with S = n_rollout is the
official estimate; G = n_rollout with S = 1 is the per-rollout ("each rollout as a 1-rollout
submission") estimate used for per-rollout rewards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class HistogramConfig:
    min_val: float
    max_val: float
    num_bins: int
    pseudocount: float = 0.1

    def edges(self) -> np.ndarray:
        """float32 edges exactly as TF's LinSpace computes them.  # [num_bins + 1]"""
        start, stop = np.float32(self.min_val), np.float32(self.max_val)
        n = self.num_bins + 1
        step = np.float32((stop - start) / np.float32(n - 1))
        out = start + np.arange(n, dtype=np.float32) * step
        out[-1] = stop
        return out.astype(np.float32)


def bin_index(values: torch.Tensor, cfg: HistogramConfig, edges: torch.Tensor) -> torch.Tensor:
    """Official histogram bin of every value (NaN -> last bin). [...] -> [...] int64"""
    clipped = values.clamp(cfg.min_val, cfg.max_val)  # NaN stays NaN
    idx = torch.searchsorted(edges, clipped.contiguous(), right=True) - 1
    idx = idx.clamp(0, cfg.num_bins - 1)
    return torch.where(torch.isnan(values), torch.full_like(idx, cfg.num_bins - 1), idx)


def histogram_log_likelihood(log_values: torch.Tensor, sim_values: torch.Tensor, cfg: HistogramConfig) -> torch.Tensor:
    """log p(log value) under each group's pooled histogram of the same agent.

    log_values [E, T], sim_values [G, S, E, T] -> [G, E, T]
    """
    edges = torch.as_tensor(cfg.edges(), device=sim_values.device)
    g, s, e, t = sim_values.shape
    sim_bins = bin_index(sim_values, cfg, edges)  # [G, S, E, T]
    onehot = torch.zeros(g, e, cfg.num_bins, dtype=torch.float32, device=sim_values.device)
    src = torch.ones_like(sim_bins, dtype=torch.float32).permute(0, 2, 1, 3).reshape(g, e, s * t)
    onehot.scatter_add_(2, sim_bins.permute(0, 2, 1, 3).reshape(g, e, s * t), src)  # [G, E, n_bins]
    probs = onehot + cfg.pseudocount
    log_probs = torch.log(probs) - torch.log(probs.sum(-1, keepdim=True))  # [G, E, n_bins]
    log_bins = bin_index(log_values, cfg, edges)  # [E, T]
    return log_probs.gather(2, log_bins[None].expand(g, -1, -1))  # [G, E, T]


BERNOULLI = HistogramConfig(-0.5, 1.5, 2, 0.001)


def bernoulli_log_likelihood(log_values: torch.Tensor, sim_values: torch.Tensor, pseudocount: float = 0.001) -> torch.Tensor:
    """log_values [E] bool, sim_values [G, S, E] bool -> [G, E]"""
    cfg = HistogramConfig(-0.5, 1.5, 2, pseudocount)
    ll = histogram_log_likelihood(log_values.float()[:, None], sim_values.float()[..., None], cfg)  # [G, E, 1]
    return ll[..., 0]


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Official `_reduce_average_with_validity` over the trailing [E, T] dims. [G, E, T] -> [G]"""
    m = mask.to(values.dtype)
    total = torch.where(mask, values, torch.zeros_like(values)).sum(dim=(-2, -1))
    return total / m.sum()
