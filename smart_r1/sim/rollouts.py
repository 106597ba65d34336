"""`Rollouts`: simulated futures of one scene, the currency between the simulator, the
metrics and the submission export. numpy only (crosses process boundaries as is)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Columns of `Rollouts.trajectories[..., k]`: what a WOSAC submission holds per step.
TRAJ_X, TRAJ_Y, TRAJ_Z, TRAJ_HEADING = range(4)


@dataclass
class Rollouts:
    """`n_rollout` joint futures of the agents that must be simulated in one scene.

    `agent_id` follows `Scene.sim_agent_ids()` order unless stated otherwise; consumers
    match agents by id, never by position.
    """

    scenario_id: str
    agent_id: np.ndarray  # [n_sim_agent] int64
    trajectories: np.ndarray  # [n_rollout, n_sim_agent, n_future_step (80), 4] float32: x, y, z, heading

    @property
    def n_rollout(self) -> int:
        return int(self.trajectories.shape[0])

    @property
    def n_agent(self) -> int:
        return int(self.trajectories.shape[1])

    @property
    def n_step(self) -> int:
        return int(self.trajectories.shape[2])

    def __post_init__(self) -> None:
        self.agent_id = np.asarray(self.agent_id, dtype=np.int64)
        self.trajectories = np.asarray(self.trajectories, dtype=np.float32)
        if self.trajectories.ndim != 4 or self.trajectories.shape[-1] != 4:
            raise ValueError(
                f"rollouts of scene {self.scenario_id!r}: trajectories must be [n_rollout, n_agent, n_step, 4], "
                f"got {self.trajectories.shape}"
            )
        if self.trajectories.shape[1] != self.agent_id.shape[0]:
            raise ValueError(
                f"rollouts of scene {self.scenario_id!r}: {self.agent_id.shape[0]} agent ids but "
                f"{self.trajectories.shape[1]} agent trajectories"
            )
