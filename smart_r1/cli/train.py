"""`smart-r1 train --config NAME|PATH [--resume] [--out DIR] [--set key=value ...]`

`--config cpu_demo` names a config shipped with smart-r1 (the repository's `configs/` folder, also
installed inside the package), from any directory; a path (`configs/cpu_demo.yaml`,
`my/run.yaml`) works as before.

Runs the whole stage schedule of the config in this process (synthetic scenes -> cache ->
vocabulary -> stages -> evaluation table); see docs/training.md.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="run a training schedule (BC -> CAT-K -> MPO -> CAT-K ...) from a YAML config",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="training config: a shipped config name (cpu_demo, sft_rft_sft, "
                        "ablations/rft_grpo, ...) or a YAML path")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/last.pt")
    p.add_argument("--out", default=None, help="output directory (default: the config's output_dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set stages.rft.params.beta=0.4 (repeatable)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--ray", action="store_true",
                   help="distribute the RL stages over Ray rollout/scorer actors and track in MLflow "
                        "(starts a local server when none is configured); see docs/runtime.md")
    p.add_argument("--address", default=None, help="with --ray: Ray cluster address ('auto' inside `ray job submit`)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from smart_r1.train.config import ConfigError, load_config, resolved_dict

    if (args.ray or args.address) and not args.print_config:
        # Ray lives outside the library: the distributed driver is in learner/.
        from learner.driver import load_config_with_runtime, run_distributed

        try:
            cfg, runtime = load_config_with_runtime(args.config, args.overrides)
        except ConfigError as err:
            print(f"smart-r1 train: config error: {err}", file=sys.stderr)
            return 2
        result = run_distributed(cfg, resume=args.resume, address=args.address, runtime=runtime, out_dir=args.out)
        print(f"done: {len(result.history)} steps, outputs in {result.output_dir}")
        return 0
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"smart-r1 train: config error: {err}", file=sys.stderr)
        return 2
    if args.out:
        cfg.output_dir = args.out
    if args.print_config:
        print(json.dumps(resolved_dict(cfg), indent=1))
        return 0
    from smart_r1.train.pipeline import run_pipeline

    result = run_pipeline(cfg, resume=args.resume)
    print(f"done: {len(result.history)} steps, outputs in {result.output_dir}")
    return 0
