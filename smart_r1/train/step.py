"""The per-step update, usable as is from a single process or a Ray learner actor.

    state = build_train_state(model, stage_cfg, objective, total_steps, reference=ref)
    experience = objective.collect(state.model, inputs, generator=g, reference=state.reference)  # no grad
    metrics = update(state, objective, experience)                                               # one optimiser step

`TrainState` holds no data loader, no tracker and nothing Ray-specific; `state_dict()` /
`load_state_dict()` cover model, optimizer, scheduler, objective state and the reference model.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from smart_r1.objectives.base import (
    DEFAULT_MAX_TOKENS_PER_MICROBATCH,
    Experience,
    Objective,
    _take_rows,
    reference_logprobs,
    score_tokens,
)


# Symbolic freeze groups (SmartModel parameter names): CAT-K freezes the map encoder and the
# embeddings by default (reference recipe).
FREEZE_GROUPS = {
    "map_encoder": ["map_layers", "rel_map_map", "map_vocab_emb", "map_kind_emb", "signal_emb", "map_norm"],
    "embeddings": ["token_mlp", "no_motion", "type_emb", "size_proj", "agent_norm"],
}


def expand_freeze(prefixes: list[str]) -> list[str]:
    out: list[str] = []
    for p in prefixes:
        out.extend(FREEZE_GROUPS.get(p, [p]))
    return out


def apply_freeze(model: nn.Module, prefixes: list[str]) -> list[str]:
    """Unfreeze everything, then freeze parameters whose name starts with (or contains a module
    path component equal to) one of `prefixes`. Returns the frozen names. An unmatched prefix is
    an error naming it (a typo must not silently train the map encoder)."""
    prefixes = expand_freeze(list(prefixes))
    frozen = []
    matched = {p: False for p in prefixes}
    for name, param in model.named_parameters():
        parts = name.split(".")
        hit = None
        for p in prefixes:
            if name.startswith(p) or p in parts:
                hit = p
                break
        param.requires_grad_(hit is None)
        if hit is not None:
            matched[hit] = True
            frozen.append(name)
    missing = [p for p, ok in matched.items() if not ok]
    if missing:
        some = sorted({n.split(".")[0] for n, _ in model.named_parameters()})
        raise ValueError(f"freeze: no model parameter matches {missing}; top-level modules: {some}")
    return frozen


def cosine_lambda(total_steps: int, final_fraction: float, warmup_steps: int = 0):
    """lr multiplier: linear warm-up, then cosine from 1 to `final_fraction` at `total_steps`."""

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    grad_clip: float
    reference: nn.Module | None = None
    step: int = 0
    update_epochs: int = 1
    # Learner options (`learner:` config section): rows (sequence x agent x position) of one
    # teacher-forced forward with grad, and the optional autocast dtype of the update.
    max_tokens_per_microbatch: int | None = DEFAULT_MAX_TOKENS_PER_MICROBATCH
    autocast_dtype: torch.dtype | None = None

    def state_dict(self, objective: Objective | None = None) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "reference_model": self.reference.state_dict() if self.reference is not None else None,
            "objective": objective.state_dict() if objective is not None else {},
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any], objective: Objective | None = None) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("reference_model") is not None:
            if self.reference is None:
                self.reference = make_reference(self.model)
            self.reference.load_state_dict(state["reference_model"])
        if objective is not None:
            objective.load_state_dict(state.get("objective") or {})
        self.step = int(state.get("step", 0))


def make_reference(model: nn.Module) -> nn.Module:
    """Frozen copy of the policy (eval mode, no grad): the KL anchor of an RFT stage."""
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def build_train_state(
    model: nn.Module,
    stage,  # smart_r1.train.config.StageConfig (or anything with lr, weight_decay, grad_clip, freeze, ...)
    objective: Objective,
    total_steps: int,
    reference: nn.Module | None = None,
    learner=None,  # smart_r1.train.config.LearnerConfig (or anything with max_tokens_per_microbatch, autocast)
) -> TrainState:
    """AdamW over the unfrozen model parameters + the objective's own modules, cosine schedule."""
    apply_freeze(model, list(stage.freeze))
    params = [p for p in model.parameters() if p.requires_grad]
    for m in objective.modules():
        params += list(m.parameters())
    if not params:
        raise ValueError(f"stage {getattr(stage, 'name', '?')!r}: every parameter is frozen")
    optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_lambda(total_steps, stage.lr_final_fraction, getattr(stage, "warmup_steps", 0))
    )
    if objective.needs_reference and reference is None:
        reference = make_reference(model)
    return TrainState(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        grad_clip=float(stage.grad_clip),
        reference=reference,
        update_epochs=int(getattr(stage, "update_epochs", 1)),
        max_tokens_per_microbatch=getattr(learner, "max_tokens_per_microbatch", DEFAULT_MAX_TOKENS_PER_MICROBATCH),
        autocast_dtype=autocast_dtype(getattr(learner, "autocast", "none")),
    )


