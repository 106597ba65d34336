"""The `Scene`: one WOMD scenario as typed numpy arrays, the input of every later stage.

A `Scene` is what `smart_r1.data.convert.scenario_to_scene` makes of a
`waymo.open_dataset.Scenario` proto (real or synthetic) and what the Parquet cache stores.
Everything is numpy; nothing here imports torch, TensorFlow or Ray.

Conventions (WOMD):
- 91 steps at 10 Hz, `current_time_index` = 10 (11 history steps incl. the current one).
- Agent types are the WOMD `Track.ObjectType` values (`AgentType`).
- Map features are flattened: one row per feature, points in one packed array addressed by
  `polyline_offsets` (feature `i` owns `points[offsets[i]:offsets[i+1]]`).
- Traffic signals: one column per controlled lane id seen in any step's dynamic map state.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field

import numpy as np

from smart_r1.errors import InputError

N_STEP_WOMD = 91
CURRENT_TIME_INDEX_WOMD = 10
N_FUTURE_STEP = 80
STEP_SECONDS = 0.1

# Columns of `Scene.agent_states[..., k]`.
STATE_X, STATE_Y, STATE_Z, STATE_HEADING, STATE_VX, STATE_VY, STATE_LENGTH, STATE_WIDTH, STATE_HEIGHT = range(9)
STATE_FIELDS = ("x", "y", "z", "heading", "vx", "vy", "length", "width", "height")


class AgentType(enum.IntEnum):
    """`waymo.open_dataset.Track.ObjectType`."""

    UNSET = 0
    VEHICLE = 1
    PEDESTRIAN = 2
    CYCLIST = 3
    OTHER = 4


class MapKind(enum.IntEnum):
    """Which `MapFeature.feature_data` oneof a map feature is."""

    LANE = 0
    ROAD_LINE = 1
    ROAD_EDGE = 2
    STOP_SIGN = 3
    CROSSWALK = 4
    SPEED_BUMP = 5
    DRIVEWAY = 6


class LaneType(enum.IntEnum):
    """`LaneCenter.LaneType` (stored in `MapData.subtype` for lanes)."""

    UNDEFINED = 0
    FREEWAY = 1
    SURFACE_STREET = 2
    BIKE_LANE = 3


class RoadLineType(enum.IntEnum):
    """`RoadLine.RoadLineType` (stored in `MapData.subtype` for road lines)."""

    UNKNOWN = 0
    BROKEN_SINGLE_WHITE = 1
    SOLID_SINGLE_WHITE = 2
    SOLID_DOUBLE_WHITE = 3
    BROKEN_SINGLE_YELLOW = 4
    BROKEN_DOUBLE_YELLOW = 5
    SOLID_SINGLE_YELLOW = 6
    SOLID_DOUBLE_YELLOW = 7
    PASSING_DOUBLE_YELLOW = 8


class RoadEdgeType(enum.IntEnum):
    """`RoadEdge.RoadEdgeType` (stored in `MapData.subtype` for road edges)."""

    UNKNOWN = 0
    BOUNDARY = 1
    MEDIAN = 2


class SignalState(enum.IntEnum):
    """`TrafficSignalLaneState.State`."""

    UNKNOWN = 0
    ARROW_STOP = 1
    ARROW_CAUTION = 2
    ARROW_GO = 3
    STOP = 4
    CAUTION = 5
    GO = 6
    FLASHING_STOP = 7
    FLASHING_CAUTION = 8


class SceneValidationError(InputError):
    """A scene that later stages cannot use; the message names the scene and the field."""


@dataclass
class MapData:
    """All static map features of a scene, flattened.

    `feature_id`, `kind`, `subtype`, `speed_limit_mph`, `polyline_offsets` are per feature;
    `points` is the packed point array. Lane connectivity and stop-sign lanes are ragged
    lists packed the same way (`*_offsets` index into the `*_ids` array).
    """

    feature_id: np.ndarray  # [n_feature] int64
    kind: np.ndarray  # [n_feature] int8, MapKind
    subtype: np.ndarray  # [n_feature] int8, LaneType / RoadLineType / RoadEdgeType; 0 otherwise
    speed_limit_mph: np.ndarray  # [n_feature] float32, NaN for non-lanes
    interpolating: np.ndarray  # [n_feature] bool, lanes only (LaneCenter.interpolating)
    polyline_offsets: np.ndarray  # [n_feature + 1] int64
    points: np.ndarray  # [n_point, 3] float32 (x, y, z); polygons for crosswalk/speed bump/driveway
    entry_lane_offsets: np.ndarray  # [n_feature + 1] int64
    entry_lane_ids: np.ndarray  # [n_entry] int64
    exit_lane_offsets: np.ndarray  # [n_feature + 1] int64
    exit_lane_ids: np.ndarray  # [n_exit] int64
    stop_sign_lane_offsets: np.ndarray  # [n_feature + 1] int64 (non-empty only for stop signs)
    stop_sign_lane_ids: np.ndarray  # [n_stop_lane] int64
    # Exact proto doubles of `points` (MapPoint x/y/z are doubles); None when built in memory.
    # Only used to make Scene -> Scenario exact; entries that no longer match `points` are ignored.
    points_f64: np.ndarray | None = None  # [n_point, 3] float64

    @property
    def n_feature(self) -> int:
        return int(self.feature_id.shape[0])

    def polyline(self, i: int) -> np.ndarray:
        """Points of feature `i`.  # [n_point_i, 3]"""
        return self.points[self.polyline_offsets[i] : self.polyline_offsets[i + 1]]

    def entry_lanes(self, i: int) -> np.ndarray:
        return self.entry_lane_ids[self.entry_lane_offsets[i] : self.entry_lane_offsets[i + 1]]

    def exit_lanes(self, i: int) -> np.ndarray:
        return self.exit_lane_ids[self.exit_lane_offsets[i] : self.exit_lane_offsets[i + 1]]

    def stop_sign_lanes(self, i: int) -> np.ndarray:
        return self.stop_sign_lane_ids[self.stop_sign_lane_offsets[i] : self.stop_sign_lane_offsets[i + 1]]

    def indices_of(self, *kinds: MapKind) -> np.ndarray:
        """Feature indices whose kind is one of `kinds`.  # [n_selected] int64"""
        return np.flatnonzero(np.isin(self.kind, np.asarray([int(k) for k in kinds], dtype=np.int8)))

    def count_by_kind(self) -> dict[str, int]:
        return {k.name.lower(): int((self.kind == k).sum()) for k in MapKind}

    @staticmethod
    def empty() -> "MapData":
        zero_offsets = np.zeros(1, dtype=np.int64)
        return MapData(
            feature_id=np.zeros(0, np.int64),
            kind=np.zeros(0, np.int8),
            subtype=np.zeros(0, np.int8),
            speed_limit_mph=np.zeros(0, np.float32),
            interpolating=np.zeros(0, bool),
            polyline_offsets=zero_offsets.copy(),
            points=np.zeros((0, 3), np.float32),
            entry_lane_offsets=zero_offsets.copy(),
            entry_lane_ids=np.zeros(0, np.int64),
            exit_lane_offsets=zero_offsets.copy(),
            exit_lane_ids=np.zeros(0, np.int64),
            stop_sign_lane_offsets=zero_offsets.copy(),
            stop_sign_lane_ids=np.zeros(0, np.int64),
        )


