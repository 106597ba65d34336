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
    parser.add_argument("--debug", action="store_true", help="on an input error, show the Python traceback (any position)")
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
    """Run one command. A user error (`smart_r1.errors.InputError` and its kin: bad file, record,
    scene, config field; or an OS error such as a missing file or a read-only output folder)
    prints one line `smart-r1 <command>: error: ...` and returns 2; `--debug` (anywhere on the
    command line) re-raises it with its traceback. Any other exception is a bug and propagates."""
    _quiet_telemetry()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from smart_r1.errors import InputError, one_line

    try:
        return int(args.func(args) or 0)
    except (InputError, OSError) as err:
        if debug:
            raise
        command = " ".join(a for a in (args.command, getattr(args, "data_command", None)) if a)
        print(f"smart-r1 {command}: error: {one_line(err)} (--debug shows the traceback)", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        # install errors that carry the fix (smart_r1.metrics.official / smart_r1.data.protos, not imported here)
        if debug or type(err).__name__ not in ("OfficialScorerMissing", "WomdProtosMissing"):
            raise
        print(f"smart-r1 {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
