"""Closed-loop rollout engine: R joint futures of every agent that must be simulated.

`rollout(model, batch, n_rollout, sampler, seed)`:
- The R rollouts are one tensor computation: agent rows are repeated along a rollout axis
  (rows rollout-major, `r * n_agent + i`); agent-to-agent neighbourhoods are built per rollout.
- The map encoder runs once; each map-to-agent layer's keys/values over the map are computed
  once and reused at every step.
- Incremental decoding: each step runs the model on the new anchor position only. Every
  temporal layer keeps a key/value cache `[rows, 18, inner]`; the new position's key/value is
  written to it and the query attends to the cached window (time span). Positions 0..2 (the
  logged history and the current anchor) are identical in every rollout, so they run once on
  the un-repeated agents and the caches are then repeated R times, for the agents to simulate
  only: agents not simulated have no future anchor (never keys, outputs unused), so later
  positions have R x n_sim rows.
- At position p (2..17) the sampler draws token p for the simulated agents; the token's 5
  template poses are placed at the agent's anchor-p pose (`place_tokens`, the same transform as
  `tokens.geometry.transform_to_global`), giving 10 Hz x, y, heading for steps 5(p-2)+1..5(p-2)+5
  and the next anchor. Agents not to be simulated have no future anchors (never attended to).
- Agents with short histories (valid at the current step only) are simulated like the others.

Every sampled token is recorded with its log-probability under the model's full softmax
(`logprob`, T = 1) and under the distribution it was actually drawn from (`sample_logprob`: the
sampler's support `sample_support`, renormalised, temperature applied), the quantity the RL
objectives' `sampled` form re-computes by teacher forcing (`objectives.logprob.token_logprob`).

`rollout(..., reference=ref_model)`: a second `_IncrementalDecoder` for the frozen reference
model is stepped on the same anchor / token states (its own map encoding and caches, the same
"positions 0..2 once" and rollout chunks) and scores each token the policy just sampled, in both
forms (`ref_logprob`: full softmax; `ref_sample_logprob`: over the recorded support with the
sampler's temperature). These equal the learner's teacher-forced `objectives.base.reference_logprobs`
of the same rollouts, so a runtime can compute them where the rollout runs (`learner.reference_on`).

`naive_rollout(...)`: the baseline: a Python loop over rollouts and steps that re-runs the full
teacher-forced forward (map encoder included) on positions 0..p at every step. Same sampler
random streams, so with the same seed it produces the same tokens (test: argmax and top-k).
"""

from __future__ import annotations

import math
import time

import torch
from tqdm import tqdm

from smart_r1.model.batch import N_SLOT, AgentBatch
from smart_r1.model.smart import SmartModel
from smart_r1.objectives.logprob import token_logprob
from smart_r1.sim.rollout_batch import RolloutBatch
from smart_r1.sim.samplers import SampleContext, get_sampler, rollout_generators
from smart_r1.tokens.tokenized_scene import CURRENT_ANCHOR, N_ANCHOR, N_FUTURE_TOKEN, N_TOKEN_STEP, STEPS_PER_TOKEN


