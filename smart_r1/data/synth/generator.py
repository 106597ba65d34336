"""`generate_scenario`: one synthetic WOMD `Scenario` proto, deterministic per (seed, index)."""

from __future__ import annotations

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


def simulate(seed: int, scenario_index: int = 0, config: SynthConfig | None = None) -> tuple[RoadMap, TrafficLog, np.random.Generator]:
    """Build the map and run the traffic simulation (before any proto is made)."""
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
    n_parked = 0
    if rm.parking_spots:
        n_parked = min(len(rm.parking_spots), int(round(n_target * rng.uniform(0.1, 0.35))), max(0, n_target - 4))
    log = TrafficSim(rm, rng, config, n_target - n_parked, min_agents=max(1, config.min_agents - n_parked)).run(config.warmup_seconds)
    if n_parked:
        log = _with_parked(log, rm, rng, n_parked)
    if log.valid.shape[0] < config.min_agents:
        raise RuntimeError(
            f"synthetic scene seed={seed} index={scenario_index} ({layout}): only {log.valid.shape[0]} agents, "
            f"min_agents={config.min_agents}; lower min_agents"
        )
    return rm, log, rng


def _with_parked(log: TrafficLog, rm: RoadMap, rng: np.random.Generator, n_parked: int) -> TrafficLog:
    """Add `n_parked` static vehicles on parking spots (valid at every step), shuffled into the tracks."""
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
    )


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


def build_scenario_proto(
    scenario_id: str, rm: RoadMap, log: TrafficLog, rng: np.random.Generator, config: SynthConfig, fast: bool = True
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


__all__ = ["generate_scenario", "simulate", "build_scenario_proto", "scenario_id_for", "map_pb2"]
