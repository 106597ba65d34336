"""`smart-r1 simulate --checkpoint C --scenes GLOB [--num-rollouts 32] --out FILE`:
closed-loop rollouts of a trained model written as an official WOSAC submission (.tar.gz of
`SimAgentsChallengeSubmission` shards, validated with the official submission checks)."""

from __future__ import annotations

import argparse
import sys


def _simulate(args: argparse.Namespace) -> int:
    from smart_r1.data.scenario_io import iter_scenes_with_refs
    from smart_r1.data.validate import REQUIRE_MAP, check_scene
    from smart_r1.metrics.submission import SubmissionMetadata, export_submission
    from smart_r1.sim.simulate import load_simulator, simulate_scenes

    # Everything that can be wrong with the inputs fails here, before any rollout work:
    # scenes (read and validated by the one scene validation path), then the checkpoint.
    scenes = [check_scene(scene, ref, require_map=REQUIRE_MAP["simulate"]) for ref, scene in iter_scenes_with_refs(args.scenes)]
    if not scenes:
        print(f"smart-r1 simulate: error: {args.scenes}: the input holds no records (empty file?)", file=sys.stderr)
        return 2
    sim = load_simulator(args.checkpoint, device=args.device)
    rollouts = simulate_scenes(sim, scenes, num_rollouts=args.num_rollouts, seed=args.seed, sampler=args.sampler,
                               top_k=args.top_k, temperature=args.temperature, progress=True)
    n_params = sum(p.numel() for p in sim.model.parameters())
    meta = SubmissionMetadata(
        account_name=args.account_name, unique_method_name=args.method_name,
        description=f"smart-r1 {sim.model.config.name}, top-{args.top_k}, T={args.temperature}, seed {args.seed}",
        num_model_parameters=f"{n_params / 1e6:.1f}M",
    )
    report = export_submission(list(zip(scenes, rollouts)), args.out, meta, skip_invalid=args.skip_invalid,
                               n_rollouts=args.num_rollouts)
    print(f"wrote {report.out_path}: {len(report.packed_scenario_ids)} scenes, {args.num_rollouts} rollouts each, "
          f"{len(report.shard_names)} shard(s)" + (f"; {len(report.invalid)} invalid scenes left out" if report.invalid else ""))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("simulate", help="roll out a checkpoint on scenes and write a WOSAC submission")
    p.add_argument("--checkpoint", required=True, help="training checkpoint (.pt)")
    p.add_argument("--scenes", required=True, help="scenario TFRecord path / glob / directory")
    p.add_argument("--num-rollouts", type=int, default=32)
    p.add_argument("--sampler", default="topk", choices=["topk", "argmax"])
    p.add_argument("--top-k", type=int, default=48, help="top-k sampling (reference: 48 for submissions, 5 for validation)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="submission .tar.gz")
    p.add_argument("--account-name", default="smart-r1@example.com")
    p.add_argument("--method-name", default="smart-r1")
    p.add_argument("--skip-invalid", action="store_true", help="leave out scenes whose rollouts fail validation")
    p.set_defaults(func=_simulate)
