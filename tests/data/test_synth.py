"""Synthetic WOMD scenes: determinism, official proto/agent-set acceptance, layouts, agents,
signals, kinematic consistency, shards and the CLI. (Clean-log rates: test_synth_quality.py.)"""

from __future__ import annotations

import collections
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from waymo_open_dataset.protos import scenario_pb2
from waymo_open_dataset.utils.sim_agents import submission_specs

from smart_r1.data.convert import scenario_to_scene
from smart_r1.data.scene import AgentType, SignalState
from smart_r1.data.synth import LAYOUTS, SynthConfig, generate_scenario, shard_name, write_synthetic_dataset
from smart_r1.data.synth.generator import _rng, choose_layout, simulate
from smart_r1.data.tfrecord import iter_records

SIM = submission_specs.ChallengeType.SIM_AGENTS
SMALL = SynthConfig(min_agents=8, max_agents=40)


def only(layout: str, **kw) -> SynthConfig:
    return SynthConfig(layout_weights={layout: 1.0}, **kw)


@pytest.fixture(scope="module")
def scenes() -> list[scenario_pb2.Scenario]:
    """Eight default-ish scenes, parsed back from bytes (what a reader sees)."""
    return [scenario_pb2.Scenario.FromString(generate_scenario(11, i, SMALL).SerializeToString()) for i in range(8)]


def test_deterministic_per_seed_and_index():
    a = generate_scenario(5, 3, SMALL).SerializeToString()
    assert a == generate_scenario(5, 3, SMALL).SerializeToString()
    b = generate_scenario(5, 4, SMALL)
    c = generate_scenario(6, 3, SMALL)
    assert b.SerializeToString() != a and c.SerializeToString() != a
    ids = {generate_scenario(5, i, SMALL).scenario_id for i in range(3)} | {c.scenario_id}
    assert len(ids) == 4


