"""Bad input against every command (issue 14's table, one test per row): a clear one-line error
naming the file / record / scenario / field / agent ids, exit 2 (or the right result), and no
traceback. Every bad file is generated here (nothing committed); commands run in-process
through `smart_r1.cli.main`, on two small synthetic scenes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from smart_r1.cli import main

REPO = Path(__file__).resolve().parents[2]
N_ROLLOUT = 32  # the official count: `score` checks it


def error_lines(text: str) -> list[str]:
    """The error lines a command printed (progress bars and warnings aside)."""
    return [line for line in text.splitlines() if line.startswith(("smart-r1", "error:"))]


def assert_one_line_error(captured, *needles: str) -> str:
    """Exactly one error line, naming every `needle`, and no traceback anywhere."""
    text = captured.out + captured.err
    assert "Traceback" not in text, text
    lines = [line for line in error_lines(captured.err) if "error" in line]
    assert len(lines) == 1, captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Two small synthetic scenes and bad variants of them, written as files."""
    from smart_r1.data.convert import scenario_to_scene
    from smart_r1.data.synth.config import SynthConfig
    from smart_r1.data.synth.generator import generate_scenario
    from smart_r1.data.tfrecord import write_records
    from smart_r1.metrics.submission import (
        SubmissionMetadata,
        build_submission,
        export_submission,
        rollouts_to_scenario_rollouts,
        write_scenarios_tfrecord,
    )
    from smart_r1.sim.baselines import get_baseline

    d = tmp_path_factory.mktemp("bad_inputs")
    good = [generate_scenario(0, i, SynthConfig(min_agents=4, max_agents=6)) for i in range(2)]
    write_scenarios_tfrecord(d / "good.tfrecord", good)
    # NaN position of a valid state of one track of scene 0
    nan = type(good[0])()
    nan.CopyFrom(good[0])
    track = next(t for t in nan.tracks if t.states[5].valid)
    track.states[5].center_x = math.nan
    write_scenarios_tfrecord(d / "nan.tfrecord", [nan, good[1]])
    # zero tracks
    zero = type(good[0])()
    zero.CopyFrom(good[0])
    del zero.tracks[:]
    del zero.tracks_to_predict[:]
    del zero.objects_of_interest[:]
    zero.sdc_track_index = 0
    write_scenarios_tfrecord(d / "zero.tfrecord", [zero])
    (d / "empty.tfrecord").write_bytes(b"")
    write_records(d / "not_scenarios.tfrecord", [b"hello world", b"\x08\x01"], compress=False)
    # submissions: constant-velocity rollouts of both scenes
    meta = SubmissionMetadata(account_name="me@example.com", unique_method_name="bad-inputs")
    constant_velocity = get_baseline("baseline:constant_velocity")
    rollouts = [constant_velocity(scenario_to_scene(s), N_ROLLOUT, 0) for s in good]
    export_submission(list(zip(good, rollouts)), d / "good_sub.tar.gz", meta)
    # agents missing in 3 of the 32 rollouts of scene 0
    protos = [rollouts_to_scenario_rollouts(r) for r in rollouts]
    dropped = int(protos[0].joint_scenes[3].simulated_trajectories[-1].object_id)
    for k in (3, 7, 9):
        del protos[0].joint_scenes[k].simulated_trajectories[-1]
    (d / "missing_agents.binproto").write_bytes(build_submission(protos, meta).SerializeToString())
    (d / "garbage.binproto").write_bytes(b"\xff\xfe this is not a proto" * 8)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(d / "picture.png")
    return {
        "dir": d,
        "ids": [str(s.scenario_id) for s in good],
        "nan_track_id": int(track.id),
        "dropped_id": dropped,
    }


# ----- NaN positions -----


def test_score_fast_nan_scene_exit_2_naming_record_scene_field_agent(bad, capsys):
    d = bad["dir"]
    rc = main(["score", "--backend", "fast", "--scenes", str(d / "nan.tfrecord"), "--submission", str(d / "good_sub.tar.gz")])
    assert rc == 2
    line = assert_one_line_error(capsys.readouterr(), "nan.tfrecord", "record 0", bad["ids"][0], "tracks.states",
                                 str(bad["nan_track_id"]))
    assert "NaN" in line


