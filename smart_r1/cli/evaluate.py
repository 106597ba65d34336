r"""`smart-r1 evaluate`: roll out checkpoints / baselines (or take existing rollouts), score
them with the WOSAC metrics, and write a report folder.

    smart-r1 evaluate --checkpoint runs/a/checkpoints/last.pt --checkpoint baseline:constant_velocity \
        [--rollouts sub.tar.gz ...] --scenes 'data/val/*.tfrecord*' --backend fast|official \
        [--num-rollouts 32] [--top-k K] [--out DIR] [--mlflow [URI]] \
        [--ray | --address ADDR] [--num-rollout-workers N] [--num-scorers M]

Per-scene results go to DIR/scores.parquet as they arrive; re-running the same command skips
the scenes already there. The report is DIR/report/report.md and report.html (leaderboard
table, per-metric bar charts, logged-vs-simulated histograms, worst scenes with renders).
Non-learned policies: `baseline:constant_velocity`, `baseline:log_replay`, `baseline:log_replay_noise`,
and on synthetic scenes `baseline:oracle` (the generator re-simulating each future).

`--top-k K` samples checkpoints with top-K (default 48); a non-default K is appended to the
default row label (`name@topK`) so its rows never resume as another K's.

Scaled out on Ray: `--ray` starts a private local Ray instance, `--address ADDR` joins a
cluster (`auto` inside `ray job submit`). N rollout actors (each loads a checkpoint / rollout
file once) and M scorer actors (the official backend's TensorFlow runs there, not here) work
on a bounded stream of scenes; rows reach the same scores file as they arrive, a rerun
simulates only the missing scenes, and actors that die are restarted (--max-restarts) with
their scenes re-queued. Same seeds, same rows as without Ray.
"""

from __future__ import annotations

import os
import sys

from smart_r1.cli.common import add_command, add_scenes_argument, scenes_spec
from smart_r1.errors import InputError, one_line