def test_deterministic_across_processes():
    code = (
        "import hashlib; from smart_r1.data.synth import SynthConfig, generate_scenario; "
        "print(hashlib.sha256(generate_scenario(9, 2, SynthConfig(max_agents=24)).SerializeToString()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}  # a different str-hash seed than this process
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    here = hashlib.sha256(generate_scenario(9, 2, SynthConfig(max_agents=24)).SerializeToString()).hexdigest()
    assert out.stdout.strip() == here


def test_womd_structure_and_official_agent_sets(scenes):
    for sc in scenes:
        assert len(sc.timestamps_seconds) == 91 and sc.current_time_index == 10
        assert np.allclose(np.diff(sc.timestamps_seconds), 0.1)
        assert len(sc.dynamic_map_states) == 91
        assert all(len(t.states) == 91 for t in sc.tracks)
        assert len({t.id for t in sc.tracks}) == len(sc.tracks)
        sim_ids = submission_specs.get_sim_agent_ids(sc, SIM)
        eval_ids = submission_specs.get_evaluation_sim_agent_ids(sc, SIM)
        sdc = sc.tracks[sc.sdc_track_index]
        assert sdc.object_type == AgentType.VEHICLE and sdc.id in eval_ids
        assert set(eval_ids) <= set(sim_ids) and len(sim_ids) >= 2
        assert 2 <= len(sc.tracks_to_predict) <= 8
        for r in sc.tracks_to_predict:
            tr = sc.tracks[r.track_index]
            assert tr.states[10].valid and tr.object_type in (AgentType.VEHICLE, AgentType.CYCLIST)
        assert set(sc.objects_of_interest) <= {t.id for t in sc.tracks}
        # the project's loader accepts it
        scene = scenario_to_scene(sc).validate()
        assert scene.n_agent == len(sc.tracks)


def test_official_converter_accepts_scenes(scenes):
    """`converters.scenario_to_joint_scene` (TensorFlow: ~30 s to import and warm up here)."""
    from waymo_open_dataset.utils.sim_agents import converters

    for sc in scenes[:3]:
        joint = converters.scenario_to_joint_scene(sc, SIM)
        sim_ids = submission_specs.get_sim_agent_ids(sc, SIM)
        assert sorted(t.object_id for t in joint.simulated_trajectories) == sorted(sim_ids)
        assert all(len(t.center_x) == 80 for t in joint.simulated_trajectories)
        submission_specs.validate_joint_scene(joint, sc, SIM)


def test_every_layout_appears_over_a_few_seeds():
    seen = {choose_layout(_rng(0, i), SynthConfig()) for i in range(16)}
    assert seen == {"straight", "curved", "intersection", "t_junction"}  # the small profile's families
    womd = SynthConfig.from_profile("womd")
    seen = {choose_layout(_rng(0, i), womd) for i in range(40)}
    assert seen == set(LAYOUTS) == {"straight", "curved", "intersection", "t_junction", "grid", "roundabout", "on_ramp"}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_map_content(layout):
    sc = generate_scenario(2, 0, only(layout, min_agents=16, max_agents=24))
    kinds = collections.Counter(mf.WhichOneof("feature_data") for mf in sc.map_features)
    assert kinds["lane"] >= 2 and kinds["road_line"] >= 1 and kinds["road_edge"] >= 2
    lanes = {mf.id: mf.lane for mf in sc.map_features if mf.HasField("lane")}
    for lid, lane in lanes.items():
        assert lane.type == 2 and lane.speed_limit_mph > 0 and len(lane.polyline) >= 2
        for e in lane.exit_lanes:  # connectivity is consistent both ways and geometrically joined
            assert lid in lanes[e].entry_lanes
            a, b = lane.polyline[-1], lanes[e].polyline[0]
            assert np.hypot(a.x - b.x, a.y - b.y) < 0.05
    n_states = sum(len(d.lane_states) for d in sc.dynamic_map_states)
    if layout == "grid":  # 2-3 junctions: routes pass several connectors (entry/exit chains)
        interp = {lid for lid, lane in lanes.items() if lane.interpolating}
        def max_junctions(lid, seen=0):
            here = seen + (lid in interp)
            return max([here] + [max_junctions(e, here) for e in lanes[lid].exit_lanes])
        assert max(max_junctions(lid) for lid in lanes if not lanes[lid].entry_lanes) >= 2
    elif layout == "roundabout":  # every movement circles the island: connectors much longer than the approach width
        turns = [lane for lane in lanes.values() if lane.interpolating]
        assert len(turns) >= 6 and kinds["road_edge"] >= 4
    elif layout == "on_ramp":  # two connectors (main road, ramp taper) run into the same lane
        merge = collections.Counter(e for lane in lanes.values() if lane.interpolating for e in lane.exit_lanes)
        assert max(merge.values()) == 2 and n_states == 0
    elif layout == "intersection":
        assert n_states > 0 and kinds["crosswalk"] >= 1
        turns = [lane for lane in lanes.values() if lane.interpolating]
        assert len(turns) >= 8  # left / straight / right connectors through the junction
    elif layout != "grid":
        assert n_states == 0
    if layout == "t_junction":
        assert kinds["stop_sign"] == 1 and kinds["crosswalk"] >= 1
        stop = next(mf.stop_sign for mf in sc.map_features if mf.HasField("stop_sign"))
        assert stop.lane and all(lid in lanes for lid in stop.lane)
    if layout == "curved":
        pts = max(lanes.values(), key=lambda ln: len(ln.polyline)).polyline
        h = np.unwrap(np.arctan2(np.diff([p.y for p in pts]), np.diff([p.x for p in pts])))
        assert np.ptp(h) > 0.3  # it really bends


def test_parked_vehicles_on_corridors():
    cfg = SynthConfig(layout_weights={"straight": 1.0, "curved": 1.0}, min_agents=24, max_agents=40)
    parked = 0
    for i in range(6):
        for t in generate_scenario(13, i, cfg).tracks:
            if t.object_type == AgentType.VEHICLE and all(s.valid for s in t.states):
                xy = np.array([[s.center_x, s.center_y] for s in t.states])
                parked += bool(np.ptp(xy, axis=0).max() == 0.0 and all(s.velocity_x == s.velocity_y == 0 for s in t.states))
    assert parked >= 3


def test_agent_counts_within_config():
    for lo, hi in ((8, 12), (20, 40)):
        cfg = SynthConfig(min_agents=lo, max_agents=hi)
        for i in range(4):
            sc = generate_scenario(7, i, cfg)
            assert lo <= len(sc.tracks) <= hi, (lo, hi, len(sc.tracks))
            assert 2 <= len(sc.tracks_to_predict) <= 8
    sc = generate_scenario(7, 0, SynthConfig(min_agents=128, max_agents=128))
    assert len(sc.tracks) == 128


def test_three_agent_types_and_box_sizes(scenes):
    with_all = 0
    for sc in scenes:
        types = collections.Counter(t.object_type for t in sc.tracks)
        with_all += all(types[k] > 0 for k in (AgentType.VEHICLE, AgentType.PEDESTRIAN, AgentType.CYCLIST))
        for t in sc.tracks:
            st = next(s for s in t.states if s.valid)
            if t.object_type == AgentType.VEHICLE:
                assert 3.9 <= st.length <= 7.6 and 1.7 <= st.width <= 2.6
            elif t.object_type == AgentType.PEDESTRIAN:
                assert 0.4 <= st.length <= 1.0 and 0.4 <= st.width <= 1.0
            else:
                assert 1.5 <= st.length <= 2.1 and 0.5 <= st.width <= 0.9
    assert with_all >= 6, with_all


def test_agents_enter_and_leave_view(scenes):
    entering = leaving = 0
    for sc in scenes:
        for t in sc.tracks:
            v = np.array([s.valid for s in t.states])
            entering += (not v[0]) and v.any()
            leaving += v[0] and (not v[-1])
            first, last = np.flatnonzero(v)[[0, -1]]
            assert v[first : last + 1].all()  # one contiguous visible interval
    assert entering > 0 and leaving > 0


def test_kinematics_consistent(scenes):
    """Velocity matches the finite-difference motion; heading matches the motion direction."""
    for sc in scenes:
        scene = scenario_to_scene(sc)
        xy, h = scene.xy, scene.heading  # [n, 91, 2], [n, 91]
        vel = scene.agent_states[..., 4:6]
        ok = scene.agent_valid[:, 1:] & scene.agent_valid[:, :-1]  # [n, 90]
        disp = (xy[:, 1:] - xy[:, :-1]) / 0.1  # [n, 90, 2]
        vmid = 0.5 * (vel[:, 1:] + vel[:, :-1])
        err = np.linalg.norm(disp - vmid, axis=-1)[ok]
        assert np.percentile(err, 99) < 0.3 and err.max() < 1.0
        fast = ok & (np.linalg.norm(disp, axis=-1) > 2.0)
        ang = np.arctan2(disp[..., 1], disp[..., 0])
        dh = np.abs((ang - 0.5 * (h[:, 1:] + h[:, :-1]) + np.pi) % (2 * np.pi) - np.pi)[fast]
        assert np.percentile(dh, 99) < 0.15
        # boxes sit on the map surface: bottom z near the lane z underneath (gentle slopes)
        lanes = scene.map.points
        z_bottom = scene.agent_states[..., 2] - scene.agent_states[..., 8] / 2
        veh = scene.agent_valid[:, 10] & (scene.agent_type == AgentType.VEHICLE)
        for r in np.flatnonzero(veh)[:5]:
            d = np.linalg.norm(lanes[:, :2] - xy[r, 10][None], axis=1)
            assert abs(lanes[d.argmin(), 2] - z_bottom[r, 10]) < 0.3


def test_signal_states_cycle_and_are_consistent():
    changes = 0
    for i in range(4):
        cfg = only("intersection", min_agents=10, max_agents=16)
        rm, log, _ = simulate(3, i, cfg)
        sc = generate_scenario(3, i, cfg)
        states = np.array([[ls.state for ls in d.lane_states] for d in sc.dynamic_map_states])  # [91, n_lane]
        lane_ids = [ls.lane for ls in sc.dynamic_map_states[0].lane_states]
        assert states.shape == (91, len(lane_ids)) and len(lane_ids) >= 8
        assert set(np.unique(states)) <= {SignalState.STOP, SignalState.CAUTION, SignalState.GO}
        # transitions follow GO -> CAUTION -> STOP -> GO
        prev, nxt = states[:-1], states[1:]
        moved = prev != nxt
        allowed = {(SignalState.GO, SignalState.CAUTION), (SignalState.CAUTION, SignalState.STOP), (SignalState.STOP, SignalState.GO)}
        assert all((int(a), int(b)) in allowed for a, b in zip(prev[moved], nxt[moved]))
        changes += int(moved.any())
        # conflicting movements are never both allowed to go at the same step
        col = {lid: k for k, lid in enumerate(lane_ids)}
        go = states != SignalState.STOP  # [91, n_lane]
        conf = rm.conflicts
        for a, ca in enumerate(rm.connectors):
            for b, cb in enumerate(rm.connectors):
                if conf[a, b] and ca.signal_group != cb.signal_group and ca.lane_id in col and cb.lane_id in col:
                    assert not (go[:, col[ca.lane_id]] & go[:, col[cb.lane_id]]).any()
        # the stop point is the start of the controlled lane
        lanes = {mf.id: mf.lane for mf in sc.map_features if mf.HasField("lane")}
        ls = sc.dynamic_map_states[0].lane_states[0]
        p0 = lanes[ls.lane].polyline[0]
        assert np.hypot(p0.x - ls.stop_point.x, p0.y - ls.stop_point.y) < 1e-6
    assert changes >= 2


def test_write_synthetic_dataset_shards(tmp_path):
    paths = write_synthetic_dataset(tmp_path / "a", num_scenes=5, seed=4, num_shards=2, progress=False, max_agents=16)
    assert [p.name for p in paths] == [shard_name("training", 0, 2), shard_name("training", 1, 2)]
    assert paths[0].name == "training.tfrecord-00000-of-00002"
    recs = [r.data for p in paths for r in iter_records(str(p))]
    assert len(recs) == 5
    ids = [scenario_pb2.Scenario.FromString(r).scenario_id for r in recs]
    assert len(set(ids)) == 5
    assert recs[0] == generate_scenario(4, 0, SynthConfig(max_agents=16)).SerializeToString()
    again = write_synthetic_dataset(tmp_path / "b", num_scenes=5, seed=4, num_shards=2, progress=False, max_agents=16)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]
    with pytest.raises(TypeError, match="unknown option"):
        write_synthetic_dataset(tmp_path / "c", 1, 0, bogus=1)
    with pytest.raises(ValueError, match="num_shards"):
        write_synthetic_dataset(tmp_path / "c", 2, 0, num_shards=3)


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="min_agents"):
        SynthConfig(min_agents=10, max_agents=5)
    with pytest.raises(KeyError, match="unknown layout"):
        generate_scenario(0, 0, SynthConfig(layout_weights={"cloverleaf": 1.0}))


def test_cli_data_synth(tmp_path, capsys):
    from smart_r1 import cli
    code = cli.main(["data", "synth", "--out", str(tmp_path), "--num-scenes", "3", "--seed", "1", "--shards", "1",
                     "--min-agents", "8", "--max-agents", "12"])
    assert code == 0
    files = sorted(tmp_path.glob("training.tfrecord-*"))
    assert [f.name for f in files] == ["training.tfrecord-00000-of-00001"]
    recs = [scenario_pb2.Scenario.FromString(r.data) for r in iter_records(str(files[0]))]
    assert len(recs) == 3 and all(8 <= len(s.tracks) <= 12 for s in recs)
