"""Closed-loop simulation: the batched rollout engine, samplers, baselines and `Rollouts`.

`rollout`, `naive_rollout` and `RolloutBatch` are loaded on first use, so importing the
numpy-only `smart_r1.sim.rollouts` (as the metrics and the official scorer's worker do)
does not import torch.
"""

from __future__ import annotations

_LAZY = {
    "rollout": ("smart_r1.sim.engine", "rollout"),
    "naive_rollout": ("smart_r1.sim.engine", "naive_rollout"),
    "RolloutBatch": ("smart_r1.sim.rollout_batch", "RolloutBatch"),
    "Rollouts": ("smart_r1.sim.rollouts", "Rollouts"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'smart_r1.sim' has no attribute {name!r}")
