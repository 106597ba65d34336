"""Calling convention shared by every objective, and the rollout / reward helpers of the RL ones.

One training step is two calls, split so a Ray runtime can put them on different actors:

1. `experience = objective.collect(policy, inputs, generator=g, reference=ref)` — no grad:
   rolls the policy out (CAT-K / RL objectives), scores the rollouts (RL), and returns an
   `Experience` (tensors + floats, picklable). BC just wraps the inputs.
2. `loss, metrics = objective.loss(policy, experience, reference=ref)` — with grad; the
   generic optimiser step around it is `smart_r1.train.step.update`.

Objectives are small classes built by `get_objective(name, **params)`; objective state that
must survive a resume (calibrated alpha, PPO value head) is in `state_dict()`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from smart_r1.objectives.logprob import recorded_reference_logprob
from smart_r1.tokens.tokenized_scene import CURRENT_ANCHOR, N_HISTORY_TOKEN

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# Inputs and experience
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainBatch:
    """One minibatch of scenes as the model and the objectives see it.

    `batch` is a `smart_r1.model.batch.AgentBatch` (scenes concatenated along the agent axis,
    `batch.agent_scene [n_agent]`). `train_mask [n_agent]` marks the agents whose tokens are
    trained (<= 32 per scene within 100 m of the SDC, reference recipe). `scenes` are the
    `Scene`s (same order) the metric backends need for rewards; `None` for BC / CAT-K.
    """

    batch: Any
    train_mask: torch.Tensor  # [n_agent] bool
    scenario_ids: list[str]
    scenes: list | None = None

    @property
    def n_scene(self) -> int:
        return len(self.scenario_ids)

    def to(self, device) -> "TrainBatch":
        return TrainBatch(self.batch.to(device), self.train_mask.to(device), self.scenario_ids, self.scenes)


@dataclass
class Experience:
    """What `collect` produced for one step (no grad)."""

    inputs: TrainBatch
    rollout: Any = None  # smart_r1.sim.RolloutBatch or None
    rewards: torch.Tensor | None = None  # [R, n_scene] reward per rollout (after the reward mode)
    advantages: torch.Tensor | None = None  # [R, n_scene] (MPO / GRPO); None for others
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. reward_valid [R, n_scene], logp_ref [R, n_agent, T]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def n_rollout(self) -> int:
        return 0 if self.rollout is None else int(self.rollout.token_index.shape[0])

    def select_rollouts(self, index: torch.Tensor) -> "Experience":
        """The same experience restricted to rollouts `index` [R'] (PPO / GRPO minibatches): the
        rollout batch, rewards, advantages and every extra with a leading rollout axis."""
        if self.rollout is None:
            raise ValueError("Experience.select_rollouts: this experience has no rollouts")
        R = self.n_rollout
        index = torch.as_tensor(index, dtype=torch.long)

        def take(t):
            return t[index.to(t.device)] if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] == R else t

        return Experience(
            inputs=self.inputs,
            rollout=self.rollout.select_rollouts(index),
            rewards=take(self.rewards),
            advantages=take(self.advantages),
            extras={k: take(v) for k, v in self.extras.items()},
            metrics=self.metrics,
        )

    def to(self, device, non_blocking: bool = False) -> "Experience":
        """All tensors on `device` (rollouts and extras included); a no-op when already there."""

        def move(t):
            return t.to(device, non_blocking=non_blocking) if isinstance(t, torch.Tensor) else t

        return Experience(
            inputs=self.inputs.to(device),
            rollout=None if self.rollout is None else self.rollout.to(device),
            rewards=move(self.rewards),
            advantages=move(self.advantages),
            extras={k: move(v) for k, v in self.extras.items()},
            metrics=self.metrics,
        )


class Objective:
    """Base class. Subclasses set the class attributes and implement `targets` and
    `loss_from_logprobs` (and `collect`).

    The policy enters every loss only through per-token log-probabilities of the tokens named by
    `targets(experience)` (`TokenTargets`, [R, n_agent, T]); the learner
    (`smart_r1.train.step.update`) obtains them micro-batched and accumulates the exact gradient:

    - `token_separable = True`: the loss is a sum over tokens of terms that depend on that
      token's log-prob only, with normalisers that do not depend on the policy (CE, MPO, GRPO,
      PPO, k3 KL): one pass with grad, dL/dlogp evaluated per micro-batch.
    - `False` (DPO: a sigmoid of per-sequence sums): a no-grad pass for all log-probs, dL/dlogp
      by autograd on the whole loss, then a pass with grad per micro-batch.
    """

    name: str = ""
    needs_reference: bool = False  # snapshot a frozen reference policy at stage start
    needs_scenes: bool = False  # the inputs must carry `Scene`s (rewards)
    train_mode: bool = True  # policy.train() during loss (dropout); RL objectives use eval()
    token_separable: bool = True  # see the class docstring
    n_epochs: int = 1  # optimiser passes over one experience (PPO / GRPO set it)
    n_minibatches: int = 1  # optimiser steps per pass, each on a disjoint share of the rollouts

    def collect(self, policy, inputs: TrainBatch, generator: torch.Generator | None = None, reference=None) -> Experience:
        return Experience(inputs=inputs)

    def targets(self, experience: Experience) -> "TokenTargets":
        """The tokens whose log-probs the loss needs ([R, n_agent, T], see `TokenTargets`)."""
        raise NotImplementedError

    def loss_from_logprobs(
        self,
        logp: torch.Tensor,  # [R, n_agent, T] policy log-prob of targets.tokens (with grad)
        logp_ref: torch.Tensor | None,  # [R, n_agent, T] reference log-prob (no grad) if needs_reference
        mask: torch.Tensor,  # [R, n_agent, T] bool targets.mask
        experience: Experience,
        extra: dict[str, torch.Tensor] | None = None,  # e.g. mean_valid_logp [R, n_agent, T]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def score_metrics(self, scores: "TokenScores", targets: "TokenTargets") -> dict[str, float]:
        """Metrics from the detached per-token scores of the whole experience (no grad)."""
        from smart_r1.objectives.losses import masked_mean

        return {"policy/entropy": float(masked_mean(scores.entropy, targets.mask))}

    def loss(self, policy, experience: Experience, reference=None) -> tuple[torch.Tensor, dict[str, float]]:
        """The whole loss in one autograd graph (every sequence in one forward, the map encoded
        per sequence): the reference for the micro-batched learner, and for small cases."""
        targets = self.targets(experience)
        scores = score_tokens_one_shot(policy, experience.inputs.batch, targets)
        logp_ref = reference_logprobs(self, reference, experience, targets) if self.needs_reference else None
        loss, metrics = self.loss_from_logprobs(scores.logp, logp_ref, targets.mask, experience, scores.extra())
        metrics = dict(metrics)
        metrics.update(self.score_metrics(scores, targets))
        return loss, metrics

    # Extra trainable modules (PPO value head), optimised with the policy.
    def modules(self) -> list[torch.nn.Module]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def to(self, device) -> "Objective":
        for m in self.modules():
            m.to(device)
        return self


# ----------------------------------------------------------------------------------------------
# Model / simulator helpers
# ----------------------------------------------------------------------------------------------


def gather_logprob(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log pi(token) from logits [..., V] and tokens [...] (-1 allowed, gives garbage there)."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # [..., V]
    return logp.gather(-1, tokens.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # [...]


def run_rollout(model, batch, n_rollout: int, sampler: str, sampler_params: dict, generator: torch.Generator | None,
                catk_target: bool = False, reference=None):
    """Closed-loop rollout through the simulator (`smart_r1.sim.engine.rollout`), no grad.

    The simulator seeds each rollout's own stream from one integer; it is drawn from
    `generator`, so the rollouts are a pure function of the caller's generator state.
    `reference`: a frozen model whose log-probs of the sampled tokens the engine records
    (`RolloutBatch.ref_logprob` / `.ref_sample_logprob`); it does not change the rollouts.
    """
    from smart_r1.sim.engine import rollout  # late import: BC never loads the simulator

    g = generator if generator is not None else torch.Generator().manual_seed(0)
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return rollout(model, batch, n_rollout=n_rollout, sampler=sampler, seed=seed, catk_target=bool(catk_target),
                           sampler_kwargs=dict(sampler_params), reference=reference)
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------------------------
# Teacher-forced per-token log-probs: what an objective's loss is a function of
# ----------------------------------------------------------------------------------------------


@dataclass
class TokenTargets:
    """The tokens an objective re-scores, and how.

    R agent sequences of the experience's scenes (R rollouts; R = 1 for BC: the logged one) are
    fed teacher-forced through the model; the loss needs, at positions `first_position ..
    first_position + T - 1` of every (sequence, agent), the log-probability of `tokens`.
    """

    anchor_pose: torch.Tensor  # [R, n_agent, 19, 3] the sequences fed to the model
    anchor_valid: torch.Tensor  # [R, n_agent, 19] bool
    token_index: torch.Tensor  # [R, n_agent, 18] int64
    token_valid: torch.Tensor  # [R, n_agent, 18] bool
    tokens: torch.Tensor  # [R, n_agent, T] int64 targets (-1 = none)
    mask: torch.Tensor  # [R, n_agent, T] bool tokens that enter the loss
    first_position: int = 0  # position of tokens[..., 0] among the 18
    form: str = "full_softmax"  # `smart_r1.objectives.logprob.token_logprob` form
    support: torch.Tensor | None = None  # [R, n_agent, T, k] sampler support (form 'sampled')
    temperature: float = 1.0  # sampler temperature (form 'sampled')
    mean_valid_logp: bool = False  # also compute the mean log-prob over the agent type's vocabulary (label smoothing)

    @property
    def n_sequence(self) -> int:
        return int(self.token_index.shape[0])

    @staticmethod
    def from_rollouts(rb, tokens: torch.Tensor, mask: torch.Tensor, first_position: int, **kw) -> "TokenTargets":
        return TokenTargets(rb.anchor_pose, rb.anchor_valid, rb.token_index, rb.token_valid, tokens, mask, first_position, **kw)


@dataclass
class TokenScores:
    """Per-token results of re-scoring `TokenTargets` (all [R, n_agent, T])."""

    logp: torch.Tensor  # float32 log-prob of the target tokens (form of the targets)
    entropy: torch.Tensor  # float32 full-softmax entropy (no grad)
    argmax: torch.Tensor  # int64 most likely token (accuracy metrics)
    mean_valid_logp: torch.Tensor | None = None  # float32 mean log-prob over the valid vocabulary

    def extra(self) -> dict[str, torch.Tensor]:
        return {} if self.mean_valid_logp is None else {"mean_valid_logp": self.mean_valid_logp}


# Default micro-batch budget: (sequence, agent, position) rows of one teacher-forced forward.
# ~2 MB of autograd state per row for `tiny` in fp32 on CPU (benchmarks/README.md); small micro-batches are also
# faster on CPU (cache-sized edge tensors): one 32-agent rollout (576 rows) per micro-batch.
DEFAULT_MAX_TOKENS_PER_MICROBATCH = 1024


@dataclass
class MicroBatch:
    scenes: list[int]  # scene indices of the group (all scenes of the batch when one group)
    agent_rows: torch.Tensor | None  # [n_agent_group] rows of the group's agents (None = all)
    r0: int  # sequences r0 .. r1 - 1
    r1: int
    first_of_group: bool
    last_of_group: bool


def plan_microbatches(agent_scene: torch.Tensor, n_scene: int, n_sequence: int, n_position: int,
                      max_tokens: int | None) -> list[MicroBatch]:
    """Split (sequences x scenes) into micro-batches of at most `max_tokens` rows (agent x
    position x sequence): scenes are packed into groups (a scene larger than the budget is a
    group of its own), each group's sequences into ranges. Every scene's map is encoded once per
    group. `max_tokens=None` (or 0): one micro-batch."""
    counts = torch.bincount(agent_scene.long().cpu(), minlength=n_scene).tolist()  # [n_scene]
    total = sum(counts) * n_position
    if not max_tokens or total * n_sequence <= max_tokens:
        return [MicroBatch(list(range(n_scene)), None, 0, n_sequence, True, True)]
    groups: list[list[int]] = []
    cur: list[int] = []
    cur_tokens = 0
    for s, c in enumerate(counts):
        t = c * n_position
        if cur and cur_tokens + t > max_tokens:
            groups.append(cur)
            cur, cur_tokens = [], 0
        cur.append(s)
        cur_tokens += t
    if cur:
        groups.append(cur)
    out: list[MicroBatch] = []
    scene_cpu = agent_scene.long().cpu()
    for g in groups:
        if len(groups) == 1:
            rows = None
        else:
            rows = torch.nonzero(torch.isin(scene_cpu, torch.tensor(g))).reshape(-1).to(agent_scene.device)  # [n_g]
        g_tokens = sum(counts[s] for s in g) * n_position
        per = max(1, int(max_tokens) // max(1, g_tokens))  # sequences per micro-batch
        starts = list(range(0, n_sequence, per))
        for i, r0 in enumerate(starts):
            out.append(MicroBatch(g, rows, r0, min(n_sequence, r0 + per), i == 0, i == len(starts) - 1))
    return out


def _take_rows(t: torch.Tensor | None, mb: MicroBatch) -> torch.Tensor | None:
    """[R, n_agent, ...] -> the micro-batch's [r1 - r0, n_group, ...]."""
    if t is None:
        return None
    t = t[mb.r0 : mb.r1]
    return t if mb.agent_rows is None else t[:, mb.agent_rows]


