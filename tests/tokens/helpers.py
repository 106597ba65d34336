"""Small in-memory scenes for the tokens tests."""

from __future__ import annotations

import math

import numpy as np

from smart_r1.data.scene import MapData, MapKind, Scene, TrafficSignals

N_STEP = 91
DT = 0.1


def straight(speed: float, heading: float = 0.3, start=(10.0, -5.0)) -> np.ndarray:
    """Constant-speed straight line.  [91, 3]"""
    t = np.arange(N_STEP) * DT
    x = start[0] + speed * t * math.cos(heading)
    y = start[1] + speed * t * math.sin(heading)
    return np.stack([x, y, np.full(N_STEP, heading)], -1)


def arc(speed: float, yaw_rate: float, heading: float = 0.0, start=(0.0, 0.0)) -> np.ndarray:
    """Constant speed and yaw rate.  [91, 3]"""
    t = np.arange(N_STEP) * DT
    h = heading + yaw_rate * t
    if abs(yaw_rate) < 1e-9:
        return straight(speed, heading, start)
    r = speed / yaw_rate
    x = start[0] + r * (np.sin(h) - math.sin(heading))
    y = start[1] - r * (np.cos(h) - math.cos(heading))
    return np.stack([x, y, h], -1)


def make_scene(tracks: list[tuple[int, np.ndarray, np.ndarray | None]], scenario_id: str = "test", with_map: bool = True) -> Scene:
    """tracks: (agent type, poses [91, 3], valid [91] or None = all valid)."""
    n = len(tracks)
    states = np.zeros((n, N_STEP, 9), np.float32)
    valid = np.zeros((n, N_STEP), bool)
    types = np.zeros(n, np.int8)
    for i, (t, poses, v) in enumerate(tracks):
        states[i, :, 0:2] = poses[:, :2]
        states[i, :, 3] = poses[:, 2]
        states[i, :, 6:9] = (4.5, 1.9, 1.6) if t == 1 else (0.8, 0.8, 1.8) if t == 2 else (1.8, 0.7, 1.7)
        valid[i] = True if v is None else v
        types[i] = t
    m = MapData.empty()
    if with_map:
        lane = np.stack([np.linspace(0, 100, 21), np.zeros(21), np.zeros(21)], -1).astype(np.float32)
        edge = np.stack([np.linspace(0, 60, 13), np.full(13, 5.0), np.zeros(13)], -1).astype(np.float32)
        cross = np.array([[20, -3, 0], [24, -3, 0], [24, 3, 0], [20, 3, 0]], np.float32)
        pts = np.concatenate([lane, edge, cross])
        m = MapData(
            feature_id=np.array([101, 102, 103], np.int64),
            kind=np.array([MapKind.LANE, MapKind.ROAD_EDGE, MapKind.CROSSWALK], np.int8),
            subtype=np.array([2, 1, 0], np.int8),
            speed_limit_mph=np.array([25, np.nan, np.nan], np.float32),
            interpolating=np.zeros(3, bool),
            polyline_offsets=np.array([0, 21, 34, 38], np.int64),
            points=pts,
            entry_lane_offsets=np.zeros(4, np.int64),
            entry_lane_ids=np.zeros(0, np.int64),
            exit_lane_offsets=np.zeros(4, np.int64),
            exit_lane_ids=np.zeros(0, np.int64),
            stop_sign_lane_offsets=np.zeros(4, np.int64),
            stop_sign_lane_ids=np.zeros(0, np.int64),
        )
    state = np.where(np.arange(N_STEP) < 40, 6, 4).astype(np.int8)[:, None]  # GO then STOP
    signals = TrafficSignals(
        lane_id=np.array([101], np.int64),
        state=state,
        stop_point=np.zeros((N_STEP, 1, 3), np.float32),
        present=np.ones((N_STEP, 1), bool),
        order=np.zeros((N_STEP, 1), np.int16),
    )
    return Scene(
        scenario_id=scenario_id,
        timestamps_seconds=np.arange(N_STEP) * DT,
        current_time_index=10,
        sdc_index=0,
        agent_id=np.arange(n, dtype=np.int64) + 1,
        agent_type=types,
        agent_states=states,
        agent_valid=valid,
        tracks_to_predict=np.zeros(n, bool),
        tracks_to_predict_difficulty=np.zeros(n, np.int8),
        objects_of_interest=np.zeros(n, bool),
        map=m,
        signals=signals,
    )


def wandering(rng: np.random.Generator, vmax: float, yaw_max: float) -> np.ndarray:
    """Speed and yaw rate that change every second (bounded accelerations).  [91, 3]"""
    knots_v = rng.uniform(0, vmax, 10)
    knots_w = rng.normal(0, yaw_max, 10)
    t = np.arange(N_STEP) * DT
    v = np.interp(t, np.arange(10), knots_v)  # [91]
    w = np.interp(t, np.arange(10), knots_w)  # [91]
    h = rng.uniform(-3, 3) + np.concatenate([[0.0], np.cumsum(w[:-1] * DT)])
    x = rng.uniform(-50, 50) + np.concatenate([[0.0], np.cumsum(v[:-1] * np.cos(h[:-1]) * DT)])
    y = rng.uniform(-50, 50) + np.concatenate([[0.0], np.cumsum(v[:-1] * np.sin(h[:-1]) * DT)])
    return np.stack([x, y, h], -1)


def random_scene(seed: int, n_agent: int = 15) -> Scene:
    """Agents of all three types with smoothly varying speed and yaw rate."""
    rng = np.random.default_rng(seed)
    tracks = []
    for i in range(n_agent):
        t = [1, 1, 1, 2, 3][i % 5]
        vmax, yaw = {1: (20.0, 0.15), 2: (2.0, 0.4), 3: (8.0, 0.25)}[t]
        tracks.append((t, wandering(rng, vmax, yaw), None))
    return make_scene(tracks, scenario_id=f"rand{seed}")
