"""Submission export / import: Rollouts -> validated, sharded SimAgentsChallengeSubmission protos
in a .tar.gz -> read back identical; invalid rollout sets are named and not packed."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from smart_r1.data.scene import N_STEP_WOMD, AgentType, MapData, Scene, TrafficSignals
from smart_r1.metrics.submission import (
    SubmissionMetadata,
    SubmissionValidationError,
    export_submission,
    iter_scenario_protos,
    load_rollouts,
    load_rollouts_npz,
    read_submission,
    read_submission_protos,
    rollouts_to_scenario_rollouts,
    save_rollouts_npz,
    scenario_rollouts_to_rollouts,
    shard_name,
    validate_rollouts,
)
from smart_r1.sim.rollouts import Rollouts

SID = "637f20cafde22ff8"
META = SubmissionMetadata(
    account_name="someone@example.com",
    unique_method_name="smart-r1-test",
    authors=["A. Author", "B. Author"],
    affiliation="smart-r1",
    description="test export",
    method_link="https://example.com/smart-r1",
    uses_lidar_data=False,
    uses_camera_data=False,
    uses_public_model_pretraining=False,
    num_model_parameters="7M",
    acknowledge_complies_with_closed_loop_requirement=True,
)


def synthetic_scene(sid: str, n_agent: int, seed: int) -> Scene:
    """A small in-memory scene (no map: only the agent sets matter for submissions)."""
    rng = np.random.default_rng(seed)
    states = np.zeros((n_agent, N_STEP_WOMD, 9), np.float32)  # [n_agent, 91, 9]
    states[..., :2] = rng.normal(0, 30, (n_agent, 1, 2)) + np.arange(N_STEP_WOMD)[None, :, None] * 0.5
    states[..., 6:9] = (4.5, 2.0, 1.6)
    valid = np.ones((n_agent, N_STEP_WOMD), bool)  # [n_agent, 91]
    valid[-1, 10] = False  # the last agent is not a sim agent
    ttp = np.zeros(n_agent, bool)
    ttp[1] = True
    return Scene(
        scenario_id=sid,
        timestamps_seconds=np.arange(N_STEP_WOMD) * 0.1,
        current_time_index=10,
        sdc_index=0,
        agent_id=np.arange(100, 100 + n_agent, dtype=np.int64),
        agent_type=np.full(n_agent, int(AgentType.VEHICLE), np.int8),
        agent_states=states,
        agent_valid=valid,
        tracks_to_predict=ttp,
        tracks_to_predict_difficulty=ttp.astype(np.int8),
        objects_of_interest=np.zeros(n_agent, bool),
        map=MapData.empty(),
        signals=TrafficSignals.empty(N_STEP_WOMD),
    )


def synthetic_rollouts(scene: Scene, seed: int, n_rollout: int = 32) -> Rollouts:
    rng = np.random.default_rng(seed)
    ids = scene.sim_agent_ids()  # [n_sim]
    traj = rng.normal(0, 10, (n_rollout, len(ids), 80, 4)).astype(np.float32)  # [n_rollout, n_sim, 80, 4]
    return Rollouts(scene.scenario_id, ids, traj)


@pytest.fixture(scope="module")
def real(real_scenario_path, real_submission_path):
    (scenario,) = list(iter_scenario_protos([real_scenario_path]))
    return scenario, read_submission(real_submission_path)[SID]


def test_proto_round_trip_is_exact(real):
    _, rollouts = real
    back = scenario_rollouts_to_rollouts(rollouts_to_scenario_rollouts(rollouts))
    assert back.scenario_id == SID
    np.testing.assert_array_equal(back.agent_id, rollouts.agent_id)
    np.testing.assert_array_equal(back.trajectories, rollouts.trajectories)


def test_read_shared_submission_matches_raw_proto(real_submission_path):
    (sub,) = read_submission_protos(real_submission_path)
    rollouts = read_submission(real_submission_path)[SID]
    joint = sub.scenario_rollouts[0].joint_scenes[7]
    t = joint.simulated_trajectories[3]
    a = int(np.flatnonzero(rollouts.agent_id == t.object_id)[0])
    np.testing.assert_array_equal(rollouts.trajectories[7, a, :, 0], np.asarray(t.center_x, np.float32))
    np.testing.assert_array_equal(rollouts.trajectories[7, a, :, 3], np.asarray(t.heading, np.float32))


def test_export_real_scene_round_trip(real, tmp_path):
    scenario, rollouts = real
    out = tmp_path / "sub.tar.gz"
    report = export_submission([(scenario, rollouts)], out, META)
    assert report.shard_names == ["submission.binproto-00000-of-00001"] and not report.invalid
    with tarfile.open(out) as tar:
        assert tar.getnames() == report.shard_names
    (shard,) = read_submission_protos(out)
    for field in ("account_name", "unique_method_name", "affiliation", "description", "method_link", "num_model_parameters"):
        assert getattr(shard, field) == getattr(META, field)
    assert list(shard.authors) == META.authors and shard.acknowledge_complies_with_closed_loop_requirement
    assert shard.submission_type == shard.SIM_AGENTS_SUBMISSION
    back = read_submission(out)[SID]
    np.testing.assert_array_equal(back.agent_id, rollouts.agent_id)
    np.testing.assert_array_equal(back.trajectories, rollouts.trajectories)
    validate_rollouts(back, scenario=scenario)  # official submission_specs included


def test_export_synthetic_shards_and_read_back_every_way(tmp_path):
    scenes = [synthetic_scene(f"synth_{k}", n_agent=5 + k, seed=k) for k in range(3)]
    rollouts = [synthetic_rollouts(s, seed=10 + k) for k, s in enumerate(scenes)]
    out = tmp_path / "sub.tar.gz"
    report = export_submission(list(zip(scenes, rollouts)), out, META, scenes_per_shard=2)
    assert report.shard_names == [shard_name(0, 2), shard_name(1, 2)] == [
        "submission.binproto-00000-of-00002",
        "submission.binproto-00001-of-00002",
    ]
    assert report.packed_scenario_ids == ["synth_0", "synth_1", "synth_2"]
    shard_dir = tmp_path / "shards"
    with tarfile.open(out) as tar:
        tar.extractall(shard_dir, filter="data")
    for source in (out, shard_dir, str(shard_dir / "submission.binproto-*")):
        back = read_submission(source)
        assert sorted(back) == ["synth_0", "synth_1", "synth_2"]
        for scene, r in zip(scenes, rollouts):
            np.testing.assert_array_equal(back[scene.scenario_id].agent_id, r.agent_id)
            np.testing.assert_array_equal(back[scene.scenario_id].trajectories, r.trajectories)
            validate_rollouts(back[scene.scenario_id], scene=scene)
    single = read_submission(shard_dir / shard_name(1, 2))
    assert list(single) == ["synth_2"]


def test_invalid_set_is_named_and_nothing_packed(tmp_path):
    scenes = [synthetic_scene(f"synth_{k}", n_agent=6, seed=k) for k in range(3)]
    rollouts = [synthetic_rollouts(s, seed=k) for k, s in enumerate(scenes)]
    rollouts[1].trajectories[4, 2, 17, 1] = np.nan  # agent id 102 of synth_1
    rollouts[2] = Rollouts("synth_2", rollouts[2].agent_id[1:], rollouts[2].trajectories[:, 1:])  # drops id 100
    out = tmp_path / "sub.tar.gz"
    with pytest.raises(SubmissionValidationError) as info:
        export_submission(list(zip(scenes, rollouts)), out, META)
    msg = str(info.value)
    assert "synth_1" in msg and "102" in msg and "synth_2" in msg and "missing sim agent ids [100]" in msg
    assert "synth_0" not in msg.split("nothing packed", 1)[1]
    assert not out.exists() and not list(tmp_path.iterdir())
    report = export_submission(list(zip(scenes, rollouts)), out, META, skip_invalid=True)
    assert report.packed_scenario_ids == ["synth_0"] and sorted(report.invalid) == ["synth_1", "synth_2"]
    assert list(read_submission(out)) == ["synth_0"]


def test_extra_agent_and_wrong_steps_named():
    scene = synthetic_scene("synth_x", n_agent=5, seed=3)
    r = synthetic_rollouts(scene, seed=1)
    extra = Rollouts(scene.scenario_id, np.append(r.agent_id, 104), np.concatenate([r.trajectories, r.trajectories[:, :1]], 1))
    with pytest.raises(SubmissionValidationError, match=r"extra agent ids \[104\]") as info:
        validate_rollouts(extra, scene=scene)  # 104 exists but is not valid at step 10
    assert info.value.extra_ids == [104] and "synth_x" in str(info.value)
    short = Rollouts(scene.scenario_id, r.agent_id, r.trajectories[:, :, :79])
    with pytest.raises(SubmissionValidationError, match="79 steps"):
        validate_rollouts(short, scene=scene)


def test_metadata_required(tmp_path):
    scene = synthetic_scene("synth_m", n_agent=4, seed=0)
    bad = SubmissionMetadata(account_name="", unique_method_name="")
    with pytest.raises(ValueError, match="account_name"):
        export_submission([(scene, synthetic_rollouts(scene, 0))], tmp_path / "x.tar.gz", bad)


def test_npz_round_trip(tmp_path):
    scene = synthetic_scene("synth_n", n_agent=4, seed=0)
    r = synthetic_rollouts(scene, 0)
    path = save_rollouts_npz(r, tmp_path / "r" / "synth_n.npz")
    back = load_rollouts_npz(path)
    assert back.scenario_id == "synth_n"
    np.testing.assert_array_equal(back.trajectories, r.trajectories)
    assert list(load_rollouts(tmp_path / "r")) == ["synth_n"]
    np.savez(tmp_path / "bad.npz", agent_id=r.agent_id)
    with pytest.raises(ValueError, match="scenario_id"):
        load_rollouts_npz(tmp_path / "bad.npz")


def test_corrupt_submission_named(tmp_path):
    bad = tmp_path / "submission.binproto-00000-of-00001"
    bad.write_bytes(b"\xff\xff\xff not a proto")
    with pytest.raises(ValueError, match="submission.binproto-00000-of-00001"):
        read_submission(bad)
    with pytest.raises(FileNotFoundError):
        read_submission(tmp_path / "nope.tar.gz")


def test_read_scenarios_paths_globs_dirs(real_scenario_path, tmp_path):
    """read_scenarios over smart_r1.data.scenario_io: files, globs, directories, lists, only_ids."""
    from smart_r1.metrics.submission import read_scenarios, write_scenarios_tfrecord

    (real_proto,) = list(iter_scenario_protos([real_scenario_path]))
    copies = []
    for k in range(3):
        c = type(real_proto)()
        c.CopyFrom(real_proto)
        c.scenario_id = f"copy_{k}"
        copies.append(c)
    write_scenarios_tfrecord(tmp_path / "d" / "a.tfrecord", copies[:2])
    write_scenarios_tfrecord(tmp_path / "d" / "b.tfrecord", copies[2:])
    assert sorted(read_scenarios(str(tmp_path / "d" / "*.tfrecord"))) == ["copy_0", "copy_1", "copy_2"]
    assert sorted(read_scenarios(str(tmp_path / "d"))) == ["copy_0", "copy_1", "copy_2"]
    assert list(read_scenarios(str(tmp_path / "d" / "a.tfrecord"), only_ids=["copy_1"])) == ["copy_1"]
    got = read_scenarios([str(real_scenario_path), str(tmp_path / "d" / "b.tfrecord")])
    assert sorted(got) == [SID, "copy_2"] and got[SID] == real_proto
    write_scenarios_tfrecord(tmp_path / "dup.tfrecord", copies[:1])
    with pytest.raises(ValueError, match="copy_0"):
        read_scenarios([str(tmp_path / "d" / "a.tfrecord"), str(tmp_path / "dup.tfrecord")])
    with pytest.raises((FileNotFoundError, ValueError)):
        read_scenarios(str(tmp_path / "nothing_*.tfrecord"))


def test_iter_scenario_protos_tfrecord_raw_and_errors(real_scenario_path, tmp_path):
    """TFRecord (plain, gzip) and single serialized Scenario files; bad input names file, record, offset."""
    from smart_r1.data.tfrecord import TFRecordCorruptError
    from smart_r1.metrics.submission import write_scenarios_tfrecord

    (real_proto,) = list(iter_scenario_protos([real_scenario_path]))
    raw = tmp_path / "one.binproto"
    raw.write_bytes(real_proto.SerializeToString())
    gz = write_scenarios_tfrecord(tmp_path / "two.tfrecord.gz", [real_proto, real_proto])
    assert gz.read_bytes()[:2] != b"\x1f\x8b"  # written uncompressed whatever the name
    got = list(iter_scenario_protos([raw, gz, real_scenario_path]))
    assert [p.scenario_id for p in got] == [SID] * 4 and got[0] == real_proto
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\xff\xff\xff not a proto")
    with pytest.raises(ValueError, match="garbage.bin: record 0"):
        list(iter_scenario_protos([garbage]))
    torn = tmp_path / "torn.tfrecord"
    torn.write_bytes(Path(real_scenario_path).read_bytes()[:-10])
    with pytest.raises(TFRecordCorruptError, match=r"torn.tfrecord: record 0 at byte offset 0"):
        list(iter_scenario_protos([torn]))
