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
    extras: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class Objective:
    """Base class. Subclasses set the class attributes and implement `loss` (and `collect`)."""

    name: str = ""
    needs_reference: bool = False  # snapshot a frozen reference policy at stage start
    needs_scenes: bool = False  # the inputs must carry `Scene`s (rewards)
    train_mode: bool = True  # policy.train() during loss (dropout); RL objectives use eval()

    def collect(self, policy, inputs: TrainBatch, generator: torch.Generator | None = None, reference=None) -> Experience:
        return Experience(inputs=inputs)

    def loss(self, policy, experience: Experience, reference=None) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

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
                catk_target: bool = False):
    """Closed-loop rollout through the simulator API (`smart_r1.sim.rollout`), no grad.

    The simulator seeds each rollout's own stream from one integer; it is drawn from
    `generator`, so the rollouts are a pure function of the caller's generator state.
    """
    import inspect

    try:  # late import: the sim package is optional for BC
        from smart_r1.sim import rollout as rollout_fn
    except ImportError:
        from smart_r1.sim.engine import rollout as rollout_fn

    g = generator if generator is not None else torch.Generator().manual_seed(0)
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    params = inspect.signature(rollout_fn).parameters
    kwargs = {"n_rollout": n_rollout, "sampler": sampler}
    if "return_logprobs" in params:
        kwargs["return_logprobs"] = True
    if "catk_target" in params:
        kwargs["catk_target"] = bool(catk_target)
    if "sampler_kwargs" in params:
        kwargs["sampler_kwargs"] = dict(sampler_params)
    else:
        from smart_r1.sim.samplers import get_sampler

        kwargs["sampler"] = get_sampler(sampler, **sampler_params)
    if "seed" in params:
        kwargs["seed"] = seed
    else:
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return rollout_fn(model, batch, **kwargs)
    finally:
        model.train(was_training)


def rollout_batch_inputs(batch, rb, r: int):
    """The agent batch with rollout `r`'s tokens in place of the logged ones (teacher forcing)."""
    return batch.with_agent_tokens(rb.anchor_pose[r], rb.anchor_valid[r], rb.token_index[r], rb.token_valid[r])


def rollout_logits(model, batch, rb) -> torch.Tensor:
    """Teacher-forced logits of every rollout: [R, n_agent, 18, V] (with grad if enabled).

    All rollouts in one forward pass (`RolloutBatch.stacked_batch`: rollout r's copy of scene s
    is its own scene, so nothing leaks between rollouts)."""
    R = rb.token_index.shape[0]
    if hasattr(rb, "stacked_batch"):
        logits = model(rb.stacked_batch())  # [R * n_agent, 18, V]
        return logits.reshape(R, batch.n_agent, *logits.shape[1:])
    return torch.stack([model(rollout_batch_inputs(batch, rb, r)) for r in range(R)])


def rollout_future_logprobs(model, batch, rb) -> torch.Tensor:
    """log pi of the sampled future tokens of every rollout: [R, n_agent, 16]."""
    logits = rollout_logits(model, batch, rb)[:, :, N_HISTORY_TOKEN:]  # [R, n_agent, 16, V]
    return gather_logprob(logits, rb.token_index[:, :, N_HISTORY_TOKEN:])  # [R, n_agent, 16]


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
        """Roll out, score every scene, build the experience (single-process path)."""
        if inputs.scenes is None:
            raise ValueError(f"objective {self.name!r} needs the scenes of the batch for its rewards (TrainBatch.scenes)")
        rb = self.rollout(policy, inputs, generator)
        rewards, all_scores = score_rollouts(self.backend, self.reward_mode, inputs.scenes, rb)  # [R, n_scene]
        return self.make_experience(inputs, rb, rewards, all_scores)

    # The three pieces of `collect`, for a runtime that rolls out, scores and learns in
    # different processes: rollout actor -> `rollout`; scorer -> `score_scene(backend,
    # objective.reward_mode, scene, rb.to_rollouts(s))`; learner -> `make_experience` + `update`.
    def rollout(self, policy, inputs: TrainBatch, generator=None):
        return run_rollout(policy, inputs.batch, self.n_rollout, self.sampler, self.sampler_params, generator)

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
        return Experience(inputs=inputs, rollout=rb, rewards=rewards, advantages=adv, metrics=metrics,
                          extras={"reward_valid": valid})

    def _policy_and_ref_logprobs(self, policy, experience, reference):
        rb = experience.rollout
        batch = experience.inputs.batch
        logp = rollout_future_logprobs(policy, batch, rb)  # [R, n_agent, 16]
        if reference is None:
            raise ValueError(f"objective {self.name!r} needs a reference policy (snapshot at stage start)")
        with torch.no_grad():
            logp_ref = rollout_future_logprobs(reference, batch, rb)  # [R, n_agent, 16]
        mask = future_token_mask(rb, experience.inputs.train_mask)  # [R, n_agent, 16]
        valid = experience.extras.get("reward_valid")
        if valid is not None:
            mask = mask & per_token_from_scene(valid.to(mask.device), batch.agent_scene, mask.shape[-1])
        return logp, logp_ref, mask


def finite_or_raise(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise FloatingPointError(f"{what} is not finite ({value})")
    return value