# No fp16: without loss scaling dL/dlogp (~1 / n_token) underflows fp16 activations' gradients.
_AUTOCAST = {"none": None, "bf16": torch.bfloat16}


def autocast_dtype(name: str | None) -> torch.dtype | None:
    """`learner.autocast` -> dtype (`none` -> None)."""
    key = "none" if name is None else str(name)
    if key not in _AUTOCAST:
        raise ValueError(f"learner.autocast: unknown value {name!r}; known: {sorted(_AUTOCAST)}")
    return _AUTOCAST[key]


def _placeholder_leaf(full_like: torch.Tensor, mb, value: torch.Tensor) -> torch.Tensor:
    """A leaf [R, n_agent, T] holding `value` on the micro-batch's rows and zeros elsewhere."""
    leaf = torch.zeros_like(full_like)
    if mb.agent_rows is None:
        leaf[mb.r0 : mb.r1] = value
    else:
        leaf[mb.r0 : mb.r1, mb.agent_rows] = value
    return leaf.requires_grad_(True)


def accumulate_gradients(
    model: nn.Module,
    objective: Objective,
    experience: Experience,
    reference: nn.Module | None = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS_PER_MICROBATCH,
    autocast: torch.dtype | None = None,
) -> tuple[float, dict[str, float]]:
    """Accumulate d(loss)/d(parameters) into `.grad`, micro-batched, equal to `objective.loss(...)
    .backward()` (up to float rounding). Returns (loss value, metrics).

    The policy enters the loss only through per-token quantities q (log-prob of the targets;
    mean vocabulary log-prob for label smoothing), so dL/dtheta = sum_tokens dL/dq * dq/dtheta:

    - separable losses (`objective.token_separable`): per micro-batch, dL/dq of its tokens is
      the gradient of the loss evaluated on a leaf holding that micro-batch's q (other tokens do
      not influence it), then `backward(q_mb, dL/dq_mb)`; one forward+backward per micro-batch.
    - otherwise (DPO): a no-grad pass gives every q, autograd of the whole loss on leaves gives
      dL/dq, then the same per-micro-batch backward.

    Trainable objective modules (PPO's value head) get their gradient from one evaluation of the
    loss on the final (detached) q.
    """
    targets = objective.targets(experience)
    batch = experience.inputs.batch
    mask = targets.mask  # [R, n_agent, T]
    logp_ref = None
    if objective.needs_reference:
        logp_ref = reference_logprobs(objective, reference, experience, targets, max_tokens, autocast)
    counters = {"n_microbatch": 0}

    def backward_through(mb, q_mb: list[torch.Tensor], grads_full: list[torch.Tensor | None]) -> None:
        outs, gs = [], []
        for q, g in zip(q_mb, grads_full):
            if g is not None and q.requires_grad:
                outs.append(q)
                gs.append(_take_rows(g, mb).to(q.dtype))
        if outs:
            torch.autograd.backward(outs, gs)
        counters["n_microbatch"] += 1

    if objective.token_separable:

        def grad_fn(mb, lp, extra):
            leaf = _placeholder_leaf(mask.float(), mb, lp.detach().float())
            extra_leaves = {k: _placeholder_leaf(mask.float(), mb, v.detach().float()) for k, v in extra.items()}
            with torch.enable_grad():
                loss_mb, _ = objective.loss_from_logprobs(leaf, logp_ref, mask, experience, extra_leaves)
                grads = torch.autograd.grad(loss_mb, [leaf, *extra_leaves.values()], allow_unused=True)
            backward_through(mb, [lp, *extra.values()], list(grads))

    else:
        with torch.no_grad():
            first = score_tokens(model, batch, targets, max_tokens, autocast_dtype=autocast)
        leaf = first.logp.clone().requires_grad_(True)
        extra_leaves = {k: v.clone().requires_grad_(True) for k, v in first.extra().items()}
        with torch.enable_grad():
            loss_all, _ = objective.loss_from_logprobs(leaf, logp_ref, mask, experience, extra_leaves)
            grads_all = list(torch.autograd.grad(loss_all, [leaf, *extra_leaves.values()], allow_unused=True))

        def grad_fn(mb, lp, extra):
            backward_through(mb, [lp, *extra.values()], grads_all)

    scores = score_tokens(model, batch, targets, max_tokens, grad_fn=grad_fn, autocast_dtype=autocast)
    module_params = [p for m in objective.modules() for p in m.parameters() if p.requires_grad]
    with torch.set_grad_enabled(bool(module_params)):
        loss, metrics = objective.loss_from_logprobs(scores.logp, logp_ref, mask, experience, scores.extra())
        if module_params and loss.requires_grad:
            torch.autograd.backward(loss, inputs=module_params)
    metrics = dict(metrics)
    metrics.update(objective.score_metrics(scores, targets))
    metrics["learner/n_microbatch"] = float(counters["n_microbatch"])
    return float(loss.detach()), metrics


