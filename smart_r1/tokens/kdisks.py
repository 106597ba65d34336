"""k-disks clustering (the algorithm behind the motion and the map-segment vocabularies).

Samples are point sets `x [n, P, 2]`; the distance of two samples is the mean over the P points
of the point distance. `kdisks` picks centres at random among the samples not yet covered (one
forced centre first), `kdisks_vocab` adds the tolerance search and the farthest-point fill
(see `smart_r1.tokens.motion_vocab` for the whole procedure). Depends on nothing else in
`smart_r1.tokens`, so both vocabularies can use it without importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch



@dataclass
class KDisksResult:
    centres: np.ndarray  # [n_centre] int64 sample indices (-1 = the forced stationary centre)
    n_uncovered: int
    tolerance: float


def pairwise_mean_point_distance(a: torch.Tensor, b: torch.Tensor, max_elems: int = 1 << 23) -> torch.Tensor:
    """a [n, P, 2], b [m, P, 2] -> mean over the P points of the point distance [n, m] (chunked over n)."""
    n, m, p = a.shape[0], b.shape[0], a.shape[1]
    out = torch.empty(n, m, dtype=a.dtype)  # [n, m]
    bt = b.transpose(0, 1).contiguous()  # [P, m, 2]
    chunk = max(1, max_elems // max(1, m * p))
    for s in range(0, n, chunk):
        at = a[s : s + chunk].transpose(0, 1).contiguous()  # [P, n_c, 2]
        d = torch.cdist(at, bt, compute_mode="donot_use_mm_for_euclid_dist")  # [P, n_c, m]
        out[s : s + chunk] = d.mean(0)
    return out


def kdisks(
    x: torch.Tensor, tolerance: float, size: int, seed: int, forced: torch.Tensor | None = None, block: int = 128
) -> KDisksResult:
    """One k-disks run. x [N, P, 2] sample corners; `forced [P, 2]` is the first centre (index -1).

    Distance = mean over the P points of the Euclidean point distance. Picking "a random
    remaining sample" is done as walking a seeded random permutation and taking the next sample
    not yet covered; candidates are processed in blocks of `block` (exactly the sequential
    algorithm: a candidate covered by an earlier centre of its block is skipped).
    """
    n = x.shape[0]
    perm = np.random.default_rng(seed).permutation(n)  # [N]
    xp = x[torch.as_tensor(perm)]  # [N, P, 2] in pick order
    alive = np.ones(n, bool)  # [N] not yet covered
    centres: list[int] = []
    if forced is not None:
        centres.append(-1)
        if n:
            alive &= pairwise_mean_point_distance(xp, forced[None])[:, 0].numpy() > tolerance
    pos = 0
    while len(centres) < size:
        cand = np.flatnonzero(alive[pos:])[:block] + pos  # [B] next uncovered samples in pick order
        if cand.size == 0:
            break
        xc = xp[torch.as_tensor(cand)]  # [B, P, 2]
        dcc = pairwise_mean_point_distance(xc, xc).numpy() <= tolerance  # [B, B]
        accepted: list[int] = []
        last = -1
        for i in range(cand.size):
            if len(centres) + len(accepted) >= size:
                break
            last = i
            if accepted and dcc[i, accepted].any():
                continue
            accepted.append(i)
        rows = np.flatnonzero(alive)  # [n_alive]
        d = pairwise_mean_point_distance(xp[torch.as_tensor(rows)], xc[torch.as_tensor(accepted)]).numpy()  # [n_alive, A]
        alive[rows[(d <= tolerance).any(1)]] = False
        alive[cand[: last + 1]] = False  # examined: a centre or covered by one
        centres.extend(int(perm[cand[i]]) for i in accepted)
        pos = int(cand[last]) + 1
    return KDisksResult(np.asarray(centres, np.int64), int(alive.sum()), float(tolerance))


def _centre_corners(x: torch.Tensor, forced: torch.Tensor, centres: np.ndarray) -> torch.Tensor:
    idx = torch.as_tensor(np.maximum(centres, 0))
    c = x[idx].clone()  # [n_c, P, 2]
    c[torch.as_tensor(centres < 0)] = forced
    return c


def _nearest_centre_distance(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """x [N, P, 2], centres [C, P, 2] -> min over centres of the mean point distance [N]."""
    best = torch.full((x.shape[0],), float("inf"))  # [N]
    for s in range(0, centres.shape[0], 256):
        best = torch.minimum(best, pairwise_mean_point_distance(x, centres[s : s + 256]).min(1).values)
    return best


def kdisks_vocab(
    x: torch.Tensor,
    size: int,
    tolerance: float,
    seed: int,
    forced: torch.Tensor,
    adapt: bool = True,
    max_steps: int = 8,
    min_tolerance: float = 0.0,
) -> tuple[np.ndarray, dict]:
    """k-disks with tolerance search and farthest-point fill (module docstring).

    Returns (centre sample indices [size] with -1 = stationary, info dict).
    """
    runs: dict[float, KDisksResult] = {}

    def run(tol: float) -> KDisksResult:
        if tol not in runs:
            runs[tol] = kdisks(x, tol, size, seed, forced)
        return runs[tol]

    r0 = run(tolerance)
    if adapt:
        lo, hi = (None, tolerance) if r0.n_uncovered == 0 else (tolerance, None)
        steps = 1
        while steps < max_steps:
            if hi is None:  # not covering yet: raise
                tol = lo * 2.0
            elif lo is None:  # covering: only lower while the vocabulary is not full
                if len(runs[hi].centres) >= size or hi <= min_tolerance:
                    break
                tol = max(hi / 2.0, min_tolerance)
            else:
                tol = math.sqrt(lo * hi)
                if hi / lo < 1.05:
                    break
            r = run(tol)
            steps += 1
            if r.n_uncovered == 0:
                hi = tol
                if len(r.centres) >= size and lo is None:
                    break
            else:
                lo = tol
        best_tol = hi if hi is not None else max(runs)
    else:
        best_tol = tolerance
    best = runs[best_tol]
    centres = best.centres
    n_kdisks = int(len(centres))
    cc = _centre_corners(x, forced, centres)  # [n_c, P, 2]
    nearest = _nearest_centre_distance(x, cc) if x.shape[0] else torch.zeros(0)  # [N]
    n_fill = 0
    chosen = set(int(c) for c in centres)
    extra: list[int] = []
    while n_kdisks + n_fill < size and x.shape[0] > 0:
        j = int(torch.argmax(nearest))
        if float(nearest[j]) <= 0.0 or j in chosen:
            break  # every sample is already a centre
        extra.append(j)
        chosen.add(j)
        nearest = torch.minimum(nearest, torch.linalg.vector_norm(x - x[j][None], dim=-1).mean(-1))
        n_fill += 1
    centres = np.concatenate([centres, np.asarray(extra, np.int64)])
    info = {
        "tolerance_start": float(tolerance),
        "tolerance_final": float(best_tol),
        "tolerance_runs": {f"{k:.6g}": {"centres": int(len(v.centres)), "uncovered": v.n_uncovered} for k, v in sorted(runs.items())},
        "n_kdisks": n_kdisks,
        "n_fill": n_fill,
        "covered": bool(best.n_uncovered == 0),
        "max_sample_distance": float(nearest.max()) if nearest.numel() else 0.0,
        "mean_sample_distance": float(nearest.mean()) if nearest.numel() else 0.0,
    }
    return centres, info
