"""`run_distributed` killed mid-stage and resumed: the resumed job continues from the last
checkpoint and logs into the same MLflow run (run id stored in the checkpoint); real Ray
(private local instance) and a real MLflow server."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]


def test_resume_continues_same_mlflow_run(tmp_path, ray_local, mlflow_server, unique_name):
    from mlflow import MlflowClient

    from learner.driver import load_config_with_runtime, run_distributed
    from smart_r1.train.checkpoint import Checkpoint, last_checkpoint

    experiment = unique_name("rt-resume")  # the MLflow server is shared with other tests
    cfg_path = tmp_path / "resume.yaml"
    cfg_path.write_text(
        f"include: {REPO}/configs/tiny_test.yaml\n"
        f"output_dir: {tmp_path}/out\n"
        "stages!:\n  - {name: bc, objective: bc, steps: 4, lr: 5.0e-3, checkpoint_every: 1, params: {label_smoothing: 0.1}}\n"
        "eval: {after_each_stage: false}\n"
        f"tracking: {{enabled: true, experiment: {experiment}, uri: '{mlflow_server.uri}'}}\n"
        "runtime: {num_rollout_actors: 1, num_scorers: 1, rollout_cpus: 0.25, scorer_cpus: 0.25}\n"
    )
    cfg, runtime = load_config_with_runtime(str(cfg_path))
    first = run_distributed(cfg, runtime=runtime, stop_after_steps=2)  # "killed" after 2 steps
    assert first.stopped_early
    ckpt = Checkpoint.load(last_checkpoint(tmp_path / "out"))
    assert ckpt.step == 2 and ckpt.mlflow_run_id

    cfg, runtime = load_config_with_runtime(str(cfg_path))
    second = run_distributed(cfg, resume=True, runtime=runtime)
    assert not second.stopped_early

    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [ckpt.mlflow_run_id]  # one run, continued
    steps = sorted(m.step for m in client.get_metric_history(ckpt.mlflow_run_id, "bc/loss"))
    assert steps == [0, 1, 2, 3]  # no step repeated, none missing
    assert runs[0].data.tags["resumed"] == "True" and runs[0].info.status == "FINISHED"
