"""Glue for the render command: pick a scene, get rollouts (file or checkpoint), write outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smart_r1.data.scene import Scene
from smart_r1.sim.rollouts import Rollouts
from smart_r1.viz.render import RenderConfig, render_gif, render_grid


def pick_scene(spec: str, scenario_id: str | None = None) -> Scene:
    from smart_r1.data.scenario_io import iter_scenes

    for scene in iter_scenes(spec):
        if scenario_id is None or scene.scenario_id == scenario_id:
            return scene
    raise LookupError(f"no scene {scenario_id!r} in {spec}" if scenario_id else f"no scene in {spec}")


def load_rollouts_for_scene(
    scene: Scene, rollouts_path: str | None = None, checkpoint: str | None = None, num_rollouts: int = 3, seed: int = 0
) -> Rollouts | None:
    if rollouts_path:
        if str(rollouts_path).endswith(".npz"):
            data = np.load(rollouts_path)
            return Rollouts(str(data["scenario_id"]), data["agent_id"], data["trajectories"])
        from smart_r1.metrics.submission import read_submission

        by_scene = read_submission(rollouts_path)
        if scene.scenario_id not in by_scene:
            raise LookupError(f"submission {rollouts_path} has no rollouts for scene {scene.scenario_id!r}")
        return by_scene[scene.scenario_id]
    if checkpoint:
        from smart_r1.sim.simulate import simulate_scenes

        return simulate_scenes(checkpoint, [scene], num_rollouts=num_rollouts, seed=seed)[0]
    return None


def event_masks_for(scene: Scene, rollouts: Rollouts) -> list[np.ndarray] | None:
    """Per rollout, [n_agent, n_step] bool: collision / offroad / red-light events (fast metric features)."""
    try:
        from smart_r1.metrics.fast import event_masks
    except ImportError:
        return None
    return event_masks(scene, rollouts)


def render_scene_outputs(
    scene: Scene,
    rollouts: Rollouts | None,
    out_dir: Path,
    config: RenderConfig | None = None,
    max_rollouts: int = 3,
    gif: bool = True,
) -> list[Path]:
    config = config or RenderConfig()
    config.max_rollouts_in_grid = max_rollouts
    out_dir = Path(out_dir)
    masks = event_masks_for(scene, rollouts) if rollouts is not None else None
    paths = [render_grid(scene, rollouts, out_dir / f"{scene.scenario_id}_grid.png", config, event_masks=masks)]
    if gif:
        if rollouts is None:
            paths.append(render_gif(scene, None, out_dir / f"{scene.scenario_id}_log.gif", config=config))
        else:
            for r in range(min(rollouts.n_rollout, max_rollouts)):
                mask = None if masks is None else masks[r]
                paths.append(render_gif(scene, rollouts, out_dir / f"{scene.scenario_id}_rollout{r + 1}.gif", r, config, event_mask=mask))
    return paths
