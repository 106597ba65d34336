r"""`smart-r1 export-submission`: pack rollouts into a WOSAC leaderboard submission.

    smart-r1 export-submission --scenes 'data/test/*.tfrecord*' --rollouts runs/rollouts/ \
        --out submission.tar.gz --account me@example.com --method smart-r1-7m [--authors A B ...]

`--rollouts`: a directory of .npz files (`save_rollouts_npz`: scenario_id, agent_id,
trajectories [n_rollout, n_agent, 80, 4]), one .npz, or an existing submission
(.binproto / shards / .tar.gz). Each scene's rollouts are validated with the official
submission checks; any failure is listed (scene and agent ids) and nothing is packed unless
`--skip-invalid`. Shards are `submission.binproto-0000i-of-0000n`, each a complete
`SimAgentsChallengeSubmission` with the metadata.
"""

from __future__ import annotations

import sys

from smart_r1.cli.common import add_command, add_scenes_argument, scenes_spec


def register(subparsers) -> None:
    p = add_command(subparsers, "export-submission", "validate rollouts and pack a WOSAC submission .tar.gz", __doc__)
    add_scenes_argument(p)
    p.add_argument("--rollouts", required=True, help="directory of .npz rollouts, one .npz, or a submission")
    p.add_argument("--out", required=True, help="output .tar.gz")
    p.add_argument("--account", required=True, help="account_name (the leaderboard account e-mail)")
    p.add_argument("--method", required=True, help="unique_method_name")
    p.add_argument("--authors", nargs="*", default=[], help="authors")
    p.add_argument("--affiliation", default="")
    p.add_argument("--description", default="")
    p.add_argument("--method-link", default="")
    p.add_argument("--uses-lidar-data", action="store_true")
    p.add_argument("--uses-camera-data", action="store_true")
    p.add_argument("--uses-public-model-pretraining", action="store_true")
    p.add_argument("--public-model-names", nargs="*", default=[])
    p.add_argument("--num-model-parameters", default="", help='e.g. "7M"')
    p.add_argument(
        "--no-closed-loop-ack",
        action="store_true",
        help="do not set acknowledge_complies_with_closed_loop_requirement",
    )
    p.add_argument("--scenes-per-shard", type=int, default=16)
    p.add_argument("--skip-invalid", action="store_true", help="pack the valid rollout sets, list the invalid ones")
    p.add_argument(
        "--partial",
        action="store_true",
        help="allow scenes of --scenes without rollouts (default: every scene needs rollouts)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from smart_r1.metrics.submission import (
        SubmissionMetadata,
        SubmissionValidationError,
        export_submission,
        load_rollouts,
        read_scenarios,
    )

    rollouts = load_rollouts(args.rollouts)
    if not rollouts:
        print(f"smart-r1 export-submission: {args.rollouts}: no rollouts found", file=sys.stderr)
        return 2
    scenarios = read_scenarios(scenes_spec(args.scenes))
    no_scene = sorted(set(rollouts) - set(scenarios))
    if no_scene:
        print(f"smart-r1 export-submission: rollouts for scenes not among --scenes: {no_scene}", file=sys.stderr)
        return 2
    no_rollouts = sorted(set(scenarios) - set(rollouts))
    if no_rollouts and not args.partial:
        print(
            f"smart-r1 export-submission: {len(no_rollouts)} scene(s) have no rollouts: {no_rollouts[:20]}"
            + (" ..." if len(no_rollouts) > 20 else "")
            + " (a leaderboard submission covers every scene; --partial to export anyway)",
            file=sys.stderr,
        )
        return 2
    metadata = SubmissionMetadata(
        account_name=args.account,
        unique_method_name=args.method,
        authors=list(args.authors),
        affiliation=args.affiliation,
        description=args.description,
        method_link=args.method_link,
        uses_lidar_data=args.uses_lidar_data,
        uses_camera_data=args.uses_camera_data,
        uses_public_model_pretraining=args.uses_public_model_pretraining,
        public_model_names=list(args.public_model_names),
        num_model_parameters=args.num_model_parameters,
        acknowledge_complies_with_closed_loop_requirement=not args.no_closed_loop_ack,
    )
    items = [(scenarios[sid], rollouts[sid]) for sid in sorted(rollouts)]
    try:
        report = export_submission(
            items, args.out, metadata, scenes_per_shard=args.scenes_per_shard, skip_invalid=args.skip_invalid, progress=True
        )
    except SubmissionValidationError as err:
        print(f"smart-r1 export-submission: {err}", file=sys.stderr)
        return 2
    for msg in report.invalid.values():
        print(f"not packed: {msg}", file=sys.stderr)
    print(
        f"wrote {report.out_path}: {len(report.packed_scenario_ids)} scene(s) in {len(report.shard_names)} shard(s) "
        f"({', '.join(report.shard_names)})"
    )
    return 1 if report.invalid else 0
