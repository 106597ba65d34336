"""`smart-r1 demo`: the README's main job on the embedded synthetic default.

Full pipeline: synthetic WOMD scenes -> Parquet cache -> motion vocabulary -> BC -> CAT-K SFT
-> MPO RFT -> CAT-K SFT -> evaluation table, on a local Ray cluster with a local MLflow
server (see `configs/cpu_demo.yaml`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main job (full SFT-RFT-SFT pipeline on synthetic scenes, local Ray + MLflow)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default="cpu_demo",
                        help="pipeline config: a shipped config name (cpu_demo, tiny_test, ...) or a YAML path")
    parser.add_argument("--out", default=".smart_r1_runs/demo", help="output directory")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--no-ray", action="store_true", help="run every stage in this process (no Ray, no MLflow server)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a private local one)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The main job is Ray code: it lives with the learner, imported only when the command runs.
    from learner.main_job import run_main_job

    return run_main_job(Path(args.config), Path(args.out), resume=args.resume, use_ray=not args.no_ray, address=args.address)
