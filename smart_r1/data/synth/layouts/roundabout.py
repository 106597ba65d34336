"""Single-lane roundabout with 3-4 arms (counter-clockwise circulation, right-hand traffic).

Each entry -> exit movement is a connector that runs in along a flared entry, around the ring
and out (one arm in four also allows the full circle back: a U-turn). Movements that share
part of the ring conflict, so entering vehicles yield (a reservation of the ring) and queue at
the yield line. Road edges: the outer edge with flared entries/exits, and the central island
(a circle traversed clockwise: the road on its left). Sidewalks along the arms.
"""

from __future__ import annotations

import math

import numpy as np

from smart_r1.data.scene import RoadEdgeType, RoadLineType
from smart_r1.data.synth import geometry as geo
from smart_r1.data.synth.layouts import register_layout
from smart_r1.data.synth.roadmap import MPH_PER_MPS, RoadMap


def _arc(radius: float, a0: float, a1: float, step: float = 1.0) -> np.ndarray:
    """Points on a circle from angle a0 to a1 (either direction).  -> [n, 2]"""
    n = max(3, int(math.ceil(abs(a1 - a0) * radius / step)) + 1)
    a = np.linspace(a0, a1, n)
    return radius * np.stack([np.cos(a), np.sin(a)], 1)


@register_layout("roundabout")
def roundabout(rng: np.random.Generator, n_target: int, config) -> RoadMap:
    rm = RoadMap("roundabout")
    na = int(rng.choice([3, 4, 4]))
    rot = float(rng.uniform(-math.pi, math.pi))
    angles = [rot + k * 2 * math.pi / na + float(rng.uniform(-0.1, 0.1)) for k in range(na)]
    w = float(rng.uniform(3.6, 4.2))
    radius = float(rng.uniform(15.0, 22.0))  # ring lane centre
    r_out, r_isl = radius + w / 2 + 0.6, radius - w / 2 - 0.6
    alpha = 0.42 * 18.0 / radius  # ring angle between an arm's axis and where its entry / exit meets the ring
    flare = 0.14 * 18.0 / radius
    r_stop = r_out + float(rng.uniform(3.0, 5.0))
    lim_arm = float(rng.choice([25, 30, 35])) / MPH_PER_MPS
    lim_ring = min(lim_arm, math.sqrt(2.0 * radius))  # lateral acceleration ~2 m/s^2
    arm = float(np.clip(60 + 0.8 * n_target, 70, 150))
    r_far = [r_stop + arm * float(rng.uniform(0.85, 1.15)) for _ in range(na)]
    u = [geo.unit(a) for a in angles]
    nrm = [geo.rot90(x) for x in u]
    pt = lambda k, r, lat: u[k] * r + nrm[k] * lat  # noqa: E731
    sw = float(rng.uniform(2.2, 3.0))
    lanes_in, lanes_out = [], []
    for k in range(na):
        lanes_in.append(rm.add_lane(geo.line(pt(k, r_far[k], w / 2), pt(k, r_stop, w / 2)), lim_arm, rightmost=True))
        lanes_out.append(rm.add_lane(geo.line(pt(k, r_stop, -w / 2), pt(k, r_far[k], -w / 2)), lim_arm, rightmost=True))
        rm.road_lines.append((int(RoadLineType.SOLID_DOUBLE_YELLOW), geo.line(pt(k, r_stop, 0.0), pt(k, r_far[k], 0.0))))
        for lat in (w + sw, -(w + sw)):
            rm.sidewalks.append(geo.line(pt(k, r_stop + 2.0, lat), pt(k, r_far[k], lat)))
    u_turn_arm = int(rng.integers(na)) if rng.random() < 0.5 else -1
    for k in range(na):
        a_in = angles[k] + alpha
        p_in = radius * geo.unit(a_in)
        entry = geo.smooth_join(pt(k, r_stop, w / 2), -u[k], p_in, geo.unit(a_in + math.pi / 2))
        for step in range(1, na + 1):
            j = (k + step) % na
            if j == k and k != u_turn_arm:
                continue
            a_out = angles[j] - alpha
            while a_out <= a_in + 0.2:
                a_out += 2 * math.pi
            p_out = radius * geo.unit(a_out)
            ring = _arc(radius, a_in, a_out)
            exit_ = geo.smooth_join(p_out, geo.unit(a_out + math.pi / 2), pt(j, r_stop, -w / 2), u[j])
            pts = np.concatenate([entry[:-1], ring[:-1], exit_])  # [n, 2]
            turn = "right" if step == 1 else ("straight" if step < na - 1 or na == 3 and step == 2 else "left")
            rm.add_connector(lanes_in[k], lanes_out[j], pts, turn if j != k else "left", 0, lim_ring)
    # road edges (road on the left): outer edge with flares, then the island clockwise
    for k in range(na):
        j = (k + 1) % na
        a0 = angles[k] + alpha + flare
        a1 = angles[j] - alpha - flare
        while a1 <= a0:
            a1 += 2 * math.pi
        edge = np.concatenate([
            geo.line(pt(k, r_far[k], w), pt(k, r_stop, w), 2.0)[:-1],
            geo.line(pt(k, r_stop, w), r_out * geo.unit(a0), 1.0)[:-1],
            _arc(r_out, a0, a1)[:-1],
            geo.line(r_out * geo.unit(a1), pt(j, r_stop, -w), 1.0)[:-1],
            geo.line(pt(j, r_stop, -w), pt(j, r_far[j], -w), 2.0),
        ])
        rm.road_edges.append((int(RoadEdgeType.BOUNDARY), edge))
    rm.road_edges.append((int(RoadEdgeType.MEDIAN), _arc(r_isl, 2 * math.pi, 0.0)))
    return rm