def _put_rows(full: torch.Tensor, mb: MicroBatch, value: torch.Tensor) -> None:
    if mb.agent_rows is None:
        full[mb.r0 : mb.r1] = value
    else:
        full[mb.r0 : mb.r1, mb.agent_rows] = value


def _autocast(device: torch.device, dtype: torch.dtype | None):
    import contextlib

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _chunk_scores(logits: torch.Tensor, targets_mb: dict, targets: TokenTargets) -> tuple[torch.Tensor, ...]:
    """logits [r, n, T, V] of one micro-batch -> (logp [r, n, T] with grad, entropy, argmax, mean_valid_logp | None)."""
    from smart_r1.objectives.logprob import token_logprob

    logp = token_logprob(logits, targets_mb["tokens"], targets.form, support=targets_mb["support"],
                         temperature=targets.temperature)  # [r, n, T]
    mean_valid = None
    if targets.mean_valid_logp:
        lsm = torch.log_softmax(logits.float(), dim=-1)  # [r, n, T, V]
        valid = torch.isfinite(logits)  # [r, n, T, V]
        mean_valid = torch.where(valid, lsm, torch.zeros_like(lsm)).sum(-1) / valid.sum(-1).clamp_min(1)  # [r, n, T]
    with torch.no_grad():
        lsm = torch.log_softmax(logits.detach().float(), dim=-1)  # [r, n, T, V]
        entropy = -torch.where(torch.isfinite(lsm), lsm.exp() * lsm, torch.zeros_like(lsm)).sum(-1)  # [r, n, T]
        argmax = logits.detach().argmax(-1)  # [r, n, T]
    return logp, entropy, argmax, mean_valid


