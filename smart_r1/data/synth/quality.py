"""Clean-log checks of synthetic scenes with the project's fast WOSAC metric code.

`log_rates(scenario, who)` scores the logged scene itself as a rollout with
`smart_r1.metrics.get_backend("fast").log_replay_rates` (the official 2025 features:
shrunk-box collision, box-corner offroad vs road edges, red-light crossing), after widening
the evaluated set to `who`: "eval" (official: SDC + tracks to predict), "vehicles"
(every vehicle and cyclist valid at the current step) or "all" (every agent valid at the
current step; offroad is then meaningless for pedestrians on sidewalks).
"""

from __future__ import annotations

import numpy as np

from smart_r1.data.scene import AgentType


def scene_with_eval(scene, who: str):
    cur = scene.current_time_index
    valid = scene.agent_valid[:, cur]
    if who == "eval":
        return scene
    if who == "vehicles":
        mask = valid & np.isin(scene.agent_type, [int(AgentType.VEHICLE), int(AgentType.CYCLIST)])
    elif who == "all":
        mask = valid.copy()
    else:
        raise ValueError(f"who must be eval/vehicles/all, got {who!r}")
    return scene.replace(
        tracks_to_predict=mask,
        tracks_to_predict_difficulty=mask.astype(np.int8),
        tracks_to_predict_order=np.flatnonzero(mask),
    )


def log_rates(scenario, who: str = "vehicles", backend=None) -> dict[str, float]:
    """Logged collision / offroad / red-light rates (fractions of evaluated agents)."""
    from smart_r1.data.convert import scenario_to_scene
    from smart_r1.metrics.base import get_backend

    backend = backend or get_backend("fast", device="cpu", per_rollout=False)
    scene = scene_with_eval(scenario_to_scene(scenario), who)
    out = dict(backend.log_replay_rates(scene))
    out["n_evaluated"] = int(scene.eval_agent_mask().sum())
    return out


def log_events(scenario, backend=None) -> dict[str, np.ndarray]:
    """Per-agent logged events over every agent valid at the current step (one fast-backend pass).

    Returns arrays over those agents (sorted by id, the backend's evaluation order):
    `collision`, `offroad`, `red_light` (bool, any event over the log-valid future steps),
    `agent_type` (int8) and `official_eval` (bool: SDC or track to predict).
    """
    from smart_r1.data.convert import scenario_to_scene
    from smart_r1.data.scene import STATE_HEADING, STATE_X, STATE_Z
    from smart_r1.metrics.base import get_backend
    from smart_r1.sim.rollouts import Rollouts

    backend = backend or get_backend("fast", device="cpu", per_rollout=False)
    scene0 = scenario_to_scene(scenario)
    official = scene0.eval_agent_mask()
    scene = scene_with_eval(scene0, "all")
    cur = scene.current_time_index
    sim_rows = np.flatnonzero(scene.agent_valid[:, cur])
    fut = scene.agent_states[sim_rows, cur + 1 :][..., [STATE_X, STATE_X + 1, STATE_Z, STATE_HEADING]]  # [n_sim, 80, 4]
    ro = Rollouts(scenario_id=scene.scenario_id, agent_id=scene.agent_id[sim_rows], trajectories=fut[None])
    feats = backend.score_detailed(scene, ro, keep_features=True).features
    rows = np.flatnonzero(scene.eval_agent_mask())
    rows = rows[np.argsort(scene.agent_id[rows], kind="stable")]  # official evaluation order: sorted ids
    valid = scene.agent_valid[rows, cur + 1 :]  # [E, 80]
    out = {k: (feats[f"{k2}_per_step"][-1] & valid).any(-1) for k, k2 in (("collision", "collision"), ("offroad", "offroad"), ("red_light", "traffic_light_violation"))}
    out["agent_type"] = scene.agent_type[rows]
    out["official_eval"] = official[rows]
    return out
