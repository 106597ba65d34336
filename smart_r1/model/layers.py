"""Building blocks of the SMART model: relative poses, Fourier relative-pose encoders,
radius neighbour search and relative-pose attention blocks. Pure torch, CPU friendly.

Frame invariance: every edge (query i, key j) is described only by the pose of j expressed in
i's frame (`relative_pose`: dx, dy, dheading, plus the time gap for temporal edges), and node
features carry no absolute coordinates, so rotating + translating a whole scene leaves the
model's outputs unchanged (up to float rounding).

Neighbourhoods are dense over the candidate keys of one group (one scene, one time step, one
rollout), masked by radius, then cut to the `cap` nearest (top-k on squared distance). The
padded width K is the largest neighbour count in the batch (<= cap), so tensors are
`[n_query, K, ...]`, never `[n_query, n_key, hidden]`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def wrap_angle(a: torch.Tensor) -> torch.Tensor:
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def relative_pose(q_pose: torch.Tensor, k_pose: torch.Tensor) -> torch.Tensor:
    """Key poses in the frame of their query pose.

    q_pose [..., 3], k_pose [..., K, 3] -> [..., K, 3] (dx, dy, dheading) with dheading wrapped.
    """
    q = q_pose[..., None, :]  # [..., 1, 3]
    c, s = torch.cos(q[..., 2]), torch.sin(q[..., 2])  # [..., 1]
    dx = k_pose[..., 0] - q[..., 0]  # [..., K]
    dy = k_pose[..., 1] - q[..., 1]  # [..., K]
    return torch.stack([c * dx + s * dy, -s * dx + c * dy, wrap_angle(k_pose[..., 2] - q[..., 2])], dim=-1)  # [..., K, 3]


class FourierRelEncoder(nn.Module):
    """Edge features -> (key offset, value offset), each [..., inner_dim].

    Each input dimension d (scaled by `scales[d]`) gives `num_bands` learnable frequencies:
    [cos(2 pi f x), sin(2 pi f x), x] -> Linear -> LayerNorm -> ReLU -> Linear(2 * inner).
    Periodic dimensions (angles) use the integer harmonics [cos(k a), sin(k a)], k = 1..F, instead.
    Computed once per edge set per forward and shared by every layer that uses the edge set.
    """

    def __init__(self, in_dim: int, hidden_dim: int, inner_dim: int, num_bands: int, scales, chunk: int = 1 << 16,
                 periodic=None):
        super().__init__()
        self.in_dim = in_dim
        self.inner_dim = inner_dim
        self.chunk = int(chunk)
        periodic = torch.zeros(in_dim, dtype=torch.bool) if periodic is None else torch.as_tensor(periodic, dtype=torch.bool)
        self.freqs = nn.Parameter(torch.randn(in_dim, num_bands))  # [in_dim, F]
        self.register_buffer("scales", torch.as_tensor(scales, dtype=torch.float32).reshape(in_dim), persistent=False)
        # Angles (periodic dims) use fixed integer harmonics 1..F so +pi and -pi encode identically.
        self.register_buffer("periodic", periodic.reshape(in_dim), persistent=False)  # [in_dim]
        self.register_buffer("harmonics", torch.arange(1, num_bands + 1, dtype=torch.float32), persistent=False)  # [F]
        self.proj = nn.Linear(in_dim * (2 * num_bands + 1), hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        self.out = nn.Linear(hidden_dim, 2 * inner_dim)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        per = self.periodic  # [in_dim]
        x = torch.where(per, x, x / self.scales)  # [E, in_dim]
        ang = torch.where(per[:, None], x[..., None] * self.harmonics, 2 * math.pi * x[..., None] * self.freqs)  # [E, in_dim, F]
        raw = torch.where(per, torch.zeros_like(x), x)  # [E, in_dim]
        feat = torch.cat([torch.cos(ang), torch.sin(ang), raw[..., None]], dim=-1)  # [E, in_dim, 2F + 1]
        h = self.proj(feat.flatten(-2))  # [E, hidden]
        return self.out(F.relu(self.norm(h)))  # [E, 2 * inner]

    def forward(self, rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """rel [..., in_dim] -> (rk [..., inner], rv [..., inner])."""
        lead = rel.shape[:-1]
        flat = rel.reshape(-1, self.in_dim)  # [E, in_dim]
        if torch.is_grad_enabled() or flat.shape[0] <= self.chunk:
            out = self._encode(flat)  # [E, 2 * inner]
        else:
            out = torch.cat([self._encode(flat[i : i + self.chunk]) for i in range(0, flat.shape[0], self.chunk)], 0)
        out = out.reshape(*lead, 2 * self.inner_dim)  # [..., 2 * inner]
        return out[..., : self.inner_dim], out[..., self.inner_dim :]


class AttentionBlock(nn.Module):
    """Pre-norm multi-head attention over a padded neighbour list with relative-pose key/value
    offsets, followed by a feed-forward block. Queries with no neighbour get a zero attention
    output (the residual passes through)."""

    def __init__(self, hidden_dim: int, num_heads: int, head_dim: int, ffn_dim: int, dropout: float, cross: bool):
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim = num_heads, head_dim
        self.norm_q = nn.LayerNorm(hidden_dim)
        self.norm_kv = nn.LayerNorm(hidden_dim) if cross else None
        self.to_q = nn.Linear(hidden_dim, inner)
        self.to_k = nn.Linear(hidden_dim, inner)
        self.to_v = nn.Linear(hidden_dim, inner)
        self.to_out = nn.Linear(inner, hidden_dim)
        self.norm_ff = nn.LayerNorm(hidden_dim)
        self.ff = nn.Sequential(nn.Linear(hidden_dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, hidden_dim))
        self.drop = nn.Dropout(dropout)

    def kv(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Node keys / values of context rows ctx [N, hidden] -> ([N, inner], [N, inner])."""
        c = self.norm_kv(ctx) if self.norm_kv is not None else self.norm_q(ctx)  # [N, hidden]
        return self.to_k(c), self.to_v(c)

    def forward(
        self,
        x: torch.Tensor,  # [Nq, hidden]
        k: torch.Tensor,  # [Nq, K, inner] gathered node keys
        v: torch.Tensor,  # [Nq, K, inner] gathered node values
        mask: torch.Tensor,  # [Nq, K] bool
        rk: torch.Tensor,  # [Nq, K, inner] relative key offsets
        rv: torch.Tensor,  # [Nq, K, inner] relative value offsets
    ) -> torch.Tensor:
        nq, kk = mask.shape
        h, d = self.num_heads, self.head_dim
        if kk > 0:
            q = self.to_q(self.norm_q(x)).view(nq, 1, h, d)  # [Nq, 1, h, d]
            kr = (k + rk).view(nq, kk, h, d)  # [Nq, K, h, d]
            vr = (v + rv).view(nq, kk, h, d)  # [Nq, K, h, d]
            score = (q * kr).sum(-1) * (1.0 / math.sqrt(d))  # [Nq, K, h]
            score = score.masked_fill(~mask[..., None], torch.finfo(score.dtype).min)  # [Nq, K, h]
            w = torch.softmax(score, dim=1) * mask[..., None].to(score.dtype)  # [Nq, K, h]
            att = (w[..., None] * vr).sum(1).reshape(nq, h * d)  # [Nq, inner]
            # A query whose neighbours are all masked gets no update, exactly as with K = 0 (no
            # to_out bias): K is the widest neighbour list of the call, so without this a scene's
            # output would depend on the other scenes / rollouts / positions in the same call.
            has_key = mask.any(1, keepdim=True).to(x.dtype)  # [Nq, 1]
            x = x + self.drop(self.to_out(att)) * has_key  # [Nq, hidden]
        x = x + self.drop(self.ff(self.norm_ff(x)))  # [Nq, hidden]
        return x


