"""The trained policy as an MLflow pyfunc model: WOMD `Scenario` bytes in, closed-loop rollouts out.

    save_policy_model(model, vocab_dir, "out/policy_model", config=resolved_dict(cfg))
    # ... logged and registered by the tracker (`Tracker.log_model`), then anywhere:
    policy = mlflow.pyfunc.load_model("models:/smart-r1-demo-policy@champion")
    table = policy.predict(pd.DataFrame({"scenario": [scenario_bytes]}), params={"num_rollouts": 8, "seed": 0})

The model directory holds `policy.pt` (model weights + model config only, no optimiser state),
the motion vocabulary (`vocab/`) and the resolved training config (`config.json`) as pyfunc
artifacts, and a signature:

- input: one row per scene, column `scenario` (binary: a serialized `waymo.open_dataset.Scenario`,
  with at least its history and current step; the future is not read);
- params: `num_rollouts` (default 8), `seed` (0), `top_k` (5, the top-k sampler's k);
- output: one row per (scene, rollout, simulated agent, future step): `scenario_id`, `rollout`,
  `object_id`, `future_step` (0 = 0.1 s after the current step, 80 steps), `center_x`, `center_y`,
  `center_z`, `heading` (the `Rollouts` of `smart_r1.sim.simulate.simulate_scenes`).

Loading needs the `smart_r1` package importable (the model's code is this module).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import mlflow
import mlflow.pyfunc
import numpy as np

OUTPUT_COLUMNS = (
    ("scenario_id", "string"),
    ("rollout", "long"),
    ("object_id", "long"),
    ("future_step", "long"),
    ("center_x", "float"),
    ("center_y", "float"),
    ("center_z", "float"),
    ("heading", "float"),
)
DEFAULT_PARAMS = {"num_rollouts": 8, "seed": 0, "top_k": 5}


def policy_signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("binary", "scenario")]),
        outputs=Schema([ColSpec(t, name) for name, t in OUTPUT_COLUMNS]),
        params=ParamSchema([ParamSpec(k, "long", v) for k, v in DEFAULT_PARAMS.items()]),
    )


def rollouts_table(rollouts) -> "Any":
    """`Rollouts` of several scenes -> the pyfunc output DataFrame (long format, see module doc)."""
    import pandas as pd

    frames = []
    for ro in rollouts:
        n_r, n_a, n_t, _ = ro.trajectories.shape  # [n_rollout, n_agent, 80, 4]
        r, a, t = np.meshgrid(np.arange(n_r), np.arange(n_a), np.arange(n_t), indexing="ij")
        flat = ro.trajectories.reshape(-1, 4)
        frames.append(pd.DataFrame({
            "scenario_id": np.full(r.size, ro.scenario_id, dtype=object),
            "rollout": r.ravel().astype(np.int64),
            "object_id": ro.agent_id[a.ravel()].astype(np.int64),
            "future_step": t.ravel().astype(np.int64),
            "center_x": flat[:, 0], "center_y": flat[:, 1], "center_z": flat[:, 2], "heading": flat[:, 3],
        }))
    if not frames:
        return pd.DataFrame({name: [] for name, _ in OUTPUT_COLUMNS})
    return pd.concat(frames, ignore_index=True)


class SmartR1Policy(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of a SMART policy (see module docstring)."""

    def load_context(self, context):
        from smart_r1.sim.simulate import load_simulator

        self.simulator = load_simulator(context.artifacts["policy"], vocab_dir=context.artifacts["vocab"])

    def predict(self, context, model_input, params: Mapping[str, Any] | None = None):
        from smart_r1.data.convert import scenario_to_scene
        from smart_r1.sim.simulate import simulate_scenes

        p = {**DEFAULT_PARAMS, **(params or {})}
        if "scenario" not in getattr(model_input, "columns", []):
            raise ValueError("smart-r1 policy: input needs a column `scenario` (serialized Scenario bytes)")
        scenes = [scenario_to_scene(bytes(b), source=f"input row {i}") for i, b in enumerate(model_input["scenario"])]
        rollouts = simulate_scenes(self.simulator, scenes, num_rollouts=int(p["num_rollouts"]), seed=int(p["seed"]),
                                   top_k=int(p["top_k"]))
        return rollouts_table(rollouts)


def save_policy_model(model, vocab_dir: str | os.PathLike, path: str | os.PathLike,
                      config: Mapping[str, Any] | None = None) -> Path:
    """Write `model` (a `SmartModel`) with its vocabulary and config as an MLflow pyfunc model
    directory at `path` (replaced if present); returns `path`."""
    import torch

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    staging = path.parent / f".{path.name}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    model_config = getattr(getattr(model, "config", None), "to_dict", lambda: None)()
    if model_config is None:
        raise ValueError("save_policy_model: the model has no `config.to_dict()` (not a SmartModel?)")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model_state": state, "model_config": model_config}, staging / "policy.pt")
    (staging / "config.json").write_text(json.dumps(dict(config or {}), indent=1))
    try:
        mlflow.pyfunc.save_model(
            str(path),
            python_model=SmartR1Policy(),
            artifacts={"policy": str(staging / "policy.pt"), "vocab": str(Path(vocab_dir)),
                       "config": str(staging / "config.json")},
            signature=policy_signature(),
            pip_requirements=[f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}", "smart-r1"],
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
