"""`smart-r1 score` and `smart-r1 export-submission` end to end, plus the leaderboard table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from smart_r1.cli import main
from smart_r1.metrics.base import LIKELIHOOD_FIELDS, SceneScores, aggregate
from smart_r1.metrics.leaderboard import COLUMNS, leaderboard_table
from smart_r1.metrics.submission import (
    SubmissionMetadata,
    build_submission,
    iter_scenario_protos,
    read_submission,
    save_rollouts_npz,
    validate_rollouts,
    write_scenarios_tfrecord,
)
from smart_r1.sim.rollouts import Rollouts

TESTS = Path(__file__).resolve().parents[1]
OFFICIAL_REAL = TESTS / "fixtures" / "metrics" / "official_real_scene_submission.json"
OFFICIAL_SMALL = TESTS / "fixtures" / "metrics" / "official_small_scene.json"
SID = "637f20cafde22ff8"
META = SubmissionMetadata(account_name="me@example.com", unique_method_name="cli-test")


def _small_case(scenario_path, submission_path):
    sys.path.insert(0, str(TESTS / "metrics"))
    try:
        from test_official_small import small_case
    finally:
        sys.path.remove(str(TESTS / "metrics"))
    return small_case(scenario_path, submission_path)


# ----- leaderboard table -----


def _scores(sid: str, base: float) -> SceneScores:
    return SceneScores(
        scenario_id=sid,
        metametric=base,
        likelihoods={n: base + 0.01 * k for k, n in enumerate(LIKELIHOOD_FIELDS)},
        min_average_displacement_error=1.5,
        average_displacement_error=2.0,
        simulated_collision_rate=0.25,
        simulated_offroad_rate=0.0,
        simulated_traffic_light_violation_rate=0.0,
    )


def test_leaderboard_table_markdown_and_rich():
    scores = [_scores("a", 0.5), _scores("b", 0.7)]
    rows = {s.scenario_id: s.as_flat_dict() for s in scores}
    rows["aggregate"] = aggregate(scores)
    text = leaderboard_table(rows)
    lines = text.splitlines()
    assert lines[0].startswith("| Scene | Realism meta | Kinematic | Interactive | Map-based | Lin. speed")
    assert lines[0].rstrip().endswith("minADE (m) |")
    assert len(lines) == 2 + 3 and all(line.count("|") == len(COLUMNS) + 2 for line in lines)
    assert "| aggregate | 0.6000 |" in text and "| a | 0.5000 |" in text
    kin = scores[0].groups()["kinematic_metrics"]
    assert f"{kin:.4f}" in lines[2]
    rich_text = leaderboard_table(rows, fmt="rich", title="t")
    assert "Realism meta" in rich_text and "0.6000" in rich_text
    partial = leaderboard_table({"x": {"metametric": 0.1}})
    assert "| x | 0.1000 | - |" in partial
    with pytest.raises(ValueError):
        leaderboard_table({})


# ----- export-submission -----


def test_export_cli_npz_round_trip(real_scenario_path, real_submission_path, tmp_path, capsys):
    rollouts = read_submission(real_submission_path)[SID]
    save_rollouts_npz(rollouts, tmp_path / "rollouts" / f"{SID}.npz")
    out = tmp_path / "sub.tar.gz"
    code = main(
        [
            "export-submission",
            "--scenes", str(real_scenario_path),
            "--rollouts", str(tmp_path / "rollouts"),
            "--out", str(out),
            "--account", "me@example.com",
            "--method", "smart-r1-cli",
            "--authors", "A", "B",
            "--num-model-parameters", "7M",
        ]
    )  # fmt: skip
    assert code == 0
    assert "submission.binproto-00000-of-00001" in capsys.readouterr().out
    back = read_submission(out)[SID]
    np.testing.assert_array_equal(back.trajectories, rollouts.trajectories)
    np.testing.assert_array_equal(back.agent_id, rollouts.agent_id)
    (scenario,) = list(iter_scenario_protos([real_scenario_path]))
    validate_rollouts(back, scenario=scenario)
    # An existing submission works as --rollouts too.
    code = main(["export-submission", "--scenes", str(real_scenario_path), "--rollouts", str(real_submission_path),
                 "--out", str(tmp_path / "again.tar.gz"), "--account", "a", "--method", "m"])  # fmt: skip
    assert code == 0
    np.testing.assert_array_equal(read_submission(tmp_path / "again.tar.gz")[SID].trajectories, rollouts.trajectories)


def test_export_cli_rejects_invalid(real_scenario_path, real_submission_path, tmp_path, capsys):
    rollouts = read_submission(real_submission_path)[SID]
    bad = Rollouts(SID, rollouts.agent_id[1:], rollouts.trajectories[:, 1:])
    save_rollouts_npz(bad, tmp_path / "r" / "x.npz")
    out = tmp_path / "sub.tar.gz"
    code = main(["export-submission", "--scenes", str(real_scenario_path), "--rollouts", str(tmp_path / "r"),
                 "--out", str(out), "--account", "a", "--method", "m"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert SID in err and f"missing sim agent ids [{int(rollouts.agent_id[0])}]" in err


# ----- score -----


def test_score_cli_rejects_invalid_submission(real_scenario_path, real_submission_path, tmp_path, capsys):
    rollouts = read_submission(real_submission_path)[SID]
    traj = rollouts.trajectories.copy()  # [32, 50, 80, 4]
    traj[0, 5, 9, 2] = np.nan
    sub = tmp_path / "bad.binproto"
    sub.write_bytes(build_submission([Rollouts(SID, rollouts.agent_id, traj)], META).SerializeToString())
    code = main(["score", "--scenes", str(real_scenario_path), "--submission", str(sub)])
    err = capsys.readouterr().err
    assert code == 2 and SID in err and str(int(rollouts.agent_id[5])) in err and "NaN" in err


def test_score_cli_missing_scene(real_submission_path, tmp_path, capsys):
    from smart_r1.data.synth import generate_scenario

    other = tmp_path / "other.tfrecord"  # holds another scene (an empty file is an error of its own)
    write_scenarios_tfrecord(other, [generate_scenario(0, 0)])
    code = main(["score", "--scenes", str(other), "--submission", str(real_submission_path)])
    assert code == 2 and SID in capsys.readouterr().err


@pytest.mark.official
@pytest.mark.timeout(300)
def test_score_cli_official_small_scene(real_scenario_path, real_submission_path, tmp_path, capsys):
    small, noisy, _ = _small_case(real_scenario_path, real_submission_path)
    scenes = write_scenarios_tfrecord(tmp_path / "small.tfrecord", [small])
    sub = tmp_path / "sub.binproto"
    sub.write_bytes(build_submission([noisy], META).SerializeToString())
    out_json = tmp_path / "scores.json"
    argv = ["score", "--scenes", str(scenes), "--submission", str(sub), "--backend", "official", "--json", str(out_json)]
    assert main(argv) == 2  # 4 rollouts break the official 32-rollout rule
    assert "4 rollouts, the official rule is 32" in capsys.readouterr().err
    assert main(argv + ["--any-rollout-count"]) == 0
    table = capsys.readouterr().out
    assert "| Scene | Realism meta |" in table and small.scenario_id in table and "aggregate (1 scenes)" in table
    result = json.loads(out_json.read_text())
    stored = json.loads(OFFICIAL_SMALL.read_text())["results"]["noisy"]
    got = result["per_scene"][small.scenario_id]
    for key in ["metametric", *LIKELIHOOD_FIELDS, "min_average_displacement_error", "simulated_collision_rate"]:
        assert got[key] == pytest.approx(stored[key], abs=1e-6), key
        assert result["aggregate"][key] == pytest.approx(stored[key], abs=1e-6), key
    assert result["bucketed"]["realism_meta_metric"] == pytest.approx(stored["metametric"], abs=1e-6)
    assert result["backend"] == "official" and result["config_year"] == 2025
    assert f"{stored['metametric']:.4f}" in table


def test_score_cli_fast_real_scene_matches_official_fixture(real_scenario_path, real_submission_path, tmp_path, capsys):
    """`smart-r1 score --backend fast` on the real scene and shared submission gives the official numbers."""
    out_json = tmp_path / "fast.json"
    code = main(["score", "--scenes", str(real_scenario_path), "--submission", str(real_submission_path),
                 "--backend", "fast", "--json", str(out_json)])  # fmt: skip
    assert code == 0
    got = json.loads(out_json.read_text())["per_scene"][SID]
    official = json.loads(OFFICIAL_REAL.read_text())["metrics"]
    for key in ["metametric", *LIKELIHOOD_FIELDS, "min_average_displacement_error"]:
        assert got[key] == pytest.approx(official[key], abs=1e-4), key
    for key in ("simulated_collision_rate", "simulated_offroad_rate", "simulated_traffic_light_violation_rate"):
        assert got[key] == official[key], key
    table = capsys.readouterr().out
    assert f"| {SID} | {official['metametric']:.4f} |" in table