def score_tokens(
    model,
    batch,
    targets: TokenTargets,
    max_tokens: int | None = DEFAULT_MAX_TOKENS_PER_MICROBATCH,
    grad_fn=None,
    autocast_dtype: torch.dtype | None = None,
) -> TokenScores:
    """Re-score `targets` teacher-forced, micro-batched over (scene groups x sequences).

    No grad unless `grad_fn` is given: then each micro-batch is run with grad and
    `grad_fn(mb, logp_mb, extra_mb)` must back-propagate through it (e.g.
    `torch.autograd.backward(logp_mb, dL/dlogp_mb)`) before the next one is built, so no more
    than one micro-batch's graph (and its logits [r, n, 18, V]) is alive at a time. The map of
    each scene group is encoded once and shared by the group's sequences; with grad it is a
    leaf whose gradient accumulates over the micro-batches and is back-propagated once through
    the map encoder at the end of the group.

    Returns `TokenScores` (detached, [R, n_agent, T]).
    """
    R, n, T = targets.tokens.shape
    dev = targets.tokens.device
    p0 = int(targets.first_position)
    logp = torch.zeros(R, n, T, device=dev)
    entropy = torch.zeros(R, n, T, device=dev)
    argmax = torch.zeros(R, n, T, dtype=torch.long, device=dev)
    mean_valid = torch.zeros(R, n, T, device=dev) if targets.mean_valid_logp else None
    plan = plan_microbatches(batch.agent_scene, batch.n_scene, R, 18, max_tokens)
    map_needs_grad = grad_fn is not None and any(p.requires_grad for p in _map_parameters(model))
    sub = map_feat = map_leaf = None
    for mb in plan:
        if mb.first_of_group:
            sub = batch if mb.agent_rows is None else batch.select_scenes(mb.scenes)
            # No grad here: the map's own graph (all map-map edges) is rebuilt at the end of the
            # group, so it never coexists with a micro-batch's graph (peak = the larger of the two).
            map_rng = _rng_state(dev) if map_needs_grad else None
            with torch.no_grad(), _autocast(dev, autocast_dtype):
                map_feat = model.encode_map(sub)  # [n_map_group, hidden]
            map_leaf = map_feat.detach().requires_grad_(map_needs_grad)
        seq = {k: _take_rows(getattr(targets, k), mb) for k in ("anchor_pose", "anchor_valid", "token_index", "token_valid")}
        tmb = {"tokens": _take_rows(targets.tokens, mb), "support": _take_rows(targets.support, mb)}
        stacked, agent_map_scene = sub.stack_sequences(seq["anchor_pose"], seq["anchor_valid"], seq["token_index"],
                                                       seq["token_valid"], share_map=True)
        r = mb.r1 - mb.r0
        with torch.set_grad_enabled(grad_fn is not None):
            with _autocast(dev, autocast_dtype):
                logits = model(stacked, map_feat=map_leaf, agent_map_scene=agent_map_scene)  # [r * n_g, 18, V]
            logits = logits.reshape(r, -1, *logits.shape[1:])[:, :, p0 : p0 + T]  # [r, n_g, T, V]
            lp, ent, am, mv = _chunk_scores(logits, tmb, targets)
            del logits
            if grad_fn is not None:
                grad_fn(mb, lp, {} if mv is None else {"mean_valid_logp": mv})
        _put_rows(logp, mb, lp.detach())
        _put_rows(entropy, mb, ent)
        _put_rows(argmax, mb, am)
        if mean_valid is not None:
            _put_rows(mean_valid, mb, mv.detach())
        if mb.last_of_group and map_needs_grad and map_leaf.grad is not None:
            with _replay_rng(dev, map_rng), torch.enable_grad(), _autocast(dev, autocast_dtype):
                map_feat = model.encode_map(sub)  # [n_map_group, hidden] same values (same dropout draws)
            map_feat.backward(map_leaf.grad.to(map_feat.dtype))
            map_feat = map_leaf = None
    return TokenScores(logp, entropy, argmax, mean_valid)


