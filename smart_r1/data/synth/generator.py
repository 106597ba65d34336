"""`generate_scenario`: one synthetic WOMD `Scenario` proto, deterministic per (seed, index)."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

try:
    from waymo_open_dataset.protos import map_pb2, scenario_pb2
except ModuleNotFoundError as _err:  # the --no-deps wheel is missing: say how to install it
    from smart_r1.data.protos import protos_missing

    raise protos_missing(_err) from _err

from smart_r1.data.scene import CURRENT_TIME_INDEX_WOMD, N_STEP_WOMD, STEP_SECONDS, AgentType, LaneType
from smart_r1.data.synth.config import SynthConfig
from smart_r1.data.synth.layouts import LAYOUTS, build_layout
from smart_r1.data.synth.roadmap import MPH_PER_MPS, RoadMap
from smart_r1.data.synth.traffic import TrafficLog, TrafficSim
from smart_r1.data.synth import wire


TRACKING_NOISE_RHO = 0.97  # step-to-step correlation of the tracking jitter (smooth: small acceleration noise)


def scenario_id_for(seed: int, scenario_index: int, prefix: str = "synth") -> str:
    digest = hashlib.sha1(f"{seed}/{scenario_index}".encode()).hexdigest()[:16]
    return f"{prefix}_{digest}" if prefix else digest


def _rng(seed: int, scenario_index: int) -> np.random.Generator:
    if seed < 0 or scenario_index < 0:
        raise ValueError(f"generate_scenario: seed and scenario_index must be >= 0, got {seed}, {scenario_index}")
    return np.random.default_rng([int(seed), int(scenario_index), 0x53594E54])


def choose_layout(rng: np.random.Generator, config: SynthConfig) -> str:
    names = [n for n, w in config.layout_weights.items() if w > 0]
    unknown = [n for n in names if n not in LAYOUTS]
    if unknown:
        raise KeyError(f"SynthConfig.layout_weights: unknown layout(s) {unknown}; known: {sorted(LAYOUTS)}")
    w = np.array([config.layout_weights[n] for n in names], np.float64)  # [n_layout]
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def simulate(
    seed: int, scenario_index: int = 0, config: SynthConfig | None = None, on_fork=None, trace: dict | None = None
) -> tuple[RoadMap, TrafficLog, np.random.Generator]:
    """Build the map and run the traffic simulation (before any proto is made).

    `on_fork(sim, k)` is passed to `TrafficSim.run` (the oracle snapshots the simulation at
    the current step); `trace` (a dict) receives how log rows map to simulation slots:
    `slots` [n_track] (slot of each row, -1 for parked vehicles)."""
    config = config or SynthConfig()
    rng = _rng(seed, scenario_index)
    layout = choose_layout(rng, config)
    n_target = int(rng.integers(config.min_agents, config.max_agents + 1))
    rm = build_layout(layout, rng, n_target, config)
    if rng.random() < 0.5:
        g = config.ground_slope_max
        rm.ground = (float(rng.uniform(-g, g)), float(rng.uniform(-g, g)), float(rng.uniform(-5, 5)))
    else:
        rm.ground = (0.0, 0.0, float(rng.uniform(-5, 5)))
    if config.jaywalk_fraction > 0 and rm.jaywalk_paths:  # keep the places where walkers cross free of parked cars
        lines = np.concatenate([jp.pts for jp in rm.jaywalk_paths])  # [m, 2]
        rm.parking_spots = [sp for sp in rm.parking_spots if np.linalg.norm(lines - sp[0], axis=1).min() > sp[2] / 2 + 2.0]
    n_parked = 0
    if rm.parking_spots:
        n_parked = min(len(rm.parking_spots), int(round(n_target * rng.uniform(*config.parked_fraction))), max(0, n_target - 4))
    pull_outs, parked_spots = [], None
    if n_parked and config.pull_out_fraction > 0 and config.lane_change_rate > 0:
        # some parked cars will pull out: the parked set is drawn before the traffic runs, so the
        # ones pulling out know where the others stand
        chosen = sorted(rng.choice(len(rm.parking_spots), n_parked, replace=False).tolist())
        out = rng.random(len(chosen)) < config.pull_out_fraction
        pull_outs = [rm.parking_spots[j] for j, o in zip(chosen, out) if o]
        parked_spots = [rm.parking_spots[j] for j, o in zip(chosen, out) if not o]
        n_parked = len(parked_spots)
    sim = TrafficSim(
        rm, rng, config, n_target - n_parked, min_agents=max(1, config.min_agents - n_parked),
        pull_out_spots=pull_outs, static_spots=parked_spots,
    )
    log = sim.run(config.warmup_seconds, fork_step=CURRENT_TIME_INDEX_WOMD, on_fork=on_fork)
    slots = sim.kept_slots.astype(np.int64)  # [n_track]
    if n_parked:
        log, order = _with_parked(log, rm, rng, n_parked, parked_spots)
        slots = np.concatenate([slots, np.full(n_parked, -1, np.int64)])[order]
    if config.validity_gap_fraction > 0:
        log = _with_validity_gaps(log, rng, config.validity_gap_fraction)
    if config.tracking_noise_m > 0:
        log = _with_tracking_noise(log, rng, config.tracking_noise_m)
    if trace is not None:
        trace["slots"] = slots
    if log.valid.shape[0] < config.min_agents:
        raise RuntimeError(
            f"synthetic scene seed={seed} index={scenario_index} ({layout}): only {log.valid.shape[0]} agents, "
            f"min_agents={config.min_agents}; lower min_agents"
        )
    return rm, log, rng


def _with_parked(log: TrafficLog, rm: RoadMap, rng: np.random.Generator, n_parked: int, spots: list | None = None) -> TrafficLog:
    """Add `n_parked` static vehicles on parking spots (valid at every step; drawn here unless
    `spots` are given), shuffled into the tracks."""
    if spots is None:
        spots = [rm.parking_spots[i] for i in sorted(rng.choice(len(rm.parking_spots), n_parked, replace=False))]
    n_step = log.valid.shape[1]
    xy = np.array([p for p, _, _ in spots])  # [n_parked, 2]
    hd = np.array([(h + np.pi) % (2 * np.pi) - np.pi for _, h, _ in spots])  # [n_parked]
    size = np.array([[rng.uniform(4.0, min(5.2, ln)), rng.uniform(1.8, 2.0), rng.uniform(1.4, 1.8)] for _, _, ln in spots])  # [n_parked, 3]
    const = lambda v: np.repeat(np.asarray(v, np.float64)[:, None], n_step, axis=1)  # noqa: E731  [n_parked] -> [n_parked, 91]
    zeros = np.zeros((n_parked, n_step))
    order = rng.permutation(log.valid.shape[0] + n_parked)  # [n_track] shuffled track order
    cat = lambda a, b: np.concatenate([a, b], axis=0)[order]  # noqa: E731
    return TrafficLog(
        agent_type=cat(log.agent_type, np.full(n_parked, int(AgentType.VEHICLE), np.int8)),
        size=cat(log.size, size),
        x=cat(log.x, const(xy[:, 0])),
        y=cat(log.y, const(xy[:, 1])),
        heading=cat(log.heading, const(hd)),
        vx=cat(log.vx, zeros),
        vy=cat(log.vy, zeros),
        valid=cat(log.valid, np.ones((n_parked, n_step), bool)),
        signal_states=log.signal_states,
    ), order


def smooth_noise(rng: np.random.Generator, shape: tuple, std: float, rho: float = TRACKING_NOISE_RHO) -> np.ndarray:
    """Stationary AR(1) noise along the last axis with standard deviation `std` (tracking jitter)."""
    e = rng.standard_normal(shape) * std * np.sqrt(1.0 - rho * rho)  # [..., t]
    out = np.empty(shape)
    out[..., 0] = rng.standard_normal(shape[:-1]) * std
    for t in range(1, shape[-1]):
        out[..., t] = rho * out[..., t - 1] + e[..., t]
    return out


def _with_tracking_noise(log: TrafficLog, rng: np.random.Generator, std_m: float) -> TrafficLog:
    """Small smooth jitter on the logged boxes (position `std_m`, heading `std_m / 3` rad), like a tracker's."""
    n, t = log.valid.shape
    dx, dy = smooth_noise(rng, (n, t), std_m), smooth_noise(rng, (n, t), std_m)  # [n, 91] each
    dh = smooth_noise(rng, (n, t), std_m / 3.0)  # [n, 91]
    v = log.valid
    return dataclasses.replace(
        log, x=np.where(v, log.x + dx, log.x), y=np.where(v, log.y + dy, log.y),
        heading=np.where(v, (log.heading + dh + np.pi) % (2 * np.pi) - np.pi, log.heading),
    )


