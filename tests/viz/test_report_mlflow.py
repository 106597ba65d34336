"""`smart-r1 evaluate --mlflow URI` against a real local MLflow server: the aggregate scalars
land in the run's metrics, the report folder and the Parquet scores in its artifacts."""

from __future__ import annotations

import pytest


def test_evaluate_logs_metrics_and_report_to_mlflow(tmp_path, mlflow_server, unique_name):
    from mlflow import MlflowClient

    from smart_r1.cli import main
    from smart_r1.data.synth import write_synthetic_dataset

    (shard,) = write_synthetic_dataset(tmp_path / "scenes", num_scenes=2, seed=11, num_shards=1, progress=False)
    server = mlflow_server  # shared with other tests: own experiment name
    experiment = unique_name("eval-test")
    argv = [
        "evaluate", "--checkpoint", "baseline:constant_velocity", "--scenes", str(shard), "--num-rollouts", "2",
        "--out", str(tmp_path / "out"), "--no-renders", "--quiet", "--mlflow", server.uri,
        "--experiment", experiment, "--run-name", "cv",
    ]
    assert main(argv) == 0
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([exp.experiment_id])
    metrics = run.data.metrics
    assert 0.0 < metrics["baseline_constant_velocity/metametric"] < 1.0
    assert "baseline_constant_velocity/min_average_displacement_error" in metrics
    assert "scene/baseline_constant_velocity/metametric" in metrics
    assert run.data.params["eval.num_rollouts"] == "2"
    top = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/scores.parquet" in top and "evaluation/report" in top
    report = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation/report")}
    assert {"evaluation/report/report.md", "evaluation/report/report.html", "evaluation/report/figures"} <= report