@dataclass
class TrafficSignals:
    """Dynamic map states: traffic-signal state per step per controlled lane.

    `lane_id` is the union of lanes that appear in any step; `present[t, j]` says whether
    lane `j` had an entry in step `t`'s `DynamicMapState` (absent entries have state UNKNOWN).
    `order[t, j]` is the position of lane `j` inside step `t`'s proto list (-1 if absent), so
    Scene -> Scenario reproduces the original list order.
    """

    lane_id: np.ndarray  # [n_signal_lane] int64
    state: np.ndarray  # [n_step, n_signal_lane] int8, SignalState
    stop_point: np.ndarray  # [n_step, n_signal_lane, 3] float32
    present: np.ndarray  # [n_step, n_signal_lane] bool
    order: np.ndarray  # [n_step, n_signal_lane] int16
    # Exact proto doubles of `stop_point`; None when built in memory (see MapData.points_f64).
    stop_point_f64: np.ndarray | None = None  # [n_step, n_signal_lane, 3] float64

    @property
    def n_lane(self) -> int:
        return int(self.lane_id.shape[0])

    @staticmethod
    def empty(n_step: int) -> "TrafficSignals":
        return TrafficSignals(
            lane_id=np.zeros(0, np.int64),
            state=np.zeros((n_step, 0), np.int8),
            stop_point=np.zeros((n_step, 0, 3), np.float32),
            present=np.zeros((n_step, 0), bool),
            order=np.zeros((n_step, 0), np.int16),
        )