def _with_validity_gaps(log: TrafficLog, rng: np.random.Generator, fraction: float) -> TrafficLog:
    """Occlusions: a share `fraction` of the tracks valid at >= 20 steps lose a run of 2-8 steps
    strictly inside their valid span (never the current step: who is simulated stays as logged)."""
    valid = log.valid.copy()  # [n, 91]
    cur = CURRENT_TIME_INDEX_WOMD
    for r in np.flatnonzero(valid.sum(1) >= 20):
        if rng.random() >= fraction:
            continue
        steps = np.flatnonzero(valid[r])
        length = int(rng.integers(2, 9))
        lo, hi = int(steps[0]) + 1, int(steps[-1]) - length  # keep the span's ends
        if hi <= lo:
            continue
        start = int(rng.integers(lo, hi))
        if start <= cur < start + length:
            continue
        valid[r, start : start + length] = False
    return dataclasses.replace(log, valid=valid)


def _points(pb_list, xy: np.ndarray, z: np.ndarray, shift: np.ndarray, msg=None, field: int = 0) -> None:
    """Append points to a repeated MapPoint field; with `msg`, encode them in one go as `field` of `msg`."""
    p = xy + shift  # [n, 2]
    if msg is not None:
        msg.MergeFromString(wire.encode_points(field, np.column_stack([p, z])))  # points [n, 3]
        return
    for (x, y), zz in zip(p.tolist(), z.tolist()):
        pb_list.add(x=x, y=y, z=zz)


