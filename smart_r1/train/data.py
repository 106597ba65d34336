"""Data for training: scenes + their tokenized form per split, and minibatch assembly.

`Split` keeps the `Scene`s (rewards / metrics need them) and the `TokenizedScene`s (model input)
in memory: a few hundred synthetic scenes are a few hundred MB at most. `make_inputs` turns a
list of scene indices into the `TrainBatch` every objective consumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from smart_r1.objectives.base import TrainBatch
from smart_r1.tokens.tokenized_scene import CURRENT_ANCHOR


@dataclass
class Split:
    scenes: list  # [n] smart_r1.data.scene.Scene
    tokenized: list  # [n] TokenizedScene

    def __len__(self) -> int:
        return len(self.tokenized)

    @property
    def scenario_ids(self) -> list[str]:
        return [t.scenario_id for t in self.tokenized]


def select_train_agents(batch, max_agents: int = 32, radius_m: float = 100.0) -> torch.Tensor:
    """Trained agents per scene: valid at the current step, within `radius_m` of the SDC, the
    `max_agents` nearest to it (the SDC first). Reference recipe: 32 agents, 100 m. [n_agent] bool"""
    cur = batch.anchor_pose[:, CURRENT_ANCHOR, :2].float()  # [n_agent, 2]
    valid = batch.anchor_valid[:, CURRENT_ANCHOR].bool()  # [n_agent]
    mask = torch.zeros_like(valid)  # [n_agent]
    for s in range(batch.n_scene):
        rows = torch.nonzero(batch.agent_scene == s).reshape(-1)  # [n_s]
        if rows.numel() == 0:
            continue
        sdc_rows = rows[batch.is_sdc[rows].bool()]
        centre = cur[sdc_rows[0]] if sdc_rows.numel() else cur[rows][valid[rows]].mean(0) if valid[rows].any() else cur[rows[0]]
        dist = (cur[rows] - centre).norm(dim=-1)  # [n_s]
        ok = valid[rows] & (dist <= radius_m)  # [n_s]
        dist = torch.where(ok, dist, torch.full_like(dist, float("inf")))
        order = torch.argsort(dist, stable=True)[:max_agents]  # [<=max]
        chosen = order[torch.isfinite(dist[order])]
        mask[rows[chosen]] = True
    return mask


def make_inputs(split: Split, indices: Sequence[int], vocab, max_agents: int = 32, radius_m: float = 100.0,
                with_scenes: bool = True) -> TrainBatch:
    from smart_r1.model.batch import collate

    idx = [int(i) for i in indices]
    batch = collate([split.tokenized[i] for i in idx], vocab)
    mask = select_train_agents(batch, max_agents, radius_m)
    return TrainBatch(
        batch=batch,
        train_mask=mask,
        scenario_ids=[split.tokenized[i].scenario_id for i in idx],
        scenes=[split.scenes[i] for i in idx] if with_scenes else None,
    )


def epoch_permutation(n: int, seed: int, stage_index: int, epoch: int) -> np.ndarray:
    """Scene order of one epoch of one stage: a pure function of (seed, stage, epoch), so a
    resumed run sees exactly the batches the uninterrupted run would have."""
    return np.random.default_rng([seed, stage_index, epoch, 7919]).permutation(n)


def step_indices(n: int, batch_size: int, seed: int, stage_index: int, step: int) -> np.ndarray:
    """Scene indices of optimiser step `step` of a stage (epochs of ceil(n / batch_size) steps;
    the last batch of an epoch may be smaller)."""
    per_epoch = max(1, -(-n // batch_size))
    epoch, pos = divmod(step, per_epoch)
    perm = epoch_permutation(n, seed, stage_index, epoch)
    return perm[pos * batch_size : (pos + 1) * batch_size]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, -(-n // batch_size))
