"""Protobuf wire-format encoding of the bulky repeated parts of a `Scenario` with numpy.

Setting ~3,000 `ObjectState`s and ~5,000 `MapPoint`s one Python call at a time dominated the
generator's run time. Here they are laid out as packed numpy records (tag bytes + fixed-width
little-endian values) and handed to the C parser with `MergeFromString`. The result is the
same message as setting the fields one by one (tests compare both paths).

Field numbers (waymo_open_dataset/protos/scenario.proto, map.proto, proto2):
ObjectState: center_x 2, center_y 3, center_z 4 (double); length 5, width 6, height 7,
heading 8, velocity_x 9, velocity_y 10 (float); valid 11 (bool). Track.states 3.
MapPoint: x 1, y 2, z 3 (double). LaneCenter.polyline 8, RoadLine/RoadEdge.polyline 2,
Crosswalk.polygon 1. Scenario.dynamic_map_states 7; DynamicMapState.lane_states 1;
TrafficSignalLaneState: lane 1 (int64), state 2 (enum), stop_point 3 (MapPoint).
"""

from __future__ import annotations

import numpy as np

_WT_VARINT, _WT_F64, _WT_LEN, _WT_F32 = 0, 1, 2, 5


def _tag(field: int, wire_type: int) -> int:
    return (field << 3) | wire_type


def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    return bytes([_tag(field, _WT_LEN)]) + varint(len(payload)) + payload


# ----- ObjectState: 59 bytes when valid, wrapped as Track.states (tag + 1-byte length) -----
_STATE_FIELDS = [("tag", "u1"), ("len", "u1")]
for _f, _name in ((2, "center_x"), (3, "center_y"), (4, "center_z")):
    _STATE_FIELDS += [(f"t{_f}", "u1"), (_name, "<f8")]
for _f, _name in ((5, "length"), (6, "width"), (7, "height"), (8, "heading"), (9, "velocity_x"), (10, "velocity_y")):
    _STATE_FIELDS += [(f"t{_f}", "u1"), (_name, "<f4")]
_STATE_FIELDS += [("t11", "u1"), ("valid", "u1")]
STATE_DTYPE = np.dtype(_STATE_FIELDS)  # packed, 61 bytes
assert STATE_DTYPE.itemsize == 61


def encode_track_states(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, heading: np.ndarray, vx: np.ndarray, vy: np.ndarray,
    valid: np.ndarray, length: float, width: float, height: float,
) -> bytes:
    """The `states` field (number 3) of one `Track`: all arrays are [n_step]."""
    n = valid.shape[0]
    rec = np.zeros(n, STATE_DTYPE)
    rec["tag"] = _tag(3, _WT_LEN)
    rec["len"] = 59
    for f in (2, 3, 4):
        rec[f"t{f}"] = _tag(f, _WT_F64)
    for f in (5, 6, 7, 8, 9, 10):
        rec[f"t{f}"] = _tag(f, _WT_F32)
    rec["t11"] = _tag(11, _WT_VARINT)
    rec["center_x"], rec["center_y"], rec["center_z"] = x, y, z
    rec["length"], rec["width"], rec["height"] = length, width, height
    rec["heading"], rec["velocity_x"], rec["velocity_y"] = heading, vx, vy
    rec["valid"] = 1
    raw = rec.view(np.uint8).reshape(n, 61)  # [n, 61]
    keep = np.ones((n, 61), bool)
    inv = ~valid
    if inv.any():
        # an invalid state carries only `valid: false`: tag, len 2, 0x58, 0x00
        raw[inv, 1] = 2
        raw[inv, 2] = _tag(11, _WT_VARINT)
        raw[inv, 3] = 0
        keep[inv, 4:] = False
    return raw[keep].tobytes()


# ----- MapPoint lists -----
_POINT_DTYPE = np.dtype([("tag", "u1"), ("len", "u1"), ("tx", "u1"), ("x", "<f8"), ("ty", "u1"), ("y", "<f8"), ("tz", "u1"), ("z", "<f8")])
assert _POINT_DTYPE.itemsize == 29


def encode_points(field: int, xyz: np.ndarray) -> bytes:
    """Repeated `MapPoint` field `field` of a message: xyz [n, 3] float64."""
    rec = np.zeros(xyz.shape[0], _POINT_DTYPE)
    rec["tag"] = _tag(field, _WT_LEN)
    rec["len"] = 27
    rec["tx"], rec["ty"], rec["tz"] = _tag(1, _WT_F64), _tag(2, _WT_F64), _tag(3, _WT_F64)
    rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    return rec.tobytes()


def encode_point_message(x: float, y: float, z: float) -> bytes:
    """A bare `MapPoint` message (no outer tag)."""
    return encode_points(1, np.array([[x, y, z]]))[2:]


def encode_lane_state(lane: int, state: int, stop_xyz: tuple[float, float, float]) -> bytes:
    """One `TrafficSignalLaneState` wrapped as DynamicMapState.lane_states (field 1)."""
    body = bytes([_tag(1, _WT_VARINT)]) + varint(lane) + bytes([_tag(2, _WT_VARINT)]) + varint(state)
    body += length_delimited(3, encode_point_message(*stop_xyz))
    return length_delimited(1, body)
