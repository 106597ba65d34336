"""Straight multi-lane two-way road, optionally with a mid-block crosswalk."""

from __future__ import annotations

import math

import numpy as np

from smart_r1.data.synth import geometry as geo
from smart_r1.data.synth.layouts import register_layout
from smart_r1.data.synth.roadmap import MPH_PER_MPS, RoadMap, build_corridor


@register_layout("straight")
def straight(rng: np.random.Generator, n_target: int, config) -> RoadMap:
    rm = RoadMap("straight")
    n_fwd = max(1 + n_target // 48, int(rng.choice([1, 2, 2, 3, 3, 4])))
    n_bwd = n_fwd if rng.random() < 0.7 else max(1 + n_target // 64, int(rng.integers(1, 4)))
    w = float(rng.uniform(3.3, 3.9))
    limit = float(rng.choice([25, 30, 35, 40, 45])) / MPH_PER_MPS
    length = float(np.clip(140 + 240 * n_target / max(1, n_fwd + n_bwd) / 10, 160, 400))
    theta = float(rng.uniform(-math.pi, math.pi))
    d = geo.unit(theta)
    center = geo.line(-d * length / 2, d * length / 2, 1.0)
    cw = float(rng.uniform(0.35, 0.65)) * length if rng.random() < 0.5 else None
    build_corridor(rng, rm, center, n_fwd, n_bwd, w, limit, crosswalk_at=cw, parking=(bool(rng.random() < 0.4), bool(rng.random() < 0.4)))
    return rm
