"""Scaled-out official scoring: `smart-r1 evaluate --ray --backend official --num-scorers 2` on the
real WOMD scene writes the same rows as the single-process official scorer (each scorer actor
starts its own TensorFlow worker process). Kept small: two baseline sources (two rows, one per
scorer), 2 rollouts each."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.official, pytest.mark.timeout(900)]

SOURCES = ["baseline:constant_velocity", "baseline:log_replay_noise"]


def test_official_scores_over_ray_scorers_equal_single_process(real_scenario_path, tmp_path):
    import pyarrow.parquet as pq

    from smart_r1.cli import main
    from smart_r1.eval.evaluate import evaluate

    from .test_distributed_eval import assert_same_rows

    local = evaluate(SOURCES, str(real_scenario_path), backend="official", num_rollouts=2, seed=3,
                     out_dir=tmp_path / "local", report=False, progress=False)
    assert local.n_scored == 2 and not local.failed
    assert all(r["metametric"] > 0 for r in local.rows)

    argv = ["evaluate", *[a for s in SOURCES for a in ("--checkpoint", s)], "--scenes", str(real_scenario_path),
            "--backend", "official", "--num-rollouts", "2", "--seed", "3", "--out", str(tmp_path / "ray"),
            "--no-report", "--quiet", "--ray", "--num-rollout-workers", "1", "--num-scorers", "2"]
    assert main(argv) == 0
    rows = pq.read_table(tmp_path / "ray" / "scores.parquet").to_pylist()
    assert_same_rows(rows, local.rows)
