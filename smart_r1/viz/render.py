"""Rendering scenes and rollouts: a PNG grid (log + rollouts x time steps, like paper fig. 4)
and an animated GIF per rollout.

Conventions (paper figures 4-7): the SDC is blue, other agents white/grey by type, the log
is drawn as transparent boxes and simulated agents as solid boxes; lanes controlled by a
traffic signal are coloured by its state at the frame's step; flagged events (collision,
offroad, red-light run) are outlined in magenta (distinct from red signal lanes) from the step
they happen.

Drawing uses matplotlib's Agg canvas. The map is rasterised once per signal state and reused
as the background of every frame; agents are drawn on one reused transparent figure and
alpha-composited onto it, so a 91-frame, 128-agent GIF costs a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from smart_r1.data.scene import (
    STATE_HEADING,
    STATE_LENGTH,
    STATE_WIDTH,
    STATE_X,
    STATE_Y,
    AgentType,
    MapKind,
    RoadLineType,
    Scene,
    SignalState,
)
from smart_r1.sim.rollouts import Rollouts

SIGNAL_COLOURS = {
    SignalState.STOP: "#e8403a",
    SignalState.ARROW_STOP: "#e8403a",
    SignalState.FLASHING_STOP: "#e8403a",
    SignalState.CAUTION: "#f2c230",
    SignalState.ARROW_CAUTION: "#f2c230",
    SignalState.FLASHING_CAUTION: "#f2c230",
    SignalState.GO: "#3cc45a",
    SignalState.ARROW_GO: "#3cc45a",
}
AGENT_COLOURS = {
    AgentType.VEHICLE: "#f4f4f4",
    AgentType.PEDESTRIAN: "#f0a35e",
    AgentType.CYCLIST: "#c48be8",
    AgentType.OTHER: "#bbbbbb",
    AgentType.UNSET: "#bbbbbb",
}
SDC_COLOUR = "#2f7bf5"
EVENT_COLOUR = "#ff2bd6"  # magenta: not to be confused with red (STOP) signal lanes
BACKGROUND = "#1d1f24"


@dataclass
class RenderConfig:
    view_radius_m: float = 0.0  # 0: fit the agents to simulate (clipped to [30, 120] m)
    frame_px: int = 480  # size of one (square) frame in pixels
    history_trail_steps: int = 10
    grid_steps: Sequence[int] = (10, 30, 50, 70, 90)
    gif_fps: int = 10
    max_rollouts_in_grid: int = 3
    show_log_in_rollouts: bool = True  # transparent log boxes under simulated ones
    events: dict = field(default_factory=dict)


def box_corners(x: np.ndarray, y: np.ndarray, heading: np.ndarray, length: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Corners of oriented boxes.  x, y, heading, length, width: [...] -> [..., 4, 2]."""
    cos, sin = np.cos(heading), np.sin(heading)  # [...]
    half_l, half_w = length / 2.0, width / 2.0  # [...]
    local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=np.float64)  # [4, 2]
    dx = local[:, 0] * half_l[..., None]  # [..., 4]
    dy = local[:, 1] * half_w[..., None]  # [..., 4]
    cx = x[..., None] + dx * cos[..., None] - dy * sin[..., None]  # [..., 4]
    cy = y[..., None] + dx * sin[..., None] + dy * cos[..., None]  # [..., 4]
    return np.stack([cx, cy], axis=-1)  # [..., 4, 2]


