"""Non-learned simulation policies, usable wherever a checkpoint is expected
(`smart-r1 evaluate --checkpoint baseline:constant_velocity`).

A baseline is a function `(scene, num_rollouts, seed) -> Rollouts` registered with
`@register_baseline("name")`. It simulates exactly the agents valid at the current step
(`Scene.sim_agent_ids()` order) for the 80 future steps, finite everywhere, as WOSAC needs.

Registered:
- `constant_velocity`: each agent keeps its current velocity (x/y) and heading; z held.
  Deterministic, every rollout identical.
- `log_replay`: the logged future; steps where the log is invalid hold the nearest valid pose
  (the current pose before the first valid future step). Every rollout identical.
- `log_replay_noise`: `log_replay` plus a smooth per-rollout perturbation (integrated random
  walk of velocity offsets: position std `noise_m` after 8 s; small smooth heading drift).
- `oracle`: synthetic scenes only -- the scene's generator restarted at the current step with
  fresh random draws for its hidden randomness (`smart_r1.data.synth.oracle`): every rollout a
  different future from the true behaviour distribution, the realism a policy can reach on the
  benchmark. A scene without generator state (real WOMD) raises a clear error.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from smart_r1.data.scene import (
    N_FUTURE_STEP,
    STATE_HEADING,
    STATE_X,
    STATE_Y,
    STATE_Z,
    STEP_SECONDS,
    Scene,
    wrap_angle,
)
from smart_r1.sim.rollouts import Rollouts

BaselineFn = Callable[..., Rollouts]
_BASELINES: dict[str, BaselineFn] = {}
BASELINE_PREFIX = "baseline:"


def register_baseline(name: str):
    """Decorator: register `fn(scene, num_rollouts, seed, **kwargs) -> Rollouts` as `name`."""

    def deco(fn: BaselineFn) -> BaselineFn:
        if name in _BASELINES:
            raise ValueError(f"baseline {name!r} registered twice")
        _BASELINES[name] = fn
        fn.baseline_name = name
        return fn

    return deco


def baseline_names() -> list[str]:
    return sorted(_BASELINES)


def get_baseline(name: str) -> BaselineFn:
    """The baseline registered as `name` (a leading `baseline:` is accepted)."""
    if name.startswith(BASELINE_PREFIX):
        name = name[len(BASELINE_PREFIX) :]
    if name not in _BASELINES:
        raise KeyError(f"unknown baseline {name!r}; known: {baseline_names()}")
    return _BASELINES[name]


def is_baseline_spec(spec: str) -> bool:
    return str(spec).startswith(BASELINE_PREFIX)


def _current(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the agents to simulate and their states at the current step."""
    cur = scene.current_time_index
    rows = np.flatnonzero(scene.sim_agent_mask())  # [n_sim]
    if rows.size == 0:
        raise ValueError(f"scene {scene.scenario_id!r}: no agent valid at the current step {cur}; nothing to simulate")
    return rows, scene.agent_states[rows, cur]  # [n_sim], [n_sim, 9]


def _check_count(num_rollouts: int) -> None:
    if num_rollouts < 1:
        raise ValueError(f"num_rollouts must be >= 1, got {num_rollouts}")


@register_baseline("constant_velocity")
def constant_velocity(scene: Scene, num_rollouts: int, seed: int = 0, n_future: int = N_FUTURE_STEP) -> Rollouts:
    _check_count(num_rollouts)
    rows, state = _current(scene)  # [n_sim], [n_sim, 9]
    t = np.arange(1, n_future + 1, dtype=np.float64) * STEP_SECONDS  # [80]
    vel = state[:, 4:6].astype(np.float64)  # [n_sim, 2] vx, vy
    traj = np.empty((len(rows), n_future, 4), np.float64)  # [n_sim, 80, 4]
    traj[..., 0] = state[:, None, STATE_X] + vel[:, None, 0] * t[None]
    traj[..., 1] = state[:, None, STATE_Y] + vel[:, None, 1] * t[None]
    traj[..., 2] = state[:, None, STATE_Z]
    traj[..., 3] = state[:, None, STATE_HEADING]
    out = np.broadcast_to(traj[None], (num_rollouts,) + traj.shape)  # [R, n_sim, 80, 4]
    return Rollouts(scene.scenario_id, scene.agent_id[rows], out.astype(np.float32))