def _rng_state(device: torch.device):
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _replay_rng(device: torch.device, state):
    """Run a block with the RNG as it was at `state` (dropout replays its draws), then restore."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(state[0])
            if state[1] is not None:
                torch.cuda.set_rng_state(state[1], device)
            yield

    return ctx()


def _map_parameters(model) -> list[torch.Tensor]:
    """Parameters that `encode_map` uses (their gradient flows through the shared map leaf)."""
    names = ("map_layers", "rel_map_map", "map_vocab_emb", "map_kind_emb", "signal_emb", "map_norm")
    return [p for name, p in model.named_parameters() if name.split(".")[0] in names]


def score_tokens_one_shot(model, batch, targets: TokenTargets) -> TokenScores:
    """Reference implementation of `score_tokens` with grad: every sequence in one forward with
    the map repeated per sequence (no sharing, no micro-batches). For `Objective.loss` and the
    gradient-equality tests; it holds [R, n_agent, 18, V] logits and R map encodings."""
    R, n, T = targets.tokens.shape
    p0 = int(targets.first_position)
    stacked, agent_map_scene = batch.stack_sequences(targets.anchor_pose, targets.anchor_valid, targets.token_index,
                                                     targets.token_valid, share_map=False)
    logits = model(stacked).reshape(R, n, 18, -1)[:, :, p0 : p0 + T]  # [R, n, T, V]
    lp, ent, am, mv = _chunk_scores(logits, {"tokens": targets.tokens, "support": targets.support}, targets)
    return TokenScores(lp, ent, am, mv)


def reference_logprobs(objective, reference, experience: Experience, targets: TokenTargets | None = None,
                       max_tokens: int | None = DEFAULT_MAX_TOKENS_PER_MICROBATCH,
                       autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Reference log-probs of the targets, [R, n_agent, T], no grad, micro-batched; computed once
    per experience and cached in `experience.extras["logp_ref"]`. When the rollout engine scored
    the tokens with the reference (`learner.reference_on: rollout`), `RLObjective.make_experience`
    has put its values there already (0 where no token, like this pass) and nothing is computed."""
    cached = experience.extras.get("logp_ref")
    if cached is not None:
        return cached
    if reference is None:
        raise ValueError(f"objective {objective.name!r} needs a reference policy (snapshot at stage start)")
    targets = objective.targets(experience) if targets is None else targets
    was_training = reference.training
    reference.eval()
    try:
        with torch.no_grad():
            logp_ref = score_tokens(reference, experience.inputs.batch, targets, max_tokens, autocast_dtype=autocast_dtype).logp
    finally:
        reference.train(was_training)
    experience.extras["logp_ref"] = logp_ref
    return logp_ref