def register(subparsers) -> None:
    p = add_command(
        subparsers, "evaluate", "roll out checkpoints / baselines / rollout files, score (WOSAC) and write a report", __doc__
    )
    p.add_argument("--checkpoint", action="append", default=[], help="checkpoint file or baseline:<name> (repeatable)")
    p.add_argument("--rollouts", action="append", default=[], help="submission (.binproto/shards/.tar.gz), .npz or dir of .npz (repeatable)")
    p.add_argument("--name", action="append", default=None, help="row label per --checkpoint then --rollouts, in order (repeatable)")
    add_scenes_argument(p)
    p.add_argument("--backend", default="fast", choices=("fast", "official"), help="metric backend")
    p.add_argument("--config-year", type=int, default=2025, choices=(2025, 2024))
    p.add_argument("--num-rollouts", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top-k", type=int, default=None, help="sampler top-k of checkpoint sources (default 48)")
    ray_g = p.add_argument_group("Ray (scaled-out evaluation)")
    ray_g.add_argument("--ray", action="store_true", help="run on a private local Ray instance")
    ray_g.add_argument("--address", default=None, help="Ray cluster address ('auto' inside ray job submit); implies --ray")
    ray_g.add_argument("--num-rollout-workers", type=int, default=2, help="rollout actors (with --ray/--address)")
    ray_g.add_argument("--num-scorers", type=int, default=1, help="scorer actors (with --ray/--address)")
    ray_g.add_argument("--max-restarts", type=int, default=3, help="restarts of a dead actor before it is dropped")
    ray_g.add_argument("--rollout-resources", default=None, metavar="JSON",
                       help='custom Ray resources per rollout actor, e.g. \'{"rollout": 1}\' (lands on nodes advertising them)')
    ray_g.add_argument("--scorer-resources", default=None, metavar="JSON", help="custom Ray resources per scorer actor")
    p.add_argument("--out", default="eval_out", help="output folder (scores.parquet, report/)")
    p.add_argument("--scores", default=None, help="Parquet file of per-scene scores (default OUT/scores.parquet)")
    p.add_argument("--no-report", action="store_true", help="only score")
    p.add_argument("--worst", type=int, default=5, help="worst scenes (by meta metric) shown with renders, per model")
    p.add_argument("--hist-scene", default=None, help="scenario id for the logged-vs-simulated histograms (default: first)")
    p.add_argument("--no-renders", action="store_true", help="skip the renders of the worst scenes")
    p.add_argument("--no-gif", action="store_true", help="grid PNGs only, no GIFs")
    p.add_argument("--frame-px", type=int, default=240, help="size of one render frame")
    p.add_argument("--embed-images", action="store_true", help="inline the images into report.html")
    p.add_argument(
        "--mlflow", nargs="?", const="", default=None, metavar="URI",
        help="log metrics and the report to MLflow (URI, or MLFLOW_TRACKING_URI when given without one)",
    )
    p.add_argument("--experiment", default="smart-r1-eval", help="MLflow experiment")
    p.add_argument("--run-name", default=None, help="MLflow run name")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first scene that fails (default: report it)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from smart_r1.eval.evaluate import aggregate_rows, evaluate
    from smart_r1.metrics.leaderboard import leaderboard_table
    from smart_r1.viz.report import evaluate_and_report

    if not args.checkpoint and not args.rollouts:
        print("smart-r1 evaluate: give at least one --checkpoint (or baseline:<name>) or --rollouts", file=sys.stderr)
        return 2
    tracker = None
    if args.mlflow is not None:
        from smart_r1.tracking import make_tracker

        uri = args.mlflow or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            print("smart-r1 evaluate: --mlflow without a URI needs MLFLOW_TRACKING_URI", file=sys.stderr)
            return 2
        tracker = make_tracker(
            uri, experiment=args.experiment, run_name=args.run_name, buffer_dir=os.path.join(args.out, ".tracking_buffer"),
            tags={"smart_r1.command": "evaluate"},
        )
    scenes = scenes_spec(args.scenes)
    if args.top_k is not None and args.top_k < 1:
        print(f"smart-r1 evaluate: --top-k must be >= 1, got {args.top_k}", file=sys.stderr)
        return 2
    run_fn = evaluate
    if args.ray or args.address:
        import functools

        # Ray lives outside the library: the distributed executor is in learner/.
        from learner.distributed_eval import evaluate_distributed

        run_fn = functools.partial(evaluate_distributed, address=args.address, num_rollout_workers=args.num_rollout_workers,
                                   num_scorers=args.num_scorers, max_restarts=args.max_restarts,
                                   rollout_resources=args.rollout_resources, scorer_resources=args.scorer_resources)
    try:
        result = evaluate_and_report(
            evaluate_fn=run_fn,
            checkpoints=args.checkpoint,
            rollouts=args.rollouts,
            names=args.name,
            scenes=scenes,
            backend=args.backend,
            num_rollouts=args.num_rollouts,
            seed=args.seed,
            top_k=args.top_k,
            out_dir=args.out,
            scores_path=args.scores,
            config_year=args.config_year,
            report=not args.no_report,
            report_options=dict(
                worst_k=args.worst,
                hist_scene=args.hist_scene,
                render=not args.no_renders,
                gif=not args.no_gif,
                frame_px=args.frame_px,
                embed_images=args.embed_images,
            ),
            tracker=tracker,
            progress=not args.quiet,
            fail_fast=args.fail_fast,
        )
    except (FileNotFoundError, KeyError, LookupError, ValueError) as err:
        if isinstance(err, InputError):
            raise  # main() prints it as one line (exit 2), or its traceback with --debug
        raise InputError(one_line(err)) from err  # evaluate's own argument checks: a user error too
    finally:
        if tracker is not None:
            tracker.close()
    agg = aggregate_rows(result.rows, [s.name for s in result.sources])
    if agg:
        print(leaderboard_table(agg, title=f"WOSAC {args.config_year} ({args.backend}), {args.num_rollouts} rollouts"))
    print(f"scored {result.n_scored} scene x model pair(s), skipped {result.n_skipped} already in {result.scores_path}", file=sys.stderr)
    if result.report_dir is not None:
        print(result.report_dir / "report.html")
    failed = sum(len(v) for v in result.failed.values())
    if failed:
        listed = " | ".join(f"{src} on {sid}: {msg}" for src, by_scene in result.failed.items() for sid, msg in by_scene.items())
        print(f"smart-r1 evaluate: {failed} scene x model pair(s) failed, not stored (a rerun retries them): {listed}", file=sys.stderr)
        return 1
    return 0
