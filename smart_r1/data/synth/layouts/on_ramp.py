"""Highway on-ramp merge: a multi-lane road with an entry ramp that joins its rightmost lane.

The ramp curves in, runs alongside the rightmost lane as an acceleration lane, and tapers into
it. The taper and the rightmost lane's stretch beside it are both connectors into the same
lane (`exit_lanes`), so they conflict: ramp vehicles (priority 0) merge only into an accepted
gap to approaching main-road traffic (priority 2); main-road vehicles hold the merge stretch
while they pass. No sidewalks (no pedestrians); lanes in both directions.
"""

from __future__ import annotations

import math

import numpy as np

from smart_r1.data.scene import RoadEdgeType
from smart_r1.data.synth import geometry as geo
from smart_r1.data.synth.layouts import register_layout
from smart_r1.data.synth.roadmap import MPH_PER_MPS, RoadMap, add_lane_lines


@register_layout("on_ramp")
def on_ramp(rng: np.random.Generator, n_target: int, config) -> RoadMap:
    rm = RoadMap("on_ramp")
    n_f = max(2, min(4, 1 + n_target // 40 + int(rng.integers(0, 2))))
    n_b = int(rng.integers(max(1, n_f - 1), n_f + 1))
    w = float(rng.uniform(3.5, 3.8))
    limit = float(rng.choice([45, 50, 55, 60, 65])) / MPH_PER_MPS
    ramp_limit = limit * float(rng.uniform(0.7, 0.85))
    before = float(rng.uniform(160.0, 260.0))  # main road before the merge start
    after = float(rng.uniform(110.0, 200.0))  # after the merge end
    taper = float(rng.uniform(50.0, 80.0))
    accel = float(rng.uniform(40.0, 80.0))  # parallel acceleration lane
    x_ms, x_me = 0.0, taper
    x_a0 = x_ms - accel
    y_r = -(n_f - 0.5) * w  # rightmost lane centre
    y_a = y_r - w  # acceleration lane centre
    rot = float(rng.uniform(-math.pi, math.pi))
    c, s_ = math.cos(rot), math.sin(rot)
    R = np.array([[c, -s_], [s_, c]])
    place = lambda p: np.asarray(p, np.float64) @ R.T  # noqa: E731  [n, 2] local -> map frame
    ex = np.array([1.0, 0.0])

    # main road
    x0, x1 = x_ms - before, x_me + after
    for i in range(n_f):
        y = -(i + 0.5) * w
        if i < n_f - 1:
            rm.add_lane(place(geo.line(np.array([x0, y]), np.array([x1, y]))), limit, rightmost=False)
        else:
            first = rm.add_lane(place(geo.line(np.array([x0, y]), np.array([x_ms, y]))), limit, rightmost=True)
            last = rm.add_lane(place(geo.line(np.array([x_me, y]), np.array([x1, y]))), limit, rightmost=True)
            rm.add_connector(first, last, place(geo.line(np.array([x_ms, y]), np.array([x_me, y]))), "straight", 2, limit)
    for i in range(n_b):
        y = (i + 0.5) * w
        rm.add_lane(place(geo.line(np.array([x1, y]), np.array([x0, y]))), limit, rightmost=i == n_b - 1)
    # ramp: a curve in from the lower left, the acceleration lane, then the taper into the rightmost lane
    drop = float(rng.uniform(25.0, 45.0))
    run = float(rng.uniform(70.0, 110.0))
    ang = math.radians(float(rng.uniform(12.0, 25.0)))
    p0 = np.array([x_a0 - run, y_a - drop])
    curve = geo.smooth_join(p0, np.array([math.cos(ang), math.sin(ang)]), np.array([x_a0, y_a]), ex)  # [m, 2]
    lead = geo.line(p0 - 40.0 * np.array([math.cos(ang), math.sin(ang)]), p0)
    ramp_pts = np.concatenate([lead[:-1], curve[:-1], geo.line(np.array([x_a0, y_a]), np.array([x_ms, y_a]))])  # [n, 2]
    ramp = rm.add_lane(place(ramp_pts), ramp_limit, rightmost=True)
    merge = geo.smooth_join(np.array([x_ms, y_a]), ex, np.array([x_me, y_r]), ex)  # [m, 2]
    rm.add_connector(ramp, last, place(merge), "right", 0, limit)

    # lines and edges (road on the left of every edge)
    center = geo.line(np.array([x0, 0.0]), np.array([x1, 0.0]))
    add_lane_lines(rm, place(center), n_f, n_b, w, two_way=True)
    rm.road_edges.append((int(RoadEdgeType.BOUNDARY), place(geo.line(np.array([x1, n_b * w]), np.array([x0, n_b * w]), 2.0))))
    ramp_geom = np.concatenate([lead[:-1], curve])  # up to the gore tip
    inner = geo.offset_polyline(ramp_geom, w / 2)  # ramp's left edge (meets the main road's edge at the gore)
    main_right = geo.line(np.array([x0, -n_f * w]), np.array([x_a0, -n_f * w]), 2.0)
    rm.road_edges.append((int(RoadEdgeType.BOUNDARY), place(np.concatenate([main_right[:-1], inner[::-1]]))))
    outer_ramp = geo.offset_polyline(ramp_geom, -w / 2)
    outer_taper = geo.smooth_join(np.array([x_ms, y_a - w / 2]), ex, np.array([x_me, y_r - w / 2]), ex)
    outer = np.concatenate([
        outer_ramp[:-1], geo.line(np.array([x_a0, y_a - w / 2]), np.array([x_ms, y_a - w / 2]), 2.0)[:-1],
        outer_taper[:-1], geo.line(np.array([x_me, y_r - w / 2]), np.array([x1, y_r - w / 2]), 2.0),
    ])
    rm.road_edges.append((int(RoadEdgeType.BOUNDARY), place(outer)))
    shift = rng.uniform(-30.0, 30.0, 2)  # keep the merge off the scene centre
    for lane in rm.lanes:
        lane.pts = lane.pts + shift
    rm.road_lines = [(k, p + shift) for k, p in rm.road_lines]
    rm.road_edges = [(k, p + shift) for k, p in rm.road_edges]
    return rm