def rollout_logits(model, batch, rb) -> torch.Tensor:
    """Teacher-forced logits of every rollout: [R, n_agent, 18, V] (with grad if enabled).
    Diagnostic / test helper: holds the full logits; the learner uses `score_tokens`."""
    R = rb.token_index.shape[0]
    stacked, _ = batch.stack_sequences(rb.anchor_pose, rb.anchor_valid, rb.token_index, rb.token_valid, share_map=False)
    return model(stacked).reshape(R, batch.n_agent, 18, -1)


def rollout_future_logprobs(model, batch, rb, max_tokens: int | None = DEFAULT_MAX_TOKENS_PER_MICROBATCH) -> torch.Tensor:
    """Full-softmax log pi of the sampled future tokens of every rollout, no grad: [R, n_agent, 16]."""
    tokens = rb.token_index[:, :, N_HISTORY_TOKEN:]
    targets = TokenTargets.from_rollouts(rb, tokens, tokens >= 0, N_HISTORY_TOKEN)
    with torch.no_grad():
        return score_tokens(model, batch, targets, max_tokens).logp


def future_token_mask(rb, train_mask: torch.Tensor) -> torch.Tensor:
    """Sampled future tokens that count: valid in the rollout, agent trained. [R, n_agent, 16]"""
    valid = rb.token_valid[:, :, N_HISTORY_TOKEN:].bool()  # [R, n_agent, 16]
    tokens_ok = rb.token_index[:, :, N_HISTORY_TOKEN:] >= 0  # [R, n_agent, 16]
    return valid & tokens_ok & train_mask.view(1, -1, 1).bool()


