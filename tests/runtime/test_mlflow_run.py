"""What a researcher sees in MLflow after a (tiny) training run against a real tracking server:
every config value as an uncut flattened param, per-stage tags, an in-stage validation curve,
no NaN metric, system metrics, per-stage renders, and the registered pyfunc policy, which loads
back and rolls out a scene; a `--resume` of the finished run registers nothing new."""

from __future__ import annotations

import math

import pytest

from smart_r1.tracking import flatten

# Two short stages: BC, then MPO with the per-scene baseline (no alpha: `rft/alpha` must not be
# logged at all), validation after every step, one scene rendered after each stage.
OVERRIDES = [
    "data.synthetic.n_scenes=4", "data.synthetic.n_val_scenes=1",
    "stages=[{name: bc, objective: bc, steps: 2, lr: 5.0e-3, params: {label_smoothing: 0.1}},"
    " {name: rft, objective: mpo, steps: 1, lr: 1.0e-3,"
    "  params: {advantage: group_mean, beta: 0.04, n_rollout: 2, reward: rollout}}]",
    "eval.n_scenes=1", "eval.n_rollout=2", "eval.every_n_steps=1", "eval.render_scenes=1", "eval.render_rollouts=1",
    "tracking.enabled=true", "tracking.experiment=rt-readable",
    "tracking.system_metrics_interval=0.5",  # the tiny run lasts seconds: sample more often than the default 5 s
]


def test_training_run_is_readable_and_registers_a_loadable_model(tmp_path, mlflow_server):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from smart_r1.data.convert import scene_to_scenario
    from smart_r1.train.config import load_config, resolved_dict
    from smart_r1.train.pipeline import prepare_data, run_pipeline

    cfg = load_config("tiny_test", OVERRIDES + [f"tracking.uri={mlflow_server.uri}", f"output_dir={tmp_path / 'out'}"])
    result = run_pipeline(cfg)
    assert not result.stopped_early
    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("rt-readable")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # UI opens in model-training mode
    (run,) = client.search_runs([exp.experiment_id])
    run_id = run.info.run_id

    # Params: every resolved config value, under its flattened name, uncut.
    want = {k: str(v) for k, v in flatten(resolved_dict(cfg)).items()}
    assert {k: run.data.params[k] for k in want} == want
    assert run.data.params["stages.1.params.beta"] == "0.04"
    assert run.data.params["stages.1.params.advantage"] == "group_mean"
    assert run.data.params["stages.1.params.n_rollout"] == "2"

    # Tags per stage.
    assert run.data.tags["stage.0"].startswith("bc (bc): done, global steps 0-2")
    assert run.data.tags["stage.1"].startswith("rft (mpo): done, global steps 2-3")

    # Metrics: none NaN; alpha undefined for group_mean -> absent; the validation curve has points
    # inside the BC stage (every step) and after each stage; system metrics; one name for minADE.
    keys = set(run.data.metrics)
    assert "rft/alpha" not in keys
    assert not any(k.endswith("min_ade") for k in keys)
    assert "rft/realism/min_average_displacement_error" in keys
    assert any(k.startswith("system/cpu_utilization") for k in keys), sorted(keys)
    for key in keys:
        for m in client.get_metric_history(run_id, key):
            assert math.isfinite(m.value), (key, m.step, m.value)
    val_steps = sorted(m.step for m in client.get_metric_history(run_id, "val/metametric"))
    assert val_steps[:2] == [1, 2] and val_steps[-1] == 3, val_steps
    assert "eval/rft/metametric" in keys
    assert "| rft |" in run.data.tags["mlflow.note.content"]  # the run description: the evaluation table

    # The same validation scene rendered after each stage.
    renders = {stage: sorted(f.path.rsplit("/", 1)[1] for f in client.list_artifacts(run_id, f"renders/{stage}"))
               for stage in ("00_bc", "01_rft")}
    assert renders["00_bc"] == renders["01_rft"] and renders["00_bc"][0].endswith("_grid.png")

    # The registered model: one version with description, champion alias, model metrics, signature.
    (mv,) = client.search_model_versions("name='rt-readable-policy'")
    assert mv.run_id == run_id and "realism meta" in mv.description
    assert client.get_model_version_by_alias("rt-readable-policy", "champion").version == mv.version
    model = client.get_logged_model(mv.source.removeprefix("models:/"))
    model_metrics = {m.key: m.value for m in model.metrics}
    assert model_metrics["eval/rft/metametric"] == pytest.approx(result.evaluations["rft"]["metametric"])

    mlflow.set_tracking_uri(mlflow_server.uri)
    try:
        policy = mlflow.pyfunc.load_model("models:/rt-readable-policy@champion")
        sig = policy.metadata.signature
        assert sig.inputs.input_names() == ["scenario"] and "center_x" in sig.outputs.input_names()
        scene = prepare_data(cfg).val.scenes[0]
        table = policy.predict(pd.DataFrame({"scenario": [scene_to_scenario(scene).SerializeToString()]}),
                               params={"num_rollouts": 2, "seed": 3})
    finally:
        mlflow.set_tracking_uri(None)
    n_agent = len(scene.sim_agent_ids())
    assert len(table) == 2 * n_agent * 80
    assert set(table["object_id"]) == set(int(i) for i in scene.sim_agent_ids())
    assert table[["center_x", "center_y", "heading"]].notna().all().all()

    # Resuming the finished run: same run, no second version.
    again = run_pipeline(load_config("tiny_test", OVERRIDES + [f"tracking.uri={mlflow_server.uri}",
                                                               f"output_dir={tmp_path / 'out'}"]), resume=True)
    assert not again.stopped_early
    assert [r.info.run_id for r in client.search_runs([exp.experiment_id])] == [run_id]
    assert len(client.search_model_versions("name='rt-readable-policy'")) == 1
