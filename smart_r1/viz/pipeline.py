"""Glue for the render command: pick a scene, get rollouts (file or checkpoint), write outputs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from smart_r1.data.scene import Scene
from smart_r1.errors import InputNotFoundError
from smart_r1.sim.rollouts import Rollouts
from smart_r1.viz.render import RenderConfig, render_gif, render_grid


def pick_scene(spec: str, scenario_id: str | None = None, validate: bool = True) -> Scene:
    """The first scene of `spec` (or the one with `scenario_id`), checked by the one scene
    validation path (`smart_r1.data.validate`; a scene without map is drawn as it is).
    Raises `InputNotFoundError` (a `LookupError`) when there is no such scene."""
    from smart_r1.data.scenario_io import iter_scenes_with_refs
    from smart_r1.data.validate import REQUIRE_MAP, check_scene

    seen = []
    for ref, scene in iter_scenes_with_refs(spec):
        if scenario_id is None or scene.scenario_id == scenario_id:
            return check_scene(scene, ref, require_map=REQUIRE_MAP["render"]) if validate else scene
        if len(seen) < 10:
            seen.append(scene.scenario_id)
    if scenario_id:
        raise InputNotFoundError(f"{spec}: no scene with scenario id {scenario_id!r} (first ids there: {seen})")
    raise InputNotFoundError(f"{spec}: no scene (the input holds no records)")


def load_rollouts_for_scene(
    scene: Scene, rollouts_path: str | None = None, checkpoint: str | None = None, num_rollouts: int = 3, seed: int = 0
) -> Rollouts | None:
    if rollouts_path:
        from smart_r1.metrics.submission import load_rollouts_npz, read_submission

        if str(rollouts_path).endswith(".npz"):
            rollouts = load_rollouts_npz(rollouts_path)
            if str(rollouts.scenario_id) != str(scene.scenario_id):
                raise InputNotFoundError(f"{rollouts_path}: rollouts of scene {rollouts.scenario_id!r}, not of {scene.scenario_id!r}")
            return rollouts
        by_scene = read_submission(rollouts_path)
        if scene.scenario_id not in by_scene:
            raise InputNotFoundError(f"submission {rollouts_path} has no rollouts for scene {scene.scenario_id!r}")
        return by_scene[scene.scenario_id]
    if checkpoint:
        from smart_r1.sim.baselines import get_baseline, is_baseline_spec

        if is_baseline_spec(checkpoint):
            return get_baseline(checkpoint)(scene, num_rollouts, seed)
        from smart_r1.sim.simulate import simulate_scenes

        return simulate_scenes(checkpoint, [scene], num_rollouts=num_rollouts, seed=seed)[0]
    return None


def event_masks_for(scene: Scene, rollouts: Rollouts, max_rollouts: int | None = None) -> list[np.ndarray] | None:
    """Per rollout (the first `max_rollouts`), [n_agent, n_step] bool: collision / offroad /
    red-light events. Uses `smart_r1.metrics.fast.event_masks` when the metrics provide it,
    else `smart_r1.viz.events.event_masks` (same feature functions, every simulated agent)."""
    if max_rollouts is not None and rollouts.n_rollout > max_rollouts:
        rollouts = Rollouts(rollouts.scenario_id, rollouts.agent_id, rollouts.trajectories[:max_rollouts])
    try:
        from smart_r1.metrics.fast import event_masks
    except ImportError:
        from smart_r1.viz.events import event_masks
    from smart_r1.metrics.fast import FastMetricsError

    try:
        return event_masks(scene, rollouts)
    except FastMetricsError as err:  # e.g. a scene without road edges: render without event marks
        warnings.warn(f"no event marks for scene {scene.scenario_id!r}: {err}", stacklevel=2)
        return None


def render_scene_outputs(
    scene: Scene,
    rollouts: Rollouts | None,
    out_dir: Path,
    config: RenderConfig | None = None,
    max_rollouts: int = 3,
    gif: bool = True,
    gif_rollouts: int | None = None,
    gif_steps: Sequence[int] | None = None,
    prefix: str | None = None,
) -> list[Path]:
    """Grid PNG (log + first `max_rollouts` rollouts) and a GIF per rollout (the first
    `gif_rollouts`, default `max_rollouts`; frames `gif_steps`, default every step) of one scene.
    Files are named `<prefix>_grid.png`, `<prefix>_rollout<k>.gif` (prefix: the scenario id)."""
    config = config or RenderConfig()
    config.max_rollouts_in_grid = max_rollouts
    out_dir = Path(out_dir)
    masks = event_masks_for(scene, rollouts, max_rollouts) if rollouts is not None else None
    prefix = prefix or scene.scenario_id
    paths = [render_grid(scene, rollouts, out_dir / f"{prefix}_grid.png", config, event_masks=masks)]
    if gif:
        if rollouts is None:
            paths.append(render_gif(scene, None, out_dir / f"{prefix}_log.gif", config=config, steps=gif_steps))
        else:
            n_gif = max_rollouts if gif_rollouts is None else gif_rollouts
            for r in range(min(rollouts.n_rollout, max_rollouts, n_gif)):
                mask = None if masks is None else masks[r]
                paths.append(
                    render_gif(scene, rollouts, out_dir / f"{prefix}_rollout{r + 1}.gif", r, config, event_mask=mask, steps=gif_steps)
                )
    return paths
