"""Small 2-D polyline helpers for the synthetic map builder (numpy only)."""

from __future__ import annotations

import math

import numpy as np


def rot90(v: np.ndarray) -> np.ndarray:
    """Rotate vectors by +90 degrees (left normal).  # [..., 2]"""
    return np.stack([-v[..., 1], v[..., 0]], axis=-1)


def unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])  # [2]


def wrap(a):
    """Wrap radians into [-pi, pi)."""
    return (np.asarray(a) + math.pi) % (2 * math.pi) - math.pi


def arc_length(pts: np.ndarray) -> np.ndarray:
    """Cumulative arc length.  pts [n, 2] -> [n]"""
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)  # [n-1]
    return np.concatenate([[0.0], np.cumsum(seg)])  # [n]


def resample(pts: np.ndarray, step: float) -> np.ndarray:
    """Resample a polyline at (nearly) uniform arc length `step`, keeping both ends.  [n, 2] -> [m, 2]"""
    s = arc_length(pts)  # [n]
    total = s[-1]
    m = max(2, int(math.ceil(total / step)) + 1)
    t = np.linspace(0.0, total, m)  # [m]
    return np.stack([np.interp(t, s, pts[:, 0]), np.interp(t, s, pts[:, 1])], axis=1)


def line(p0: np.ndarray, p1: np.ndarray, step: float = 1.0) -> np.ndarray:
    """Straight segment sampled every ~step metres.  # [m, 2]"""
    n = max(2, int(math.ceil(np.linalg.norm(p1 - p0) / step)) + 1)
    t = np.linspace(0.0, 1.0, n)[:, None]  # [m, 1]
    return p0[None] * (1 - t) + p1[None] * t


def cubic_bezier(p0, c1, c2, p3, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]  # [n, 1]
    return ((1 - t) ** 3) * p0 + 3 * ((1 - t) ** 2) * t * c1 + 3 * (1 - t) * t * t * c2 + (t**3) * p3  # [n, 2]


def quad_bezier(p0, c, p2, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]  # [n, 1]
    return ((1 - t) ** 2) * p0 + 2 * (1 - t) * t * c + (t**2) * p2  # [n, 2]


def smooth_join(m0: np.ndarray, d0: np.ndarray, m3: np.ndarray, d3: np.ndarray, step: float = 1.0) -> np.ndarray:
    """A cubic Bezier leaving `m0` along unit `d0` and arriving at `m3` along unit `d3`.  # [n, 2]

    Control arms of 0.38 x chord approximate a circular arc for right-angle turns and give a
    straight line for collinear ends.
    """
    chord = float(np.linalg.norm(m3 - m0))
    lam = 0.38 * chord
    n = max(4, int(math.ceil(chord * 1.3 / step)) + 1)
    pts = cubic_bezier(m0, m0 + d0 * lam, m3 - d3 * lam, m3, 4 * n)
    return resample(pts, step)


def offset_polyline(pts: np.ndarray, d: float) -> np.ndarray:
    """Offset a polyline by `d` metres to its left (negative: right).  [n, 2] -> [n, 2]"""
    tang = np.gradient(pts, axis=0)  # [n, 2]
    tang /= np.linalg.norm(tang, axis=1, keepdims=True) + 1e-12
    return pts + d * rot90(tang)


def tangent_headings(pts: np.ndarray) -> np.ndarray:
    """Heading of the tangent at each vertex (central differences).  [n, 2] -> [n]"""
    g = np.gradient(pts, axis=0)  # [n, 2]
    return np.arctan2(g[:, 1], g[:, 0])


def min_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Minimum vertex-to-vertex distance between two densely sampled polylines."""
    d = a[:, None, :] - b[None, :, :]  # [na, nb, 2]
    return float(np.sqrt((d * d).sum(-1).min()))


def line_intersection(p: np.ndarray, u: np.ndarray, q: np.ndarray, v: np.ndarray) -> tuple[float, float] | None:
    """Solve p + t u = q + s v; None when (nearly) parallel."""
    m = np.array([[u[0], -v[0]], [u[1], -v[1]]])  # [2, 2]
    if abs(np.linalg.det(m)) < 1e-6:
        return None
    t, s = np.linalg.solve(m, q - p)
    return float(t), float(s)


def round_corners(pts: np.ndarray, radius: float, step: float = 0.25) -> np.ndarray:
    """Replace every sharp vertex of a polyline by a quadratic Bezier of ~`radius`.  [n, 2] -> [m, 2]"""
    # keep only the vertices where the direction changes (the input is often densely sampled)
    d = np.diff(pts, axis=0)  # [n-1, 2]
    d = d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-12)
    turn = (d[1:] * d[:-1]).sum(1) < 0.985  # [n-2]
    pts = np.concatenate([pts[:1], pts[1:-1][turn], pts[-1:]])  # [n_corner + 2, 2]
    out = [pts[0]]
    for k in range(1, pts.shape[0] - 1):
        d_in, d_out = pts[k] - pts[k - 1], pts[k + 1] - pts[k]
        l_in, l_out = float(np.linalg.norm(d_in)), float(np.linalg.norm(d_out))
        if l_in < 1e-9 or l_out < 1e-9:
            continue
        cosang = float(np.dot(d_in, d_out) / (l_in * l_out))
        if cosang > 0.985:
            out.append(pts[k])
            continue
        r = min(radius, 0.45 * l_in, 0.45 * l_out)
        a, b = pts[k] - d_in / l_in * r, pts[k] + d_out / l_out * r
        out.extend(quad_bezier(a, pts[k], b, max(4, int(2 * r / step) + 1)))
    out.append(pts[-1])
    return resample(np.asarray(out), step)


def project_arc_length(pts: np.ndarray, point: np.ndarray) -> float:
    """Arc length of the vertex of `pts` nearest to `point`."""
    k = int(np.argmin(np.linalg.norm(pts - point[None], axis=1)))
    return float(arc_length(pts)[k])
