r"""`smart-r1 score`: score a WOSAC submission locally against scenario files — the local
stand-in for the leaderboard server.

    smart-r1 score --scenes 'data/val/*.tfrecord*' --submission sub.tar.gz \
        [--backend fast|official] [--config-year 2025|2024] [--json OUT]

Every scene of the submission must be among `--scenes`; every rollout set is validated with
the official submission checks first (a failure names the scene and the agent ids). Prints
the leaderboard table (one row per scene + the aggregate) and writes per-scene and aggregate
results with the official metric field names to `--json`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from smart_r1.cli.common import add_command, add_scenes_argument, scenes_spec


def register(subparsers) -> None:
    p = add_command(subparsers, "score", "score a WOSAC submission (.binproto, shards or .tar.gz) against scenario files", __doc__)
    add_scenes_argument(p)
    p.add_argument("--submission", required=True, help="submission: .binproto, shard glob, directory of shards or .tar.gz")
    p.add_argument("--backend", default="official", choices=("official", "fast"), help="metric backend: official (waymo_open_dataset) or fast (torch)")
    p.add_argument("--config-year", type=int, default=2025, choices=(2025, 2024), help="challenge config (weights)")
    p.add_argument("--json", dest="json_out", default=None, help="write per-scene and aggregate results here")
    p.add_argument("--format", default="markdown", choices=("markdown", "rich"), help="table style")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="score the valid rollout sets and list the invalid ones (default: fail on any invalid set)",
    )
    p.add_argument(
        "--any-rollout-count",
        action="store_true",
        help="accept rollout counts other than the official 32 (cheap local checks only)",
    )
    p.set_defaults(func=run)


def _scene_for_fast(proto):
    try:
        from smart_r1.data.convert import scenario_to_scene
    except ImportError as err:
        raise SystemExit(f"smart-r1 score: the fast backend needs smart_r1.data.convert ({err})") from err
    return scenario_to_scene(proto)


def run(args) -> int:
    from smart_r1.metrics.base import aggregate, get_backend
    from smart_r1.metrics.leaderboard import leaderboard_table
    from smart_r1.metrics.submission import (
        N_ROLLOUT_OFFICIAL,
        SubmissionValidationError,
        read_scenarios,
        read_submission,
        validate_rollouts,
    )

    t0 = time.perf_counter()
    submission = read_submission(args.submission)
    if not submission:
        print(f"smart-r1 score: {args.submission}: the submission holds no scenario rollouts", file=sys.stderr)
        return 2
    scenarios = read_scenarios(scenes_spec(args.scenes), only_ids=submission)
    missing = sorted(set(submission) - set(scenarios))
    if missing:
        print(
            f"smart-r1 score: {len(missing)} scene(s) of the submission are not among --scenes {args.scenes}: {missing}",
            file=sys.stderr,
        )
        return 2

    n_rollouts = None if args.any_rollout_count else N_ROLLOUT_OFFICIAL
    invalid: dict[str, str] = {}
    for sid, rollouts in submission.items():
        try:
            validate_rollouts(rollouts, scenario=scenarios[sid], n_rollouts=n_rollouts)
        except SubmissionValidationError as err:
            invalid[sid] = str(err)
    if invalid:
        print(f"smart-r1 score: {len(invalid)} invalid rollout set(s):", file=sys.stderr)
        for msg in invalid.values():
            print(f"  {msg}", file=sys.stderr)
        if not args.skip_invalid:
            return 2
    ids = [sid for sid in submission if sid not in invalid]
    if not ids:
        print("smart-r1 score: nothing valid to score", file=sys.stderr)
        return 2

    kwargs = {"config_year": args.config_year}
    if args.backend == "official":
        kwargs["n_rollouts"] = n_rollouts
    backend = get_backend(args.backend, **kwargs)
    from tqdm import tqdm

    scores = []
    try:
        for sid in tqdm(ids, desc=f"{args.backend} WOSAC metrics", unit="scene", file=sys.stderr):
            if args.backend == "official":
                scores.append(backend.score(None, submission[sid], scenario_proto=scenarios[sid]))
            else:
                scores.append(backend.score(_scene_for_fast(scenarios[sid]), submission[sid]))
    finally:
        if hasattr(backend, "close"):
            backend.close()

    per_scene = {s.scenario_id: s.as_flat_dict() for s in scores}
    agg = aggregate(scores)
    rows = dict(per_scene)
    rows[f"aggregate ({len(scores)} scenes)"] = agg
    title = f"WOSAC {args.config_year} ({args.backend} backend): {args.submission}"
    print(leaderboard_table(rows, fmt=args.format, title=title))
    agg_proto_names = {
        "realism_meta_metric": agg["metametric"],
        "kinematic_metrics": agg["kinematic_metrics"],
        "interactive_metrics": agg["interactive_metrics"],
        "map_based_metrics": agg["map_based_metrics"],
        "min_ade": agg["min_average_displacement_error"],
        "simulated_collision_rate": agg["simulated_collision_rate"],
        "simulated_offroad_rate": agg["simulated_offroad_rate"],
        "simulated_traffic_light_violation_rate": agg["simulated_traffic_light_violation_rate"],
    }
    if args.json_out:
        out = {
            "submission": str(args.submission),
            "scenes": [str(s) for s in args.scenes],
            "backend": args.backend,
            "config_year": args.config_year,
            "n_scenes": len(scores),
            "per_scene": per_scene,
            "aggregate": agg,  # SimAgentMetrics field names (mean over scenes)
            "bucketed": agg_proto_names,  # SimAgentsBucketedMetrics field names
            "invalid": invalid,
            "seconds": time.perf_counter() - t0,
        }
        path = Path(args.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2))
        print(f"wrote {path}", file=sys.stderr)
    return 1 if invalid else 0