def _wrap(a: torch.Tensor) -> torch.Tensor:
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def place_tokens(anchor: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """anchor [..., 3], local token poses [..., 5, 3] (anchor frame) -> global poses [..., 5, 3]."""
    a = anchor[..., None, :]  # [..., 1, 3]
    c, s = torch.cos(a[..., 2]), torch.sin(a[..., 2])  # [..., 1]
    x = a[..., 0] + c * local[..., 0] - s * local[..., 1]  # [..., 5]
    y = a[..., 1] + s * local[..., 0] + c * local[..., 1]  # [..., 5]
    return torch.stack([x, y, _wrap(a[..., 2] + local[..., 2])], dim=-1)  # [..., 5, 3]


def _to_local_points(anchor: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """anchor [..., 3], points [..., P, 2] -> [..., P, 2] in the anchor frame."""
    a = anchor[..., None, :]
    c, s = torch.cos(a[..., 2]), torch.sin(a[..., 2])
    dx, dy = pts[..., 0] - a[..., 0], pts[..., 1] - a[..., 1]
    return torch.stack([c * dx + s * dy, -s * dx + c * dy], dim=-1)


def _box_corners(pose: torch.Tensor, half_l: torch.Tensor, half_w: torch.Tensor) -> torch.Tensor:
    """pose [..., 3], half sizes [...] -> corners [..., 4, 2] (FL, FR, RR, RL)."""
    sl = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=pose.dtype, device=pose.device)
    sw = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=pose.dtype, device=pose.device)
    lx, ly = sl * half_l[..., None], sw * half_w[..., None]  # [..., 4]
    c, s = torch.cos(pose[..., 2:3]), torch.sin(pose[..., 2:3])
    return torch.stack([pose[..., 0:1] + c * lx - s * ly, pose[..., 1:2] + s * lx + c * ly], dim=-1)


def token_box_half_sizes(batch: AgentBatch) -> torch.Tensor:
    """Half length / width of each slot's fixed token box, read off the vocabulary.  # [3, 2]"""
    pose0 = batch.vocab_poses[:, 0, 0]  # [3, 3]
    corner0 = batch.vocab_corners[:, 0, 0]  # [3, 4, 2]
    local = _to_local_points(pose0, corner0)  # [3, 4, 2]
    return local[:, 0].abs()  # [3, 2] front-left corner = (+l/2, +w/2)


