"""A small network of 2-3 junctions in a row along a main road (a block of a street grid).

Neighbouring junctions share the arm between them: the outbound lanes of one junction run on
into the inbound lanes of the next (`entry_lanes` / `exit_lanes`), so routes pass several
junctions and must get a reservation at each. Junctions are signalised (coordinated: the same
fixed-time programme) or stop-controlled on the cross street, mixed per scene.
"""

from __future__ import annotations

import math

import numpy as np

from smart_r1.data.synth import geometry as geo
from smart_r1.data.synth.layouts import register_layout
from smart_r1.data.synth.roadmap import MPH_PER_MPS, RoadMap, SignalProgram, build_junction


@register_layout("grid")
def grid(rng: np.random.Generator, n_target: int, config) -> RoadMap:
    rm = RoadMap("grid")
    n_junction = int(rng.choice([2, 2, 3]))
    rot = float(rng.uniform(-math.pi, math.pi))
    u = geo.unit(rot)
    n_a = max(1 + n_target // 80, int(rng.choice([1, 2, 2])))
    w = float(rng.uniform(3.3, 3.7))
    lim_a = float(rng.choice([25, 30, 35])) / MPH_PER_MPS
    lim_b = float(rng.choice([20, 25, 30])) / MPH_PER_MPS
    half_block = [float(rng.uniform(45.0, 75.0)) for _ in range(n_junction - 1)]  # half the distance between neighbours
    outer = float(np.clip(40 + 0.5 * n_target, 50, 110))
    centers, x = [], 0.0
    for k in range(n_junction):
        centers.append(u * x)
        if k < n_junction - 1:
            x += 2 * half_block[k]
    signalised = [bool(rng.random() < 0.6) for _ in range(n_junction)]
    inbound, outbound = [], []
    for k in range(n_junction):
        four_way = signalised[k] or rng.random() < 0.6
        cross = math.pi / 2 + float(rng.uniform(-0.1, 0.1))
        if four_way:
            angles = [rot, rot + cross, rot + math.pi, rot + math.pi + cross]
            n_b = int(rng.choice([1, 1, 2]))
            lanes = [n_a, n_b, n_a, n_b]
            limits = [lim_a, lim_b, lim_a, lim_b]
            groups, stops = [0, 1, 0, 1], {1, 3}
        else:
            side = float(rng.choice([1.0, -1.0]))  # minor arm on the left / right of the main road
            # arms in counter-clockwise order
            angles = [rot, rot + cross, rot + math.pi] if side > 0 else [rot - cross, rot, rot + math.pi]
            lanes = [n_a, 1, n_a] if side > 0 else [1, n_a, n_a]
            limits = [lim_a, lim_b, lim_a] if side > 0 else [lim_b, lim_a, lim_a]
            groups, stops = None, ({1} if side > 0 else {0})
        # which arm index points along +u / -u (the shared arms)
        east = next(i for i, a in enumerate(angles) if abs(geo.wrap(a - rot)) < 1e-6)
        west = next(i for i, a in enumerate(angles) if abs(geo.wrap(a - rot - math.pi)) < 1e-6)
        far = {}
        if k < n_junction - 1:
            far[east] = half_block[k]
        if k > 0:
            far[west] = half_block[k - 1]
        crosswalk_arms = {i for i in range(len(angles)) if rng.random() < 0.6}
        lanes_in, lanes_out = build_junction(
            rng, rm, angles, lanes, lanes, w, limits, outer,
            signal_groups=groups if signalised[k] else None,
            stop_arms=set() if signalised[k] else stops,
            crosswalk_arms=crosswalk_arms, center=centers[k], arm_far=far,
        )
        inbound.append((lanes_in[east], lanes_in[west]))
        outbound.append((lanes_out[east], lanes_out[west]))
    for k in range(n_junction - 1):  # shared arms: outbound lanes continue as the neighbour's inbound lanes
        for a, b in zip(outbound[k][0], inbound[k + 1][1]):
            rm.connect(a, b)
        for a, b in zip(outbound[k + 1][1], inbound[k][0]):
            rm.connect(a, b)
    if any(signalised):
        green = [float(rng.uniform(8.0, 16.0)), float(rng.uniform(6.0, 12.0))]
        yellow, all_red = float(rng.uniform(3.0, 4.0)), float(rng.uniform(1.0, 2.0))
        cycle = sum(green) + 2 * (yellow + all_red)
        rm.signal = SignalProgram(green, yellow, all_red, offset=float(rng.uniform(0.0, cycle)))
    return rm
