"""Renders of the real WOMD scene: files are valid images, GIFs have one frame per step,
and pixels show boxes where the agents are."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smart_r1.data.scene import STATE_X, STATE_Y
from smart_r1.data.scenario_io import load_scene
from smart_r1.sim.rollouts import Rollouts
from smart_r1.viz.render import SDC_COLOUR, RenderConfig, SceneRenderer, render_gif, render_grid


@pytest.fixture(scope="module")
def real_scene(real_scenario_path):
    return load_scene(real_scenario_path)


def _hex_rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int32)


def test_sdc_box_drawn_at_its_position(real_scene):
    renderer = SceneRenderer(real_scene, RenderConfig(view_radius_m=40, frame_px=400))
    cur = real_scene.current_time_index
    frame = renderer.frame(cur)  # [H, W, 3]
    sdc_xy = real_scene.agent_states[real_scene.sdc_index, cur, [STATE_X, STATE_Y]]
    row, col = np.round(renderer.world_to_pixel(sdc_xy)).astype(int)
    patch = frame[row - 2 : row + 3, col - 2 : col + 3].reshape(-1, 3).astype(np.int32)
    distance = np.abs(patch - _hex_rgb(SDC_COLOUR)).sum(axis=1)
    assert distance.min() < 60, f"no SDC-blue pixel at the SDC position, got {patch.tolist()}"
    # A far corner of the frame (no agent there) is not SDC blue.
    assert np.abs(frame[2, 2].astype(np.int32) - _hex_rgb(SDC_COLOUR)).sum() > 60


def test_moving_the_agent_moves_its_box(real_scene):
    """Swap in a rollout that shifts every simulated agent 10 m east: the SDC's blue box follows."""
    cur = real_scene.current_time_index
    ids = real_scene.sim_agent_ids()
    rows = np.flatnonzero(real_scene.sim_agent_mask())
    traj = np.zeros((1, len(ids), 80, 4), np.float32)
    traj[0, :, :, 0] = real_scene.agent_states[rows, cur, STATE_X][:, None] + 10.0
    traj[0, :, :, 1] = real_scene.agent_states[rows, cur, STATE_Y][:, None]
    traj[0, :, :, 3] = real_scene.heading[rows, cur][:, None]
    rollouts = Rollouts(real_scene.scenario_id, ids, traj)
    renderer = SceneRenderer(real_scene, RenderConfig(view_radius_m=40, frame_px=400, show_log_in_rollouts=False))
    frame = renderer.frame(cur + 20, rollouts, 0)
    moved = real_scene.agent_states[real_scene.sdc_index, cur, [STATE_X, STATE_Y]] + np.array([10.0, 0.0])
    row, col = np.round(renderer.world_to_pixel(moved)).astype(int)
    patch = frame[row - 2 : row + 3, col - 2 : col + 3].reshape(-1, 3).astype(np.int32)
    assert np.abs(patch - _hex_rgb(SDC_COLOUR)).sum(axis=1).min() < 60


def test_grid_png_and_gif(real_scene, real_submission_path, tmp_path):
    from smart_r1.metrics.submission import read_submission

    rollouts = read_submission(real_submission_path)[real_scene.scenario_id]
    config = RenderConfig(frame_px=160, max_rollouts_in_grid=2, grid_steps=(10, 50, 90))
    grid = render_grid(real_scene, rollouts, tmp_path / "grid.png", config)
    with Image.open(grid) as img:
        assert img.format == "PNG"
        assert img.size == (3 * 160 + 2 * 4, 3 * 160 + 2 * 4)  # 3 columns, rows: log + 2 rollouts
    gif = render_gif(real_scene, rollouts, tmp_path / "r1.gif", 0, RenderConfig(frame_px=96))
    with Image.open(gif) as img:
        assert img.format == "GIF"
        assert img.n_frames == real_scene.n_step == 91


def test_unknown_agent_in_rollouts_is_named(real_scene):
    bad = Rollouts(real_scene.scenario_id, np.array([999999]), np.zeros((1, 1, 80, 4), np.float32))
    renderer = SceneRenderer(real_scene, RenderConfig(frame_px=64))
    with pytest.raises(KeyError, match="999999"):
        renderer.frame(20, bad, 0)
