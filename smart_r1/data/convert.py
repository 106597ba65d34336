"""`waymo.open_dataset.Scenario` proto <-> `Scene`.

`scenario_to_scene(proto_or_bytes)` fills every field of `Scene`; `scene_to_scenario(scene)`
builds the proto back. The round trip keeps every field the metrics and the model use,
exactly: float fields of the proto are float32 in the Scene (exact), and the double fields
(`ObjectState.center_x/y/z`, `MapPoint.x/y/z`) are kept as float64 beside the float32 arrays
(`Scene.agent_xyz_f64`, `MapData.points_f64`, `TrafficSignals.stop_point_f64`).

Not carried into the Scene (no later stage uses them): `LaneCenter.left/right_boundaries`,
`left/right_neighbors`, `compressed_frame_laser_data`, `frame_camera_tokens`. Invalid agent
states are kept with whatever values the proto holds (`agent_valid` False).

Map features keep their proto order; the packed points of a feature are its `polyline`
(lane, road line, road edge), its `polygon` (crosswalk, speed bump, driveway) or its
`position` (stop sign: one point, or none if the proto has no position).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from smart_r1.data.scene import MapData, MapKind, Scene, TrafficSignals
from smart_r1.errors import InputError

__all__ = ["ScenarioParseError", "parse_scenario", "scenario_to_scene", "scene_to_scenario"]

# MapFeature.feature_data oneof name -> MapKind, and which repeated field holds its points.
_KIND_BY_ONEOF = {
    "lane": MapKind.LANE,
    "road_line": MapKind.ROAD_LINE,
    "road_edge": MapKind.ROAD_EDGE,
    "stop_sign": MapKind.STOP_SIGN,
    "crosswalk": MapKind.CROSSWALK,
    "speed_bump": MapKind.SPEED_BUMP,
    "driveway": MapKind.DRIVEWAY,
}
_ONEOF_BY_KIND = {v: k for k, v in _KIND_BY_ONEOF.items()}
_POINTS_FIELD = {
    "lane": "polyline",
    "road_line": "polyline",
    "road_edge": "polyline",
    "crosswalk": "polygon",
    "speed_bump": "polygon",
    "driveway": "polygon",
}
_STATE_FIELDS = ("center_x", "center_y", "center_z", "heading", "velocity_x", "velocity_y", "length", "width", "height")


class ScenarioParseError(InputError):
    """A record that is not a usable Scenario; names the file, record index, byte offset and the problem."""

    def __init__(self, reason: str, path: str = "", index: int | None = None, offset: int | None = None):
        self.reason = reason
        self.path = str(path)
        self.index = index
        self.offset = offset
        where = self.path or "<bytes>"
        if index is not None:
            where += f": record {index}"
        if offset is not None:
            where += f" at byte offset {offset}"
        super().__init__(f"{where}: {reason}")


def _scenario_pb2():
    try:
        from waymo_open_dataset.protos import scenario_pb2
    except ModuleNotFoundError as err:
        from smart_r1.data.protos import protos_missing

        raise protos_missing(err) from err
    return scenario_pb2


def _map_pb2():
    try:
        from waymo_open_dataset.protos import map_pb2
    except ModuleNotFoundError as err:
        from smart_r1.data.protos import protos_missing

        raise protos_missing(err) from err
    return map_pb2


def parse_scenario(data: bytes, path: str = "", index: int | None = None, offset: int | None = None):
    """Bytes -> `Scenario` proto; `ScenarioParseError` if it is not one (parse fails, no id, no timestamps)."""
    scenario_pb2 = _scenario_pb2()
    try:
        proto = scenario_pb2.Scenario.FromString(bytes(data))
    except Exception as err:  # google.protobuf.message.DecodeError and friends
        raise ScenarioParseError(f"not a Scenario proto ({type(err).__name__}: {err})", path, index, offset) from err
    if not proto.scenario_id:
        raise ScenarioParseError("not a Scenario: field scenario_id is empty", path, index, offset)
    if len(proto.timestamps_seconds) == 0:
        raise ScenarioParseError(
            f"not a Scenario (scenario_id {proto.scenario_id!r}): field timestamps_seconds is empty", path, index, offset
        )
    return proto


def scenario_to_scene(
    proto_or_bytes: Any, source: str = "", index: int | None = None, offset: int | None = None
) -> Scene:
    """A `Scenario` proto (or its serialized bytes, or a `tfrecord.RecordRef`) -> `Scene`.

    `source`/`index`/`offset` only name the record in errors (`Scene.source` = `source`).
    """
    if hasattr(proto_or_bytes, "data") and hasattr(proto_or_bytes, "offset"):  # RecordRef
        ref = proto_or_bytes
        source = source or ref.path
        index = ref.index if index is None else index
        offset = ref.offset if offset is None else offset
        proto_or_bytes = ref.data
    if isinstance(proto_or_bytes, (bytes, bytearray, memoryview)):
        proto = parse_scenario(proto_or_bytes, source, index, offset)
    else:
        proto = proto_or_bytes
        if not proto.scenario_id or len(proto.timestamps_seconds) == 0:
            raise ScenarioParseError("not a Scenario: scenario_id or timestamps_seconds is empty", source, index, offset)

    def fail(reason: str) -> ScenarioParseError:
        return ScenarioParseError(f"scenario {proto.scenario_id!r}: {reason}", source, index, offset)

    timestamps = np.asarray(proto.timestamps_seconds, dtype=np.float64)  # [n_step]
    n_step = int(timestamps.shape[0])

    # ----- agents -----
    tracks = proto.tracks
    n_agent = len(tracks)
    for i, t in enumerate(tracks):
        if len(t.states) != n_step:
            raise fail(f"field tracks[{i}].states: {len(t.states)} states for {n_step} timestamps (track id {t.id})")
    rows = [
        (
            s.center_x,
            s.center_y,
            s.center_z,
            s.heading,
            s.velocity_x,
            s.velocity_y,
            s.length,
            s.width,
            s.height,
            s.valid,
        )
        for t in tracks
        for s in t.states
    ]
    table = np.asarray(rows, dtype=np.float64).reshape(n_agent, n_step, 10)  # [n_agent, n_step, 10]
    agent_states = np.ascontiguousarray(table[..., :9], dtype=np.float32)  # [n_agent, n_step, 9]
    agent_xyz_f64 = np.ascontiguousarray(table[..., :3])  # [n_agent, n_step, 3] float64
    agent_valid = np.ascontiguousarray(table[..., 9] != 0)  # [n_agent, n_step]
    agent_id = np.asarray([t.id for t in tracks], dtype=np.int64)  # [n_agent]
    agent_type = np.asarray([t.object_type for t in tracks], dtype=np.int8)  # [n_agent]
    row_of_id = {int(a): r for r, a in enumerate(agent_id)}
    if len(row_of_id) != n_agent:
        raise fail("field tracks: duplicate track ids")

    # ----- agent sets -----
    if n_agent and not (0 <= proto.sdc_track_index < n_agent):
        raise fail(f"field sdc_track_index: {proto.sdc_track_index} out of range [0, {n_agent})")
    tracks_to_predict = np.zeros(n_agent, dtype=bool)  # [n_agent]
    difficulty = np.zeros(n_agent, dtype=np.int8)  # [n_agent]
    ttp_order = np.zeros(len(proto.tracks_to_predict), dtype=np.int64)  # [n_ttp]
    for k, req in enumerate(proto.tracks_to_predict):
        if not (0 <= req.track_index < n_agent):
            raise fail(f"field tracks_to_predict[{k}].track_index: {req.track_index} out of range [0, {n_agent})")
        if tracks_to_predict[req.track_index]:
            raise fail(f"field tracks_to_predict[{k}]: track index {req.track_index} listed twice")
        tracks_to_predict[req.track_index] = True
        difficulty[req.track_index] = req.difficulty
        ttp_order[k] = req.track_index
    objects_of_interest = np.zeros(n_agent, dtype=bool)  # [n_agent]
    for k, obj_id in enumerate(proto.objects_of_interest):
        if obj_id not in row_of_id:
            raise fail(f"field objects_of_interest[{k}]: id {obj_id} is not a track id")
        objects_of_interest[row_of_id[obj_id]] = True

    return Scene(
        scenario_id=proto.scenario_id,
        timestamps_seconds=timestamps,
        current_time_index=int(proto.current_time_index),
        sdc_index=int(proto.sdc_track_index),
        agent_id=agent_id,
        agent_type=agent_type,
        agent_states=agent_states,
        agent_valid=agent_valid,
        tracks_to_predict=tracks_to_predict,
        tracks_to_predict_difficulty=difficulty,
        objects_of_interest=objects_of_interest,
        map=_map_from_proto(proto, fail),
        signals=_signals_from_proto(proto, n_step, fail),
        tracks_to_predict_order=ttp_order,
        source=str(source),
        agent_xyz_f64=agent_xyz_f64,
        generator_state=_generator_state(str(source), proto.scenario_id),
    )


def _generator_state(source: str, scenario_id: str) -> str:
    """Synthetic scenes: the generator state from the `.synth_state.json` next to `source`."""
    if not source:
        return ""
    from smart_r1.data.synth.state import state_for

    return state_for(source, scenario_id)


def _map_from_proto(proto, fail) -> MapData:
    feats = proto.map_features
    n = len(feats)
    feature_id = np.zeros(n, dtype=np.int64)  # [n_feature]
    kind = np.zeros(n, dtype=np.int8)  # [n_feature]
    subtype = np.zeros(n, dtype=np.int8)  # [n_feature]
    speed = np.full(n, np.nan, dtype=np.float32)  # [n_feature]
    interp = np.zeros(n, dtype=bool)  # [n_feature]
    n_points = np.zeros(n, dtype=np.int64)
    n_entry = np.zeros(n, dtype=np.int64)
    n_exit = np.zeros(n, dtype=np.int64)
    n_stop = np.zeros(n, dtype=np.int64)
    points: list[tuple[float, float, float]] = []
    entry: list[int] = []
    exit_: list[int] = []
    stop_lanes: list[int] = []
    for i, f in enumerate(feats):
        which = f.WhichOneof("feature_data")
        if which is None:
            raise fail(f"field map_features[{i}] (id {f.id}): no feature_data set")
        feature_id[i] = f.id
        kind[i] = _KIND_BY_ONEOF[which]
        data = getattr(f, which)
        if which == "stop_sign":
            if data.HasField("position"):
                p = data.position
                points.append((p.x, p.y, p.z))
                n_points[i] = 1
            stop_lanes.extend(data.lane)
            n_stop[i] = len(data.lane)
            continue
        pts = getattr(data, _POINTS_FIELD[which])
        points.extend([(p.x, p.y, p.z) for p in pts])
        n_points[i] = len(pts)
        if which == "lane":
            subtype[i] = data.type
            speed[i] = data.speed_limit_mph
            interp[i] = data.interpolating
            entry.extend(data.entry_lanes)
            exit_.extend(data.exit_lanes)
            n_entry[i] = len(data.entry_lanes)
            n_exit[i] = len(data.exit_lanes)
        elif which in ("road_line", "road_edge"):
            subtype[i] = data.type
    points_f64 = np.asarray(points, dtype=np.float64).reshape(-1, 3)  # [n_point, 3]

    def offsets(counts: np.ndarray) -> np.ndarray:
        out = np.zeros(n + 1, dtype=np.int64)  # [n_feature + 1]
        np.cumsum(counts, out=out[1:])
        return out

    return MapData(
        feature_id=feature_id,
        kind=kind,
        subtype=subtype,
        speed_limit_mph=speed,
        interpolating=interp,
        polyline_offsets=offsets(n_points),
        points=points_f64.astype(np.float32),
        entry_lane_offsets=offsets(n_entry),
        entry_lane_ids=np.asarray(entry, dtype=np.int64),
        exit_lane_offsets=offsets(n_exit),
        exit_lane_ids=np.asarray(exit_, dtype=np.int64),
        stop_sign_lane_offsets=offsets(n_stop),
        stop_sign_lane_ids=np.asarray(stop_lanes, dtype=np.int64),
        points_f64=points_f64,
    )


def _signals_from_proto(proto, n_step: int, fail) -> TrafficSignals:
    dms = proto.dynamic_map_states
    n_t = len(dms)
    col: dict[int, int] = {}
    for step in dms:
        for ls in step.lane_states:
            if ls.lane not in col:
                col[ls.lane] = len(col)
    n_lane = len(col)
    state = np.zeros((n_t, n_lane), dtype=np.int8)  # [n_step, n_signal_lane]
    stop = np.zeros((n_t, n_lane, 3), dtype=np.float64)  # [n_step, n_signal_lane, 3]
    present = np.zeros((n_t, n_lane), dtype=bool)  # [n_step, n_signal_lane]
    order = np.full((n_t, n_lane), -1, dtype=np.int16)  # [n_step, n_signal_lane]
    for t, step in enumerate(dms):
        for k, ls in enumerate(step.lane_states):
            j = col[ls.lane]
            if present[t, j]:
                raise fail(f"field dynamic_map_states[{t}].lane_states[{k}]: lane {ls.lane} listed twice")
            present[t, j] = True
            order[t, j] = k
            state[t, j] = ls.state
            sp = ls.stop_point
            stop[t, j] = (sp.x, sp.y, sp.z)
    return TrafficSignals(
        lane_id=np.asarray(list(col), dtype=np.int64),
        state=state,
        stop_point=stop.astype(np.float32),
        present=present,
        order=order,
        stop_point_f64=stop,
    )


# ----------------------------------------------------------------------------- Scene -> Scenario
def _exact(f32: np.ndarray, f64: np.ndarray | None) -> np.ndarray:
    """float64 values: the stored exact doubles where they still match the float32 array, else the float32 values."""
    out = f32.astype(np.float64)
    if f64 is None or f64.shape != f32.shape:
        return out
    same = f64.astype(np.float32).view(np.uint32) == np.ascontiguousarray(f32, dtype=np.float32).view(np.uint32)
    return np.where(same, f64, out)


def scene_to_scenario(scene: Scene):
    """`Scene` -> `waymo.open_dataset.Scenario` (see the module docstring for what is exact)."""
    scenario_pb2 = _scenario_pb2()
    map_pb2 = _map_pb2()
    proto = scenario_pb2.Scenario()
    proto.scenario_id = scene.scenario_id
    proto.timestamps_seconds.extend(np.asarray(scene.timestamps_seconds, dtype=np.float64).tolist())
    proto.current_time_index = int(scene.current_time_index)
    proto.sdc_track_index = int(scene.sdc_index)

    # ----- tracks -----
    xyz = _exact(scene.agent_states[..., :3], scene.agent_xyz_f64).tolist()  # [n_agent, n_step, 3]
    rest = scene.agent_states[..., 3:].astype(np.float64).tolist()  # [n_agent, n_step, 6]
    valid = scene.agent_valid.tolist()  # [n_agent, n_step]
    ObjectState = scenario_pb2.ObjectState
    for i in range(scene.n_agent):
        track = proto.tracks.add()
        track.id = int(scene.agent_id[i])
        track.object_type = int(scene.agent_type[i])
        states = []
        for t, (p, r, v) in enumerate(zip(xyz[i], rest[i], valid[i])):
            values = p + r
            if v:
                states.append(ObjectState(valid=True, **dict(zip(_STATE_FIELDS, values))))
            else:
                # Invalid states: only the fields that hold something (WOMD leaves the rest unset).
                # -0.0 is kept (bit-exact values), +0.0 left unset.
                states.append(
                    ObjectState(
                        valid=False,
                        **{k: x for k, x in zip(_STATE_FIELDS, values) if x != 0.0 or math.copysign(1.0, x) < 0},
                    )
                )
        track.states.extend(states)

    # ----- signals -----
    sig = scene.signals
    stop = _exact(sig.stop_point, sig.stop_point_f64)  # [n_step, n_lane, 3]
    lane_ids = sig.lane_id.tolist()
    for t in range(sig.state.shape[0]):
        dms = proto.dynamic_map_states.add()
        cols = np.flatnonzero(sig.present[t])
        cols = cols[np.argsort(sig.order[t, cols], kind="stable")]
        for j in cols.tolist():
            x, y, z = stop[t, j].tolist()
            dms.lane_states.add(lane=lane_ids[j], state=int(sig.state[t, j]), stop_point=map_pb2.MapPoint(x=x, y=y, z=z))

    # ----- map -----
    m = scene.map
    pts = _exact(m.points, m.points_f64).tolist()  # [n_point, 3]
    MapPoint = map_pb2.MapPoint
    off = m.polyline_offsets.tolist()
    for i in range(m.n_feature):
        feat = proto.map_features.add()
        feat.id = int(m.feature_id[i])
        which = _ONEOF_BY_KIND[MapKind(int(m.kind[i]))]
        data = getattr(feat, which)
        feat_pts = [MapPoint(x=x, y=y, z=z) for x, y, z in pts[off[i] : off[i + 1]]]
        if which == "stop_sign":
            data.lane.extend(m.stop_sign_lanes(i).tolist())
            if feat_pts:
                data.position.CopyFrom(feat_pts[0])
            else:
                data.SetInParent()
            continue
        getattr(data, _POINTS_FIELD[which]).extend(feat_pts)
        if which == "lane":
            data.speed_limit_mph = float(m.speed_limit_mph[i])
            data.type = int(m.subtype[i])
            if m.interpolating[i]:  # WOMD leaves `interpolating: false` unset
                data.interpolating = True
            data.entry_lanes.extend(m.entry_lanes(i).tolist())
            data.exit_lanes.extend(m.exit_lanes(i).tolist())
        elif which in ("road_line", "road_edge"):
            data.type = int(m.subtype[i])
        if not feat_pts:
            data.SetInParent()

    # ----- agent sets -----
    order = np.asarray(scene.tracks_to_predict_order, dtype=np.int64)
    if order.size == 0 or not np.array_equal(np.sort(order), np.flatnonzero(scene.tracks_to_predict)):
        order = np.flatnonzero(scene.tracks_to_predict)
    for r in order.tolist():
        proto.tracks_to_predict.add(track_index=r, difficulty=int(scene.tracks_to_predict_difficulty[r]))
    proto.objects_of_interest.extend(scene.agent_id[scene.objects_of_interest].tolist())
    return proto