def _select_agents(log: TrafficLog, rng: np.random.Generator, config: SynthConfig) -> tuple[int, list[int], list[int]]:
    """SDC row, tracks-to-predict rows, objects-of-interest rows."""
    cur = CURRENT_TIME_INDEX_WOMD
    valid = log.valid  # [n, 91]
    typ = log.agent_type
    speed = np.hypot(log.vx, log.vy)  # [n, 91]
    moving = (np.where(valid, speed, 0.0).max(1) > 2.0)  # [n]
    full = valid.all(1)
    veh = typ == int(AgentType.VEHICLE)
    sdc_pool = [np.flatnonzero(veh & full & moving), np.flatnonzero(veh & full), np.flatnonzero(veh & valid[:, cur]), np.flatnonzero(valid[:, cur])]
    sdc = next(int(rng.choice(p)) for p in sdc_pool if p.size)
    enough = valid[:, cur] & (valid[:, cur:].sum(1) >= 60)
    if config.ttp_selection == "near_sdc":
        return sdc, *_select_near_sdc(log, rng, config, sdc, enough, speed)
    pool = np.flatnonzero(enough & moving & (veh | (typ == int(AgentType.CYCLIST))))
    pool = pool[pool != sdc]
    pool = np.concatenate([rng.permutation(pool[veh[pool]]), rng.permutation(pool[~veh[pool]])])  # [n_pool] vehicles first
    k = int(rng.integers(config.min_tracks_to_predict, config.max_tracks_to_predict + 1))
    if pool.size < config.min_tracks_to_predict:  # small scenes: relax motion, then type
        road = veh | (typ == int(AgentType.CYCLIST))
        for extra in (np.flatnonzero(valid[:, cur] & road), np.flatnonzero(valid[:, cur])):
            extra = extra[(extra != sdc) & ~np.isin(extra, pool)]
            extra = extra[np.argsort(-valid[extra, cur:].sum(1), kind="stable")]
            pool = np.concatenate([pool, extra[: config.min_tracks_to_predict - pool.size]])  # [n_pool]
            if pool.size >= config.min_tracks_to_predict:
                break
    ttp = sorted(int(i) for i in pool[:k])
    ooi: list[int] = []
    if len(ttp) >= 2 and rng.random() < 0.5:
        xy = np.stack([log.x[ttp, cur], log.y[ttp, cur]], 1)  # [n_ttp, 2]
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(ttp)) * 1e9
        a, b = np.unravel_index(int(d.argmin()), d.shape)
        ooi = sorted([ttp[a], ttp[b]])
    return sdc, ttp, ooi


