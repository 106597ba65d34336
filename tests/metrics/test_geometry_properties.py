"""Property tests (hypothesis) for the geometry of the fast WOSAC metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smart_r1.metrics.features import kinematics
from smart_r1.metrics.geometry import RoadEdgeDistance, box_corners_2d, box_signed_distance, wrap_angle

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

coord = st.floats(-50, 50, allow_nan=False)
size = st.floats(0.5, 8.0, allow_nan=False)
angle = st.floats(-math.pi, math.pi, allow_nan=False)
box = st.tuples(coord, coord, angle, size, size)


def corners(b) -> torch.Tensor:
    x, y, h, length, width = (torch.tensor(v, dtype=torch.float32) for v in b)
    return box_corners_2d(x, y, h, length, width)  # [4, 2]


def sd(a, b) -> float:
    return float(box_signed_distance(corners(a), corners(b)))


def _inside(p: np.ndarray, b) -> bool:
    x, y, h, length, width = b
    d = p - np.array([x, y])
    c, s = math.cos(h), math.sin(h)
    lx, ly = c * d[0] + s * d[1], -s * d[0] + c * d[1]
    return abs(lx) <= length / 2 and abs(ly) <= width / 2


def _boundary(b, n: int = 60) -> np.ndarray:
    c = corners(b).numpy().astype(np.float64)  # [4, 2]
    t = np.linspace(0, 1, n, endpoint=False)[:, None]
    return np.concatenate([c[i] + t * (c[(i + 1) % 4] - c[i]) for i in range(4)])  # [4n, 2]


@SETTINGS
@given(box, box)
def test_box_distance_symmetric(a, b):
    assert sd(a, b) == pytest.approx(sd(b, a), abs=2e-3)


@SETTINGS
@given(box, box, coord, coord, angle)
def test_box_distance_rigid_motion_invariant(a, b, tx, ty, rot):
    def move(bx):
        x, y, h, length, width = bx
        c, s = math.cos(rot), math.sin(rot)
        return (c * x - s * y + tx, s * x + c * y + ty, h + rot, length, width)

    assert sd(move(a), move(b)) == pytest.approx(sd(a, b), abs=5e-3)


@SETTINGS
@given(box, box)
def test_box_distance_sign_and_magnitude(a, b):
    d = sd(a, b)
    pa, pb = _boundary(a), _boundary(b)
    overlap = any(_inside(p, b) for p in pa[::7]) or any(_inside(p, a) for p in pb[::7])
    if overlap:
        assert d <= 1e-3
    # Separated: the distance between the boundaries (dense sampling is an upper bound, within the sampling step).
    brute = np.min(np.linalg.norm(pa[:, None] - pb[None], axis=-1))
    if d > 0:
        assert d <= brute + 1e-3
        step = max(a[3], a[4], b[3], b[4]) / 60
        assert brute <= d + step + 1e-3
    else:
        # Penetration depth (minimum translation to separate) is at most the sum of the half diagonals.
        assert -d <= (math.hypot(a[3], a[4]) + math.hypot(b[3], b[4])) / 2 + 1e-3


def _road(polylines) -> RoadEdgeDistance:
    return RoadEdgeDistance([np.asarray(p, np.float32) for p in polylines], torch.device("cpu"))


@SETTINGS
@given(st.floats(-30, 30), st.floats(0.1, 20), st.booleans())
def test_point_to_straight_edge_signed_distance(along, offset, left):
    """A single straight edge from (-50, 0) to (50, 0): points on its port (left) side are on the
    road (negative), starboard (right) off-road (positive); magnitude = perpendicular distance."""
    road = _road([[[-50, 0, 0], [0, 0, 0], [50, 0, 0]]])
    y = offset if left else -offset
    d = float(road(torch.tensor([[along, y, 0.0]]))[0])
    assert d == pytest.approx(-offset if left else offset, abs=1e-4)


@SETTINGS
@given(st.floats(-40, 40), st.floats(-40, 40), st.floats(0.0, 0.9))
def test_closed_loop_edge_inside_negative_outside_positive(px, py, gap):
    """A CCW square loop whose last point stops `gap` (< 1 m) short of its first point is a
    closed loop (official cyclic rule: ends within 1 m): inside the square is on-road (< 0),
    outside off-road (> 0), |d| = distance to the square's boundary (the closing segment
    included). It is the scene's longest polyline, so the official wrap-around applies."""
    side = 20.0
    pts = []
    corners_sq = [(-side, -side), (side, -side), (side, side), (-side, side), (-side, -side + gap)]
    for (x0, y0), (x1, y1) in zip(corners_sq[:-1], corners_sq[1:]):
        for t in np.linspace(0, 1, 20, endpoint=False):
            pts.append((x0 + t * (x1 - x0), y0 + t * (y1 - y0), 0.0))
    pts.append((*corners_sq[-1], 0.0))
    road = _road([pts, [[500, 500, 0], [501, 500, 0]]])
    d = float(road(torch.tensor([[px, py, 0.0]]))[0])
    inside = max(abs(px), abs(py)) < side
    dist = side - max(abs(px), abs(py)) if inside else math.hypot(max(abs(px) - side, 0), max(abs(py) - side, 0))
    if dist > 0.5 + gap:  # away from the closing gap and the boundary itself
        assert (d < 0) == inside
        assert abs(d) == pytest.approx(dist, abs=2e-3)


def test_open_polyline_ends_are_not_joined():
    """Ends farther than 1 m apart: not a loop; the point beyond the open end gets the plain
    cross-product sign of the nearest segment."""
    road = _road([[[0, 0, 0], [10, 0, 0], [10, 10, 0], [0, 10, 0], [0, 2, 0]], [[500, 500, 0], [501, 500, 0]]])
    assert not bool(road.segs.next[3] == 0)
    assert bool(road.segs.next[3] == 3) and bool(road.segs.prev[0] == 0)
    # Two points just past the open end (0, 2) of the last segment (0, 10) -> (0, 2), nearest to
    # that end: inside the square (x > 0, the segment's left) on-road, outside (x < 0) off-road,
    # |d| = distance to the end point (0, 2).
    d = road(torch.tensor([[0.5, 1.5, 0.0], [-0.5, 1.5, 0.0]])).tolist()
    assert d == pytest.approx([-math.hypot(0.5, 0.5), math.hypot(0.5, 0.5)], abs=1e-5)


@SETTINGS
@given(st.floats(-100, 100))
def test_wrap_angle_range_and_periodicity(a):
    w = float(wrap_angle(torch.tensor(a, dtype=torch.float32)))
    assert -math.pi - 1e-6 <= w < math.pi + 1e-6
    assert math.cos(w) == pytest.approx(math.cos(a), abs=1e-4)
    assert math.sin(w) == pytest.approx(math.sin(a), abs=1e-4)


@SETTINGS
@given(st.lists(st.floats(-0.2, 0.2), min_size=8, max_size=8), st.lists(st.integers(-2, 2), min_size=8, max_size=8), angle)
def test_angular_speed_ignores_2pi_jumps(dh, turns, h0):
    """Headings that differ by multiples of 2 pi give the same angular speed and acceleration."""
    h = np.float32(h0) + np.cumsum(np.asarray(dh, np.float32))  # [8]
    pos = torch.zeros(8, 3)
    base = kinematics(pos, torch.tensor(h))
    jumped = kinematics(pos, torch.tensor(h + 2 * np.pi * np.asarray(turns, np.float32)))
    for a, b in zip(base[2:], jumped[2:]):
        assert torch.allclose(a[2:-2], b[2:-2], atol=2e-3)
