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

from smart_r1.objectives.base import Objective


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
    )


def update(state: TrainState, objective: Objective, experience) -> dict[str, float]:
    """One optimiser step (or `update_epochs` of them on the same experience, PPO style):
    loss -> backward -> grad-norm clip -> AdamW -> scheduler. Returns the objective's metrics
    plus `grad_norm` and `lr`, and the experience's collect metrics (rewards, guards)."""
    model = state.model
    metrics: dict[str, float] = {}
    for _ in range(max(1, state.update_epochs)):
        model.train(objective.train_mode)
        for m in objective.modules():
            m.train()
        loss, metrics = objective.loss(model, experience, reference=state.reference)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"objective {objective.name!r}: non-finite loss {float(loss)} at step {state.step}")
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in state.optimizer.param_groups for p in g["params"] if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, state.grad_clip) if params else torch.tensor(0.0)
        state.optimizer.step()
        if state.scheduler is not None:
            state.scheduler.step()
        state.step += 1
        metrics = dict(metrics)
        metrics["grad_norm"] = float(grad_norm)
    metrics["lr"] = float(state.optimizer.param_groups[0]["lr"])
    out = dict(experience.metrics)
    out.update(metrics)
    return out
