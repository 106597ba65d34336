"""Helpers for the data tests: copies of the real WOMD scenario, corrupted files."""

from __future__ import annotations

from pathlib import Path

from smart_r1.data.tfrecord import iter_records, write_records

REPO = Path(__file__).resolve().parents[2]
REAL_SCENARIO_FILE = REPO / "tests" / "fixtures" / "womd" / "scenario_637f20cafde22ff8.tfrecord"
REAL_SCENARIO_ID = "637f20cafde22ff8"

_REAL_BYTES: bytes | None = None


def real_record_bytes() -> bytes:
    """Serialized Scenario of the real fixture (read once)."""
    global _REAL_BYTES
    if _REAL_BYTES is None:
        (_REAL_BYTES,) = [r.data for r in iter_records(REAL_SCENARIO_FILE)]
    return _REAL_BYTES


def real_scenario():
    from waymo_open_dataset.protos import scenario_pb2

    return scenario_pb2.Scenario.FromString(real_record_bytes())


def scenario_copies(n: int, prefix: str = "copy") -> list[bytes]:
    """`n` serialized copies of the real scenario with scenario_id `{prefix}{i:04d}`."""
    proto = real_scenario()
    out = []
    for i in range(n):
        proto.scenario_id = f"{prefix}{i:04d}"
        out.append(proto.SerializeToString())
    return out


def write_copies(out_dir: Path, n_shards: int, per_shard: int, prefix: str = "copy") -> list[Path]:
    """Shards `shard-XXXXX-of-YYYYY.tfrecord` of real-scenario copies with unique ids."""
    out_dir.mkdir(parents=True, exist_ok=True)
    records = scenario_copies(n_shards * per_shard, prefix)
    paths = []
    for s in range(n_shards):
        p = out_dir / f"shard-{s:05d}-of-{n_shards:05d}.tfrecord"
        write_records(p, records[s * per_shard : (s + 1) * per_shard])
        paths.append(p)
    return paths


def strip_unmodelled(proto):
    """Copy of a Scenario without the fields `Scene` does not carry (lane boundaries/neighbors, sensor data)."""
    out = type(proto)()
    out.CopyFrom(proto)
    for f in out.map_features:
        if f.HasField("lane"):
            for name in ("left_boundaries", "right_boundaries", "left_neighbors", "right_neighbors"):
                f.lane.ClearField(name)
    out.ClearField("compressed_frame_laser_data")
    out.ClearField("frame_camera_tokens")
    return out


def proto_value_diffs(a, b, path: str = "", limit: int = 20) -> list[str]:
    """Field-by-field value differences of two protos (floats compared bit for bit; presence ignored)."""
    import struct

    from google.protobuf.descriptor import FieldDescriptor

    def same_scalar(fd, x, y) -> bool:
        if fd.type == FieldDescriptor.TYPE_DOUBLE:
            return struct.pack("<d", x) == struct.pack("<d", y)
        if fd.type == FieldDescriptor.TYPE_FLOAT:
            return struct.pack("<f", x) == struct.pack("<f", y)
        return x == y

    diffs: list[str] = []
    for fd in a.DESCRIPTOR.fields:
        if len(diffs) >= limit:
            break
        name = f"{path}.{fd.name}" if path else fd.name
        va, vb = getattr(a, fd.name), getattr(b, fd.name)
        if fd.is_repeated:
            if len(va) != len(vb):
                diffs.append(f"{name}: length {len(va)} != {len(vb)}")
                continue
            for i, (x, y) in enumerate(zip(va, vb)):
                if fd.message_type is not None:
                    diffs.extend(proto_value_diffs(x, y, f"{name}[{i}]", limit - len(diffs)))
                elif not same_scalar(fd, x, y):
                    diffs.append(f"{name}[{i}]: {x!r} != {y!r}")
                if len(diffs) >= limit:
                    break
        elif fd.message_type is not None:
            if fd.containing_oneof is not None and (a.HasField(fd.name) != b.HasField(fd.name)):
                diffs.append(f"{name}: oneof set in one proto only")
                continue
            diffs.extend(proto_value_diffs(va, vb, name, limit - len(diffs)))
        elif not same_scalar(fd, va, vb):
            diffs.append(f"{name}: {va!r} != {vb!r}")
    return diffs


def tiny_scene(n_agent: int = 3, n_step: int = 91, with_map: bool = True, scenario_id: str = "tiny"):
    """A small valid in-memory Scene (agents moving along x on a one-lane map)."""
    import numpy as np

    from smart_r1.data.scene import MapData, MapKind, Scene, TrafficSignals

    t = np.arange(n_step) * 0.1
    states = np.zeros((n_agent, n_step, 9), np.float32)  # [n_agent, n_step, 9]
    states[..., 0] = np.arange(n_agent)[:, None] * 10.0 + t[None, :] * 5.0
    states[..., 1] = np.arange(n_agent)[:, None] * 3.0
    states[..., 4] = 5.0
    states[..., 6:9] = (4.5, 2.0, 1.6)
    mapdata = MapData.empty()
    if with_map:
        mapdata = MapData(
            feature_id=np.array([1, 2], np.int64),
            kind=np.array([MapKind.LANE, MapKind.ROAD_EDGE], np.int8),
            subtype=np.array([2, 1], np.int8),
            speed_limit_mph=np.array([25.0, np.nan], np.float32),
            interpolating=np.array([False, False]),
            polyline_offsets=np.array([0, 2, 4], np.int64),
            points=np.array([[0, 0, 0], [100, 0, 0], [0, -5, 0], [100, -5, 0]], np.float32),
            entry_lane_offsets=np.zeros(3, np.int64),
            entry_lane_ids=np.zeros(0, np.int64),
            exit_lane_offsets=np.zeros(3, np.int64),
            exit_lane_ids=np.zeros(0, np.int64),
            stop_sign_lane_offsets=np.zeros(3, np.int64),
            stop_sign_lane_ids=np.zeros(0, np.int64),
        )
    ttp = np.zeros(n_agent, bool)
    ttp[: min(2, n_agent)] = True
    return Scene(
        scenario_id=scenario_id,
        timestamps_seconds=t,
        current_time_index=10,
        sdc_index=0,
        agent_id=np.arange(100, 100 + n_agent, dtype=np.int64),
        agent_type=np.ones(n_agent, np.int8),
        agent_states=states,
        agent_valid=np.ones((n_agent, n_step), bool),
        tracks_to_predict=ttp,
        tracks_to_predict_difficulty=ttp.astype(np.int8),
        objects_of_interest=np.zeros(n_agent, bool),
        map=mapdata,
        signals=TrafficSignals.empty(n_step),
        tracks_to_predict_order=np.flatnonzero(ttp),
    )
