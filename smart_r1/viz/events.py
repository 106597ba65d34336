"""Per-step event masks for the renders: collision, offroad and red-light run of every
simulated agent, computed with the fast metric backend's feature functions
(`smart_r1.metrics.features.compute_features`, the same definitions the WOSAC metrics use:
collision = signed box distance < 0, offroad = road-edge distance > 0, red light = crossing a
STOP stop line of the agent's lane).

Unlike the metrics, which only look at the evaluated agents, every simulated agent is
checked here (they all appear in the renders).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from smart_r1.data.scene import STATE_HEADING, STATE_HEIGHT, STATE_LENGTH, STATE_WIDTH, STATE_X, STATE_Y, STATE_Z, Scene
from smart_r1.sim.rollouts import Rollouts

EVENT_KINDS = ("collision", "offroad", "red_light")
_FEATURE_OF = {
    "collision": "collision_per_step",
    "offroad": "offroad_per_step",
    "red_light": "traffic_light_violation_per_step",
}


@dataclass
class RolloutEvents:
    """Events of one rollout; every mask is [n_agent, n_step] bool in scene agent rows."""

    masks: dict[str, np.ndarray]

    @property
    def any(self) -> np.ndarray:
        out = None
        for m in self.masks.values():
            out = m.copy() if out is None else out | m
        return out

    def counts(self) -> dict[str, int]:
        """Agents with at least one event of each kind."""
        return {k: int(m.any(axis=1).sum()) for k, m in self.masks.items()}


def rollout_events(scene: Scene, rollouts: Rollouts, device: str | torch.device = "cpu") -> list[RolloutEvents]:
    """Collision / offroad / red-light masks of every rollout. -> list over rollouts.

    Steps up to the current one are never flagged (history is the log)."""
    from smart_r1.metrics.fast import build_map_context
    from smart_r1.metrics.features import SceneTensors, compute_features

    device = torch.device(device)
    cur = scene.current_time_index
    row_of = {int(a): i for i, a in enumerate(scene.agent_id)}
    missing = [int(a) for a in rollouts.agent_id if int(a) not in row_of]
    if missing:
        raise KeyError(f"rollouts of scene {scene.scenario_id!r}: agent ids {missing} are not in the scene")
    rows = np.asarray([row_of[int(a)] for a in rollouts.agent_id], np.int64)  # [N]
    r, n, t_fut, _ = rollouts.trajectories.shape
    n_future = min(t_fut, scene.n_step - cur - 1)
    st = scene.agent_states[rows]  # [N, n_step, 9]
    hist = st[None, :, : cur + 1][..., [STATE_X, STATE_Y, STATE_Z, STATE_HEADING]]  # [1, N, cur+1, 4]
    hist = np.broadcast_to(hist, (r,) + hist.shape[1:])  # [R, N, cur+1, 4]
    pose = np.concatenate([hist, rollouts.trajectories[:, :, :n_future]], axis=2).astype(np.float32)  # [R, N, T, 4]
    valid = np.broadcast_to(scene.agent_valid[rows][None, :, : cur + 1 + n_future], (r, n, cur + 1 + n_future)).copy()
    valid[:, :, cur + 1 :] = True  # [R, N, T] simulated agents are valid at every simulated step
    tt = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)  # noqa: E731
    tensors = SceneTensors(
        pos=tt(pose[..., :3]),
        heading=tt(pose[..., 3]),
        valid=tt(valid, torch.bool),
        length=tt(st[:, cur, STATE_LENGTH]),
        width=tt(st[:, cur, STATE_WIDTH]),
        height=tt(st[:, cur, STATE_HEIGHT]),
        n_eval=n,  # every simulated agent
        current_time_index=cur,
    )
    ctx = build_map_context(scene, device)
    with torch.no_grad():
        feats = compute_features(tensors, ctx)
    out = []
    for k in range(r):
        masks = {}
        for kind, name in _FEATURE_OF.items():
            m = np.zeros((scene.n_agent, scene.n_step), bool)  # [n_agent, n_step]
            m[rows, cur + 1 : cur + 1 + n_future] = feats[name][k, :, :n_future].cpu().numpy()  # [N, n_future]
            masks[kind] = m
        out.append(RolloutEvents(masks))
    return out


def event_masks(scene: Scene, rollouts: Rollouts) -> list[np.ndarray]:
    """Per rollout, [n_agent, n_step] bool: any of collision / offroad / red-light at that step."""
    return [e.any for e in rollout_events(scene, rollouts)]