def _minibatches(n_rollout: int, n_minibatches: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A random split of the rollout indices into `n_minibatches` near-equal shares."""
    if n_minibatches <= 1:
        return [torch.arange(n_rollout)]
    if n_minibatches > n_rollout:
        raise ValueError(f"learner: n_minibatches {n_minibatches} > n_rollout {n_rollout}")
    perm = torch.randperm(n_rollout, generator=generator)
    return [idx.sort().values for idx in torch.tensor_split(perm, n_minibatches)]


def n_epochs_and_minibatches(state: TrainState, objective: Objective) -> tuple[int, int]:
    """Passes over an experience and rollout shares per pass that `update` takes."""
    n_epochs = max(1, int(getattr(objective, "n_epochs", 1)), int(state.update_epochs))
    n_mini = max(1, int(getattr(objective, "n_minibatches", 1)))
    return n_epochs, n_mini


def n_optimizer_steps(state: TrainState, objective: Objective) -> int:
    """Optimiser steps of one `update` (a data-parallel rank without a shard takes as many)."""
    n_epochs, n_mini = n_epochs_and_minibatches(state, objective)
    return n_epochs * n_mini


def update(
    state: TrainState,
    objective: Objective,
    experience,
    *,
    max_tokens_per_microbatch: int | None = None,
    autocast: torch.dtype | str | None = None,
) -> dict[str, float]:
    """The optimiser step(s) of one experience: the single entry point of the learner (one rank
    of a data-parallel learner calls it on its shard).

    For each of `n_epochs` passes (`objective.n_epochs`, or the stage's `update_epochs`) and each
    of `objective.n_minibatches` random shares of the rollouts: gradients accumulated over
    micro-batches (`accumulate_gradients`, budget `max_tokens_per_microbatch` rows, default the
    state's) -> grad-norm clip -> AdamW; then one scheduler step and `state.step += 1` for the
    whole experience (stage steps count experiences, not optimiser steps). Reference log-probs are computed once per
    experience (no grad, micro-batched) before the first step. Returns the last step's objective
    metrics plus `grad_norm`, `lr`, `learner/*` counters and the experience's collect metrics.
    """
    model = state.model
    budget = state.max_tokens_per_microbatch if max_tokens_per_microbatch is None else max_tokens_per_microbatch
    dtype = autocast_dtype(autocast) if isinstance(autocast, str) else (autocast if autocast is not None else state.autocast_dtype)
    device = next(model.parameters()).device
    if isinstance(experience, Experience):
        experience = experience.to(device, non_blocking=device.type == "cuda")
    n_epochs, n_mini = n_epochs_and_minibatches(state, objective)
    if n_mini > 1 and getattr(experience, "rollout", None) is None:
        raise ValueError(f"objective {objective.name!r}: n_minibatches {n_mini} needs rollouts to split")
    model.train(objective.train_mode)
    for m in objective.modules():
        m.train()
    if objective.needs_reference:  # once per experience, shared by every epoch / minibatch
        reference_logprobs(objective, state.reference, experience, None, budget, dtype)
    gen = torch.Generator().manual_seed(int(state.step))
    metrics: dict[str, float] = {}
    n_steps = 0
    for _ in range(n_epochs):
        shares = _minibatches(experience.n_rollout, n_mini, gen) if n_mini > 1 else [None]
        for share in shares:
            part = experience if share is None else experience.select_rollouts(share)
            state.optimizer.zero_grad(set_to_none=True)
            loss, metrics = accumulate_gradients(model, objective, part, state.reference, budget, dtype)
            # A data-parallel rank's optimiser (learner.train_dp) takes the flag into its gradient
            # all-reduce and raises on every rank together; raising here would leave the other
            # ranks waiting in that collective.
            flag_nonfinite = getattr(state.optimizer, "flag_nonfinite_loss", None)
            if flag_nonfinite is not None:
                flag_nonfinite(not math.isfinite(loss), f"objective {objective.name!r}: loss {loss} at step {state.step}")
            elif not math.isfinite(loss):
                raise FloatingPointError(f"objective {objective.name!r}: non-finite loss {loss} at step {state.step}")
            params = [p for g in state.optimizer.param_groups for p in g["params"] if p.grad is not None]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, state.grad_clip) if params else torch.tensor(0.0)
            state.optimizer.step()
            n_steps += 1
            metrics = dict(metrics)
            metrics["grad_norm"] = float(grad_norm)
    # One training step per experience, however many optimiser steps it took: the stage's step
    # count, the lr schedule (sized in stage steps) and resume all count experiences.
    if state.scheduler is not None:
        state.scheduler.step()
    state.step += 1
    metrics["lr"] = float(state.optimizer.param_groups[0]["lr"])
    metrics["learner/n_optimizer_step"] = float(n_steps)
    out = dict(experience.metrics)
    out.update(metrics)
    return out
