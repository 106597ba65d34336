"""`SmartModel`: SMART-style next-motion-token transformer (own implementation).

Inputs are an `AgentBatch`. Position `p` (0..17) of agent `i` is the agent at anchor `p`
(pose `anchor_pose[i, p]`) having just executed token `p - 1`; its output is the distribution
of token `p`. Layout:

1. Map encoder: map-token features (segment-vocabulary embedding + kind/subtype + traffic
   light at the current anchor) refined by `num_map_layers` self-attention blocks over the
   map tokens within `map_map_radius` of each other.
2. Agent tokens: shape MLP of the previous motion token (its 5 poses in the anchor frame),
   or a learned "no motion known" vector at position 0 / after an invalid token, plus the
   agent type embedding and a projection of the agent size.
3. `num_agent_layers` decoder layers, each three blocks:
   temporal causal self-attention (same agent, anchors p - time_span/5 .. p),
   map-to-agent cross-attention (map tokens within `map_agent_radius`),
   agent-to-agent attention (other agents of the scene at the same anchor within
   `agent_agent_radius`).
4. Next-token head per vocabulary slot (vehicle / pedestrian / cyclist); logits beyond the
   agent type's vocabulary are -inf.

Every edge carries a Fourier encoding of the key's pose in the query's frame
(`layers.relative_pose`), so outputs do not depend on the global frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from smart_r1.model.batch import N_AGENT_TYPE, N_SLOT, SLOT_TYPES, AgentBatch
from smart_r1.model.layers import AttentionBlock, FourierRelEncoder, grouped_neighbors, nearest_within, relative_pose
from smart_r1.model.presets import REFERENCE_MAP_VOCAB_SIZE, ModelConfig
from smart_r1.tokens.tokenized_scene import CURRENT_ANCHOR, N_TOKEN_STEP

N_MAP_KIND = 7
N_MAP_SUBTYPE = 16
N_SIGNAL_STATE = 9
_SLOT_NAMES = ("vehicle", "pedestrian", "cyclist")


def parse_vocab_sizes(vocab_sizes, default_map: int = REFERENCE_MAP_VOCAB_SIZE) -> tuple[tuple[int, int, int], int]:
    """Accepts `[n_vehicle, n_pedestrian, n_cyclist]`, a dict keyed by slot name or AgentType
    (optional key "map"), or a `MotionVocab`. Returns ((3 sizes), map vocabulary size)."""
    if hasattr(vocab_sizes, "poses"):
        from smart_r1.model.batch import vocab_sizes_of

        vocab_sizes = vocab_sizes_of(vocab_sizes)
    n_map = default_map
    if isinstance(vocab_sizes, Mapping):
        sizes = []
        for name, t in zip(_SLOT_NAMES, SLOT_TYPES):
            for key in (name, t, int(t)):
                if key in vocab_sizes:
                    sizes.append(int(vocab_sizes[key]))
                    break
            else:
                raise ValueError(f"vocab_sizes {dict(vocab_sizes)} lacks an entry for {name}")
        n_map = int(vocab_sizes.get("map", n_map))
    else:
        sizes = [int(s) for s in vocab_sizes]
        if len(sizes) != N_SLOT:
            raise ValueError(f"vocab_sizes must have {N_SLOT} entries (vehicle, pedestrian, cyclist), got {sizes}")
    if min(sizes) <= 0 or n_map <= 0:
        raise ValueError(f"vocabulary sizes must be positive, got {sizes}, map {n_map}")
    return (sizes[0], sizes[1], sizes[2]), n_map


@dataclass
class Edges:
    """A padded neighbour list with its relative-pose key/value offsets."""

    index: torch.Tensor  # [Nq, K] int64 rows of the key set
    mask: torch.Tensor  # [Nq, K] bool
    rk: torch.Tensor  # [Nq, K, inner]
    rv: torch.Tensor  # [Nq, K, inner]


class SmartModel(nn.Module):
    def __init__(self, config: ModelConfig, vocab_sizes):
        super().__init__()
        config = config.validate()
        self.config = config
        self.vocab_sizes, self.map_vocab_size = parse_vocab_sizes(vocab_sizes, config.map_vocab_size)
        self.max_vocab = max(self.vocab_sizes)
        h, inner, nb = config.hidden_dim, config.inner_dim, config.num_freq_bands
        # ----- agent token embedding -----
        self.token_mlp = nn.ModuleList(
            nn.Sequential(nn.Linear(20, config.token_embed_hidden), nn.ReLU(), nn.Linear(config.token_embed_hidden, h))
            for _ in range(N_SLOT)
        )
        self.no_motion = nn.Parameter(torch.randn(N_SLOT, h) * 0.02)  # [3, hidden]
        self.type_emb = nn.Embedding(N_AGENT_TYPE, h)
        self.size_proj = nn.Linear(3, h)
        self.agent_norm = nn.LayerNorm(h)
        # ----- map token embedding (index map_vocab_size = unknown segment) -----
        self.map_vocab_emb = nn.Embedding(self.map_vocab_size + 1, h)
        self.map_kind_emb = nn.Embedding(N_MAP_KIND * N_MAP_SUBTYPE, h)
        self.signal_emb = nn.Embedding(N_SIGNAL_STATE, h)
        self.map_norm = nn.LayerNorm(h)
        # ----- relative-pose encoders, one per edge type -----
        c = config.rel_chunk_edges
        per3, per4 = (False, False, True), (False, False, True, False)
        self.rel_map_map = FourierRelEncoder(3, h, inner, nb, (config.map_map_radius,) * 2 + (1.0,), c, per3)
        self.rel_temporal = FourierRelEncoder(4, h, inner, nb, (30.0, 30.0, 1.0, float(config.time_span_anchors)), c, per4)
        self.rel_map_agent = FourierRelEncoder(3, h, inner, nb, (config.map_agent_radius,) * 2 + (1.0,), c, per3)
        self.rel_agent_agent = FourierRelEncoder(3, h, inner, nb, (config.agent_agent_radius,) * 2 + (1.0,), c, per3)

        def block(cross: bool) -> AttentionBlock:
            return AttentionBlock(h, config.num_heads, config.head_dim, config.ffn_dim, config.dropout, cross)

        self.map_layers = nn.ModuleList(block(False) for _ in range(config.num_map_layers))
        self.temporal_layers = nn.ModuleList(block(False) for _ in range(config.num_agent_layers))
        self.map_agent_layers = nn.ModuleList(block(True) for _ in range(config.num_agent_layers))
        self.agent_agent_layers = nn.ModuleList(block(False) for _ in range(config.num_agent_layers))
        # ----- next-token heads -----
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(h), nn.Linear(h, config.head_hidden_dim), nn.ReLU(), nn.Linear(config.head_hidden_dim, n))
            for n in self.vocab_sizes
        )

    # ------------------------------------------------------------------ info
    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def parameter_breakdown(self) -> dict[str, int]:
        groups = {
            "agent_embedding": ("token_mlp", "no_motion", "type_emb", "size_proj", "agent_norm"),
            "map_embedding": ("map_vocab_emb", "map_kind_emb", "signal_emb", "map_norm"),
            "relative_pose_encoders": ("rel_map_map", "rel_temporal", "rel_map_agent", "rel_agent_agent"),
            "map_encoder": ("map_layers",),
            "temporal_attention": ("temporal_layers",),
            "map_to_agent_attention": ("map_agent_layers",),
            "agent_to_agent_attention": ("agent_agent_layers",),
            "heads": ("heads",),
        }
        out = {}
        for g, prefixes in groups.items():
            out[g] = sum(p.numel() for n, p in self.named_parameters() if n.split(".")[0] in prefixes)
        out["total"] = self.num_parameters()
        assert sum(v for k, v in out.items() if k != "total") == out["total"], "parameter groups do not cover the model"
        return out

    # ------------------------------------------------------------------ checks
    def _check_batch(self, batch: AgentBatch) -> None:
        got = tuple(int(v) for v in batch.vocab_size.tolist())
        if got != self.vocab_sizes:
            raise ValueError(
                f"SmartModel: batch vocabulary sizes {got} differ from the model's {self.vocab_sizes} "
                "(vehicle, pedestrian, cyclist): model and tokens come from different vocabularies"
            )
        if batch.n_map and int(batch.map_vocab_index.max()) >= self.map_vocab_size:
            raise ValueError(
                f"SmartModel: map_vocab_index up to {int(batch.map_vocab_index.max())} but the model's map vocabulary has "
                f"{self.map_vocab_size} entries (scenes {batch.scenario_id[:3]}...)"
            )

    # ------------------------------------------------------------------ embeddings
    def token_table(self, batch: AgentBatch) -> torch.Tensor:
        """Embedding of every motion token of every slot from its shape.  # [3, V, hidden]"""
        p = batch.vocab_poses  # [3, V, 5, 3]
        feat = torch.cat([p[..., :2], torch.cos(p[..., 2:3]), torch.sin(p[..., 2:3])], dim=-1).flatten(-2)  # [3, V, 20]
        return torch.stack([self.token_mlp[s](feat[s]) for s in range(N_SLOT)], dim=0)  # [3, V, hidden]

    def embed_agents(
        self,
        table: torch.Tensor,  # [3, V, hidden]
        slot: torch.Tensor,  # [N] int64
        agent_type: torch.Tensor,  # [N] int64
        agent_size: torch.Tensor,  # [N, 3]
        prev_token: torch.Tensor,  # [N] int64
        prev_valid: torch.Tensor,  # [N] bool
    ) -> torch.Tensor:
        """Agent-position features.  # [N, hidden]"""
        motion = table[slot, prev_token.clamp(min=0)]  # [N, hidden]
        motion = torch.where(prev_valid[:, None], motion, self.no_motion[slot])  # [N, hidden]
        return self.agent_norm(motion + self.type_emb(agent_type) + self.size_proj(agent_size))  # [N, hidden]

    def encode_map(self, batch: AgentBatch) -> torch.Tensor:
        """Map-token encodings (the map encoder). Rollouts compute it once.  # [n_map, hidden]"""
        self._check_batch(batch)
        cfg = self.config
        vi = batch.map_vocab_index.clone()  # [n_map]
        vi[vi < 0] = self.map_vocab_size
        ks = batch.map_kind.clamp(0, N_MAP_KIND - 1) * N_MAP_SUBTYPE + batch.map_subtype.clamp(0, N_MAP_SUBTYPE - 1)  # [n_map]
        sig = batch.map_signal[:, CURRENT_ANCHOR].clamp(0, N_SIGNAL_STATE - 1)  # [n_map]
        x = self.map_norm(self.map_vocab_emb(vi) + self.map_kind_emb(ks) + self.signal_emb(sig))  # [n_map, hidden]
        if batch.n_map == 0 or not len(self.map_layers):
            return x
        ones = torch.ones(batch.n_map, dtype=torch.bool, device=x.device)  # [n_map]
        idx, mask = grouped_neighbors(
            batch.map_pose[:, :2], batch.map_scene, batch.map_pose[:, :2], batch.map_scene, ones,
            cfg.map_map_radius, cfg.max_map_map_neighbors + 1,
        )  # [n_map, K] (includes the token itself)
        rk, rv = self.rel_map_map(relative_pose(batch.map_pose, batch.map_pose[idx]))  # [n_map, K, inner]
        for blk in self.map_layers:
            k, v = blk.kv(x)  # [n_map, inner]
            x = blk(x, k[idx], v[idx], mask, rk, rv)  # [n_map, hidden]
        return x

    # ------------------------------------------------------------------ edges
    def temporal_edges(self, anchor_pose: torch.Tensor, anchor_valid: torch.Tensor, positions: torch.Tensor):
        """Causal temporal neighbourhoods of queries at `positions` for every agent.

        anchor_pose [N, P, 3], anchor_valid [N, P] (P >= max(positions) + 1), positions [Tq] ->
        (key_pos [Tq, S+1] int64 anchor index of each key, ascending, clamped at 0;
         mask [N, Tq, S+1]; rk, rv [N, Tq, S+1, inner]). The query itself is the last key.
        """
        s = self.config.time_span_anchors
        offs = torch.arange(s, -1, -1, device=anchor_pose.device)  # [S+1]  s, ..., 0
        kp = positions[:, None] - offs[None, :]  # [Tq, S+1]
        kpc = kp.clamp(min=0)  # [Tq, S+1]
        mask = (kp >= 0)[None] & anchor_valid[:, kpc]  # [N, Tq, S+1]
        qp = anchor_pose[:, positions]  # [N, Tq, 3]
        rel = relative_pose(qp, anchor_pose[:, kpc])  # [N, Tq, S+1, 3]
        dt = offs.to(rel.dtype).expand(rel.shape[:-1])[..., None]  # [N, Tq, S+1, 1]
        rk, rv = self.rel_temporal(torch.cat([rel, dt], dim=-1))  # [N, Tq, S+1, inner]
        return kpc, mask, rk, rv

    def map_agent_edges(self, batch: AgentBatch, q_pose: torch.Tensor, q_scene: torch.Tensor, q_valid: torch.Tensor) -> Edges:
        """Map tokens around each query pose. q_pose [Nq, 3], q_scene [Nq], q_valid [Nq]."""
        cfg = self.config
        far = torch.where(q_valid[:, None], q_pose[:, :2], torch.full_like(q_pose[:, :2], 1e9))  # [Nq, 2] invalid -> no neighbours
        ones = torch.ones(batch.n_map, dtype=torch.bool, device=q_pose.device)  # [n_map]
        idx, mask = grouped_neighbors(far, q_scene, batch.map_pose[:, :2], batch.map_scene, ones,
                                      cfg.map_agent_radius, cfg.max_map_agent_neighbors)  # [Nq, K]
        rk, rv = self.rel_map_agent(relative_pose(q_pose, batch.map_pose[idx]))  # [Nq, K, inner]
        return Edges(idx, mask, rk, rv)

    def agent_agent_edges(self, pose: torch.Tensor, valid: torch.Tensor, scene: torch.Tensor):
        """Other agents of the same scene within the radius, per group (time step or rollout).

        pose [G, n, 3], valid [G, n], scene [n] -> (idx [G, n, K] agent index, mask [G, n, K], rk, rv [G, n, K, inner]).
        """
        cfg = self.config
        g, n = valid.shape
        xy = pose[..., :2]  # [G, n, 2]
        d2 = ((xy[:, :, None, :] - xy[:, None, :, :]) ** 2).sum(-1)  # [G, n, n]
        same = (scene[:, None] == scene[None, :]) & ~torch.eye(n, dtype=torch.bool, device=pose.device)  # [n, n]
        ok = same[None] & valid[:, None, :] & valid[:, :, None]  # [G, n, n]
        idx, mask = nearest_within(d2, ok, cfg.agent_agent_radius, cfg.max_agent_agent_neighbors)  # [G, n, K]
        kpose = torch.gather(pose, 1, idx.reshape(g, -1, 1).expand(-1, -1, 3)).reshape(*idx.shape, 3)  # [G, n, K, 3]
        rk, rv = self.rel_agent_agent(relative_pose(pose, kpose))  # [G, n, K, inner]
        return idx, mask, rk, rv

    # ------------------------------------------------------------------ head
    def head_logits(self, x: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """x [N, hidden], slot [N] -> logits [N, max_vocab] (-inf beyond the slot's vocabulary)."""
        out = x.new_full((x.shape[0], self.max_vocab), float("-inf"))  # [N, V]
        for s in range(N_SLOT):
            rows = torch.nonzero(slot == s).reshape(-1)  # [n_s]
            if rows.numel():
                out[rows, : self.vocab_sizes[s]] = self.heads[s](x[rows]).to(out.dtype)
        return out

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        batch: AgentBatch,
        n_position: int | None = None,
        map_feat: torch.Tensor | None = None,
        agent_map_scene: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced, causal next-token logits.  # [n_agent, T, max_vocab]

        `logits[:, t]` depends only on anchors 0..t and tokens < t. `n_position` (default 18)
        computes only the first T positions (the naive rollout baseline uses it).

        `map_feat [n_map, hidden]`: the map encodings of `batch`'s map tokens, computed once by
        `encode_map` and shared (the learner re-scores R rollouts of a scene against one map
        encoding, see `AgentBatch.stack_sequences`). `agent_map_scene [n_agent]`: the map scene
        each agent sees (default `batch.agent_scene`); a stacked batch whose agents are
        R copies of the scenes keeps one copy of the map.
        """
        self._check_batch(batch)
        t_len = N_TOKEN_STEP if n_position is None else int(n_position)
        if not 1 <= t_len <= N_TOKEN_STEP:
            raise ValueError(f"n_position must be in 1..{N_TOKEN_STEP}, got {n_position}")
        n = batch.n_agent
        dev = batch.device
        ap = batch.anchor_pose[:, :t_len]  # [n, T, 3]
        av = batch.anchor_valid[:, :t_len]  # [n, T]
        prev = torch.cat([torch.full((n, 1), -1, dtype=torch.long, device=dev), batch.token_index[:, : t_len - 1]], 1)  # [n, T]
        prev_v = torch.cat([torch.zeros(n, 1, dtype=torch.bool, device=dev), batch.token_valid[:, : t_len - 1]], 1)  # [n, T]
        table = self.token_table(batch)  # [3, V, hidden]
        rep = lambda a: a[:, None].expand(n, t_len, *a.shape[1:]).reshape(n * t_len, *a.shape[1:])  # noqa: E731
        x = self.embed_agents(table, rep(batch.agent_slot), rep(batch.agent_type), rep(batch.agent_size),
                              prev.reshape(-1), prev_v.reshape(-1))  # [n*T, hidden]
        if map_feat is None:
            map_feat = self.encode_map(batch)  # [n_map, hidden]
        elif map_feat.shape[0] != batch.n_map:
            raise ValueError(f"SmartModel: map_feat has {map_feat.shape[0]} rows, the batch {batch.n_map} map tokens")
        map_scene_of_agent = batch.agent_scene if agent_map_scene is None else agent_map_scene  # [n]
        # temporal edges: key rows (i, p') -> i * T + p'
        positions = torch.arange(t_len, device=dev)  # [T]
        kpc, t_mask, t_rk, t_rv = self.temporal_edges(ap, av, positions)  # [T, S+1], [n, T, S+1], [n, T, S+1, inner]
        t_rows = (torch.arange(n, device=dev)[:, None, None] * t_len + kpc[None]).reshape(n * t_len, -1)  # [n*T, S+1]
        t_mask = t_mask.reshape(n * t_len, -1)
        t_rk, t_rv = t_rk.flatten(0, 1), t_rv.flatten(0, 1)  # [n*T, S+1, inner]
        # map-to-agent edges
        me = self.map_agent_edges(batch, ap.reshape(-1, 3), rep(map_scene_of_agent), av.reshape(-1))
        # agent-to-agent edges, grouped by time: key rows (j, p) -> j * T + p
        a_idx, a_mask, a_rk, a_rv = self.agent_agent_edges(ap.transpose(0, 1), av.transpose(0, 1), batch.agent_scene)  # [T, n, K]
        a_rows = (a_idx * t_len + positions[:, None, None]).transpose(0, 1).reshape(n * t_len, -1)  # [n*T, K]
        a_mask = a_mask.transpose(0, 1).reshape(n * t_len, -1)  # [n*T, K]
        a_rk = a_rk.transpose(0, 1).flatten(0, 1)  # [n*T, K, inner]
        a_rv = a_rv.transpose(0, 1).flatten(0, 1)  # [n*T, K, inner]
        for l in range(self.config.num_agent_layers):
            blk = self.temporal_layers[l]
            k, v = blk.kv(x)  # [n*T, inner]
            x = blk(x, k[t_rows], v[t_rows], t_mask, t_rk, t_rv)  # [n*T, hidden]
            blk = self.map_agent_layers[l]
            k, v = blk.kv(map_feat)  # [n_map, inner]
            x = blk(x, k[me.index], v[me.index], me.mask, me.rk, me.rv)  # [n*T, hidden]
            blk = self.agent_agent_layers[l]
            k, v = blk.kv(x)  # [n*T, inner]
            x = blk(x, k[a_rows], v[a_rows], a_mask, a_rk, a_rv)  # [n*T, hidden]
        logits = self.head_logits(x, rep(batch.agent_slot))  # [n*T, V]
        return logits.reshape(n, t_len, self.max_vocab)


def build_model(config: ModelConfig | str, vocab_sizes=None) -> SmartModel:
    """`SmartModel` from a config or preset name; reference vocabulary sizes if none given."""
    from smart_r1.model.presets import REFERENCE_VOCAB_SIZES, get_preset

    cfg = get_preset(config) if isinstance(config, str) else config
    if vocab_sizes is None:
        vocab_sizes = {"vehicle": REFERENCE_VOCAB_SIZES[0], "pedestrian": REFERENCE_VOCAB_SIZES[1],
                       "cyclist": REFERENCE_VOCAB_SIZES[2], "map": cfg.map_vocab_size}
    return SmartModel(cfg, vocab_sizes)
