"""Layout registry: each module registers a builder `(rng, n_target, config) -> RoadMap`."""

from __future__ import annotations

from typing import Callable

import numpy as np

LAYOUTS: dict[str, Callable] = {}


def register_layout(name: str):
    def deco(fn):
        if name in LAYOUTS:
            raise ValueError(f"layout {name!r} registered twice")
        LAYOUTS[name] = fn
        fn.layout_name = name
        return fn

    return deco


def build_layout(name: str, rng: np.random.Generator, n_target: int, config):
    if name not in LAYOUTS:
        raise KeyError(f"unknown synthetic layout {name!r}; known: {sorted(LAYOUTS)}")
    rm = LAYOUTS[name](rng, n_target, config)
    rm.layout = name
    return rm.finalize()


# Register the built-in layouts (import for side effects).
from smart_r1.data.synth.layouts import curved, grid, intersection, on_ramp, roundabout, straight, t_junction  # noqa: E402,F401