def per_token_from_scene(values: torch.Tensor, agent_scene: torch.Tensor, n_token: int) -> torch.Tensor:
    """Broadcast [R, n_scene] per-(rollout, scene) values to [R, n_agent, n_token]."""
    per_agent = values[:, agent_scene.long()]  # [R, n_agent]
    return per_agent.unsqueeze(-1).expand(-1, -1, n_token)  # [R, n_agent, n_token]


def motion_guards(batch, rb, train_mask: torch.Tensor) -> dict[str, float]:
    """Reward-hacking guards: distance travelled and speed of the rollouts vs the (tokenized) log.

    Both are measured on the future anchors (0.5 s apart), over the anchor pairs where the log
    is valid, for the trained agents. A policy that learns to stop shows `rollout_distance_m`
    collapsing while `log_distance_m` stays put.
    """
    log_pose = batch.anchor_pose[:, CURRENT_ANCHOR:, :2].float()  # [n_agent, 17, 2]
    log_valid = batch.anchor_valid[:, CURRENT_ANCHOR:].bool()  # [n_agent, 17]
    pair_valid = log_valid[:, 1:] & log_valid[:, :-1] & train_mask.view(-1, 1).bool()  # [n_agent, 16]
    n_pair = pair_valid.sum().clamp_min(1).float()
    log_step = (log_pose[:, 1:] - log_pose[:, :-1]).norm(dim=-1)  # [n_agent, 16]
    sim_pose = rb.anchor_pose[:, :, CURRENT_ANCHOR:, :2].float()  # [R, n_agent, 17, 2]
    sim_step = (sim_pose[:, :, 1:] - sim_pose[:, :, :-1]).norm(dim=-1)  # [R, n_agent, 16]
    n_agent_trained = (pair_valid.any(-1)).sum().clamp_min(1).float()
    log_dist = (log_step * pair_valid).sum() / n_agent_trained
    sim_dist = (sim_step * pair_valid.unsqueeze(0)).sum() / (n_agent_trained * sim_step.shape[0])
    log_speed = (log_step * pair_valid).sum() / (n_pair * 0.5)
    sim_speed = (sim_step * pair_valid.unsqueeze(0)).sum() / (n_pair * 0.5 * sim_step.shape[0])
    # Share of (rollout, agent) futures that move < 1 m while the log moves > 5 m: "frozen" agents.
    log_total = (log_step * pair_valid).sum(-1)  # [n_agent]
    sim_total = (sim_step * pair_valid.unsqueeze(0)).sum(-1)  # [R, n_agent]
    movers = log_total > 5.0  # [n_agent]
    frozen = ((sim_total < 1.0) & movers.unsqueeze(0)).float().sum() / (movers.sum().clamp_min(1) * sim_step.shape[0])
    return {
        "guard/log_distance_m": float(log_dist),
        "guard/rollout_distance_m": float(sim_dist),
        "guard/distance_ratio": float(sim_dist / log_dist.clamp_min(1e-6)),
        "guard/log_speed_mps": float(log_speed),
        "guard/rollout_speed_mps": float(sim_speed),
        "guard/frozen_fraction": float(frozen),
    }


# ----------------------------------------------------------------------------------------------
# Rewards (shared by MPO / GRPO / DPO / PPO)
# ----------------------------------------------------------------------------------------------

_REWARD_MODES: dict[str, Any] = {}


def register_reward_mode(name: str):
    def deco(fn):
        _REWARD_MODES[name] = fn
        return fn

    return deco


def get_reward_mode(name: str):
    if name not in _REWARD_MODES:
        raise KeyError(f"unknown reward mode {name!r}; known: {sorted(_REWARD_MODES)}")
    return _REWARD_MODES[name]


def list_reward_modes() -> list[str]:
    return sorted(_REWARD_MODES)


def _per_rollout(scores, n_rollout: int) -> np.ndarray:
    per = getattr(scores, "per_rollout_metametric", None)
    if per is None:
        raise ValueError(
            f"scene {scores.scenario_id!r}: the metric backend {scores.backend!r} gave no per_rollout_metametric; "
            "use reward mode 'scene' or 'leave_one_out', or the fast backend"
        )
    per = np.asarray(per, dtype=np.float64)  # [R]
    if per.shape != (n_rollout,):
        raise ValueError(f"scene {scores.scenario_id!r}: per_rollout_metametric shape {per.shape}, expected ({n_rollout},)")
    return per


@register_reward_mode("scene")
def scene_reward(backend, scene, rollouts, scores) -> np.ndarray:
    """The scene's realism meta metric of the whole rollout group, shared by its R rollouts.

    This is the paper's literal reading (the metric is a distribution-level score over the 32
    rollouts; alpha = 0.77 is that score's dataset average), but every rollout of a scene gets
    the same advantage, so the signal only contrasts scenes.
    """
    return np.full(rollouts.n_rollout, float(scores.metametric))  # [R]


