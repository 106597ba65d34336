"""Where the RFT reward varies: between scenes or between a scene's rollouts (docs/results.md,
"Why MPO does nothing here").

    .venv/bin/python -m experiments.reward_spread --checkpoint .smart_r1_runs/paper_tables/seed0/base/checkpoints/01_sft1.pt

Rolls the checkpoint out on every training scene of `configs/experiment_paper.yaml` (8 rollouts,
top-5, fast backend, per-rollout reward) and prints: the std of the scene-mean rewards across
scenes, the mean std among a scene's own rollouts, the mean over all training scenes, and the
mean over the scenes MPO's alpha calibration draws (`calibration_batches` batches).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from smart_r1.objectives import get_objective
from smart_r1.train.checkpoint import Checkpoint
from smart_r1.train.config import load_config
from smart_r1.train.data import make_inputs, step_indices
from smart_r1.train.loop import derive_seed
from smart_r1.train.pipeline import build_model_for, prepare_data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/experiment_paper.yaml")
    ap.add_argument("--data", default=".smart_r1_runs/paper_tables/data")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--seed", type=int, default=0, help="training seed (selects the calibration batches)")
    ap.add_argument("--calibration-batches", type=int, default=8)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    torch.set_num_threads(cfg.num_threads or 1)
    data = prepare_data(cfg, args.data)
    model = build_model_for(cfg, data.vocab)
    model.load_state_dict(Checkpoint.load(args.checkpoint).model)
    objective = get_objective("mpo", alpha=0.0, n_rollout=8, reward="rollout")
    bs = cfg.data.batch_size
    scene_mean, scene_std = {}, {}
    for b in range(0, len(data.train), bs):
        idx = list(range(b, min(len(data.train), b + bs)))
        inputs = make_inputs(data.train, idx, data.vocab, cfg.data.max_train_agents, cfg.data.train_radius_m)
        exp = objective.collect(model, inputs, generator=torch.Generator().manual_seed(b))  # rewards only
        r = exp.rewards  # [R, n_scene]
        for j, i in enumerate(idx):
            scene_mean[i] = float(r[:, j].mean())
            scene_std[i] = float(r[:, j].std(unbiased=True))
    cal = {i for k in range(args.calibration_batches)
           for i in step_indices(len(data.train), bs, derive_seed(args.seed, "calibrate"), 0, k)}
    print(f"scenes: {len(scene_mean)}")
    print(f"std of scene-mean rewards across scenes: {np.std(list(scene_mean.values()), ddof=1):.3f}")
    print(f"mean std among a scene's own rollouts:   {np.mean(list(scene_std.values())):.3f}")
    print(f"mean reward, all training scenes:        {np.mean(list(scene_mean.values())):.3f}")
    print(f"mean reward, the {len(cal)} calibration scenes: {np.mean([scene_mean[i] for i in cal]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