def test_fast_and_official_backends_refuse_nan_inputs(bad):
    """The guard inside the backends: a NaN reaches no metric (a named error, not a number)."""
    from smart_r1.data.scenario_io import iter_scenes
    from smart_r1.errors import NonFiniteInputError
    from smart_r1.metrics.base import get_backend
    from smart_r1.metrics.submission import read_scenarios, read_submission

    d = bad["dir"]
    sid = bad["ids"][0]
    scene = next(iter(iter_scenes(str(d / "nan.tfrecord"))))
    rollouts = read_submission(d / "good_sub.tar.gz")[sid]
    with pytest.raises(NonFiniteInputError, match=str(bad["nan_track_id"])):
        get_backend("fast").score(scene, rollouts)
    bad_rollouts = type(rollouts)(rollouts.scenario_id, rollouts.agent_id, rollouts.trajectories.copy())
    bad_rollouts.trajectories[0, 1, 4, 0] = np.inf
    with pytest.raises(NonFiniteInputError, match=str(int(rollouts.agent_id[1]))):
        get_backend("fast").score(next(iter(iter_scenes(str(d / "good.tfrecord")))), bad_rollouts)
    official = get_backend("official")
    try:  # prepare() runs every check before the TensorFlow worker is started
        with pytest.raises(NonFiniteInputError, match=str(bad["nan_track_id"])):
            official.prepare(None, rollouts, scenario_proto=read_scenarios(str(d / "nan.tfrecord"))[sid])
        assert not official._worker.alive()
    finally:
        official.close()


def test_evaluate_never_stores_an_errored_scene_and_a_rerun_retries_it(bad, tmp_path, capsys):
    import pyarrow.parquet as pq

    d = bad["dir"]
    args = ["evaluate", "--checkpoint", "baseline:constant_velocity", "--scenes", str(d / "nan.tfrecord"),
            "--num-rollouts", "2", "--out", str(tmp_path / "eval"), "--no-report", "--quiet"]
    assert main(args) == 1  # one scene failed, the other scored
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"on {bad['ids'][0]}" in err and str(bad["nan_track_id"]) in err
    stored = pq.read_table(tmp_path / "eval" / "scores.parquet").to_pydict()
    assert stored["scenario_id"] == [bad["ids"][1]]
    assert all(np.isfinite(stored["metametric"]))
    assert main(args) == 1  # rerun: the good scene is skipped, the bad one tried again
    err = capsys.readouterr().err
    assert "scored 0 scene x model pair(s), skipped 1" in err and f"on {bad['ids'][0]}" in err


def test_render_nan_scene_exit_2(bad, tmp_path, capsys):
    rc = main(["render", "--scene", str(bad["dir"] / "nan.tfrecord"), "--out", str(tmp_path / "r"), "--no-gif"])
    assert rc == 2
    assert_one_line_error(capsys.readouterr(), "nan.tfrecord", "record 0", bad["ids"][0], "tracks.states",
                          str(bad["nan_track_id"]))
    assert not (tmp_path / "r").exists()


def test_simulate_nan_scene_fails_before_any_work(bad, tmp_path, capsys):
    """The scenes are checked before the checkpoint is even read (a PNG here: had it been read
    first, its error would show), so nothing is rolled out."""
    d = bad["dir"]
    rc = main(["simulate", "--scenes", str(d / "nan.tfrecord"), "--checkpoint", str(d / "picture.png"),
               "--out", str(tmp_path / "sub.tar.gz")])
    assert rc == 2
    assert_one_line_error(capsys.readouterr(), "nan.tfrecord", "record 0", bad["ids"][0], str(bad["nan_track_id"]))
    assert not (tmp_path / "sub.tar.gz").exists()


def test_train_on_a_nan_scene_fails_before_vocab_and_model(bad, tmp_path, capsys):
    rc = main(["train", "--config", str(REPO / "configs" / "tiny_test.yaml"), "--set", f"data.glob={bad['dir'] / 'nan.tfrecord'}",
               "--set", "data.synthetic=null", "--set", "tracking.enabled=false", "--out", str(tmp_path / "run")])
    assert rc == 2
    assert_one_line_error(capsys.readouterr(), "nan.tfrecord", "record 0", bad["ids"][0], "tracks.states", str(bad["nan_track_id"]))
    assert not (tmp_path / "run" / "vocab").exists() and not (tmp_path / "run" / "checkpoints").exists()


# ----- zero tracks -----


def test_simulate_zero_tracks_exit_2(bad, tmp_path, capsys):
    d = bad["dir"]
    rc = main(["simulate", "--scenes", str(d / "zero.tfrecord"), "--checkpoint", str(d / "picture.png"),
               "--out", str(tmp_path / "sub.tar.gz")])
    assert rc == 2
    assert_one_line_error(capsys.readouterr(), "zero.tfrecord", "record 0", bad["ids"][0], "field tracks", "zero agents")


def test_preprocess_zero_tracks_is_not_cached(bad, tmp_path, capsys):
    rc = main(["data", "preprocess", "--input", str(bad["dir"] / "zero.tfrecord"), "--out", str(tmp_path / "cache"),
               "--num-workers", "0"])
    assert rc == 2
    assert_one_line_error(capsys.readouterr(), "zero.tfrecord", "record 0", "zero agents")
    assert not list((tmp_path / "cache").glob("*.parquet"))


