"""The `smart-r1` command. Each subcommand lives in its own module of this package and
registers itself in `COMMAND_MODULES`; `main` builds the parser from them."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Module (in this package) -> it defines `register(subparsers)` adding one or more subcommands.
COMMAND_MODULES = [
    "data",
    "tokens",
    "model",
    "train",
    "simulate",
    "score",
    "export",
    "render",
    "evaluate",
    "demo",
]


def _quiet_telemetry() -> None:
    """Nothing the project starts phones home."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smart-r1",
        description="Train and evaluate SMART-R1 style multi-agent traffic simulators (WOMD / WOSAC).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"smart_r1.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"smart_r1.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_telemetry()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as err:
        # install errors that carry the fix (smart_r1.metrics.official / smart_r1.data.protos, not imported here)
        if type(err).__name__ not in ("OfficialScorerMissing", "WomdProtosMissing"):
            raise
        print(f"smart-r1 {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
