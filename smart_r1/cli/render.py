"""`smart-r1 render`: draw a scene and its rollouts (PNG grid + GIF per rollout)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "render",
        help="render a scene and its rollouts: PNG grid (log + rollouts x steps) and a GIF per rollout",
    )
    parser.add_argument("--scene", required=True, help="Scenario TFRecord file or glob (first scene, or --scenario-id)")
    parser.add_argument("--scenario-id", default=None, help="pick this scenario from --scene")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--rollouts", default=None, help="submission (.binproto / shards / .tar.gz) or rollouts .npz")
    source.add_argument("--checkpoint", default=None, help="simulate with this checkpoint instead")
    parser.add_argument("--num-rollouts", type=int, default=3, help="rollouts to draw (simulated with --checkpoint)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gif", action=argparse.BooleanOptionalAction, default=True, help="write a GIF per rollout")
    parser.add_argument("--frame-px", type=int, default=480)
    parser.add_argument("--out", required=True, help="output directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smart_r1.viz.render import RenderConfig
    from smart_r1.viz.pipeline import load_rollouts_for_scene, pick_scene, render_scene_outputs

    scene = pick_scene(args.scene, args.scenario_id)
    rollouts = load_rollouts_for_scene(scene, rollouts_path=args.rollouts, checkpoint=args.checkpoint, num_rollouts=args.num_rollouts, seed=args.seed)
    config = RenderConfig(frame_px=args.frame_px)
    paths = render_scene_outputs(scene, rollouts, Path(args.out), config=config, max_rollouts=args.num_rollouts, gif=args.gif)
    for p in paths:
        print(p)
    return 0