@dataclass
class Scene:
    """One scenario: agents, map, signals. Arrays are numpy; shapes in comments.

    `n_step` is 91 for WOMD. Agent rows follow the proto's track order.
    """

    scenario_id: str
    timestamps_seconds: np.ndarray  # [n_step] float64
    current_time_index: int
    sdc_index: int  # row of the SDC in the agent arrays
    agent_id: np.ndarray  # [n_agent] int64 (Track.id)
    agent_type: np.ndarray  # [n_agent] int8, AgentType
    agent_states: np.ndarray  # [n_agent, n_step, 9] float32: x, y, z, heading, vx, vy, length, width, height
    agent_valid: np.ndarray  # [n_agent, n_step] bool
    tracks_to_predict: np.ndarray  # [n_agent] bool
    tracks_to_predict_difficulty: np.ndarray  # [n_agent] int8 (0 where not a track to predict)
    objects_of_interest: np.ndarray  # [n_agent] bool
    map: MapData
    signals: TrafficSignals
    # Order of `tracks_to_predict` in the proto (row indices), to reproduce it on the way back.
    tracks_to_predict_order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [n_ttp] int64
    source: str = ""  # file the scene came from ("" if built in memory)
    # Exact proto doubles of x, y, z (ObjectState.center_* are doubles; agent_states is float32).
    # None when built in memory. Only used to make Scene -> Scenario exact: entries whose float32
    # value no longer matches `agent_states` are ignored, so editing agent_states stays safe.
    agent_xyz_f64: np.ndarray | None = None  # [n_agent, n_step, 3] float64
    # Synthetic scenes only: JSON of the generator state that restarts the scene (seed, index,
    # SynthConfig; smart_r1.data.synth.state), "" otherwise. `baseline:oracle` needs it.
    generator_state: str = ""

    # ----- sizes -----
    @property
    def n_agent(self) -> int:
        return int(self.agent_id.shape[0])

    @property
    def n_step(self) -> int:
        return int(self.agent_states.shape[1])

    # ----- WOSAC agent sets (waymo_open_dataset.utils.sim_agents.submission_specs) -----
    def sim_agent_mask(self) -> np.ndarray:
        """Agents that must be simulated: valid at the current step.  # [n_agent] bool"""
        return self.agent_valid[:, self.current_time_index].copy()

    def sim_agent_ids(self) -> np.ndarray:
        """Ids of the agents to simulate, in track order.  # [n_sim_agent] int64"""
        return self.agent_id[self.sim_agent_mask()]

    def eval_agent_mask(self) -> np.ndarray:
        """Agents the metrics evaluate: the SDC and the tracks to predict.  # [n_agent] bool"""
        mask = self.tracks_to_predict.copy()
        mask[self.sdc_index] = True
        return mask

    def eval_agent_ids(self) -> np.ndarray:
        """Sorted union of the SDC id and the tracks-to-predict ids (official order).  # [n_eval] int64"""
        return np.sort(self.agent_id[self.eval_agent_mask()])

    # ----- convenience -----
    @property
    def xy(self) -> np.ndarray:
        return self.agent_states[..., STATE_X : STATE_Y + 1]  # [n_agent, n_step, 2]

    @property
    def heading(self) -> np.ndarray:
        return self.agent_states[..., STATE_HEADING]  # [n_agent, n_step]

    def summary(self) -> dict:
        cur = self.current_time_index
        by_type = {t.name.lower(): int((self.agent_type == t).sum()) for t in AgentType if (self.agent_type == t).any()}
        return {
            "scenario_id": self.scenario_id,
            "n_tracks": self.n_agent,
            "tracks_by_type": by_type,
            "n_valid_at_current": int(self.agent_valid[:, cur].sum()),
            "n_sim_agents": int(self.sim_agent_mask().sum()),
            "n_tracks_to_predict": int(self.tracks_to_predict.sum()),
            "n_map_features": self.map.n_feature,
            "map_features_by_kind": {k: v for k, v in self.map.count_by_kind().items() if v},
            "n_dynamic_map_states": self.n_step,
            "n_lane_states": int(self.signals.present.sum()),
            "n_signal_lanes": self.signals.n_lane,
        }

    # ----- validation -----
    def problems(self) -> list[str]:
        """Everything wrong with this scene, as messages naming the scene and field. Empty if fine."""
        where = f"scene {self.scenario_id!r}" + (f" ({self.source})" if self.source else "")
        out: list[str] = []
        if self.n_agent == 0:
            out.append(f"{where}: field tracks: zero agents")
            return out
        if not (0 <= self.sdc_index < self.n_agent):
            out.append(f"{where}: field sdc_track_index: {self.sdc_index} out of range [0, {self.n_agent})")
        cur = self.current_time_index
        if not (0 <= cur < self.n_step):
            out.append(f"{where}: field current_time_index: {cur} outside [0, {self.n_step})")
            return out
        pose = self.agent_states[..., [STATE_X, STATE_Y, STATE_Z, STATE_HEADING]]  # [n_agent, n_step, 4]
        bad = self.agent_valid & ~np.isfinite(pose).all(axis=-1)  # [n_agent, n_step]
        if bad.any():
            rows, steps = np.nonzero(bad)
            ids = sorted({int(self.agent_id[r]) for r in rows})[:10]
            out.append(
                f"{where}: field tracks.states: {int(bad.sum())} valid states with NaN/inf pose "
                f"(agent ids {ids}, first at step {int(steps[0])})"
            )
        must = self.eval_agent_mask()
        missing = must & ~self.agent_valid[:, cur]
        if missing.any():
            out.append(
                f"{where}: field tracks.states.valid: agents to evaluate not valid at current step {cur}: "
                f"ids {self.agent_id[missing].tolist()}"
            )
        if not self.agent_valid[:, cur].any():
            out.append(f"{where}: field tracks.states.valid: no agent valid at current step {cur}")
        if self.map.n_feature == 0:
            out.append(f"{where}: field map_features: scene has no map features")
        return out

    def validate(self, allow_missing_map: bool = False) -> "Scene":
        """Raise `SceneValidationError` listing every problem; return self when fine."""
        problems = self.problems()
        if allow_missing_map:
            problems = [p for p in problems if "no map features" not in p]
        if problems:
            raise SceneValidationError("; ".join(problems))
        return self

    def replace(self, **changes) -> "Scene":
        return dataclasses.replace(self, **changes)


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Wrap radians into [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi
