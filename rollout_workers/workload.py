"""What the distributed runtime runs: a `Workload` (plain Python, no Ray) built by name.

The runtime (rollout actors, scorer actors, learner) is generic. Each process builds the same
workload from a picklable spec `{"name": <registered name>, **params}` (or
`{"factory": "module:callable", **params}`) and calls it:

- rollout actor: `make_policy()`, `load_inputs(scene_ids)`, `rollout(policy, inputs, seed)`;
- scorer actor:  `score(scene_id, scoring_payload)`;
- learner:       `make_policy()`, `make_learner(policy)`, `update(learner_state, result, rewards)`.

A workload wraps library code (the toy one of the generic-runtime tests and benchmarks is
`benchmarks.toy_workload`, spec `{"name": "toy", "module": "benchmarks.toy_workload"}`; the SMART-R1 training
schedule is distributed by `learner.smart_collect`, which calls the library objective's
`rollout` / `score_scene` / `make_experience` directly); the runtime never copies it. Everything that crosses a process boundary is numpy / plain Python (`RolloutResult`,
`ScoreResult`), never a torch autograd graph.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

_WORKLOADS: dict[str, Callable[..., "Workload"]] = {}


def register_workload(name: str):
    def deco(factory):
        _WORKLOADS[name] = factory
        return factory

    return deco


def resolve(ref: str | Callable) -> Callable:
    """`"pkg.module:attr"` -> the attribute; callables pass through."""
    if callable(ref):
        return ref
    if not isinstance(ref, str) or ":" not in ref:
        raise ValueError(f"expected 'module:attribute' or a callable, got {ref!r}")
    mod, attr = ref.split(":", 1)
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def build_workload(spec: dict | "Workload") -> "Workload":
    if isinstance(spec, Workload):
        return spec
    spec = dict(spec)
    if "factory" in spec:
        return resolve(spec.pop("factory"))(**spec)
    name = spec.pop("name", None)
    if name is None:
        raise ValueError(f"workload spec needs 'name' or 'factory': {spec}")
    module = spec.pop("module", None)  # imported first: registers workloads that live outside the product
    if module is not None:
        importlib.import_module(module)
    if name not in _WORKLOADS:
        raise KeyError(f"unknown workload {name!r} (module {module!r}); known: {sorted(_WORKLOADS)}")
    return _WORKLOADS[name](**spec)


class BadScene(Exception):
    """A scene that cannot be used (corrupt record, invalid field); carries its id."""

    def __init__(self, scene_id: str, reason: str):
        super().__init__(f"scene {scene_id!r}: {reason}")
        self.scene_id = scene_id
        self.reason = reason


@dataclass
class RolloutResult:
    """A batch of simulated scenes, compact (numpy only)."""

    work_id: int
    scene_ids: list[str]  # the scenes actually simulated (bad ones removed)
    policy_version: int  # weights version the rollouts were sampled with
    payload: dict[str, np.ndarray]  # learner-side arrays, batched over scene_ids
    scoring: dict[str, Any]  # scene_id -> what the scorer needs (numpy / Rollouts)
    bad: dict[str, str] = field(default_factory=dict)  # scene_id -> reason
    seconds: float = 0.0
    n_rollout: int = 0
    actor: str = ""

    def nbytes(self) -> int:
        n = sum(int(a.nbytes) for a in self.payload.values() if isinstance(a, np.ndarray))
        for v in self.scoring.values():
            n += int(getattr(v, "nbytes", 0) or getattr(getattr(v, "trajectories", None), "nbytes", 0))
        return n


@dataclass
class ScoreResult:
    work_id: int
    scene_id: str
    reward: np.ndarray  # [n_rollout] reward per rollout (after the reward mode)
    metrics: dict[str, float] = field(default_factory=dict)  # per-scene realism metrics
    seconds: float = 0.0
    actor: str = ""


class Workload:
    """Interface (see module docstring). Subclasses implement what their role needs."""

    n_rollout: int = 1

    def make_policy(self):
        raise NotImplementedError

    def load_inputs(self, scene_ids: list[str]) -> tuple[Any, dict[str, str]]:
        """Build the model inputs of these scenes. Returns (inputs for the good ones, {bad id: reason}).
        Raising `BadScene` for one id is also accepted (the actor then retries scene by scene)."""
        raise NotImplementedError

    def rollout(self, policy, inputs, seed: int) -> tuple[list[str], dict[str, np.ndarray], dict[str, Any]]:
        """Closed-loop rollouts, no grad. Returns (scene ids, learner payload, {scene id: scoring payload})."""
        raise NotImplementedError

    def score(self, scene_id: str, scoring_payload: Any) -> tuple[np.ndarray, dict[str, float]]:
        """Reward per rollout [n_rollout] and the scene's metrics."""
        raise NotImplementedError

    def make_learner(self, policy) -> Any:
        """Learner-side state (optimizer, objective, reference policy)."""
        raise NotImplementedError

    def update(self, learner_state, policy, result: RolloutResult, rewards: dict[str, np.ndarray]) -> dict[str, float]:
        """One optimiser step from a rollout batch and its rewards. Returns metrics."""
        raise NotImplementedError

    def learner_state_dict(self, learner_state) -> dict:
        return {}

    def load_learner_state_dict(self, learner_state, state: dict) -> None:
        pass
