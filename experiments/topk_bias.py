"""What a constant advantage does to a top-k-sampled policy (issue 13, docs/training.md
"The log-prob form").

    .venv/bin/python -m experiments.topk_bias --config configs/cpu_demo.yaml --data .smart_r1_runs/cpu_demo \\
        --checkpoint .smart_r1_runs/cpu_demo/checkpoints/01_sft1.pt --json topk_bias.json

Starts from an SFT checkpoint and, for each log-prob form of MPO (`full_softmax`, the paper's
literal pi / pi_detached; `sampled`, the sampler's renormalised top-k) and each constant
advantage (default -0.05, 0, +0.05), takes `--steps` AdamW steps of the MPO loss (beta 0.04,
fresh top-5 rollouts every step, every token's advantage = the constant). A constant advantage
carries no information, so the right update leaves the policy where it is. Measured before and
after on fixed evaluation rollouts of the starting policy (teacher forced, simulated trained
agents' 16 future tokens): the top-5 probability mass of the full softmax and the entropy of the
renormalised top-5 distribution.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource

import torch

from smart_r1.objectives import get_objective
from smart_r1.objectives.base import Experience, future_token_mask, run_rollout
from smart_r1.train.checkpoint import Checkpoint
from smart_r1.train.config import load_config
from smart_r1.train.data import make_inputs
from smart_r1.train.pipeline import build_model_for, prepare_data
from smart_r1.tokens.tokenized_scene import N_HISTORY_TOKEN

K = 5


@torch.no_grad()
def topk_stats(model, inputs, rb) -> dict[str, float]:
    """Top-5 mass and top-5 entropy of `model` on the fixed rollouts `rb`, averaged over tokens."""
    model.eval()
    mask = future_token_mask(rb, inputs.train_mask)  # [R, n_agent, 16]
    mass, ent, n = 0.0, 0.0, 0
    for r in range(rb.token_index.shape[0]):
        logits = model(rb.teacher_forced_batch(r))[:, N_HISTORY_TOKEN:]  # [n_agent, 16, V]
        m = mask[r]  # [n_agent, 16]
        p = torch.softmax(logits[m].float(), -1)  # [n_tok, V]
        top = p.topk(K, -1).values  # [n_tok, 5]
        z = top.sum(-1)  # [n_tok]
        q = top / z[:, None]
        mass += float(z.sum())
        ent += float(-(q * q.clamp_min(1e-30).log()).sum())
        n += int(m.sum())
    return {"top5_mass": mass / n, "top5_entropy": ent / n, "n_token": n}


def run_arm(model, inputs, eval_rb, form: str, advantage: float, steps: int, lr: float, beta: float, n_rollout: int,
            seed: int) -> dict:
    policy = copy.deepcopy(model)
    reference = copy.deepcopy(model).eval()
    objective = get_objective("mpo", alpha=0.0, beta=beta, n_rollout=n_rollout, logprob=form)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)  # the same rollout seeds in every arm
    before = topk_stats(policy, inputs, eval_rb)
    kl = []
    for _ in range(steps):
        rb = objective.rollout(policy, inputs, g)
        R, n_scene = rb.token_index.shape[0], inputs.n_scene
        exp = Experience(inputs=inputs, rollout=rb, rewards=torch.zeros(R, n_scene),
                         advantages=torch.full((R, n_scene), float(advantage)),
                         extras={"reward_valid": torch.ones(R, n_scene, dtype=torch.bool)})
        policy.eval()  # RL objectives: no dropout
        loss, metrics = objective.loss(policy, exp, reference=reference)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        kl.append(metrics.get("kl", float("nan")))
    after = topk_stats(policy, inputs, eval_rb)
    return {"form": form, "advantage": advantage, "before": before, "after": after, "kl_last": kl[-1]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/cpu_demo.yaml")
    ap.add_argument("--data", required=True, help="the run directory holding scenes/, cache/, vocab/, tokenized/")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--scenes", type=int, default=8, help="training scenes in the (single) batch")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--n-rollout", type=int, default=8)
    ap.add_argument("--advantages", type=float, nargs="+", default=[-0.05, 0.0, 0.05])
    ap.add_argument("--forms", nargs="+", default=["full_softmax", "sampled"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    torch.set_num_threads(cfg.num_threads or 1)
    torch.manual_seed(args.seed)
    data = prepare_data(cfg, args.data)
    model = build_model_for(cfg, data.vocab)
    model.load_state_dict(Checkpoint.load(args.checkpoint).model)
    inputs = make_inputs(data.train, list(range(args.scenes)), data.vocab, cfg.data.max_train_agents, cfg.data.train_radius_m)
    eval_rb = run_rollout(model, inputs.batch, args.n_rollout, "topk", {"k": K}, torch.Generator().manual_seed(10_000 + args.seed))
    rows = []
    for form in args.forms:
        for adv in args.advantages:
            row = run_arm(model, inputs, eval_rb, form, adv, args.steps, args.lr, args.beta, args.n_rollout, args.seed)
            rows.append(row)
            b, a = row["before"], row["after"]
            print(f"{form:13s} A={adv:+.2f}: top-5 entropy {b['top5_entropy']:.3f} -> {a['top5_entropy']:.3f}, "
                  f"top-5 mass {b['top5_mass']:.3f} -> {a['top5_mass']:.3f}  (KL {row['kl_last']:.2e})", flush=True)
    cpu_s = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime
    out = {"args": vars(args), "rows": rows, "cpu_s": cpu_s}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print(f"cpu {cpu_s:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