@register_reward_mode("rollout")
def rollout_reward(backend, scene, rollouts, scores) -> np.ndarray:
    """Each rollout's own meta metric (the backend's `per_rollout_metametric`)."""
    return _per_rollout(scores, rollouts.n_rollout)  # [R]


@register_reward_mode("leave_one_out")
def leave_one_out_reward(backend, scene, rollouts, scores) -> np.ndarray:
    """Jackknife pseudo-value of rollout i in the group's meta metric M:

        r_i = R * M(all) - (R - 1) * M(all except i)

    The rollout's marginal contribution to the distribution-level score, on the same scale as
    M (the pseudo-values average to about M), so a fixed alpha keeps its meaning. Costs R extra
    backend calls per scene.
    """
    from smart_r1.sim.rollouts import Rollouts

    R = rollouts.n_rollout
    if R < 2:
        raise ValueError(f"scene {scores.scenario_id!r}: leave_one_out needs >= 2 rollouts, got {R}")
    full = float(scores.metametric)
    out = np.zeros(R)
    for i in range(R):
        keep = np.array([j for j in range(R) if j != i])
        sub = Rollouts(rollouts.scenario_id, rollouts.agent_id, rollouts.trajectories[keep])
        out[i] = R * full - (R - 1) * float(backend.score(scene, sub).metametric)
    return out  # [R]


def score_scene(backend, reward_mode: str, scene, rollouts) -> tuple[np.ndarray, Any]:
    """Reward of every rollout of one scene under `reward_mode`, and the scene's SceneScores.

    This is what a scorer process calls (one scene, `smart_r1.sim.rollouts.Rollouts`). -> ([R], scores)
    """
    scores = backend.score(scene, rollouts)
    return np.asarray(get_reward_mode(reward_mode)(backend, scene, rollouts, scores), dtype=np.float64), scores


def score_rollouts(backend, reward_mode: str, scenes, rb) -> tuple[torch.Tensor, list]:
    """Score every scene's rollout group. Returns (rewards [R, n_scene], list of SceneScores)."""
    rewards, all_scores = [], []
    for s, scene in enumerate(scenes):
        r, scores = score_scene(backend, reward_mode, scene, rb.to_rollouts(s))
        rewards.append(r)
        all_scores.append(scores)
    return torch.as_tensor(np.stack(rewards, axis=1), dtype=torch.float32), all_scores  # [R, n_scene]


def score_metrics(all_scores) -> dict[str, float]:
    """Mean realism and sub-metrics of a list of SceneScores (logged every RFT step)."""
    out: dict[str, float] = {}
    if not all_scores:
        return out
    out["realism/metametric"] = float(np.nanmean([s.metametric for s in all_scores]))
    for k in all_scores[0].likelihoods:
        out[f"realism/{k}"] = float(np.nanmean([s.likelihoods[k] for s in all_scores]))
    for k in all_scores[0].groups():
        out[f"realism/{k}"] = float(np.nanmean([s.groups()[k] for s in all_scores]))
    out["realism/min_average_displacement_error"] = float(np.nanmean([s.min_average_displacement_error for s in all_scores]))
    return out