def scene_poses(scene: Scene, rollouts: Rollouts | None = None, rollout_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Poses of every agent over all steps: the log, with the simulated future swapped in.

    Returns (pose [n_agent, n_step, 3] x/y/heading, valid [n_agent, n_step]).
    Simulated agents are valid at every future step (the WOSAC convention)."""
    pose = scene.agent_states[..., [STATE_X, STATE_Y, STATE_HEADING]].astype(np.float64)  # [n_agent, n_step, 3]
    valid = scene.agent_valid.copy()  # [n_agent, n_step]
    if rollouts is None:
        return pose, valid
    cur = scene.current_time_index
    row_of = {int(a): i for i, a in enumerate(scene.agent_id)}
    traj = rollouts.trajectories[rollout_index]  # [n_sim_agent, 80, 4]
    n_future = min(traj.shape[1], scene.n_step - cur - 1)
    for j, agent in enumerate(rollouts.agent_id):
        i = row_of.get(int(agent))
        if i is None:
            raise KeyError(f"rollouts of scene {scene.scenario_id!r}: agent id {int(agent)} is not in the scene")
        pose[i, cur + 1 : cur + 1 + n_future, 0] = traj[j, :n_future, 0]
        pose[i, cur + 1 : cur + 1 + n_future, 1] = traj[j, :n_future, 1]
        pose[i, cur + 1 : cur + 1 + n_future, 2] = traj[j, :n_future, 3]
        valid[i, cur + 1 : cur + 1 + n_future] = True
    sim_rows = np.array([row_of[int(a)] for a in rollouts.agent_id], dtype=np.int64)
    not_sim = np.setdiff1d(np.arange(scene.n_agent), sim_rows)
    valid[not_sim, cur + 1 :] = False  # agents not simulated vanish after the current step
    return pose, valid


class SceneRenderer:
    """Draws frames of one scene with a cached map background."""

    def __init__(self, scene: Scene, config: RenderConfig | None = None):
        import matplotlib

        matplotlib.use("Agg")
        self.scene = scene
        self.config = config or RenderConfig()
        self.center, self.radius = self._view()
        self._background_cache: dict[int, np.ndarray] = {}  # signal-state signature -> RGB image

    # ----- view -----
    def _view(self) -> tuple[np.ndarray, float]:
        scene = self.scene
        cur = scene.current_time_index
        mask = scene.sim_agent_mask()
        xy = scene.xy[mask, cur]  # [n_sim, 2]
        center = scene.xy[scene.sdc_index, cur].astype(np.float64)  # [2]
        if self.config.view_radius_m > 0:
            return center, float(self.config.view_radius_m)
        extent = np.abs(xy - center).max() if len(xy) else 50.0
        return center, float(np.clip(extent + 10.0, 30.0, 120.0))

    def _new_axes(self):
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        dpi = 100
        size = self.config.frame_px / dpi
        fig = Figure(figsize=(size, size), dpi=dpi, facecolor=BACKGROUND)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_facecolor(BACKGROUND)
        ax.set_xlim(self.center[0] - self.radius, self.center[0] + self.radius)
        ax.set_ylim(self.center[1] - self.radius, self.center[1] + self.radius)
        ax.set_aspect("equal")
        ax.axis("off")
        return fig, ax

    # ----- map -----
    def _signal_states(self, step: int) -> dict[int, int]:
        sig = self.scene.signals
        if sig.n_lane == 0:
            return {}
        present = sig.present[step]  # [n_signal_lane]
        return {int(l): int(s) for l, s, p in zip(sig.lane_id, sig.state[step], present) if p}

    def draw_map(self, ax, step: int) -> None:
        from matplotlib.collections import LineCollection, PolyCollection

        m = self.scene.map
        lanes, lines_white, lines_yellow, edges, polys = [], [], [], [], []
        stop_signs = []
        for i in range(m.n_feature):
            pts = m.polyline(i)[:, :2]  # [n_point, 2]
            kind = int(m.kind[i])
            if kind == MapKind.LANE:
                lanes.append(pts)
            elif kind == MapKind.ROAD_LINE:
                yellow = int(m.subtype[i]) >= RoadLineType.BROKEN_SINGLE_YELLOW
                (lines_yellow if yellow else lines_white).append(pts)
            elif kind == MapKind.ROAD_EDGE:
                edges.append(pts)
            elif kind in (MapKind.CROSSWALK, MapKind.SPEED_BUMP, MapKind.DRIVEWAY):
                if len(pts) >= 3:
                    polys.append(pts)
            elif kind == MapKind.STOP_SIGN and len(pts):
                stop_signs.append(pts[0])
        if polys:
            ax.add_collection(PolyCollection(polys, facecolors="#3a3d45", edgecolors="#6a6e78", linewidths=0.5, zorder=1))
        if lanes:
            ax.add_collection(LineCollection(lanes, colors="#4a4e58", linewidths=0.8, zorder=2))
        if lines_white:
            ax.add_collection(LineCollection(lines_white, colors="#d8d8d8", linewidths=0.6, linestyles="--", zorder=3))
        if lines_yellow:
            ax.add_collection(LineCollection(lines_yellow, colors="#e0c040", linewidths=0.7, zorder=3))
        if edges:
            ax.add_collection(LineCollection(edges, colors="#9aa0aa", linewidths=1.4, zorder=3))
        states = self._signal_states(step)
        if states:
            index_of = {int(fid): i for i, fid in enumerate(m.feature_id)}
            coloured, colours = [], []
            for lane, state in states.items():
                i = index_of.get(lane)
                colour = SIGNAL_COLOURS.get(SignalState(state)) if state in SignalState._value2member_map_ else None
                if i is None or colour is None:
                    continue
                coloured.append(m.polyline(i)[:, :2])
                colours.append(colour)
            if coloured:
                ax.add_collection(LineCollection(coloured, colors=colours, linewidths=2.0, zorder=4))
        if stop_signs:
            pts = np.asarray(stop_signs)
            ax.scatter(pts[:, 0], pts[:, 1], marker="8", s=40, c="#e8403a", edgecolors="white", linewidths=0.5, zorder=5)

    def _background(self, step: int) -> np.ndarray:
        states = self._signal_states(step)
        key = hash(tuple(sorted(states.items())))
        if key not in self._background_cache:
            fig, ax = self._new_axes()
            self.draw_map(ax, step)
            fig.canvas.draw()
            self._background_cache[key] = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        return self._background_cache[key]

    # ----- agents -----
    def draw_agents(
        self,
        ax,
        pose: np.ndarray,
        valid: np.ndarray,
        step: int,
        solid: bool,
        event_rows: np.ndarray | None = None,
    ) -> None:
        """Boxes of every agent valid at `step`; pose [n_agent, n_step, 3], valid [n_agent, n_step]."""
        from matplotlib.collections import LineCollection, PolyCollection

        scene = self.scene
        rows = np.flatnonzero(valid[:, step])
        if rows.size == 0:
            return
        length = scene.agent_states[rows, scene.current_time_index, STATE_LENGTH].astype(np.float64)
        width = scene.agent_states[rows, scene.current_time_index, STATE_WIDTH].astype(np.float64)
        # agents not valid at the current step: size from their own step
        bad = ~scene.agent_valid[rows, scene.current_time_index]
        length[bad] = scene.agent_states[rows[bad], step, STATE_LENGTH]
        width[bad] = scene.agent_states[rows[bad], step, STATE_WIDTH]
        x, y, h = pose[rows, step, 0], pose[rows, step, 1], pose[rows, step, 2]  # [n_rows]
        corners = box_corners(x, y, h, length, width)  # [n_rows, 4, 2]
        colours = [SDC_COLOUR if r == scene.sdc_index else AGENT_COLOURS[AgentType(int(scene.agent_type[r]))] for r in rows]
        edge = ["black"] * len(rows)
        if event_rows is not None:
            flagged = set(int(r) for r in event_rows)
            edge = [EVENT_COLOUR if int(r) in flagged else "black" for r in rows]
        if solid:
            widths = [2.0 if e == EVENT_COLOUR else 1.2 for e in edge]
            ax.add_collection(PolyCollection(corners, facecolors=colours, edgecolors=edge, linewidths=widths, alpha=0.95, zorder=7))
            # heading tick: centre -> front
            front = np.stack([x + np.cos(h) * length / 2, y + np.sin(h) * length / 2], axis=-1)  # [n_rows, 2]
            centre = np.stack([x, y], axis=-1)
            ax.add_collection(LineCollection(np.stack([centre, front], axis=1), colors="#202020", linewidths=0.8, zorder=8))
        else:
            ax.add_collection(PolyCollection(corners, facecolors=colours, edgecolors=colours, linewidths=0.8, alpha=0.28, zorder=6))
        trail = self.config.history_trail_steps
        if solid and trail > 0 and step > 0:
            lo = max(0, step - trail)
            segs = []
            for r in rows:
                ok = valid[r, lo : step + 1]
                if ok.sum() >= 2:
                    segs.append(pose[r, lo : step + 1][ok, :2])
            if segs:
                ax.add_collection(LineCollection(segs, colors="#8fb8ff", linewidths=0.8, alpha=0.6, zorder=5))

    def frame(
        self,
        step: int,
        rollouts: Rollouts | None = None,
        rollout_index: int = 0,
        title: str | None = None,
        event_mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """One RGB frame [H, W, 3] uint8. `event_mask` [n_agent, n_step] bool marks flagged agents.

        Agents are drawn on one reused transparent figure and alpha-composited onto the cached
        map raster of the step's signal state (no figure or map re-drawing per frame)."""
        fig, ax = self._agent_axes()
        for artist in list(ax.collections) + list(ax.texts):
            artist.remove()
        log_pose, log_valid = self._poses(None, 0)
        if rollouts is None:
            self.draw_agents(ax, log_pose, log_valid, step, solid=True, event_rows=_event_rows(event_mask, step))
        else:
            if self.config.show_log_in_rollouts:
                self.draw_agents(ax, log_pose, log_valid, step, solid=False)
            pose, valid = self._poses(rollouts, rollout_index)
            self.draw_agents(ax, pose, valid, step, solid=True, event_rows=_event_rows(event_mask, step))
        label = title if title is not None else f"t = {(step - self.scene.current_time_index) / 10:+.1f} s"
        ax.text(0.02, 0.97, label, transform=ax.transAxes, color="white", fontsize=9, va="top", zorder=10)
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())  # [H, W, 4] uint8, straight alpha
        background = self._background(step)  # [H, W, 3] uint8
        alpha = rgba[..., 3:4].astype(np.float32) * (1.0 / 255.0)  # [H, W, 1]
        out = rgba[..., :3].astype(np.float32) * alpha + background.astype(np.float32) * (1.0 - alpha)  # [H, W, 3]
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    def _agent_axes(self):
        """The reused transparent figure the agents are drawn on (same view as the map raster)."""
        if getattr(self, "_agent_fig", None) is None:
            fig, ax = self._new_axes()
            fig.patch.set_alpha(0.0)
            ax.patch.set_alpha(0.0)
            self._agent_fig = (fig, ax)
        return self._agent_fig

    def _poses(self, rollouts: Rollouts | None, rollout_index: int) -> tuple[np.ndarray, np.ndarray]:
        """`scene_poses`, cached for the last (rollouts, index) asked for and the log."""
        key = (None, 0) if rollouts is None else (id(rollouts), rollout_index)
        cache = self.__dict__.setdefault("_pose_cache", {})
        if key not in cache:
            if len(cache) > 4:
                cache.clear()
            cache[key] = (scene_poses(self.scene, rollouts, rollout_index), rollouts)  # keep rollouts alive: id() stays unique
        return cache[key][0]

    def world_to_pixel(self, xy: np.ndarray) -> np.ndarray:
        """World x, y -> (row, col) pixel of a frame.  [..., 2] -> [..., 2]"""
        px = self.config.frame_px
        col = (xy[..., 0] - (self.center[0] - self.radius)) / (2 * self.radius) * px
        row = ((self.center[1] + self.radius) - xy[..., 1]) / (2 * self.radius) * px
        return np.stack([row, col], axis=-1)


