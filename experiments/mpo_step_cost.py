"""Per-step CPU cost of the MPO experiment's objectives at the full config's per-step settings
(the numbers behind the full-run estimate in docs/results.md).

    PYTHONPATH=$PWD .venv/bin/python -m experiments.mpo_step_cost --presets cpu-demo nano \
        --out .smart_r1_runs/mpo_step_cost [--steps 2]

Uses the pilot's small data set (configs/experiment_mpo_pilot.yaml; prepared under `--out`)
with the full config's batch size, trained agents per scene, rollouts, PPO / GRPO epochs, and
times `--steps` optimiser steps of each objective from a fresh model (CPU seconds of this
process, one torch thread). The MPO figure includes one calibration batch per run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch

from experiments.mpo_experiment import arm_stages, cpu_seconds, load_experiment
from smart_r1.train.config import config_from_dict
from smart_r1.train.pipeline import prepare_data, run_pipeline


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["cpu-demo", "nano"])
    ap.add_argument("--arms", nargs="+", default=["mpo_sampled", "grpo", "ppo", "dpo"])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--out", default=".smart_r1_runs/mpo_step_cost")
    args = ap.parse_args(argv)
    raw, _ = load_experiment("configs/experiment_mpo_pilot.yaml", [])
    full, full_exp = load_experiment("configs/experiment_mpo.yaml", [])
    for key in ("batch_size", "max_train_agents"):
        raw["data"][key] = full["data"][key]
    raw["eval"]["after_each_stage"] = False
    raw["tracking"] = {"enabled": False}
    raw["progress"] = False
    out = Path(args.out)
    torch.set_num_threads(1)
    data = prepare_data(config_from_dict(copy.deepcopy(raw), "step_cost"), out / "data")
    rft = dict([s for s in full["stages"] if s["name"] == "rft"][0], steps=args.steps)
    rft["params"] = dict(rft["params"], calibration_batches=1)
    arms = arm_stages(dict(full, stages=[s if s["name"] != "rft" else rft for s in full["stages"]]), full_exp)
    bc = dict([s for s in full["stages"] if s["name"] == "bc"][0], epochs=None, steps=2 * args.steps)
    res = {}
    for preset in args.presets:
        for name, stage in [("bc", bc)] + [(a, arms[a][0]) for a in args.arms]:
            r = copy.deepcopy(raw)
            r["model"] = {"preset": preset}
            r["stages"] = [stage]
            r["output_dir"] = str(out / f"{preset}-{name}")
            t0, w0 = cpu_seconds(), time.perf_counter()
            run_pipeline(config_from_dict(r, "step_cost"), data=data)
            res[f"{preset}/{name}"] = {"cpu_s_per_step": (cpu_seconds() - t0) / stage["steps"],
                                       "wall_s": time.perf_counter() - w0, "load_1min": os.getloadavg()[0]}
            print(preset, name, res[f"{preset}/{name}"], flush=True)
    (out / "step_cost.json").write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