def _select_near_sdc(
    log: TrafficLog, rng: np.random.Generator, config: SynthConfig, sdc: int, enough: np.ndarray, speed: np.ndarray
) -> tuple[list[int], list[int]]:
    """WOMD-like tracks to predict: agents valid at every step from the current one on
    (relaxed to >= 60 future steps, then to any, when too few) that move (vehicles / cyclists > 2 m/s, walkers > 0.8 m/s at some step), nearest the SDC
    first, interacting ones (another agent within 8 m at some future step) ahead of the rest;
    objects of interest: the closest interacting pair among SDC + tracks to predict (70 %)."""
    cur = CURRENT_TIME_INDEX_WOMD
    valid, typ = log.valid, log.agent_type
    vmax = np.where(valid, speed, 0.0).max(1)  # [n]
    moving = vmax > np.where(typ == int(AgentType.PEDESTRIAN), 0.8, 2.0)
    xy = np.stack([log.x, log.y], -1)  # [n, 91, 2]
    d_sdc = np.linalg.norm(xy[:, cur] - xy[sdc, cur], axis=-1)  # [n]
    full = valid[:, cur:].all(1)  # WOMD's tracks to predict are nearly always valid over the whole future
    pool = np.flatnonzero(enough & moving & full)
    pool = pool[pool != sdc]
    # interaction: min distance to any other valid agent over the future (subsampled steps)
    steps = np.arange(cur, valid.shape[1], 5)
    p = xy[:, steps]  # [n, t, 2]
    dist = np.linalg.norm(p[pool][:, None] - p[None], axis=-1)  # [n_pool, n, t]
    ok = valid[pool][:, None, steps] & valid[None, :, steps]  # [n_pool, n, t]
    ok[np.arange(pool.size), pool] = False
    near = np.where(ok, dist, np.inf).min((1, 2)) < 8.0  # [n_pool]
    order = np.lexsort((d_sdc[pool] + rng.uniform(0, 5, pool.size), ~near))
    pool = pool[order]
    k = int(rng.integers(config.min_tracks_to_predict, config.max_tracks_to_predict + 1))
    if pool.size < k:  # relax motion, then the future length
        for extra in (np.flatnonzero(enough & moving), np.flatnonzero(enough), np.flatnonzero(valid[:, cur])):
            extra = extra[(extra != sdc) & ~np.isin(extra, pool)]
            extra = extra[np.argsort(d_sdc[extra], kind="stable")]
            pool = np.concatenate([pool, extra[: k - pool.size]])
            if pool.size >= k:
                break
    ttp = sorted(int(i) for i in pool[:k])
    ooi: list[int] = []
    if len(ttp) >= 2 and rng.random() < 0.7:
        cand = [sdc] + ttp
        pc = xy[cand][:, cur:]  # [m, 81, 2]
        both = valid[cand][:, None, cur:] & valid[cand][None, :, cur:]  # [m, m, 81]
        d = np.where(both, np.linalg.norm(pc[:, None] - pc[None], axis=-1), np.inf).min(-1) + np.eye(len(cand)) * 1e9
        a, b = np.unravel_index(int(d.argmin()), d.shape)
        ooi = sorted([cand[a], cand[b]])
    return ttp, ooi


