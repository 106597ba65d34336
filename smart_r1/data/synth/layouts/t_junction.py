"""T-junction: a through road and a minor road with stop signs; the minor arm's angle varies."""

from __future__ import annotations

import math

import numpy as np

from smart_r1.data.synth.layouts import register_layout
from smart_r1.data.synth.roadmap import MPH_PER_MPS, RoadMap, build_junction


@register_layout("t_junction")
def t_junction(rng: np.random.Generator, n_target: int, config) -> RoadMap:
    rm = RoadMap("t_junction")
    rot = float(rng.uniform(-math.pi, math.pi))
    minor = math.pi / 2 + float(rng.uniform(-0.4, 0.4))
    angles = [rot, rot + minor, rot + math.pi]
    n_major = max(1 + n_target // 64, int(rng.choice([1, 1, 2])))
    n_minor = 1
    lanes = [n_major, n_minor, n_major]
    lim_major = float(rng.choice([25, 30, 35, 40])) / MPH_PER_MPS
    lim_minor = float(rng.choice([20, 25])) / MPH_PER_MPS
    w = float(rng.uniform(3.3, 3.8))
    arm = float(np.clip(60 + 1.0 * n_target, 70, 170))
    crosswalk_arms = {1} | {k for k in (0, 2) if rng.random() < 0.4}
    build_junction(
        rng, rm, angles, lanes, lanes, w, [lim_major, lim_minor, lim_major], arm,
        signal_groups=None, stop_arms={1}, crosswalk_arms=crosswalk_arms,
    )
    return rm