# ----- empty file -----


def test_inspect_empty_file_exit_2(bad, capsys):
    assert main(["data", "inspect", str(bad["dir"] / "empty.tfrecord")]) == 2
    assert_one_line_error(capsys.readouterr(), "empty.tfrecord", "no records")


def test_preprocess_empty_file_exit_2(bad, tmp_path, capsys):
    rc = main(["data", "preprocess", "--input", str(bad["dir"] / "empty.tfrecord"), "--out", str(tmp_path / "c"),
               "--num-workers", "0"])
    assert rc == 2
    assert_one_line_error(capsys.readouterr(), "empty.tfrecord", "no records")


@pytest.mark.parametrize("command", ["score", "simulate", "evaluate", "render"])
def test_commands_that_must_produce_something_refuse_an_empty_input(bad, tmp_path, capsys, command):
    d = bad["dir"]
    empty = str(d / "empty.tfrecord")
    argv = {
        "score": ["score", "--backend", "fast", "--scenes", empty, "--submission", str(d / "good_sub.tar.gz")],
        "simulate": ["simulate", "--scenes", empty, "--checkpoint", str(d / "picture.png"), "--out", str(tmp_path / "s.tar.gz")],
        "evaluate": ["evaluate", "--checkpoint", "baseline:constant_velocity", "--scenes", empty, "--num-rollouts", "2",
                     "--out", str(tmp_path / "e"), "--no-report", "--quiet"],
        "render": ["render", "--scene", empty, "--out", str(tmp_path / "r")],
    }[command]
    assert main(argv) == 2
    assert_one_line_error(capsys.readouterr(), "empty.tfrecord")


# ----- records that are not Scenarios -----


def test_score_records_not_scenarios_exit_2(bad, capsys):
    d = bad["dir"]
    rc = main(["score", "--backend", "fast", "--scenes", str(d / "not_scenarios.tfrecord"), "--submission", str(d / "good_sub.tar.gz")])
    assert rc == 2
    assert_one_line_error(capsys.readouterr(), "not_scenarios.tfrecord", "record 0", "byte offset 0", "not a Scenario")


def test_render_records_not_scenarios_exit_2(bad, tmp_path, capsys):
    rc = main(["render", "--scene", str(bad["dir"] / "not_scenarios.tfrecord"), "--out", str(tmp_path / "r")])
    assert rc == 2
    assert_one_line_error(capsys.readouterr(), "not_scenarios.tfrecord", "record 0", "not a Scenario")


# ----- agents missing in 3 of 32 rollouts -----


def test_score_skip_invalid_skips_exactly_the_inconsistent_scene(bad, tmp_path, capsys):
    d = bad["dir"]
    sub = str(d / "missing_agents.binproto")
    base = ["score", "--backend", "fast", "--scenes", str(d / "good.tfrecord"), "--submission", sub]
    assert main(base) == 2
    assert_one_line_error(capsys.readouterr(), "missing_agents.binproto", bad["ids"][0], "joint scene 3", str(bad["dropped_id"]))

    out = tmp_path / "scores.json"
    assert main(base + ["--skip-invalid", "--json", str(out)]) == 1  # scored, with scenes left out
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"skipped 1 invalid" in captured.err and bad["ids"][0] in captured.err
    result = json.loads(out.read_text())
    assert list(result["per_scene"]) == [bad["ids"][1]]  # the valid scene is scored ...
    assert list(result["invalid"]) == [bad["ids"][0]]  # ... exactly the inconsistent one is not
    assert f"| {bad['ids'][1]} |" in captured.out and f"| {bad['ids'][0]} |" not in captured.out


# ----- garbage or missing submission -----


@pytest.mark.parametrize("name, needle", [("garbage.binproto", "not a SimAgentsChallengeSubmission"), ("nothere.binproto", "no such file")])
def test_score_garbage_or_missing_submission_exit_2(bad, capsys, name, needle):
    d = bad["dir"]
    rc = main(["score", "--backend", "fast", "--scenes", str(d / "good.tfrecord"), "--submission", str(d / name)])
    assert rc == 2
    assert_one_line_error(capsys.readouterr(), name, needle)


# ----- nonexistent scene, unknown --scenario-id -----


def test_render_nonexistent_scene_file_exit_2(bad, tmp_path, capsys):
    assert main(["render", "--scene", str(bad["dir"] / "nothere.tfrecord"), "--out", str(tmp_path / "r")]) == 2
    assert_one_line_error(capsys.readouterr(), "nothere.tfrecord", "no such file")