def build_scenario_proto(
    scenario_id: str, rm: RoadMap, log: TrafficLog, rng: np.random.Generator, config: SynthConfig, fast: bool = True,
    trace: dict | None = None,
) -> scenario_pb2.Scenario:
    """The `Scenario` proto. `fast=True` encodes states, polylines and signal states with numpy
    (`wire`); `fast=False` sets every field through the proto API (same message; reference path)."""
    sc = scenario_pb2.Scenario()
    sc.scenario_id = scenario_id
    sc.timestamps_seconds.extend((np.arange(N_STEP_WOMD) * STEP_SECONDS).round(6).tolist())
    sc.current_time_index = CURRENT_TIME_INDEX_WOMD
    shift = rng.uniform(-300.0, 300.0, 2)  # [2] world offset, like WOMD's non-centred frames

    # ----- tracks -----
    n = log.valid.shape[0]
    ids = np.sort(rng.choice(np.arange(1, 20 * n + 100), size=n, replace=False))  # [n] unique track ids
    ids = ids[rng.permutation(n)]
    if trace is not None:
        trace["shift"], trace["track_ids"] = shift, ids
    xy = np.stack([log.x, log.y], -1)  # [n, 91, 2]
    z = rm.ground_z(xy) + log.size[:, None, 2] / 2  # [n, 91]
    xs, ys = (log.x + shift[0]), (log.y + shift[1])
    for r in range(n):
        tr = sc.tracks.add()
        tr.id = int(ids[r])
        tr.object_type = int(log.agent_type[r])
        length, width, height = (float(v) for v in log.size[r])
        if fast:
            tr.MergeFromString(wire.encode_track_states(xs[r], ys[r], z[r], log.heading[r], log.vx[r], log.vy[r], log.valid[r], length, width, height))
            continue
        rows = zip(xs[r].tolist(), ys[r].tolist(), z[r].tolist(), log.heading[r].tolist(), log.vx[r].tolist(), log.vy[r].tolist(), log.valid[r].tolist())
        for x, y, zz, h, vx, vy, ok in rows:
            if ok:
                tr.states.add(center_x=x, center_y=y, center_z=zz, length=length, width=width, height=height, heading=h, velocity_x=vx, velocity_y=vy, valid=True)
            else:
                tr.states.add(valid=False)
    sdc, ttp, ooi = _select_agents(log, rng, config)
    sc.sdc_track_index = sdc
    for r in ttp:
        sc.tracks_to_predict.add(track_index=r, difficulty=1)
    sc.objects_of_interest.extend(int(ids[r]) for r in ooi)

    # ----- map -----
    next_id = max(lane.id for lane in rm.lanes) + 1
    for lane in rm.lanes:
        mf = sc.map_features.add()
        mf.id = lane.id
        lc = mf.lane
        lc.speed_limit_mph = float(round(lane.speed_limit * MPH_PER_MPS))
        lc.type = int(LaneType.SURFACE_STREET)
        lc.interpolating = lane.interpolating
        lc.entry_lanes.extend(lane.entry)
        lc.exit_lanes.extend(lane.exit)
        _points(lc.polyline, lane.pts, rm.ground_z(lane.pts), shift, lc if fast else None, 8)
    for kind, pts in rm.road_lines:
        mf = sc.map_features.add()
        mf.id, next_id = next_id, next_id + 1
        mf.road_line.type = kind
        _points(mf.road_line.polyline, pts, rm.ground_z(pts), shift, mf.road_line if fast else None, 2)
    for kind, pts in rm.road_edges:
        mf = sc.map_features.add()
        mf.id, next_id = next_id, next_id + 1
        mf.road_edge.type = kind
        _points(mf.road_edge.polyline, pts, rm.ground_z(pts), shift, mf.road_edge if fast else None, 2)
    for poly in rm.crosswalks:
        mf = sc.map_features.add()
        mf.id, next_id = next_id, next_id + 1
        _points(mf.crosswalk.polygon, poly, rm.ground_z(poly), shift, mf.crosswalk if fast else None, 1)
    for pos, lanes in rm.stop_signs:
        mf = sc.map_features.add()
        mf.id, next_id = next_id, next_id + 1
        mf.stop_sign.lane.extend(lanes)
        p = pos + shift
        mf.stop_sign.position.x, mf.stop_sign.position.y = float(p[0]), float(p[1])
        mf.stop_sign.position.z = float(rm.ground_z(pos))

    # ----- traffic signals: one lane state per signalised connector per step -----
    controlled = [(c.lane_id, c.signal_group, rm.lane_by_id[c.lane_id].pts[0]) for c in rm.connectors if c.signal_group >= 0]
    stop_pts = [(lid, g, float(p[0] + shift[0]), float(p[1] + shift[1]), float(rm.ground_z(p))) for lid, g, p in controlled]
    if fast:
        cache: dict[tuple[int, int], bytes] = {}
        chunks = []
        for t in range(N_STEP_WOMD):
            body = []
            for lid, g, x, y, zz in stop_pts:
                key = (lid, int(log.signal_states[g, t]))
                if key not in cache:
                    cache[key] = wire.encode_lane_state(lid, key[1], (x, y, zz))
                body.append(cache[key])
            chunks.append(wire.length_delimited(7, b"".join(body)))
        sc.MergeFromString(b"".join(chunks))
        return sc
    for t in range(N_STEP_WOMD):
        dms = sc.dynamic_map_states.add()
        for lid, g, x, y, zz in stop_pts:
            ls = dms.lane_states.add(lane=lid, state=int(log.signal_states[g, t]))
            ls.stop_point.x, ls.stop_point.y, ls.stop_point.z = x, y, zz
    return sc


