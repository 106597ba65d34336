"""Curved two-way road: piecewise-constant curvature (single bends and S-curves)."""

from __future__ import annotations

import math

import numpy as np

from smart_r1.data.synth.layouts import register_layout
from smart_r1.data.synth.roadmap import MPH_PER_MPS, RoadMap, build_corridor


@register_layout("curved")
def curved(rng: np.random.Generator, n_target: int, config) -> RoadMap:
    rm = RoadMap("curved")
    n_fwd = max(1 + n_target // 48, int(rng.choice([1, 1, 2, 2, 3])))
    n_bwd = n_fwd if rng.random() < 0.8 else max(1 + n_target // 64, int(rng.integers(1, 3)))
    w = float(rng.uniform(3.3, 3.9))
    limit = float(rng.choice([25, 30, 35, 40])) / MPH_PER_MPS
    length = float(np.clip(140 + 240 * n_target / max(1, n_fwd + n_bwd) / 10, 160, 400))
    n_piece = int(rng.integers(1, 4))
    bounds = np.sort(rng.uniform(0.15, 0.85, n_piece - 1)) * length
    edges = np.concatenate([[0.0], bounds, [length]])
    kappa = rng.uniform(1 / 250, 1 / 60, n_piece) * rng.choice([-1.0, 1.0], n_piece)  # [n_piece]
    ds = 1.0
    s = np.arange(0.0, length + ds, ds)  # [n]
    piece = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, n_piece - 1)
    k = kappa[piece]  # [n]
    heading = float(rng.uniform(-math.pi, math.pi)) + np.concatenate([[0.0], np.cumsum(k[:-1] * ds)])  # [n]
    pts = np.zeros((s.shape[0], 2))
    pts[1:, 0] = np.cumsum(np.cos(heading[:-1]) * ds)
    pts[1:, 1] = np.cumsum(np.sin(heading[:-1]) * ds)
    pts -= pts.mean(axis=0)
    build_corridor(rng, rm, pts, n_fwd, n_bwd, w, limit, crosswalk_at=None, parking=(bool(rng.random() < 0.4), bool(rng.random() < 0.4)))
    return rm