def nearest_within(d2: torch.Tensor, ok: torch.Tensor, radius: float, cap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest allowed keys within `radius`, at most `cap` per query.

    d2 [..., Nq, Nk] squared distances, ok [..., Nq, Nk] allowed pairs ->
    (idx [..., Nq, K] int64 into the key axis (0 where padded), mask [..., Nq, K] bool),
    K = min(cap, largest count) (0 if no query has a neighbour).
    """
    ok = ok & (d2 <= radius * radius)  # [..., Nq, Nk]
    k = min(int(cap), int(ok.sum(-1).max()) if ok.numel() else 0)
    lead = d2.shape[:-1]
    if k == 0:
        return torch.zeros(*lead, 0, dtype=torch.long, device=d2.device), torch.zeros(*lead, 0, dtype=torch.bool, device=d2.device)
    dm = d2.masked_fill(~ok, float("inf"))  # [..., Nq, Nk]
    vals, idx = torch.topk(dm, k, dim=-1, largest=False, sorted=True)  # [..., Nq, K]
    mask = torch.isfinite(vals)  # [..., Nq, K]
    return idx.masked_fill(~mask, 0), mask


def grouped_neighbors(
    q_pos: torch.Tensor,  # [Nq, 2]
    q_group: torch.Tensor,  # [Nq] int64
    k_pos: torch.Tensor,  # [Nk, 2]
    k_group: torch.Tensor,  # [Nk] int64
    k_valid: torch.Tensor,  # [Nk] bool
    radius: float,
    cap: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Radius neighbours restricted to the same group (scene), one dense block per group.

    Returns idx [Nq, K] into the key rows and mask [Nq, K].
    """
    nq = q_pos.shape[0]
    groups = torch.unique(q_group).tolist()
    parts = []
    for g in groups:
        qi = torch.nonzero(q_group == g).reshape(-1)  # [nq_g]
        ki = torch.nonzero((k_group == g) & k_valid).reshape(-1)  # [nk_g]
        qx, qy, kx, ky = q_pos[qi, 0], q_pos[qi, 1], k_pos[ki, 0], k_pos[ki, 1]  # [nq_g], [nk_g]
        dx = qx[:, None] - kx[None, :]  # [nq_g, nk_g]
        dy = qy[:, None] - ky[None, :]  # [nq_g, nk_g]
        d2 = dx * dx + dy * dy  # [nq_g, nk_g]
        idx, mask = nearest_within(d2, torch.ones_like(d2, dtype=torch.bool), radius, cap)  # [nq_g, K_g]
        parts.append((qi, ki[idx] if idx.numel() else idx, mask))
    k = max([p[1].shape[1] for p in parts], default=0)
    idx_out = torch.zeros(nq, k, dtype=torch.long, device=q_pos.device)  # [Nq, K]
    mask_out = torch.zeros(nq, k, dtype=torch.bool, device=q_pos.device)  # [Nq, K]
    for qi, idx, mask in parts:
        kg = idx.shape[1]
        idx_out[qi, :kg] = idx
        mask_out[qi, :kg] = mask
    return idx_out, mask_out
