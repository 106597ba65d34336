"""Learner update at paper scale: one RL step (rollout, then the micro-batched update) on one
synthetic scene per size, CPU time and peak RSS.

    python -m benchmarks.learner_update --preset tiny --agents 32 64 128 --rollouts 32 --objective mpo --json FILE

Each scene size runs in its own child process (so `peak_rss_mb`, the child's `ru_maxrss`, is that
row's peak: model, reference, rollouts and both updates). Both places of the reference
log-probs (`learner.reference_on`) are measured on the same rollouts (same seed, same tokens),
after a 1-rollout warm-up rollout and update. Per row:

- `rollout_cpu_s`: `sim.engine.rollout` of R rollouts (top-5), policy only, CPU seconds of the process;
- `rollout_with_reference_cpu_s`: the same rollouts with the reference stepped alongside the policy
  (`reference_on: rollout`), and `rollout_reference_extra_cpu_s`, the difference;
- `reference_cpu_s`: the learner's teacher-forced reference pass (no grad, micro-batched), part of
  the learner-side update;
- `update_cpu_s`: the whole RL update with the learner-side reference (`reference_on: learner`):
  reference log-probs + policy log-probs + loss + backward + AdamW step (`smart_r1.train.step.update`);
- `update_without_reference_cpu_s`: the same update when the rollouts carry the reference
  log-probs (`reference_on: rollout`);
- `update_over_rollout` (learner side: update / policy-only rollout),
  `update_over_rollout_reference_on_rollout` (update without reference / rollout with reference),
  `step_cpu_s_reference_on_learner` / `..._on_rollout` (rollout + update, the CPU of one sync step
  without scoring);
- `rss_after_rollout_mb`, `peak_rss_mb`, `n_microbatch`.

Rewards are random numbers (the metric backend's time is not the learner's); the gradient does
not depend on where they come from. CPU seconds are `resource.getrusage` user + system of the
process (all torch threads), so they are less sensitive to other load than wall time.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def one_row(args) -> dict:
    """One scene size in this process."""
    import torch

    from smart_r1.model.batch import collate, vocab_sizes_of
    from smart_r1.model.presets import get_preset
    from smart_r1.model.smart import SmartModel
    from smart_r1.model.synthetic import SyntheticVocab, synthetic_tokenized_scene
    from smart_r1.objectives import get_objective
    from smart_r1.objectives.base import TrainBatch, reference_logprobs, run_rollout
    from smart_r1.train.config import StageConfig
    from smart_r1.train.step import build_train_state, update

    torch.set_num_threads(args.threads)
    n = args.agents[0]
    vocab = SyntheticVocab(sizes=(2048, 2048, 2048), map_size=1024, seed=0)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = SmartModel(get_preset(args.preset), vocab_sizes_of(vocab)).to(device)
    sc = synthetic_tokenized_scene(vocab, n_agent=n, n_road=4, extent=200.0, seed=1000 + n, not_sim_fraction=0.0)
    batch = collate([sc], vocab).to(device)
    inputs = TrainBatch(batch, batch.sim_mask.clone(), list(batch.scenario_id))
    params = {"n_rollout": args.rollouts, "sampler": "topk", "sampler_params": {"k": 5}}
    if args.objective == "mpo":
        params.update(alpha=0.0, beta=0.04)
    objective = get_objective(args.objective, **params).to(device)
    stage = StageConfig(name="rft", objective=args.objective, steps=10, lr=5e-5)
    learner = argparse.Namespace(max_tokens_per_microbatch=args.max_tokens, autocast=args.autocast)
    model_rollout_side = copy.deepcopy(model)  # the same start for the second update
    state = build_train_state(model, stage, objective, total_steps=10, learner=learner)
    reference = state.reference

    def timed_rollout(ref):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        c0, w0 = _cpu(), time.perf_counter()
        out = run_rollout(model, batch, args.rollouts, "topk", {"k": 5}, torch.Generator().manual_seed(args.seed),
                          reference=ref)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out, _cpu() - c0, time.perf_counter() - w0

    run_rollout(model, batch, 1, "topk", {"k": 5}, torch.Generator().manual_seed(args.seed), reference=reference)  # warm-up
    rb_ref, rollout_ref_cpu, rollout_ref_wall = timed_rollout(reference)  # reference_on: rollout
    rb, rollout_cpu, rollout_wall = timed_rollout(None)  # policy only (reference_on: learner)
    assert torch.equal(rb.token_index, rb_ref.token_index)  # the reference does not change the rollouts
    rss_rollout = _rss_mb()
    rewards = torch.rand(args.rollouts, 1, generator=torch.Generator().manual_seed(args.seed + 1)).to(device)

    # warm-up update (1 rollout, a throwaway copy): the two timed updates below both start warm
    warm = build_train_state(copy.deepcopy(model), stage, objective, total_steps=10, learner=learner)
    update(warm, objective, objective.make_experience(inputs, rb_ref.select_rollouts(torch.tensor([0])), rewards[:1]))
    del warm

    # reference_on: rollout -- the experience carries the engine's reference log-probs
    state_r = build_train_state(model_rollout_side, stage, objective, total_steps=10, learner=learner)
    state_r.reference = None  # never used: the learner must not need it
    exp_r = objective.make_experience(inputs, rb_ref, rewards)
    c0 = _cpu()
    metrics_r = update(state_r, objective, exp_r)
    update_noref_cpu = _cpu() - c0

    # reference_on: learner -- the update runs the teacher-forced reference pass
    exp = objective.make_experience(inputs, rb, rewards)
    c0, w0 = _cpu(), time.perf_counter()
    if objective.needs_reference:
        reference_logprobs(objective, reference, exp, None, args.max_tokens)  # cached in the experience
    ref_cpu = _cpu() - c0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    metrics = update(state, objective, exp)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    update_cpu, update_wall = _cpu() - c0, time.perf_counter() - w0
    gpu_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {
        "n_agent": n, "n_rollout": args.rollouts, "n_map_token": int(sc.n_map_token), "objective": args.objective,
        "max_tokens_per_microbatch": args.max_tokens, "autocast": args.autocast,
        "rollout_cpu_s": round(rollout_cpu, 2), "rollout_wall_s": round(rollout_wall, 2),
        "rollout_with_reference_cpu_s": round(rollout_ref_cpu, 2), "rollout_with_reference_wall_s": round(rollout_ref_wall, 2),
        "rollout_reference_extra_cpu_s": round(rollout_ref_cpu - rollout_cpu, 2),
        "reference_cpu_s": round(ref_cpu, 2),
        "update_cpu_s": round(update_cpu, 2), "update_wall_s": round(update_wall, 2),
        "update_without_reference_cpu_s": round(update_noref_cpu, 2),
        "update_over_rollout": round(update_cpu / max(rollout_cpu, 1e-9), 2),
        "update_over_rollout_reference_on_rollout": round(update_noref_cpu / max(rollout_ref_cpu, 1e-9), 2),
        "step_cpu_s_reference_on_learner": round(rollout_cpu + update_cpu, 2),
        "step_cpu_s_reference_on_rollout": round(rollout_ref_cpu + update_noref_cpu, 2),
        "loss_reference_on_rollout": metrics_r["loss"],
        "rss_after_rollout_mb": round(rss_rollout), "peak_rss_mb": round(_rss_mb()),
        "n_microbatch": int(metrics["learner/n_microbatch"]), "loss": metrics["loss"], "grad_norm": metrics["grad_norm"],
        "policy_entropy": metrics["policy/entropy"], "threads": args.threads, "device": str(device),
        "gpu_update_peak_mb": None if gpu_peak is None else round(gpu_peak),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--agents", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--rollouts", type=int, default=32)
    ap.add_argument("--objective", default="mpo")
    ap.add_argument("--max-tokens", type=int, default=None, help="learner.max_tokens_per_microbatch (default: the config default)")
    ap.add_argument("--autocast", default="none", choices=["none", "bf16", "fp16"])
    ap.add_argument("--device", default="cpu", help="cpu | cuda (then gpu_update_peak_mb = torch.cuda.max_memory_allocated of the update)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write {rows: [...]} here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.max_tokens is None:
        from smart_r1.train.config import LearnerConfig

        args.max_tokens = LearnerConfig().max_tokens_per_microbatch
    if args.child:
        print("ROW " + json.dumps(one_row(args)), flush=True)
        return {}
    res = {"preset": args.preset, "objective": args.objective, "cpu_count": os.cpu_count(),
           "load_avg_start": os.getloadavg(), "rows": []}
    for n in args.agents:
        cmd = [sys.executable, "-m", "benchmarks.learner_update", "--child", "--agents", str(n), "--rollouts", str(args.rollouts),
               "--preset", args.preset, "--objective", args.objective, "--max-tokens", str(args.max_tokens),
               "--autocast", args.autocast, "--device", args.device, "--threads", str(args.threads), "--seed", str(args.seed)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        rows = [json.loads(line[4:]) for line in out.stdout.splitlines() if line.startswith("ROW ")]
        if out.returncode != 0 or not rows:
            row = {"n_agent": n, "n_rollout": args.rollouts, "error": f"exit {out.returncode}: {out.stderr[-2000:]}"}
        else:
            row = rows[0]
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
    res["load_avg_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
