"""The oracle policy of synthetic scenes: the generator itself, restarted at the current step.

`oracle_rollouts(scene, num_rollouts, seed)` re-runs the scene's generator (from
`Scene.generator_state`: seed, index, SynthConfig) deterministically up to the decision step
that produces the current step (10), snapshots the traffic simulation there, and continues it
`num_rollouts` times with fresh random draws for everything hidden: acceleration noise, gap
acceptance at junctions (`SynthConfig.gap_jitter`), new agents entering view and walkers'
choices, and the tracking noise on the boxes (continued from the logged jitter at step 10).
Agents keep their identity, route and driving style (the generator's latent state at step 10);
an agent that leaves the map continues straight at its last speed (every simulated agent needs
a pose at every step).
The past is the scene's own; the scene file is only read.

This is the realism a policy can reach on the benchmark: the futures are draws from the true
behaviour distribution given the past. (Log replay knows the one future that happened and is
not that ceiling.)
"""

from __future__ import annotations

import copy
import json

import numpy as np

from smart_r1.data.scene import N_FUTURE_STEP, STATE_HEADING, STATE_X, STATE_Y, Scene
from smart_r1.data.synth.config import SynthConfig
from smart_r1.data.synth.generator import TRACKING_NOISE_RHO, generate_with_trace
from smart_r1.data.synth.state import GENERATOR, STATE_VERSION

ORACLE_STREAM = 0x4F52434C  # "ORCL": keeps the oracle's random streams apart from the generator's


class NoGeneratorStateError(ValueError):
    """The scene has no synthetic generator state (real WOMD, or synthetic scenes without their state file)."""


