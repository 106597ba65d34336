"""4-way signalised intersection with crosswalks; arm angles and lane counts vary."""

from __future__ import annotations

import math

import numpy as np

from smart_r1.data.synth.layouts import register_layout
from smart_r1.data.synth.roadmap import MPH_PER_MPS, RoadMap, SignalProgram, build_junction


@register_layout("intersection")
def intersection(rng: np.random.Generator, n_target: int, config) -> RoadMap:
    rm = RoadMap("intersection")
    rot = float(rng.uniform(-math.pi, math.pi))
    angles = [rot + k * math.pi / 2 + float(rng.uniform(-0.14, 0.14)) for k in range(4)]
    n_a = max(1 + n_target // 64, int(rng.choice([1, 2, 2, 3])))
    n_b = int(rng.choice([1, 1, 2, 2]))
    lanes = [n_a, n_b, n_a, n_b]
    lim_a = float(rng.choice([25, 30, 35, 40])) / MPH_PER_MPS
    lim_b = float(rng.choice([25, 30, 35])) / MPH_PER_MPS
    w = float(rng.uniform(3.3, 3.8))
    arm = float(np.clip(50 + 1.0 * n_target, 60, 160))
    crosswalk_arms = {k for k in range(4) if rng.random() < 0.85}
    build_junction(
        rng, rm, angles, lanes, lanes, w, [lim_a, lim_b, lim_a, lim_b], arm,
        signal_groups=[0, 1, 0, 1], stop_arms=set(), crosswalk_arms=crosswalk_arms,
    )
    green = [float(rng.uniform(7.0, 16.0)), float(rng.uniform(6.0, 14.0))]
    yellow = float(rng.uniform(3.0, 4.0))
    all_red = float(rng.uniform(1.0, 2.0))
    cycle = sum(green) + 2 * (yellow + all_red)
    rm.signal = SignalProgram(green, yellow, all_red, offset=float(rng.uniform(0.0, cycle)))
    return rm
