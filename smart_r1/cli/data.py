"""`smart-r1 data ...`: inspect Scenario files, synthesize scenes, build the Parquet scene cache."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect / synthesize / preprocess WOMD Scenario data")
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])

    p = sub.add_parser(
        "inspect",
        help="summary per scene of Scenario TFRecord files (GLOB, list, or comma list)",
        description="Summary per scene. Exit status: 0 fine, 1 some scene has validation problems, "
        "2 corrupt / non-Scenario record or missing file (the error names file, record and byte offset).",
    )
    p.add_argument("paths", nargs="+", metavar="GLOB", help="TFRecord file(s), glob(s) or directory (plain or gzip)")
    p.add_argument("--json", action="store_true", help="one JSON object per scene, then a JSON totals line")
    p.add_argument("--skip-corrupt", action="store_true", help="skip corrupt / non-Scenario records, report the count")
    p.add_argument("--strict-map", action="store_true", help="count a scene without map features as a problem")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("synth", help="write synthetic WOMD Scenario shards")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-scenes", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--min-agents", type=int, default=None)
    p.add_argument("--max-agents", type=int, default=None)
    p.add_argument("--profile", default="small", choices=("small", "womd"),
                   help="scene preset: small (issue-2 scenes, 8-64 tracks) or womd (WOMD's shape: 32-136 tracks, 6-8 to predict, richer behaviour)")
    p.set_defaults(func=_synth)

    p = sub.add_parser("preprocess", help="convert Scenario shards into a Parquet scene cache (Ray, resumable)")
    p.add_argument("--input", required=True, help="input TFRecord glob / comma list / directory")
    p.add_argument("--out", required=True, help="cache directory")
    p.add_argument("--num-workers", type=int, default=None, help="Ray tasks in flight (0: no Ray, in-process)")
    p.add_argument("--skip-corrupt", action="store_true", help="skip corrupt / non-Scenario records, count them")
    p.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True,
                   help="check every scene (NaN/inf poses, zero agents, nothing to simulate): fail on an invalid "
                        "scene, or drop it with --skip-corrupt (default: on; --no-validate caches scenes unchecked)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    p.set_defaults(func=_preprocess)


def _inspect(args) -> int:
    from smart_r1.data.convert import ScenarioParseError
    from smart_r1.data.scenario_io import iter_scenes_with_refs, validation_problems
    from smart_r1.data.tfrecord import ReadStats, TFRecordCorruptError

    stats = ReadStats()
    n_scenes = n_with_problems = 0
    try:
        for ref, scene in iter_scenes_with_refs(args.paths, skip_corrupt=args.skip_corrupt, stats=stats):
            n_scenes += 1
            info = {"file": ref.path, "record": ref.index, "offset": ref.offset, **scene.summary()}
            info["problems"] = validation_problems(scene, allow_missing_map=False)
            if not args.strict_map:
                info["problems"] = [
                    p + " (allowed)" if "no map features" in p else p for p in info["problems"]
                ]
            n_with_problems += any("(allowed)" not in p for p in info["problems"])
            if args.json:
                print(json.dumps(info))
            else:
                _print_summary(info)
    except (TFRecordCorruptError, ScenarioParseError, FileNotFoundError) as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    if stats.records == 0 and stats.skipped == 0:
        print(f"error: {' '.join(args.paths)}: the input holds no records (empty file?)", file=sys.stderr)
        return 2
    totals = {"scenes": n_scenes, "scenes_with_problems": n_with_problems, **stats.as_dict()}
    if args.json:
        print(json.dumps({"totals": totals}))
    else:
        print(f"{n_scenes} scenes, {n_with_problems} with validation problems; {stats.summary()}")
        if args.skip_corrupt:
            print(f"skipped {stats.skipped} corrupt records")
            for e in stats.errors:
                print(f"  skipped: {e}")
    return 1 if n_with_problems else 0


def _print_summary(info: dict) -> None:
    by_type = ", ".join(f"{k} {v}" for k, v in info["tracks_by_type"].items()) or "none"
    kinds = ", ".join(f"{k} {v}" for k, v in info["map_features_by_kind"].items()) or "none"
    print(f"scene {info['scenario_id']}  ({info['file']} record {info['record']} @ {info['offset']})")
    print(f"  tracks: {info['n_tracks']} ({by_type})")
    print(f"  valid at current step: {info['n_valid_at_current']}, agents to simulate: {info['n_sim_agents']}, "
          f"tracks to predict: {info['n_tracks_to_predict']}")
    print(f"  map features: {info['n_map_features']} ({kinds})")
    print(f"  dynamic map states: {info['n_dynamic_map_states']}, lane states: {info['n_lane_states']} "
          f"over {info['n_signal_lanes']} signal lanes")
    for p in info["problems"]:
        print(f"  problem: {p}")


def _synth(args) -> int:
    from smart_r1.data.synth import write_synthetic_dataset  # written in the synth package

    kw = {}
    if args.min_agents is not None:
        kw["min_agents"] = args.min_agents
    if args.max_agents is not None:
        kw["max_agents"] = args.max_agents
    paths = write_synthetic_dataset(args.out, args.num_scenes, args.seed, args.shards, profile=args.profile, **kw)
    for p in paths:
        print(p)
    print(f"wrote {args.num_scenes} scenes in {len(paths)} shards to {args.out}")
    return 0


def _preprocess(args) -> int:
    from smart_r1.data.cache import PreprocessError, preprocess

    try:
        man = preprocess(
            args.input,
            args.out,
            num_workers=args.num_workers,
            skip_corrupt=args.skip_corrupt,
            address=args.address,
            validate=args.validate,
        )
    except (PreprocessError, FileNotFoundError) as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    print(
        f"cache {args.out}: {man['n_scenes']} scenes in {man['n_shards_done']}/{man['n_inputs']} shards"
        + (f", skipped {man['n_skipped']} corrupt records" if args.skip_corrupt or man["n_skipped"] else "")
    )
    return 0 if man["complete"] else 1
