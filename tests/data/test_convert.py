"""Scenario proto <-> Scene on the real WOMD scenario."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from womd_helpers import (  # noqa: E402
    REAL_SCENARIO_FILE,
    REAL_SCENARIO_ID,
    proto_value_diffs,
    real_record_bytes,
    real_scenario,
    strip_unmodelled,
    tiny_scene,
)

from smart_r1.data.convert import ScenarioParseError, scenario_to_scene, scene_to_scenario  # noqa: E402
from smart_r1.data.scene import STATE_HEADING, STATE_X, AgentType, MapKind  # noqa: E402


@pytest.fixture(scope="module")
def real():
    return scenario_to_scene(real_record_bytes(), source=str(REAL_SCENARIO_FILE))


def test_real_scene_counts(real):
    s = real
    assert s.scenario_id == REAL_SCENARIO_ID and s.source == str(REAL_SCENARIO_FILE)
    assert s.n_agent == 83 and s.n_step == 91 and s.current_time_index == 10
    assert s.agent_states.shape == (83, 91, 9) and s.agent_states.dtype == np.float32
    assert s.agent_valid.shape == (83, 91) and s.agent_valid.dtype == bool
    counts = {t: int((s.agent_type == t).sum()) for t in AgentType}
    assert (counts[AgentType.VEHICLE], counts[AgentType.PEDESTRIAN], counts[AgentType.CYCLIST]) == (70, 10, 3)
    assert s.map.n_feature == 301
    assert s.signals.state.shape[0] == 91
    assert int(s.tracks_to_predict.sum()) == 3
    assert s.tracks_to_predict_order.tolist() == [72, 43, 42]
    assert s.tracks_to_predict_difficulty[[72, 43, 42]].tolist() == [1, 1, 2]
    assert s.sdc_index == 82 and s.objects_of_interest.sum() == 0
    assert np.isclose(s.timestamps_seconds[1], 0.10002)
    assert s.problems() == []
    by_kind = s.map.count_by_kind()
    assert by_kind["lane"] == 199 and by_kind["road_line"] == 59 and by_kind["road_edge"] == 28
    assert by_kind["stop_sign"] == 8 and by_kind["crosswalk"] == 4 and by_kind["speed_bump"] == 3


def test_real_scene_values_match_proto(real):
    proto = real_scenario()
    s = real
    for i in (0, 42, 82):
        tr = proto.tracks[i]
        assert s.agent_id[i] == tr.id and s.agent_type[i] == tr.object_type
        for t in (0, 10, 90):
            st = tr.states[t]
            assert s.agent_valid[i, t] == st.valid
            assert s.agent_states[i, t, STATE_X] == np.float32(st.center_x)
            assert s.agent_xyz_f64[i, t, 0] == st.center_x and s.agent_xyz_f64[i, t, 2] == st.center_z
            assert s.agent_states[i, t, STATE_HEADING] == np.float32(st.heading)
    # Invalid states keep the proto's values (here: a centre_z but no pose).
    inv = ~s.agent_valid
    assert inv.any()
    i, t = map(int, np.argwhere(inv)[0])
    assert s.agent_xyz_f64[i, t, 2] == proto.tracks[i].states[t].center_z
    # Map: a stop sign's position and lanes, a lane's connectivity and speed limit.
    m = s.map
    stop = int(m.indices_of(MapKind.STOP_SIGN)[0])
    f = proto.map_features[stop]
    assert m.feature_id[stop] == f.id and m.stop_sign_lanes(stop).tolist() == list(f.stop_sign.lane)
    assert m.polyline(stop).shape == (1, 3) and m.points_f64[m.polyline_offsets[stop], 0] == f.stop_sign.position.x
    lane = next(i for i, f in enumerate(proto.map_features) if f.HasField("lane") and len(f.lane.entry_lanes))
    f = proto.map_features[lane]
    assert m.kind[lane] == MapKind.LANE and m.subtype[lane] == f.lane.type
    assert m.speed_limit_mph[lane] == f.lane.speed_limit_mph
    assert m.entry_lanes(lane).tolist() == list(f.lane.entry_lanes)
    assert m.exit_lanes(lane).tolist() == list(f.lane.exit_lanes)
    assert m.polyline(lane).shape == (len(f.lane.polyline), 3)
    cw = int(m.indices_of(MapKind.CROSSWALK)[0])
    assert m.polyline(cw).shape[0] == len(proto.map_features[cw].crosswalk.polygon)
    non_lane = m.kind != MapKind.LANE
    assert np.isnan(m.speed_limit_mph[non_lane]).all()
    # Signals: step 10 in proto order.
    sig = s.signals
    step = proto.dynamic_map_states[10]
    cols = np.flatnonzero(sig.present[10])
    cols = cols[np.argsort(sig.order[10, cols])]
    assert sig.lane_id[cols].tolist() == [ls.lane for ls in step.lane_states]
    assert sig.state[10, cols].tolist() == [ls.state for ls in step.lane_states]
    assert int(sig.present.sum()) == sum(len(d.lane_states) for d in proto.dynamic_map_states)


def test_round_trip_real_is_exact(real):
    original = real_scenario()
    back = scene_to_scenario(real)
    expected = strip_unmodelled(original)
    diffs = proto_value_diffs(expected, back)
    assert diffs == [], diffs
    # ... and the round trip of the round trip is identical bytes.
    again = scene_to_scenario(scenario_to_scene(back.SerializeToString()))
    assert again.SerializeToString() == back.SerializeToString()
    # The only things dropped are the documented, unused lane boundary/neighbor fields.
    dropped = proto_value_diffs(original, back, limit=1000)
    assert dropped and all("boundaries" in d or "neighbors" in d for d in dropped)


def test_edited_positions_win_over_stale_doubles(real):
    scene = real.replace(agent_states=real.agent_states.copy())
    scene.agent_states[0, 0, STATE_X] += 1.0
    back = scene_to_scenario(scene)
    assert back.tracks[0].states[0].center_x == float(scene.agent_states[0, 0, STATE_X])
    assert back.tracks[0].states[1].center_x == real.agent_xyz_f64[0, 1, 0]  # untouched: exact


def test_in_memory_scene_round_trip():
    scene = tiny_scene()
    back = scenario_to_scene(scene_to_scenario(scene).SerializeToString())
    assert np.array_equal(back.agent_states, scene.agent_states)
    assert np.array_equal(back.agent_valid, scene.agent_valid)
    assert np.array_equal(back.map.points, scene.map.points)
    assert np.array_equal(back.map.kind, scene.map.kind)
    assert back.tracks_to_predict.tolist() == scene.tracks_to_predict.tolist()


def test_non_scenario_records_raise_named_error(real_submission_path):
    sub = Path(real_submission_path).read_bytes()  # a SimAgentsChallengeSubmission, not a Scenario
    with pytest.raises(ScenarioParseError, match="not a Scenario proto") as ei:
        scenario_to_scene(sub, source="f.tfrecord", index=3, offset=1234)
    assert "f.tfrecord: record 3 at byte offset 1234" in str(ei.value)
    assert (ei.value.path, ei.value.index, ei.value.offset) == ("f.tfrecord", 3, 1234)
    from waymo_open_dataset.protos import map_pb2

    # A different proto that happens to parse as a Scenario (MapPoint.x -> timestamps) but has no id.
    point = map_pb2.MapPoint(x=1.0, y=2.0, z=3.0).SerializeToString()
    with pytest.raises(ScenarioParseError, match="scenario_id is empty"):
        scenario_to_scene(point, source="p.tfrecord", index=0, offset=0)
    with pytest.raises(ScenarioParseError, match="not a Scenario proto"):
        scenario_to_scene(b"\xff\xff\xff\xff garbage", source="g.tfrecord", index=0, offset=0)
    from waymo_open_dataset.protos import scenario_pb2

    no_ts = scenario_pb2.Scenario(scenario_id="abc").SerializeToString()
    with pytest.raises(ScenarioParseError, match="timestamps_seconds is empty"):
        scenario_to_scene(no_ts)
    bad = real_scenario()
    del bad.tracks[0].states[5]
    with pytest.raises(ScenarioParseError, match=r"tracks\[0\]\.states: 90 states for 91 timestamps"):
        scenario_to_scene(bad)


def test_round_trip_synthetic_scenes():
    from smart_r1.data import synth
    for i in range(2):
        proto = synth.generate_scenario(0, i, synth.SynthConfig())
        back = scene_to_scenario(scenario_to_scene(proto.SerializeToString()))
        assert proto_value_diffs(strip_unmodelled(proto), back) == []
