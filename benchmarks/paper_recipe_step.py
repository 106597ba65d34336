"""The paper recipe's RFT stage (configs/sft_rft_sft.yaml: SMART-tiny, MPO alpha 0.77 beta 0.04,
32 rollouts, top-48 sampling, scene reward, fast WOSAC backend) run for one step end to end on
synthetic 64-agent scenes, through the library's own pipeline (`run_pipeline`: synthetic scenes ->
vocabulary -> tokens -> rollout -> scoring -> micro-batched update -> checkpoint).

    python -m benchmarks.paper_recipe_step [--agents 64] [--json FILE]

Changes to the recipe, all printed: only the `rft` stage, `steps: 1` instead of `epochs: 1`;
`--scenes` synthetic training scenes of exactly `--agents` agents (batch 1); no evaluation, no
tracking; `vocab.samples` (`--vocab-samples`, the recipe's 200000 k-disks samples per type take
minutes on this machine and do not change the step). Everything else is the recipe's: model,
objective parameters, `max_train_agents: 32` (the agents that are trained; all agents are simulated),
and the `learner:` section's defaults (`max_tokens_per_microbatch`).
Reports CPU seconds (getrusage: this process), wall seconds, peak RSS and the step's metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/sft_rft_sft.yaml")
    ap.add_argument("--agents", type=int, default=64)
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--vocab-samples", type=int, default=20000)
    ap.add_argument("--rollouts", type=int, default=None, help="override the recipe's n_rollout (default: keep 32)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="output dir (default: a temp dir)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch

    from smart_r1.train.config import load_config
    from smart_r1.train.pipeline import prepare_data, run_pipeline

    torch.set_num_threads(args.threads)
    out = args.out or tempfile.mkdtemp(prefix="paper_recipe_step_")
    n = args.agents
    overrides = [
        f"output_dir={out}", "progress=false", "tracking.enabled=false", "eval.after_each_stage=false",
        f"data.synthetic={{n_scenes: {args.scenes}, n_val_scenes: 1, seed: 0, params: {{min_agents: {n}, max_agents: {n}}}}}",
        "data.batch_size=1", f"vocab.samples={args.vocab_samples}",
    ]
    cfg = load_config(args.config, overrides)
    rft = cfg.stages[cfg.stage_index("rft")]
    rft.epochs, rft.steps = None, 1
    if args.rollouts is not None:
        rft.params = dict(rft.params, n_rollout=args.rollouts)
    cfg.stages = [rft]
    print("recipe rft stage:", json.dumps({"objective": rft.objective, "params": rft.params, "lr": rft.lr}),
          "learner:", json.dumps(vars(cfg.learner)), "overrides:", overrides, flush=True)
    c0, w0 = _cpu(), time.perf_counter()
    data = prepare_data(cfg, out)
    prep_cpu, prep_wall = _cpu() - c0, time.perf_counter() - w0
    n_agents = [sc.n_agent for sc in data.train.tokenized]
    c0, w0 = _cpu(), time.perf_counter()
    res = run_pipeline(cfg, data=data)
    step_cpu, step_wall = _cpu() - c0, time.perf_counter() - w0
    h = res.history[-1]
    row = {
        "config": args.config, "n_agent_per_scene": n_agents, "n_rollout": rft.params.get("n_rollout"),
        "data_prep_cpu_s": round(prep_cpu, 1), "data_prep_wall_s": round(prep_wall, 1),
        "rft_step_cpu_s": round(step_cpu, 1), "rft_step_wall_s": round(step_wall, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_avg": os.getloadavg(),
        "metrics": {k: h[k] for k in ("loss", "kl", "reward/mean", "grad_norm", "policy/entropy",
                                      "learner/n_microbatch", "guard/distance_ratio", "step_seconds") if k in h},
    }
    print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=2)
    return row


if __name__ == "__main__":
    main()