def test_render_unknown_scenario_id_exit_2(bad, tmp_path, capsys):
    rc = main(["render", "--scene", str(bad["dir"] / "good.tfrecord"), "--scenario-id", "no-such-id", "--out", str(tmp_path / "r")])
    assert rc == 2
    assert_one_line_error(capsys.readouterr(), "good.tfrecord", "'no-such-id'", bad["ids"][0])


# ----- a PNG as --checkpoint -----


def test_simulate_png_checkpoint_exit_2(bad, tmp_path, capsys):
    d = bad["dir"]
    rc = main(["simulate", "--scenes", str(d / "good.tfrecord"), "--checkpoint", str(d / "picture.png"),
               "--out", str(tmp_path / "sub.tar.gz")])
    assert rc == 2
    assert_one_line_error(capsys.readouterr(), "picture.png", "checkpoint")


# ----- config errors at load time -----


def test_train_preset_typo_fails_at_print_config(capsys):
    rc = main(["train", "--config", str(REPO / "configs" / "tiny_test.yaml"), "--set", "model.preset=cpu-demoo", "--print-config"])
    assert rc == 2
    line = assert_one_line_error(capsys.readouterr(), "model.preset", "'cpu-demoo'", "'cpu-demo'")
    assert "allowed" in line


@pytest.mark.parametrize(
    "override, needles",
    [
        ("vocab.size=-5", ("vocab.size", "-5")),
        ("stages.0.lr=0", ("stages[0].lr", "> 0")),
        ("eval.sampler=topkk", ("eval.sampler", "'topk'")),
        ("eval.backend=fasst", ("eval.backend", "'fast'", "'official'")),
        ("stages.0.objective=bcc", ("stages[0].objective", "'bc'")),
    ],
)
def test_train_config_errors_at_load_time(capsys, override, needles):
    rc = main(["train", "--config", str(REPO / "configs" / "tiny_test.yaml"), "--set", override, "--print-config"])
    assert rc == 2
    assert_one_line_error(capsys.readouterr(), *needles)


def test_reward_mode_typo_is_a_config_error():
    from smart_r1.train.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"stages\[2\]\.params.*'leave_one_out'"):
        load_config(REPO / "configs" / "cpu_demo.yaml", ["stages.2.params.reward=rolout"])


# ----- read-only output directory -----


def test_preprocess_unwritable_output_exit_2(bad, tmp_path, capsys):
    import os
    import stat

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    out = locked / "cache"
    if os.access(locked, os.W_OK):  # root ignores the mode bits: a path under a file is unwritable for anyone
        (tmp_path / "a_file").write_text("")
        out = tmp_path / "a_file" / "cache"
    try:
        rc = main(["data", "preprocess", "--input", str(bad["dir"] / "good.tfrecord"), "--out", str(out), "--num-workers", "0"])
    finally:
        locked.chmod(stat.S_IRWXU)
    assert rc == 2
    assert_one_line_error(capsys.readouterr(), str(out.parent))


# ----- --debug -----


def test_debug_flag_shows_the_traceback(bad, tmp_path):
    from smart_r1.data.scene import SceneValidationError

    with pytest.raises(SceneValidationError, match="NaN"):
        main(["render", "--scene", str(bad["dir"] / "nan.tfrecord"), "--out", str(tmp_path / "r"), "--debug"])


# ----- missing map -----


def test_train_with_an_rl_stage_on_a_mapless_scene_fails_before_the_first_step(bad, tmp_path, capsys):
    """Training accepts map-less scenes (bc / catk need no map), but an RL stage's realism reward
    needs road edges: the run must stop before any step, naming the scene and the field."""
    from smart_r1.data.scenario_io import read_scenario_protos
    from smart_r1.metrics.submission import write_scenarios_tfrecord

    scenarios = list(read_scenario_protos(str(bad["dir"] / "good.tfrecord")))
    del scenarios[0].map_features[:]
    for s in scenarios:  # traffic-light states refer to lanes of the map
        for state in s.dynamic_map_states:
            del state.lane_states[:]
    write_scenarios_tfrecord(tmp_path / "no_map.tfrecord", scenarios)
    rc = main(["train", "--config", str(REPO / "configs" / "tiny_test.yaml"), "--set", f"data.glob={tmp_path / 'no_map.tfrecord'}",
               "--set", "data.synthetic=null", "--set", "tracking.enabled=false", "--out", str(tmp_path / "run")])
    assert rc == 2
    assert_one_line_error(capsys.readouterr(), "map_features", bad["ids"][0], "no_map.tfrecord", "rft")
    assert not (tmp_path / "run" / "checkpoints").exists()
