"""Objective registry: `@register_objective("name")` on a class, `get_objective(name, **params)`.

An objective is built from its config parameters (a stage's `params:` mapping). Unknown
parameters raise a `TypeError` naming the objective and the parameter.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

_OBJECTIVES: dict[str, Callable] = {}
_BUILTIN = ("bc", "catk", "mpo", "grpo", "dpo", "ppo")


def register_objective(name: str):
    def deco(cls):
        if name in _OBJECTIVES and _OBJECTIVES[name] is not cls:
            raise ValueError(f"objective {name!r} registered twice")
        _OBJECTIVES[name] = cls
        cls.name = name
        return cls

    return deco


def _load_builtins() -> None:
    for mod in _BUILTIN:
        importlib.import_module(f"smart_r1.objectives.{mod}")


def list_objectives() -> list[str]:
    _load_builtins()
    return sorted(_OBJECTIVES)


def objective_class(name: str):
    """The class registered as `name` (its class attributes: `needs_reference`, `needs_scenes`, ...)."""
    _load_builtins()
    if name not in _OBJECTIVES:
        raise KeyError(f"unknown objective {name!r}; known: {sorted(_OBJECTIVES)}")
    return _OBJECTIVES[name]


def get_objective(name: str, **params):
    cls = objective_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    unknown = [k for k in params if k not in accepted]
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        allowed = sorted(k for k in accepted if k != "self")
        raise TypeError(f"objective {name!r}: unknown parameter(s) {unknown}; allowed: {allowed}")
    return cls(**params)