def _filled_log_future(scene: Scene, n_future: int = N_FUTURE_STEP) -> tuple[np.ndarray, np.ndarray]:
    """Logged future x, y, z, heading of the simulated agents, gaps filled with the nearest valid
    pose (earlier one preferred). -> (rows [n_sim], traj [n_sim, 80, 4] float64)"""
    rows, _ = _current(scene)
    cur = scene.current_time_index
    states = scene.agent_states[rows, cur : cur + 1 + n_future][..., [STATE_X, STATE_Y, STATE_Z, STATE_HEADING]]  # [n_sim, 81, 4]
    valid = scene.agent_valid[rows, cur : cur + 1 + n_future].copy()  # [n_sim, 81]
    if states.shape[1] < n_future + 1:
        raise ValueError(f"scene {scene.scenario_id!r}: {scene.n_step} steps, need {cur + 1 + n_future} for {n_future} future steps")
    states = states.astype(np.float64)
    n, t = valid.shape
    idx = np.where(valid, np.arange(t)[None], -1)  # [n_sim, 81]
    prev = np.maximum.accumulate(idx, axis=1)  # [n_sim, 81] last valid step so far (step 0 is valid)
    filled = np.take_along_axis(states, prev[..., None], axis=1)  # [n_sim, 81, 4]
    return rows, filled[:, 1:]


@register_baseline("log_replay")
def log_replay(scene: Scene, num_rollouts: int, seed: int = 0, n_future: int = N_FUTURE_STEP) -> Rollouts:
    _check_count(num_rollouts)
    rows, traj = _filled_log_future(scene, n_future)  # [n_sim, 80, 4]
    out = np.broadcast_to(traj[None], (num_rollouts,) + traj.shape)  # [R, n_sim, 80, 4]
    return Rollouts(scene.scenario_id, scene.agent_id[rows], out.astype(np.float32))


@register_baseline("log_replay_noise")
def log_replay_noise(
    scene: Scene, num_rollouts: int, seed: int = 0, n_future: int = N_FUTURE_STEP, noise_m: float = 1.0
) -> Rollouts:
    _check_count(num_rollouts)
    rows, traj = _filled_log_future(scene, n_future)  # [n_sim, 80, 4]
    rng = np.random.default_rng(seed)
    n = len(rows)
    # Smooth perturbation: a random walk of velocity offsets, integrated to positions; scaled so
    # the position offset has std ~noise_m at the last step (accelerations stay ~0.25 m/s² per m).
    sigma_v = noise_m / (STEP_SECONDS * np.sqrt(n_future**3 / 3.0))
    dv = rng.normal(0.0, sigma_v, size=(num_rollouts, n, n_future, 2))  # [R, n_sim, 80, 2]
    offset = np.cumsum(np.cumsum(dv, axis=2), axis=2) * STEP_SECONDS  # [R, n_sim, 80, 2]
    out = np.repeat(traj[None], num_rollouts, axis=0)  # [R, n_sim, 80, 4]
    out[..., :2] += offset
    # Heading: a smooth drift of the same kind (std ~0.05 rad at the last step per m of noise).
    sigma_h = 0.05 * noise_m / np.sqrt(n_future**3 / 3.0)
    dh = rng.normal(0.0, sigma_h, size=(num_rollouts, n, n_future))  # [R, n_sim, 80]
    out[..., 3] = wrap_angle(out[..., 3] + np.cumsum(np.cumsum(dh, axis=2), axis=2))
    return Rollouts(scene.scenario_id, scene.agent_id[rows], out.astype(np.float32))


@register_baseline("oracle")
def oracle(scene: Scene, num_rollouts: int, seed: int = 0, n_future: int = N_FUTURE_STEP) -> Rollouts:
    from smart_r1.data.synth.oracle import oracle_rollouts

    _check_count(num_rollouts)
    rows, _ = _current(scene)
    traj = oracle_rollouts(scene, num_rollouts, seed, n_future)  # [R, n_sim, 80, 4]
    return Rollouts(scene.scenario_id, scene.agent_id[rows], traj.astype(np.float32))
