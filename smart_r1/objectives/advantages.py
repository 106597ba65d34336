"""Advantage estimators of the RL objectives: `@register_advantage("name")`, `get_advantage(name)`.

An estimator maps the rewards of a batch to advantages, both `[R, n_scene]` (R rollouts of each
scene), given `valid` (finite rewards; invalid entries get advantage 0 and are masked out of the
loss anyway) and the objective's threshold `alpha` (ignored by the group baselines):

- `threshold` (MPO, paper eq. 3): A = r - alpha. alpha is a prior on the reward (0.77 on WOMD,
  or calibrated to the starting policy); no per-scene baseline, so the advantage also carries
  how easy each scene is.
- `group_mean`: A = r - mean of the scene's *other* rollouts (leave-one-out baseline, RLOO).
  Removes the between-scene difficulty from the advantage and keeps the reward's scale; zero
  when a scene has a single valid rollout.
- `group_normalized` (GRPO): A = (r - mean_group) / (std_group + eps) over the valid rollouts.
- `threshold_shuffled` (a PLACEBO, experiments/mpo_experiment.py): `threshold` on the batch's
  valid rewards randomly permuted over all its rollouts and scenes. Same multiset of rewards, so
  the same batch-mean advantage (and the same constant-offset term of the update), but no
  information on which rollout earned which reward: an update that learns nothing.
"""

from __future__ import annotations

from typing import Callable

import hashlib

import torch

from smart_r1.objectives.losses import group_normalized_advantages

AdvantageFn = Callable[[torch.Tensor, torch.Tensor, "float | None"], torch.Tensor]
_ADVANTAGES: dict[str, AdvantageFn] = {}


def register_advantage(name: str):
    def deco(fn: AdvantageFn) -> AdvantageFn:
        if name in _ADVANTAGES:
            raise ValueError(f"advantage estimator {name!r} registered twice")
        _ADVANTAGES[name] = fn
        return fn

    return deco


def get_advantage(name: str) -> AdvantageFn:
    if name not in _ADVANTAGES:
        raise KeyError(f"unknown advantage estimator {name!r}; known: {sorted(_ADVANTAGES)}")
    return _ADVANTAGES[name]


def list_advantages() -> list[str]:
    return sorted(_ADVANTAGES)


def needs_alpha(name: str) -> bool:
    return name in ("threshold", "threshold_shuffled")


@register_advantage("threshold")
def threshold_advantage(rewards: torch.Tensor, valid: torch.Tensor, alpha: float | None) -> torch.Tensor:
    if alpha is None:
        raise ValueError("advantage 'threshold' needs alpha (a number, or calibrated before the first update)")
    return (rewards - float(alpha)) * valid.float()  # [R, n_scene]


@register_advantage("group_mean")
def group_mean_advantage(rewards: torch.Tensor, valid: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
    v = valid.float()  # [R, n_scene]
    total = (rewards * v).sum(0, keepdim=True)  # [1, n_scene]
    n_other = (v.sum(0, keepdim=True) - v).clamp_min(1.0)  # [R, n_scene] valid rollouts besides this one
    baseline = (total - rewards * v) / n_other  # [R, n_scene] mean of the other valid rollouts
    has_other = (v.sum(0, keepdim=True) - v) > 0  # [R, n_scene]
    return (rewards - baseline) * v * has_other.float()  # [R, n_scene]


@register_advantage("group_normalized")
def group_normalized_advantage(rewards: torch.Tensor, valid: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
    if bool(valid.all()):
        return group_normalized_advantages(rewards)  # [R, n_scene]
    v = valid.float()  # [R, n_scene]
    n = v.sum(0, keepdim=True).clamp_min(1.0)  # [1, n_scene]
    mean = (rewards * v).sum(0, keepdim=True) / n  # [1, n_scene]
    std = (((rewards - mean) ** 2) * v).sum(0, keepdim=True).div(n).sqrt()  # [1, n_scene]
    return (rewards - mean) / (std + 1e-6) * v  # [R, n_scene]


def shuffle_within_batch(rewards: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The valid entries of `rewards` [R, n_scene] permuted among the valid positions (invalid
    entries stay where they are). The permutation is seeded by the rewards' bytes: reproducible,
    different for every batch, and the global random streams are left alone."""
    flat = rewards.reshape(-1)  # [R * n_scene]
    pos = torch.nonzero(valid.reshape(-1).bool()).reshape(-1)  # [n_valid]
    digest = hashlib.blake2b(flat.detach().cpu().double().numpy().tobytes(), digest_size=8).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") % (2**63 - 1))
    perm = torch.randperm(len(pos), generator=gen)  # [n_valid]
    out = flat.clone()
    out[pos] = flat[pos[perm.to(pos.device)]]
    return out.reshape(rewards.shape)  # [R, n_scene]


@register_advantage("threshold_shuffled")
def shuffled_threshold_advantage(rewards: torch.Tensor, valid: torch.Tensor, alpha: float | None) -> torch.Tensor:
    return threshold_advantage(shuffle_within_batch(rewards, valid), valid, alpha)  # [R, n_scene]
