"""Errors that mean "the input is wrong", not "the code is wrong".

`InputError` (a `ValueError`) is the base of every error about what a user gave: a file, a
record, a scene, a config field, an option. Its message names what is wrong and where (file,
record, scenario id, field, agent ids). The command line prints such an error as one line and
exits 2 (`smart-r1 --debug ...` shows the traceback); any other exception is a bug and keeps
its traceback. This module imports nothing, so every layer can use it.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input; the message names the file / record / scene / field and the problem."""


class EmptyInputError(InputError):
    """An input that holds no records (or no scenes) where a command needs some."""


class NonFiniteInputError(InputError):
    """NaN / inf where a number is needed (e.g. the inputs of a metric backend)."""


class ConfigError(InputError):
    """A config field is missing, unknown, of the wrong type or out of range; the message names it."""


class CheckpointError(InputError):
    """A file given as a checkpoint that is not a readable smart-r1 checkpoint."""


class InputNotFoundError(InputError, LookupError):
    """A named thing (scene, scenario id, rollouts of a scene) is not in the given input."""


def one_line(err: BaseException) -> str:
    """The error's message on one line (multi-line messages joined with '; ')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__