def parse_state(scene: Scene) -> tuple[int, int, SynthConfig]:
    where = f"scene {scene.scenario_id!r}" + (f" ({scene.source})" if scene.source else "")
    if not scene.generator_state:
        raise NoGeneratorStateError(
            f"{where}: no synthetic generator state, so baseline:oracle cannot re-simulate it. The oracle works on "
            f"scenes written by `smart-r1 data synth` / write_synthetic_dataset (their .synth_state.json sits next "
            f"to the shards, and a cache built from them keeps it); real WOMD scenes have none."
        )
    try:
        st = json.loads(scene.generator_state)
        if st.get("generator") != GENERATOR or st.get("version") != STATE_VERSION:
            raise ValueError(f"generator {st.get('generator')!r} version {st.get('version')!r}, want {GENERATOR!r} {STATE_VERSION}")
        return int(st["seed"]), int(st["index"]), SynthConfig.from_dict(st["config"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{where}: field generator_state is not a usable synthetic generator state ({err})") from err


def _snapshot(sim):
    """Deep copy of the traffic simulation, sharing the immutable map, path bank and config."""
    return copy.deepcopy(sim, memo={id(sim.rm): sim.rm, id(sim.bank): sim.bank, id(sim.cfg): sim.cfg})


def oracle_rollouts(
    scene: Scene, num_rollouts: int, seed: int = 0, n_future: int = N_FUTURE_STEP, include_past: bool = False
) -> np.ndarray:
    """`num_rollouts` futures of the scene's simulated agents (`scene.sim_agent_mask()` rows, in
    row order): x, y, z, heading for the `n_future` steps after the current one.
    -> [num_rollouts, n_sim, n_future, 4] float64

    `include_past=True` prepends steps 0..current as the restarted generator logged them (the
    same for every rollout; it equals the scene's own past where that is valid):
    -> [num_rollouts, n_sim, current + 1 + n_future, 4]"""
    gen_seed, index, config = parse_state(scene)
    cur = scene.current_time_index
    snap: dict = {}

    def on_fork(sim, k):
        snap["sim"], snap["k"] = _snapshot(sim), k

    sc, trace = generate_with_trace(gen_seed, index, config, on_fork=on_fork)
    if sc.scenario_id != scene.scenario_id or not np.array_equal(trace["track_ids"], scene.agent_id):
        raise ValueError(
            f"scene {scene.scenario_id!r}: its generator state (seed {gen_seed}, index {index}) regenerates scene "
            f"{sc.scenario_id!r} with other tracks; the scene was written by another generator version or edited"
        )
    if cur + n_future >= scene.n_step + 1 or "sim" not in snap:
        raise ValueError(f"scene {scene.scenario_id!r}: cannot fork at step {cur} for {n_future} future steps")
    rows = np.flatnonzero(scene.sim_agent_mask())  # [n_sim]
    slots = trace["slots"][rows]  # [n_sim] -1: parked
    moving = slots >= 0
    shift, rm = trace["shift"], trace["roadmap"]
    now = scene.agent_states[rows, cur].astype(np.float64)  # [n_sim, 9]
    if scene.agent_xyz_f64 is not None:
        now[:, :3] = scene.agent_xyz_f64[rows, cur]
    steps = np.arange(cur, cur + 1 + n_future)  # [81] step 10 first: the jitter continues from it
    half_h = 0.5 * scene.agent_states[rows, cur, 8].astype(np.float64)  # [n_sim]
    noise_std = config.tracking_noise_m
    out = np.empty((num_rollouts, rows.size, n_future, 4))
    for r in range(num_rollouts):
        rng = np.random.default_rng([int(seed), r, ORACLE_STREAM])
        sim = _snapshot(snap["sim"])
        sim.rng = rng
        sim.advance(snap["k"], sim._n_dec)
        traj = np.repeat(now[:, None, [STATE_X, STATE_Y, 2, STATE_HEADING]], n_future + 1, axis=1)  # [n_sim, 81, 4]
        if moving.any():
            xy, hd, ok = sim.log_poses(slots[moving], steps)  # [m, 81, 2], [m, 81], [m, 81]
            xy = xy + shift
            ok[:, 0] = True  # the fork step itself is logged (valid at the current step)
            # after leaving view (past the map's end): straight on at the last speed and heading
            t_idx = np.arange(steps.size)[None]
            last = np.maximum.accumulate(np.where(ok, t_idx, 0), axis=1)  # [m, 81] last step in view
            v_last = np.take_along_axis(sim.log_v[slots[moving]][:, steps], last, axis=1)  # [m, 81]
            xy = np.take_along_axis(xy, last[..., None], axis=1)
            hd = np.take_along_axis(hd, last, axis=1)
            run = (t_idx - last) * 0.1 * v_last  # [m, 81] metres beyond the last pose in view
            xy = xy + run[..., None] * np.stack([np.cos(hd), np.sin(hd)], -1)
            if noise_std > 0:  # continue the logged AR(1) jitter from its value at the current step
                n0 = np.concatenate([now[moving, :2] - xy[:, 0], ((now[moving, STATE_HEADING] - hd[:, 0] + np.pi) % (2 * np.pi) - np.pi)[:, None]], 1)  # [m, 3]
                std = np.array([noise_std, noise_std, noise_std / 3.0])  # x, y, heading
                e = rng.standard_normal((n0.shape[0], steps.size, 3)) * std * np.sqrt(1 - TRACKING_NOISE_RHO**2)
                nz = np.empty_like(e)  # [m, 81, 3]
                nz[:, 0] = n0
                for t in range(1, steps.size):
                    nz[:, t] = TRACKING_NOISE_RHO * nz[:, t - 1] + e[:, t]
                xy = xy + nz[..., :2]
                hd = hd + nz[..., 2]
            traj[moving, :, 0:2] = xy
            traj[moving, :, 2] = rm.ground_z(xy - shift) + half_h[moving, None]
            traj[moving, :, 3] = (hd + np.pi) % (2 * np.pi) - np.pi
        out[r] = traj[:, 1:]
    if not include_past:
        return out
    log = trace["log"]
    past_xy = np.stack([log.x[rows, : cur + 1], log.y[rows, : cur + 1]], -1)  # [n_sim, 11, 2] generator frame
    past = np.concatenate([
        past_xy + shift, (rm.ground_z(past_xy) + log.size[rows, None, 2] / 2)[..., None], log.heading[rows, : cur + 1, None],
    ], -1)  # [n_sim, 11, 4]
    return np.concatenate([np.broadcast_to(past[None], (num_rollouts,) + past.shape), out], axis=2)
