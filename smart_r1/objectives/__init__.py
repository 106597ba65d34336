"""Training objectives (BC, CAT-K closed-loop SFT, MPO, GRPO, DPO, PPO) behind one registry.

`get_objective(name, **params)` builds one; see `base.Objective` for the calling convention
(`collect` rollouts/rewards without grad, then `loss` on the collected `Experience`).
"""

from smart_r1.objectives.registry import get_objective, list_objectives, register_objective

__all__ = ["get_objective", "list_objectives", "register_objective"]