class RLObjective(Objective):
    """Shared collect() of the RFT objectives: roll out, score, log rewards and guards."""

    needs_reference = True
    needs_scenes = True
    train_mode = False  # no dropout in the ratio / KL terms (reference is in eval mode too)

    def __init__(
        self,
        n_rollout: int = 8,
        sampler: str = "topk",
        sampler_params: dict | None = None,
        backend: str = "fast",
        reward: str = "rollout",
        backend_params: dict | None = None,
    ):
        self.n_rollout = int(n_rollout)
        self.sampler = sampler
        # Default top-5, the evaluation sampler: RFT optimises the behaviour that is scored.
        self.sampler_params = dict(sampler_params if sampler_params is not None else {"k": 5})
        self.backend_name = backend
        self.backend_params = dict(backend_params or {})
        get_reward_mode(reward)  # fail early, naming the mode
        self.reward_mode = reward
        self._backend = None

    @property
    def backend(self):
        if self._backend is None:
            from smart_r1.metrics.base import get_backend

            self._backend = get_backend(self.backend_name, **self.backend_params)
        return self._backend

    def __getstate__(self):  # picklable for Ray: the backend is rebuilt on the other side
        state = dict(self.__dict__)
        state["_backend"] = None
        return state

    def advantages(self, rewards: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor | None:
        """[R, n_scene] advantages from rewards (valid: [R, n_scene] finite rewards), or None."""
        return None

    def collect(self, policy, inputs: TrainBatch, generator=None, reference=None) -> Experience:
        """Roll out, score every scene, build the experience (single-process path). With a
        `reference` (the loop passes it when `learner.reference_on: rollout`) the engine also
        records the reference log-probs, and the learner skips its own reference pass."""
        if inputs.scenes is None:
            raise ValueError(f"objective {self.name!r} needs the scenes of the batch for its rewards (TrainBatch.scenes)")
        rb = self.rollout(policy, inputs, generator, reference=reference)
        rewards, all_scores = score_rollouts(self.backend, self.reward_mode, inputs.scenes, rb)  # [R, n_scene]
        return self.make_experience(inputs, rb, rewards, all_scores)

    # The three pieces of `collect`, for a runtime that rolls out, scores and learns in
    # different processes: rollout actor -> `rollout`; scorer -> `score_scene(backend,
    # objective.reward_mode, scene, rb.to_rollouts(s))`; learner -> `make_experience` + `update`.
    def rollout(self, policy, inputs: TrainBatch, generator=None, reference=None):
        """`reference` is used only when the objective needs one (the engine scores the tokens with it)."""
        return run_rollout(policy, inputs.batch, self.n_rollout, self.sampler, self.sampler_params, generator,
                           reference=reference if self.needs_reference else None)

    def make_experience(self, inputs: TrainBatch, rb, rewards, all_scores=None) -> Experience:
        """rewards: [R, n_scene] (tensor or array, per rollout after the reward mode).

        Non-finite rewards (a backend that cannot score a scene, e.g. no valid evaluated agent)
        do not enter the loss: their tokens are masked out (`extras["reward_valid"]`) and
        counted in `reward/nonfinite`; never silently turned into a number.
        """
        rewards = torch.as_tensor(np.asarray(rewards), dtype=torch.float32)  # [R, n_scene]
        valid = torch.isfinite(rewards)  # [R, n_scene]
        if not bool(valid.all()):
            bad = sorted({str(inputs.scenario_ids[int(s)]) for s in torch.nonzero(~valid)[:, 1].tolist()})
            log.warning("objective %s: %d non-finite reward(s) from the %r backend (masked out of the loss), scenes %s",
                        self.name, int((~valid).sum()), self.backend_name, bad)
        rewards = torch.where(valid, rewards, torch.zeros_like(rewards))
        adv = self.advantages(rewards, valid)
        ok = rewards[valid]
        metrics = {
            "reward/mean": float(ok.mean()) if ok.numel() else float("nan"),
            "reward/std": float(ok.std(unbiased=False)) if ok.numel() else float("nan"),
            "reward/min": float(ok.min()) if ok.numel() else float("nan"),
            "reward/max": float(ok.max()) if ok.numel() else float("nan"),
            "reward/nonfinite": float((~valid).sum()),
        }
        if adv is not None:
            metrics["advantage/mean"] = float(adv[valid].mean()) if ok.numel() else float("nan")
            metrics["advantage/std"] = float(adv[valid].std(unbiased=False)) if ok.numel() else float("nan")
        if all_scores:
            metrics.update(score_metrics(all_scores))
        metrics.update(motion_guards(inputs.batch, rb, inputs.train_mask))
        extras = {"reward_valid": valid}
        # Reference log-probs recorded by the rollout engine, in this objective's form (the form of
        # `targets(...)`): `reference_logprobs` returns them instead of running its own pass.
        if self.needs_reference:
            logp_ref = recorded_reference_logprob(rb, self.logprob_form)  # [R, n_agent, 16] or None
            if logp_ref is not None:
                extras["logp_ref"] = logp_ref
            metrics["learner/reference_from_rollout"] = float(logp_ref is not None)
        return Experience(inputs=inputs, rollout=rb, rewards=rewards, advantages=adv, metrics=metrics, extras=extras)

    # How the policy's log-prob of a sampled token is measured (`smart_r1.objectives.logprob`):
    # 'full_softmax' (the model's distribution) or 'sampled' (the sampler's, over the recorded support).
    logprob_form: str = "full_softmax"

    def targets(self, experience: Experience) -> TokenTargets:
        """The sampled future tokens of every rollout, masked to trained agents with a finite reward."""
        rb = experience.rollout
        batch = experience.inputs.batch
        mask = future_token_mask(rb, experience.inputs.train_mask)  # [R, n_agent, 16]
        valid = experience.extras.get("reward_valid")
        if valid is not None:
            mask = mask & per_token_from_scene(valid.to(mask.device), batch.agent_scene, mask.shape[-1])
        support = getattr(rb, "sample_support", None) if self.logprob_form == "sampled" else None
        return TokenTargets.from_rollouts(
            rb, rb.token_index[:, :, N_HISTORY_TOKEN:], mask, N_HISTORY_TOKEN, form=self.logprob_form, support=support,
            temperature=float(getattr(rb, "sample_temperature", self.sampler_params.get("temperature", 1.0))),
        )


def finite_or_raise(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise FloatingPointError(f"{what} is not finite ({value})")
    return value
