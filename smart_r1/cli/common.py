"""Argument helpers shared by the subcommand modules (not a subcommand: not in `COMMAND_MODULES`)."""

from __future__ import annotations

import argparse

SCENES_HELP = "Scenario TFRecord files: paths, globs, directories"


def add_command(subparsers, name: str, help: str, doc: str | None) -> argparse.ArgumentParser:
    """A subcommand parser whose `--help` shows the module docstring `doc` as written."""
    return subparsers.add_parser(name, help=help, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_scenes_argument(parser: argparse.ArgumentParser, help: str = SCENES_HELP) -> None:
    """`--scenes` (one or more paths / globs / directories of Scenario TFRecord files)."""
    parser.add_argument("--scenes", required=True, nargs="+", help=help)


def scenes_spec(scenes: list[str]):
    """`--scenes` values -> what the readers take: a single value as given (errors quote it as
    typed), several as the list."""
    return scenes if len(scenes) > 1 else scenes[0]
