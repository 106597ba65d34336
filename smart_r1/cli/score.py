r"""`smart-r1 score`: score a WOSAC submission locally against scenario files — the local
stand-in for the leaderboard server.

    smart-r1 score --scenes 'data/val/*.tfrecord*' --submission sub.tar.gz \
        [--backend fast|official] [--config-year 2025|2024] [--json OUT]

Every scene of the submission must be among `--scenes`; every scene is validated
(`smart_r1.data.validate`: NaN/inf poses, zero agents, nothing to simulate, no map) and every
rollout set with the official submission checks first (a failure names the file, record, scene
and agent ids; exit 2). `--skip-invalid` leaves out exactly the invalid scenes / rollout sets
(e.g. agents missing in some of the 32 rollouts), names them, scores the rest and exits 1. Prints
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


def run(args) -> int:
    from smart_r1.metrics.base import aggregate, get_backend
    from smart_r1.metrics.leaderboard import leaderboard_table
    from smart_r1.data.validate import REQUIRE_MAP, read_checked_scenes
    from smart_r1.metrics.submission import (
        N_ROLLOUT_OFFICIAL,
        SubmissionValidationError,
        read_submission,
        validate_rollouts,
    )

    t0 = time.perf_counter()
    # Rollout sets that cannot even be read consistently (agents missing in some rollouts) are
    # invalid like any other: an error, or with --skip-invalid named and left out.
    invalid: dict[str, str] = {}
    submission = read_submission(args.submission, invalid=invalid if args.skip_invalid else None)
    if not submission and not invalid:
        print(f"smart-r1 score: {args.submission}: the submission holds no scenario rollouts", file=sys.stderr)
        return 2
    # The one scene validation path (smart_r1.data.validate): NaN/inf poses, zero agents,
    # nothing to simulate, no map -> the scene is invalid, never scored.
    checked, bad_scenes = read_checked_scenes(
        scenes_spec(args.scenes), only_ids=set(submission) | set(invalid), require_map=REQUIRE_MAP["score"]
    )
    missing = sorted(set(submission) - set(checked) - set(bad_scenes))
    if missing:
        print(
            f"smart-r1 score: {len(missing)} scene(s) of the submission are not among --scenes {args.scenes}: {missing}",
            file=sys.stderr,
        )
        return 2
    for sid, msg in bad_scenes.items():
        if sid in submission:
            del submission[sid]
            invalid[sid] = f"invalid scene: {msg}"
    scenarios = {sid: proto for sid, (_, proto) in checked.items()}

    n_rollouts = None if args.any_rollout_count else N_ROLLOUT_OFFICIAL
    for sid, rollouts in submission.items():
        try:
            validate_rollouts(rollouts, scenario=scenarios[sid], n_rollouts=n_rollouts)
        except SubmissionValidationError as err:
            invalid[sid] = str(err)
    if invalid:
        if not args.skip_invalid:
            print(f"smart-r1 score: error: {len(invalid)} invalid scene(s) / rollout set(s) (--skip-invalid scores the rest): "
                  + " | ".join(invalid.values()), file=sys.stderr)
            return 2
        print(f"smart-r1 score: skipped {len(invalid)} invalid scene(s) / rollout set(s): {sorted(invalid)}", file=sys.stderr)
        for msg in invalid.values():
            print(f"  skipped: {msg}", file=sys.stderr)
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
                scores.append(backend.score(checked[sid][0], submission[sid]))
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