def _event_rows(event_mask: np.ndarray | None, step: int) -> np.ndarray | None:
    """Agents whose event happened at or before `step`."""
    if event_mask is None:
        return None
    return np.flatnonzero(event_mask[:, : step + 1].any(axis=1))


def render_grid(
    scene: Scene,
    rollouts: Rollouts | None,
    out_path: Path,
    config: RenderConfig | None = None,
    event_masks: Sequence[np.ndarray] | None = None,
) -> Path:
    """PNG grid: row 0 the log, rows 1..R rollouts; columns the config's grid steps (paper fig. 4)."""
    from PIL import Image

    config = config or RenderConfig()
    renderer = SceneRenderer(scene, config)
    steps = [s for s in config.grid_steps if 0 <= s < scene.n_step]
    n_roll = 0 if rollouts is None else min(rollouts.n_rollout, config.max_rollouts_in_grid)
    rows = [[renderer.frame(s, title=f"log  t={(s - scene.current_time_index) / 10:+.1f}s") for s in steps]]
    for r in range(n_roll):
        mask = None if event_masks is None else event_masks[r]
        rows.append([renderer.frame(s, rollouts, r, title=f"R{r + 1}  t={(s - scene.current_time_index) / 10:+.1f}s", event_mask=mask) for s in steps])
    pad = 4
    grid = np.full(
        (len(rows) * (config.frame_px + pad) - pad, len(steps) * (config.frame_px + pad) - pad, 3), 255, dtype=np.uint8
    )
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y0, x0 = i * (config.frame_px + pad), j * (config.frame_px + pad)
            grid[y0 : y0 + img.shape[0], x0 : x0 + img.shape[1]] = img
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out_path)
    return out_path


def render_gif(
    scene: Scene,
    rollouts: Rollouts | None,
    out_path: Path,
    rollout_index: int = 0,
    config: RenderConfig | None = None,
    event_mask: np.ndarray | None = None,
    steps: Sequence[int] | None = None,
) -> Path:
    """Animated GIF of one rollout (or of the log when `rollouts` is None), one frame per step."""
    config = config or RenderConfig()
    renderer = SceneRenderer(scene, config)
    steps = list(range(scene.n_step)) if steps is None else list(steps)
    frames = [renderer.frame(s, rollouts, rollout_index, event_mask=event_mask) for s in steps]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_gif(frames, out_path, fps=config.gif_fps)
    return out_path


def save_gif(frames: Sequence[np.ndarray], out_path: Path, fps: int = 10) -> Path:
    """Animated GIF of RGB frames [H, W, 3] uint8 (fast octree palette per frame, loops forever)."""
    from PIL import Image

    if not frames:
        raise ValueError(f"{out_path}: no frames to write")
    images = [Image.fromarray(f).quantize(colors=255, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE) for f in frames]
    images[0].save(out_path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0, optimize=False)
    return out_path