def generate_scenario(seed: int, scenario_index: int = 0, config: SynthConfig | None = None) -> scenario_pb2.Scenario:
    """One synthetic WOMD `Scenario` (91 steps at 10 Hz, current_time_index 10).

    Deterministic per (`seed`, `scenario_index`, `config`).
    """
    config = config or SynthConfig()
    rm, log, rng = simulate(seed, scenario_index, config)
    return build_scenario_proto(scenario_id_for(seed, scenario_index, config.scenario_id_prefix), rm, log, rng, config)


def generate_with_trace(seed: int, scenario_index: int, config: SynthConfig, on_fork=None) -> tuple[scenario_pb2.Scenario, dict]:
    """`generate_scenario` plus what a restart needs: `trace` holds `slots` (simulation slot of
    each track row, -1: parked), `shift` (world offset) and `track_ids`; `on_fork` as in `simulate`."""
    trace: dict = {}
    rm, log, rng = simulate(seed, scenario_index, config, on_fork=on_fork, trace=trace)
    trace["roadmap"], trace["log"] = rm, log
    sc = build_scenario_proto(scenario_id_for(seed, scenario_index, config.scenario_id_prefix), rm, log, rng, config, trace=trace)
    return sc, trace


__all__ = ["generate_scenario", "generate_with_trace", "simulate", "build_scenario_proto", "scenario_id_for", "map_pb2"]