class _CornerDistance:
    """End-of-token corner distance between vocabulary tokens placed at rolled-out anchors and the
    logged end pose (the metric of `tokens.geometry.closest_token`)."""

    def __init__(self, batch: AgentBatch):
        self.end_corners = batch.vocab_corners[:, :, -1]  # [3, V, 4, 2] last pose, anchor frame
        self.half = token_box_half_sizes(batch)  # [3, 2]
        self.vocab_size = batch.vocab_size  # [3]

    def target_local(self, slot: torch.Tensor, anchor: torch.Tensor, log_end: torch.Tensor) -> torch.Tensor:
        """Logged end box corners in the anchor frame. slot [N], anchor [N, 3], log_end [N, 3] -> [N, 4, 2]."""
        h = self.half[slot]  # [N, 2]
        return _to_local_points(anchor, _box_corners(log_end, h[:, 0], h[:, 1]))  # [N, 4, 2]

    def candidates(self, slot: torch.Tensor, target: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """slot [N], target [N, 4, 2], candidate idx [N, K] -> distance [N, K]."""
        c = self.end_corners[slot[:, None], idx]  # [N, K, 4, 2]
        return torch.linalg.vector_norm(c - target[:, None], dim=-1).sum(-1)  # [N, K]

    def closest(self, slot: torch.Tensor, target: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """Closest token over the slot's whole vocabulary. -> [N] int64"""
        out = torch.empty(slot.shape[0], dtype=torch.long, device=slot.device)
        v = self.end_corners.shape[1]
        ar = torch.arange(v, device=slot.device)  # [V]
        for i in range(0, slot.shape[0], chunk):
            s, t = slot[i : i + chunk], target[i : i + chunk]  # [c], [c, 4, 2]
            d = torch.linalg.vector_norm(self.end_corners[s] - t[:, None], dim=-1).sum(-1)  # [c, V]
            d = d.masked_fill(ar[None] >= self.vocab_size[s][:, None], float("inf"))
            out[i : i + chunk] = d.argmin(-1)
        return out


class _RolloutState:
    """Token / anchor sequences of R rollouts and the sampling step shared by both engines."""

    def __init__(self, batch: AgentBatch, n_rollout: int):
        if (batch.sim_mask & ~batch.anchor_valid[:, CURRENT_ANCHOR]).any():
            bad = torch.nonzero(batch.sim_mask & ~batch.anchor_valid[:, CURRENT_ANCHOR]).reshape(-1)[:5]
            raise ValueError(
                f"rollout: agents to simulate without a valid current anchor (rows {bad.tolist()}, scenes "
                f"{sorted({batch.scenario_id[int(batch.agent_scene[i])] for i in bad})}): check the tokenizer's sim_mask"
            )
        r, n, dev = n_rollout, batch.n_agent, batch.device
        self.batch, self.r = batch, r
        fut_a = torch.arange(N_ANCHOR, device=dev) > CURRENT_ANCHOR  # [19]
        fut_t = torch.arange(N_TOKEN_STEP, device=dev) >= CURRENT_ANCHOR  # [18]
        self.anchor_pose = torch.where(fut_a[None, :, None], 0.0, batch.anchor_pose)[None].repeat(r, 1, 1, 1)  # [R, n, 19, 3]
        self.anchor_valid = (batch.anchor_valid & ~fut_a[None])[None].repeat(r, 1, 1)  # [R, n, 19]
        self.token_index = torch.where(fut_t[None], -1, batch.token_index)[None].repeat(r, 1, 1)  # [R, n, 18]
        self.token_valid = (batch.token_valid & ~fut_t[None])[None].repeat(r, 1, 1)  # [R, n, 18]
        self.future_pose = torch.zeros(r, n, N_FUTURE_TOKEN * STEPS_PER_TOKEN, 3, device=dev)  # [R, n, 80, 3]
        self.logprob = torch.zeros(r, n, N_FUTURE_TOKEN, device=dev)  # [R, n, 16]
        self.sample_logprob = torch.zeros(r, n, N_FUTURE_TOKEN, device=dev)  # [R, n, 16] under the sampler
        self.sample_support: torch.Tensor | None = None  # [R, n, 16, k] int32, allocated at the first draw
        self.sample_temperature = 1.0
        self.catk_target = torch.full((r, n, N_FUTURE_TOKEN), -1, dtype=torch.long, device=dev)  # [R, n, 16]
        self.ref_logprob: torch.Tensor | None = None  # [R, n, 16] under the reference (full softmax), with a reference
        self.ref_sample_logprob: torch.Tensor | None = None  # [R, n, 16] under the reference (sampled support)
        self.sim_rows = torch.nonzero(batch.sim_mask).reshape(-1)  # [n_sim]
        self.dist = _CornerDistance(batch)

    def sample(self, p: int, logits: torch.Tensor, sampler, generators, want_catk_target: bool) -> None:
        """logits [R, n_sim, V] of token p for the simulated agents -> sample, place, record."""
        b, rows = self.batch, self.sim_rows
        r, n_sim = logits.shape[0], rows.numel()
        if n_sim == 0:
            return
        slot = b.agent_slot[rows].repeat(r)  # [R*n_sim]
        anchor = self.anchor_pose[:, rows, p].reshape(-1, 3)  # [R*n_sim, 3]
        has_log = (b.anchor_valid[rows, p + 1] & b.token_valid[rows, p]).repeat(r)  # [R*n_sim]
        log_end = b.anchor_pose[rows, p + 1].repeat(r, 1)  # [R*n_sim, 3]
        target = self.dist.target_local(slot, anchor, log_end)  # [R*n_sim, 4, 2]
        ctx = SampleContext(
            generators=generators,
            rows_per_rollout=n_sim,
            candidate_distance=lambda idx: self.dist.candidates(slot, target, idx),
            has_log=has_log,
            device=logits.device,
        )
        flat = logits.reshape(r * n_sim, -1)  # [R*n_sim, V]
        sample = getattr(sampler, "sample", None)
        if sample is None:
            raise TypeError(f"rollout: sampler {sampler!r} has no sample(logits, ctx) -> (tokens, support); "
                            "the engine records the support each token was drawn from")
        tok, support = sample(flat, ctx)  # [R*n_sim], [R*n_sim, k]
        temperature = float(getattr(sampler, "temperature", 1.0))
        lp = token_logprob(flat, tok, "full_softmax")  # [R*n_sim]
        slp = token_logprob(flat, tok, "sampled", support, temperature, check=False)  # [R*n_sim]
        if self.sample_support is None:
            self.sample_support = torch.full((r, b.n_agent, N_FUTURE_TOKEN, support.shape[-1]), -1,
                                             dtype=torch.int32, device=logits.device)  # [R, n, 16, k]
            self.sample_temperature = temperature
        local = b.vocab_poses[slot, tok]  # [R*n_sim, 5, 3]
        glob = place_tokens(anchor, local).reshape(r, n_sim, STEPS_PER_TOKEN, 3)  # [R, n_sim, 5, 3]
        f = p - CURRENT_ANCHOR
        self.future_pose[:, rows, f * STEPS_PER_TOKEN : (f + 1) * STEPS_PER_TOKEN] = glob
        self.anchor_pose[:, rows, p + 1] = glob[:, :, -1]
        self.anchor_valid[:, rows, p + 1] = True
        self.token_index[:, rows, p] = tok.reshape(r, n_sim)
        self.token_valid[:, rows, p] = True
        self.logprob[:, rows, f] = lp.reshape(r, n_sim)
        self.sample_logprob[:, rows, f] = slp.reshape(r, n_sim)
        self.sample_support[:, rows, f] = support.reshape(r, n_sim, -1).to(torch.int32)
        if want_catk_target:
            best = self.dist.closest(slot, target)  # [R*n_sim]
            self.catk_target[:, rows, f] = torch.where(has_log, best, -1).reshape(r, n_sim)

    def score_reference(self, p: int, ref_logits: torch.Tensor) -> None:
        """ref_logits [R, n_sim, V] of the reference at position p -> both log-prob forms of the
        token just sampled at p (call after `sample(p, ...)`)."""
        rows = self.sim_rows
        r, n_sim = ref_logits.shape[0], rows.numel()
        if self.ref_logprob is None:
            self.ref_logprob = torch.zeros_like(self.logprob)  # [R, n, 16]
            self.ref_sample_logprob = torch.zeros_like(self.logprob)  # [R, n, 16]
        if n_sim == 0:
            return
        f = p - CURRENT_ANCHOR
        flat = ref_logits.reshape(r * n_sim, -1)  # [R*n_sim, V]
        tok = self.token_index[:, rows, p].reshape(-1)  # [R*n_sim]
        support = self.sample_support[:, rows, f].reshape(r * n_sim, -1)  # [R*n_sim, k]
        self.ref_logprob[:, rows, f] = token_logprob(flat, tok, "full_softmax").reshape(r, n_sim)
        self.ref_sample_logprob[:, rows, f] = token_logprob(flat, tok, "sampled", support, self.sample_temperature,
                                                            check=False).reshape(r, n_sim)

    def result(self, sampler, seed) -> RolloutBatch:
        if self.sample_support is None:  # nothing simulated: an empty support of width 1
            self.sample_support = torch.full((*self.sample_logprob.shape, 1), -1, dtype=torch.int32,
                                             device=self.sample_logprob.device)
        return RolloutBatch(
            batch=self.batch, token_index=self.token_index, token_valid=self.token_valid, anchor_pose=self.anchor_pose,
            anchor_valid=self.anchor_valid, logprob=self.logprob, catk_target=self.catk_target,
            future_pose=self.future_pose, sim_mask=self.batch.sim_mask.clone(), sampler=repr(sampler), seed=seed,
            sample_logprob=self.sample_logprob, sample_support=self.sample_support,
            sample_temperature=float(getattr(sampler, "temperature", 1.0)),
            ref_logprob=self.ref_logprob, ref_sample_logprob=self.ref_sample_logprob,
        )


class _IncrementalDecoder:
    """Runs `SmartModel` one anchor position at a time with cached temporal keys/values."""

    def __init__(self, model: SmartModel, batch: AgentBatch):
        self.model, self.batch = model, batch
        cfg = model.config
        self.table = model.token_table(batch)  # [3, V, hidden]
        self.map_feat = model.encode_map(batch)  # [n_map, hidden]  (once)
        self.map_kv = [blk.kv(self.map_feat) for blk in model.map_agent_layers]  # per layer ([n_map, inner] x 2)
        self.n_layer = cfg.num_agent_layers
        self.cache_k: list[torch.Tensor] = []
        self.cache_v: list[torch.Tensor] = []
        self.groups = 1

    def init_cache(self, rows: int) -> None:
        inner = self.model.config.inner_dim
        z = lambda: torch.zeros(rows, N_TOKEN_STEP, inner, device=self.batch.device)  # noqa: E731
        self.cache_k = [z() for _ in range(self.n_layer)]
        self.cache_v = [z() for _ in range(self.n_layer)]

    def repeat(self, r: int, rows: torch.Tensor) -> None:
        """Caches of 1 group (all agents) -> r rollout groups of the agents `rows` only."""
        self.cache_k = [c[rows].repeat(r, 1, 1) for c in self.cache_k]
        self.cache_v = [c[rows].repeat(r, 1, 1) for c in self.cache_v]
        self.groups = r

    def step(
        self,
        p: int,
        anchor_pose: torch.Tensor,  # [G, n, 19, 3]
        anchor_valid: torch.Tensor,  # [G, n, 19]
        token_index: torch.Tensor,  # [G, n, 18]
        token_valid: torch.Tensor,  # [G, n, 18]
        head_rows: torch.Tensor,  # [n_head] indices (into the n agents given) that need logits
        agents: torch.Tensor | None = None,  # [n] batch agent rows of the n agents given (default: all)
        row_offset: int = 0,  # first cache row of these G x n rows (chunks of rollouts)
    ) -> torch.Tensor:
        """Run position p for every row; returns logits [G, n_head, V]."""
        m, b = self.model, self.batch
        g, n = anchor_valid.shape[:2]
        dev = b.device
        agents = torch.arange(b.n_agent, device=dev) if agents is None else agents
        slot, atype, asize, ascene = b.agent_slot[agents], b.agent_type[agents], b.agent_size[agents], b.agent_scene[agents]
        ap = anchor_pose.reshape(g * n, N_ANCHOR, 3)  # [G*n, 19, 3]
        av = anchor_valid.reshape(g * n, N_ANCHOR)  # [G*n, 19]
        rep = lambda t: t.repeat(g, *([1] * (t.dim() - 1)))  # noqa: E731  agent tensors -> rows
        if p == 0:
            prev = torch.full((g * n,), -1, dtype=torch.long, device=dev)
            prev_v = torch.zeros(g * n, dtype=torch.bool, device=dev)
        else:
            prev = token_index[:, :, p - 1].reshape(-1)  # [G*n]
            prev_v = token_valid[:, :, p - 1].reshape(-1)  # [G*n]
        x = m.embed_agents(self.table, rep(slot), rep(atype), rep(asize), prev, prev_v)  # [G*n, hidden]
        pos = torch.tensor([p], device=dev)
        kpc, t_mask, t_rk, t_rv = m.temporal_edges(ap, av, pos)  # [1, S+1], [G*n, 1, S+1], [G*n, 1, S+1, inner]
        kpc, t_mask, t_rk, t_rv = kpc[0], t_mask[:, 0], t_rk[:, 0], t_rv[:, 0]
        me = m.map_agent_edges(b, ap[:, p], rep(ascene), av[:, p])
        a_idx, a_mask, a_rk, a_rv = m.agent_agent_edges(anchor_pose[:, :, p], anchor_valid[:, :, p], ascene)  # [G, n, K]
        a_rows = (a_idx + (torch.arange(g, device=dev) * n)[:, None, None]).reshape(g * n, -1)  # [G*n, K]
        a_mask, a_rk, a_rv = a_mask.reshape(g * n, -1), a_rk.flatten(0, 1), a_rv.flatten(0, 1)
        for l in range(self.n_layer):
            blk = m.temporal_layers[l]
            k, v = blk.kv(x)  # [G*n, inner]
            ck = self.cache_k[l][row_offset : row_offset + g * n]  # [G*n, 18, inner] view
            cv = self.cache_v[l][row_offset : row_offset + g * n]  # [G*n, 18, inner] view
            ck[:, p] = k
            cv[:, p] = v
            x = blk(x, ck[:, kpc], cv[:, kpc], t_mask, t_rk, t_rv)  # [G*n, hidden]
            blk = m.map_agent_layers[l]
            mk, mv = self.map_kv[l]
            x = blk(x, mk[me.index], mv[me.index], me.mask, me.rk, me.rv)  # [G*n, hidden]
            blk = m.agent_agent_layers[l]
            k, v = blk.kv(x)  # [G*n, inner]
            x = blk(x, k[a_rows], v[a_rows], a_mask, a_rk, a_rv)  # [G*n, hidden]
        sel = (head_rows[None, :] + (torch.arange(g, device=dev) * n)[:, None]).reshape(-1)  # [G*n_head]
        logits = m.head_logits(x[sel], slot[head_rows].repeat(g))  # [G*n_head, V]
        return logits.reshape(g, head_rows.numel(), m.max_vocab)


def _prepare(model: SmartModel, batch: AgentBatch, n_rollout: int, sampler, sampler_kwargs):
    if n_rollout < 1:
        raise ValueError(f"n_rollout must be >= 1, got {n_rollout}")
    smp = get_sampler(sampler, **(sampler_kwargs or {}))
    return smp


@torch.no_grad()
def rollout(
    model: SmartModel,
    batch: AgentBatch,
    n_rollout: int = 32,
    sampler="topk",
    seed: int = 0,
    return_logprobs: bool = True,
    catk_target: bool = True,
    sampler_kwargs: dict | None = None,
    progress: bool = False,
    timings: dict | None = None,
    chunk_rows: int | None = 128,
    reference: SmartModel | None = None,
) -> RolloutBatch:
    """Batched closed-loop rollouts with cached map encodings and temporal keys/values.

    `sampler`: a registered name (`topk`, `catk`, `argmax`; kwargs in `sampler_kwargs`) or an
    instance. `seed` fixes every random draw (rollout r uses its own generator, see
    `samplers.rollout_generators`). `catk_target=False` skips the closest-to-log search over the
    whole vocabulary (then `catk_target` stays -1). `return_logprobs` is accepted for the interface;
    log-probabilities are always recorded (they cost one log-softmax per step).
    `timings`, if a dict, receives seconds spent per phase. `chunk_rows`: rollouts are processed in
    groups of about this many agent rows per step (None: all at once); results do not depend on it.
    `reference`: a frozen model with the same vocabulary; its log-probs of every sampled token are
    recorded (`RolloutBatch.ref_logprob`, `.ref_sample_logprob`; None without a reference) at the
    cost of one more incremental forward per step.
    """
    smp = _prepare(model, batch, n_rollout, sampler, sampler_kwargs)
    was_training = model.training
    ref_was_training = reference.training if reference is not None else False
    model.eval()
    if reference is not None:
        reference.eval()
    try:
        t0 = time.perf_counter()
        state = _RolloutState(batch, n_rollout)
        gens = rollout_generators(seed, n_rollout)
        decoders = [_IncrementalDecoder(m, batch) for m in ([model] if reference is None else [model, reference])]
        for d in decoders:  # [0] the policy, [1] the reference
            d.init_cache(batch.n_agent)
        t1 = time.perf_counter()
        sim = state.sim_rows
        base = lambda t: t[:1]  # noqa: E731 history identical in every rollout
        logits: list = [None] * len(decoders)  # per decoder [1, n_sim, V], then [R, n_sim, V]
        for p in range(CURRENT_ANCHOR + 1):  # positions 0..2 once, un-repeated
            head = sim if p == CURRENT_ANCHOR else sim[:0]
            logits = [d.step(p, base(state.anchor_pose), base(state.anchor_valid), base(state.token_index),
                             base(state.token_valid), head) for d in decoders]
        # Future positions: only the agents to simulate have rows (the others have no valid future
        # anchor, so they are never keys and their outputs are unused).
        for d in decoders:
            d.repeat(n_rollout, sim)
        logits = [lg.expand(n_rollout, -1, -1) for lg in logits]  # [R, n_sim, V] each
        all_sim = torch.arange(sim.numel(), device=sim.device)  # [n_sim]
        steps = range(CURRENT_ANCHOR, N_TOKEN_STEP)
        for p in tqdm(steps, desc="rollout", disable=not progress, leave=False):
            state.sample(p, logits[0], smp, gens, catk_target)
            if reference is not None:
                state.score_reference(p, logits[1])
            if p + 1 < N_TOKEN_STEP and sim.numel():
                # rollouts in chunks of ~chunk_rows rows: keeps the [rows, K, inner] edge tensors cache-sized
                per = max(1, int(chunk_rows) // max(1, sim.numel())) if chunk_rows else n_rollout
                parts: list[list[torch.Tensor]] = [[] for _ in decoders]
                for r0 in range(0, n_rollout, per):
                    r1 = min(n_rollout, r0 + per)
                    for d, out in zip(decoders, parts):
                        out.append(d.step(p + 1, state.anchor_pose[r0:r1, sim], state.anchor_valid[r0:r1, sim],
                                          state.token_index[r0:r1, sim], state.token_valid[r0:r1, sim], all_sim,
                                          agents=sim, row_offset=r0 * sim.numel()))
                logits = [torch.cat(out, 0) for out in parts]  # [R, n_sim, V] each
        if timings is not None:
            timings["setup_s"] = t1 - t0
            timings["total_s"] = time.perf_counter() - t0
        return state.result(smp, seed)
    finally:
        model.train(was_training)
        if reference is not None:
            reference.train(ref_was_training)


@torch.no_grad()
def naive_rollout(
    model: SmartModel,
    batch: AgentBatch,
    n_rollout: int = 32,
    sampler="topk",
    seed: int = 0,
    catk_target: bool = True,
    sampler_kwargs: dict | None = None,
    first_rollout: int = 0,
    progress: bool = False,
) -> RolloutBatch:
    """Baseline: per-rollout Python loop re-running the full teacher-forced forward (map encoder
    included) on positions 0..p at every step. Rollouts `first_rollout .. first_rollout + n_rollout - 1`
    (their random streams equal the engine's rollouts with the same indices)."""
    smp = _prepare(model, batch, n_rollout, sampler, sampler_kwargs)
    was_training = model.training
    model.eval()
    try:
        out = _RolloutState(batch, n_rollout)
        gens = rollout_generators(seed, n_rollout, first=first_rollout)
        sim = out.sim_rows
        for r in tqdm(range(n_rollout), desc="naive rollout", disable=not progress, leave=False):
            st = _RolloutState(batch, 1)
            for p in range(CURRENT_ANCHOR, N_TOKEN_STEP):
                b = batch.with_agent_tokens(st.anchor_pose[0], st.anchor_valid[0], st.token_index[0], st.token_valid[0])
                logits = model(b, n_position=p + 1)[:, p]  # [n, V]
                st.sample(p, logits[sim][None], smp, [gens[r]], catk_target)
            for name in ("anchor_pose", "anchor_valid", "token_index", "token_valid", "future_pose", "logprob", "catk_target",
                         "sample_logprob"):
                getattr(out, name)[r] = getattr(st, name)[0]
            if st.sample_support is not None:
                if out.sample_support is None:
                    out.sample_support = torch.full((n_rollout, *st.sample_support.shape[1:]), -1, dtype=torch.int32,
                                                    device=st.sample_support.device)
                out.sample_support[r] = st.sample_support[0]
        return out.result(smp, seed)
    finally:
        model.train(was_training)
