"""Scene loading for the tokens package (CLI, tests).

Prefers the project's reader `smart_r1.data.scenario_io.iter_scenes` (owner: data). Until that
module exists, a small private fallback reads TFRecord-framed `Scenario` protos and builds a
`Scene` with the fields the tokenizer needs (agents, map polylines, signals). The fallback is
deliberately minimal and will be removed once the data package has landed.
"""

from __future__ import annotations

import glob
import struct
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from smart_r1.data.scene import MapData, MapKind, Scene, TrafficSignals


def expand_globs(patterns: str | Iterable[str]) -> list[str]:
    """Sorted file list of one or several glob patterns; error naming the pattern when empty."""
    if isinstance(patterns, (str, Path)):
        patterns = [str(patterns)]
    out: list[str] = []
    for pattern in patterns:
        hits = sorted(glob.glob(str(pattern), recursive=True))
        if not hits:
            raise FileNotFoundError(f"no scene files match {pattern!r}")
        out.extend(hits)
    return out


def iter_scenes(patterns: str | Iterable[str]) -> Iterator[Scene]:
    """Scenes of all files matching `patterns` (TFRecord of Scenario protos, or whatever the
    data package's `iter_scenes` accepts)."""
    paths = expand_globs(patterns)
    try:
        from smart_r1.data import scenario_io  # type: ignore[attr-defined]

        reader = getattr(scenario_io, "iter_scenes", None)
    except ImportError:
        reader = None
    if reader is not None:
        yield from reader(paths)
        return
    for path in paths:
        yield from _fallback_iter_file(path)


# ----------------------------------------------------------------------------------------------
# Private fallback (no CRC checks; the data package does the real validation).
# ----------------------------------------------------------------------------------------------


def _fallback_iter_file(path: str) -> Iterator[Scene]:
    from waymo_open_dataset.protos import scenario_pb2

    data = Path(path).read_bytes()
    pos, record = 0, 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError(f"{path}: record {record}: truncated TFRecord header")
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        start = pos + 12
        end = start + length
        if end + 4 > len(data):
            raise ValueError(f"{path}: record {record}: truncated TFRecord payload")
        proto = scenario_pb2.Scenario()
        proto.ParseFromString(data[start:end])
        yield _scenario_to_scene(proto, source=path)
        pos = end + 4
        record += 1


_MAP_FIELDS = {
    "lane": MapKind.LANE,
    "road_line": MapKind.ROAD_LINE,
    "road_edge": MapKind.ROAD_EDGE,
    "stop_sign": MapKind.STOP_SIGN,
    "crosswalk": MapKind.CROSSWALK,
    "speed_bump": MapKind.SPEED_BUMP,
    "driveway": MapKind.DRIVEWAY,
}


def _scenario_to_scene(proto, source: str = "") -> Scene:
    n_agent = len(proto.tracks)
    n_step = len(proto.timestamps_seconds)
    states = np.zeros((n_agent, n_step, 9), np.float32)  # [n_agent, n_step, 9]
    valid = np.zeros((n_agent, n_step), bool)  # [n_agent, n_step]
    for i, track in enumerate(proto.tracks):
        for t, s in enumerate(track.states):
            if t >= n_step:
                break
            states[i, t] = (
                s.center_x, s.center_y, s.center_z, s.heading, s.velocity_x, s.velocity_y,
                s.length, s.width, s.height,
            )
            valid[i, t] = s.valid
    ttp = np.zeros(n_agent, bool)
    diff = np.zeros(n_agent, np.int8)
    order = []
    for r in proto.tracks_to_predict:
        ttp[r.track_index] = True
        diff[r.track_index] = r.difficulty
        order.append(r.track_index)
    ids = np.array([t.id for t in proto.tracks], np.int64)
    ooi = np.isin(ids, np.array(list(proto.objects_of_interest), np.int64))

    fid, kind, sub, speed, interp, offsets, pts = [], [], [], [], [], [0], []
    for mf in proto.map_features:
        which = mf.WhichOneof("feature_data")
        if which not in _MAP_FIELDS:
            continue
        msg = getattr(mf, which)
        if which in ("lane", "road_line", "road_edge"):
            poly = [(p.x, p.y, p.z) for p in msg.polyline]
        elif which == "stop_sign":
            poly = [(msg.position.x, msg.position.y, msg.position.z)]
        else:
            poly = [(p.x, p.y, p.z) for p in msg.polygon]
        fid.append(mf.id)
        kind.append(int(_MAP_FIELDS[which]))
        sub.append(int(getattr(msg, "type", 0)) if which in ("lane", "road_line", "road_edge") else 0)
        speed.append(float(msg.speed_limit_mph) if which == "lane" else np.nan)
        interp.append(bool(msg.interpolating) if which == "lane" else False)
        pts.extend(poly)
        offsets.append(len(pts))
    nf = len(fid)
    zero = np.zeros(nf + 1, np.int64)
    map_data = MapData(
        feature_id=np.array(fid, np.int64),
        kind=np.array(kind, np.int8),
        subtype=np.array(sub, np.int8),
        speed_limit_mph=np.array(speed, np.float32),
        interpolating=np.array(interp, bool),
        polyline_offsets=np.array(offsets, np.int64),
        points=np.array(pts, np.float32).reshape(-1, 3),
        entry_lane_offsets=zero.copy(),
        entry_lane_ids=np.zeros(0, np.int64),
        exit_lane_offsets=zero.copy(),
        exit_lane_ids=np.zeros(0, np.int64),
        stop_sign_lane_offsets=zero.copy(),
        stop_sign_lane_ids=np.zeros(0, np.int64),
    )

    lanes = sorted({ls.lane for d in proto.dynamic_map_states for ls in d.lane_states})
    col = {lane: j for j, lane in enumerate(lanes)}
    sig_state = np.zeros((n_step, len(lanes)), np.int8)  # [n_step, n_lane]
    sig_stop = np.zeros((n_step, len(lanes), 3), np.float32)  # [n_step, n_lane, 3]
    present = np.zeros((n_step, len(lanes)), bool)  # [n_step, n_lane]
    sig_order = np.full((n_step, len(lanes)), -1, np.int16)  # [n_step, n_lane]
    for t, d in enumerate(proto.dynamic_map_states):
        if t >= n_step:
            break
        for k, ls in enumerate(d.lane_states):
            j = col[ls.lane]
            sig_state[t, j] = ls.state
            sig_stop[t, j] = (ls.stop_point.x, ls.stop_point.y, ls.stop_point.z)
            present[t, j] = True
            sig_order[t, j] = k
    signals = TrafficSignals(
        lane_id=np.array(lanes, np.int64), state=sig_state, stop_point=sig_stop, present=present, order=sig_order
    )
    return Scene(
        scenario_id=proto.scenario_id,
        timestamps_seconds=np.array(proto.timestamps_seconds, np.float64),
        current_time_index=int(proto.current_time_index),
        sdc_index=int(proto.sdc_track_index),
        agent_id=ids,
        agent_type=np.array([t.object_type for t in proto.tracks], np.int8),
        agent_states=states,
        agent_valid=valid,
        tracks_to_predict=ttp,
        tracks_to_predict_difficulty=diff,
        objects_of_interest=ooi,
        map=map_data,
        signals=signals,
        tracks_to_predict_order=np.array(order, np.int64),
        source=source,
    )
