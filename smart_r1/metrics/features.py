"""WOSAC 2025 metric features, vectorised in torch (float32), batched over rollouts.

Inputs follow the official `metric_features.compute_metric_features` layout: 91 steps (11
logged history steps + 80 simulated), all simulated agents with the evaluated ones first,
box sizes of the current step held constant. The batch axis B stacks the simulated rollouts
and, as its last element, the logged scene (the official "log features", whose validity is the
log validity). Every feature is returned for the evaluated agents over the 80 future steps.

Official quirks reproduced (each also named where it is implemented):
- kinematics: central differences with NaN padding; angular deltas wrapped as wrap(2*d)/2;
  speed is 3-D; TTC speeds are 2-D (z = 0).
- distance to nearest object: boxes shrunk by min(L, W) * 0.7 / 2, signed distance of the
  cores, both shrink amounts subtracted; self and invalid pairs give 1e10.
- TTC: heading difference |yaw_other - yaw_ego| WITHOUT wrap-around; only the other agent's
  validity is checked; capped at 5 s.
- road edge: max over the 4 bottom corners; nearest segment by 3-D distance with z x3; the
  sign rule of the official code incl. its cyclic-polyline handling (wrap only for polylines
  as long as the longest one); invalid -> -1e10.
- traffic lights: the official (non-geometric) lane association formula and phantom segments,
  see `geometry.LaneAssociation`; STOP / ARROW_STOP only; crossing between t-1 and t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smart_r1.metrics.geometry import (
    CORNER_ROUNDING_FACTOR,
    EXTREMELY_LARGE_DISTANCE,
    LaneAssociation,
    RoadEdgeDistance,
    box_corners_2d,
    box_signed_distance,
    divide_no_nan,
    dot2,
    wrap_angle,
)

STEP_SECONDS = 0.1
MAX_HEADING_DIFF = 1.3089969389957472  # radians(75)
MAX_HEADING_DIFF_FOR_SMALL_OVERLAP = 0.17453292519943295  # radians(10)
SMALL_OVERLAP_THRESHOLD = 0.5
MAXIMUM_TIME_TO_COLLISION = 5.0
SIGNAL_STOP_STATES = (1, 4)  # ARROW_STOP, STOP (not FLASHING_STOP = 7)


@dataclass
class SceneTensors:
    """Per-scene inputs of the feature computation (torch tensors on one device)."""

    pos: torch.Tensor  # [B, N, 91, 3] x, y, z of all simulated agents (evaluated first)
    heading: torch.Tensor  # [B, N, 91]
    valid: torch.Tensor  # [B, N, 91] bool
    length: torch.Tensor  # [N] (log, current step)
    width: torch.Tensor  # [N]
    height: torch.Tensor  # [N]
    n_eval: int
    current_time_index: int = 10


@dataclass
class MapContext:
    road_edges: RoadEdgeDistance
    lanes: LaneAssociation | None  # None: no surface-street lanes (official: no violations)
    lane_ids: torch.Tensor | None  # [n_kept_lane] int64, ids of the kept lanes
    signal_lane_id: torch.Tensor  # [J] int64
    signal_state: torch.Tensor  # [91, J] int64 (UNKNOWN where absent)
    signal_stop_xy: torch.Tensor  # [91, J, 2] float32 ((0, 0) where absent, like the official tensorisation)
    has_signals: bool  # scene has dynamic map states


def central_diff(x: torch.Tensor) -> torch.Tensor:
    """Official `central_diff` along the last axis: (x[t+1] - x[t-1]) / 2, NaN-padded at both ends."""
    pad = torch.full_like(x[..., :1], float("nan"))
    return torch.cat([pad, (x[..., 2:] - x[..., :-2]) / 2, pad], dim=-1)


def central_and(v: torch.Tensor) -> torch.Tensor:
    pad = torch.zeros_like(v[..., :1])
    return torch.cat([pad, v[..., 2:] & v[..., :-2], pad], dim=-1)


def kinematics(pos: torch.Tensor, heading: torch.Tensor):
    """Official `compute_kinematic_features`. pos [..., T, 3], heading [..., T] -> 4 x [..., T]"""
    dpos = torch.stack([central_diff(pos[..., k]) for k in range(3)], 0)  # [3, ..., T]
    speed = torch.linalg.vector_norm(dpos, dim=0) / STEP_SECONDS
    accel = central_diff(speed) / STEP_SECONDS
    # QUIRK (official): the 2-step heading delta is wrapped as wrap(2 * d) / 2.
    dh_step = wrap_angle(central_diff(heading) * 2) / 2
    dh = dh_step / STEP_SECONDS
    d2h_step = wrap_angle(central_diff(dh_step) * 2) / 2
    d2h = d2h_step / (STEP_SECONDS**2)
    return speed, accel, dh, d2h


def _pair_geometry(xy: torch.Tensor, valid: torch.Tensor, n_eval: int):
    """Centre distances of evaluated agents to all agents. xy [B, N, T, 2] -> [B, E, N, T], pair validity."""
    e = n_eval
    d = xy[:, None] - xy[:, :e, None]  # [B, E, N, T, 2]
    centre_d = torch.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])  # [B, E, N, T]
    return centre_d


def distance_to_nearest_object(
    xy: torch.Tensor, heading: torch.Tensor, length: torch.Tensor, width: torch.Tensor, valid: torch.Tensor, n_eval: int,
    centre_d: torch.Tensor | None = None,
) -> torch.Tensor:
    """Official `compute_distance_to_nearest_object` (2-D rounded boxes).

    xy [B, N, T, 2], heading [B, N, T], length/width [N], valid [B, N, T] -> [B, E, T]
    Pruned exactly: per (rollout, agent, step) only the others whose lower bound
    |dc| - R_a - R_b - shrinks is within the best upper bound |dc| - shrinks are evaluated.
    """
    b, n, t, _ = xy.shape
    e = n_eval
    # QUIRK (official): corner rounding = boxes shrunk by min(L, W) * 0.7 / 2 per side, the
    # shrink amounts of both boxes subtracted from the core-to-core signed distance.
    shrink = torch.minimum(length, width) * CORNER_ROUNDING_FACTOR / 2.0  # [N]
    core_l = length - 2.0 * shrink  # [N]
    core_w = width - 2.0 * shrink  # [N]
    radius = 0.5 * torch.sqrt(core_l**2 + core_w**2)  # [N]
    if centre_d is None:
        centre_d = _pair_geometry(xy, valid, e)
    pair_ok = valid[:, :e, None] & valid[:, None]  # [B, E, N, T]
    eye = torch.eye(e, n, dtype=torch.bool, device=xy.device)[None, :, :, None]
    pair_ok = pair_ok & ~eye
    inf = torch.tensor(float("inf"), device=xy.device)
    # Exact pruning: the core-to-core distance is at most the centre distance, so the minimum
    # over others is <= ub = min(|dc| - shrinks); only pairs whose lower bound
    # lb = |dc| - (R + shrink)_a - (R + shrink)_b is <= ub can reach it.
    ub = torch.where(pair_ok, centre_d - shrink[None, :e, None, None] - shrink[None, None, :, None], inf).amin(2, keepdim=True)
    lb = centre_d - (radius + shrink)[None, :e, None, None] - (radius + shrink)[None, None, :, None]  # [B, E, N, T]
    cand = pair_ok & (lb <= ub + 1e-4 * (1.0 + ub.abs()))  # [B, E, N, T]
    pb, pe, pn, pt = torch.nonzero(cand, as_tuple=True)  # [P] each
    ca = box_corners_2d(xy[pb, pe, pt, 0], xy[pb, pe, pt, 1], heading[pb, pe, pt], core_l[pe], core_w[pe])  # [P, 4, 2]
    cb = box_corners_2d(xy[pb, pn, pt, 0], xy[pb, pn, pt, 1], heading[pb, pn, pt], core_l[pn], core_w[pn])  # [P, 4, 2]
    d = box_signed_distance(ca, cb) - shrink[pe] - shrink[pn]  # [P]
    row = (pb * e + pe) * t + pt  # [P]
    best = torch.full((b * e * t,), EXTREMELY_LARGE_DISTANCE, dtype=d.dtype, device=xy.device)
    best = best.scatter_reduce(0, row, d, "amin").reshape(b, e, t)
    best = torch.where(valid[:, :e], best, torch.full_like(best, EXTREMELY_LARGE_DISTANCE))
    return best.clamp(max=EXTREMELY_LARGE_DISTANCE)


def time_to_collision(
    xy: torch.Tensor, heading: torch.Tensor, speed2d: torch.Tensor, length: torch.Tensor, width: torch.Tensor, valid: torch.Tensor,
    n_eval: int, centre_d: torch.Tensor | None = None,
) -> torch.Tensor:
    """Official `compute_time_to_collision_with_object_in_front`.

    xy [B, N, T, 2], heading [B, N, T], speed2d [B, N, T] (2-D central-difference speed, NaN at
    the ends), valid [B, N, T] -> [B, E, T]

    Pruned exactly: a TTC below the 5 s cap needs a leader whose longitudinal gap is below
    5 s x ego speed (the leader's speed is >= 0), so only others with centre distance
    < 5 * v_ego + L_ego / 2 + half-diagonal_other (+1 m slack) can change the result; if none
    of them is a leader, the official value is the cap.
    """
    b, n, t, _ = xy.shape
    e = n_eval
    if centre_d is None:
        centre_d = _pair_geometry(xy, valid, e)
    ego_speed = speed2d[:, :e]  # [B, E, T]
    half_diag = 0.5 * torch.sqrt(length**2 + width**2)  # [N]
    reach = MAXIMUM_TIME_TO_COLLISION * ego_speed + (length[:e] / 2.0)[None, :, None] + 1.0  # [B, E, T] (NaN -> no candidate)
    # QUIRK (official): only the other agent's validity is checked, not the ego's.
    cand = valid[:, None] & (centre_d < reach[:, :, None] + half_diag[None, None, :, None])  # [B, E, N, T]
    pb, pe, pn, pt = torch.nonzero(cand, as_tuple=True)  # [P]
    ego_yaw = heading[pb, pe, pt]
    # QUIRK (official): absolute heading difference WITHOUT wrap-around (e.g. -179 vs 179 deg = 358 deg).
    yaw_diff = torch.abs(heading[pb, pn, pt] - ego_yaw)  # [P]
    cos_d, sin_d = torch.abs(torch.cos(yaw_diff)), torch.abs(torch.sin(yaw_diff))
    half_l, half_w = length[pn] / 2.0, width[pn] / 2.0
    other_long = half_l * cos_d + half_w * sin_d  # [P]
    other_lat = half_l * sin_d + half_w * cos_d
    rel = xy[pb, pn, pt] - xy[pb, pe, pt]  # [P, 2]
    c, s = torch.cos(-ego_yaw), torch.sin(-ego_yaw)
    rx = c * rel[:, 0] - s * rel[:, 1]
    ry = s * rel[:, 0] + c * rel[:, 1]
    long_d = rx - length[pe] / 2.0 - other_long  # [P]
    lat = torch.abs(ry) - width[pe] / 2.0 - other_lat
    following = (long_d > 0.0) & (yaw_diff <= MAX_HEADING_DIFF) & (lat < 0.0)
    following = following & ((lat < -SMALL_OVERLAP_THRESHOLD) | (yaw_diff <= MAX_HEADING_DIFF_FOR_SMALL_OVERLAP))
    row = (pb * e + pe) * t + pt  # [P]
    inf = torch.full_like(long_d, float("inf"))
    masked = torch.where(following, long_d, inf)
    best = torch.full((b * e * t,), float("inf"), device=xy.device).scatter_reduce(0, row, masked, "amin")  # [B*E*T]
    # Leader = first index among equal minima (tf.argmin).
    key = torch.where(following & (masked == best[row]), pn, torch.full_like(pn, n))
    lead = torch.full((b * e * t,), n, dtype=torch.int64, device=xy.device).scatter_reduce(0, row, key, "amin")
    has = lead < n  # [B*E*T]
    fb = torch.arange(b, device=xy.device)[:, None, None].expand(b, e, t).reshape(-1)
    ft = torch.arange(t, device=xy.device)[None, None, :].expand(b, e, t).reshape(-1)
    ahead_speed = speed2d[fb, lead.clamp(max=n - 1), ft]  # [B*E*T]
    rel_speed = ego_speed.reshape(-1) - ahead_speed
    dist = torch.where(has, best, torch.full_like(best, EXTREMELY_LARGE_DISTANCE))
    cap = torch.full_like(dist, MAXIMUM_TIME_TO_COLLISION)
    ttc = torch.where(has & (rel_speed > 0.0), torch.minimum(dist / rel_speed, cap), cap)
    return ttc.reshape(b, e, t)


def distance_to_road_edge(
    pos: torch.Tensor, heading: torch.Tensor, length: torch.Tensor, width: torch.Tensor, height: torch.Tensor,
    valid: torch.Tensor, road: RoadEdgeDistance,
) -> torch.Tensor:
    """Official `compute_distance_to_road_edge`. pos [B, E, T, 3], heading/valid [B, E, T],
    sizes [E] -> [B, E, T] (max over the 4 bottom corners; invalid -> -1e10)."""
    b, e, t, _ = pos.shape
    corners = box_corners_2d(
        pos[..., 0], pos[..., 1], heading, length[None, :, None].expand(b, e, t), width[None, :, None].expand(b, e, t)
    )  # [B, E, T, 4, 2]
    z = (pos[..., 2] - (height / 2.0)[None, :, None])[..., None].expand(b, e, t, 4)  # [B, E, T, 4] bottom corners
    pts = torch.cat([corners, z[..., None]], -1).reshape(-1, 3)  # [B*E*T*4, 3]
    d = road(pts).reshape(b, e, t, 4).amax(-1)  # [B, E, T]
    return torch.where(valid, d, torch.full_like(d, -EXTREMELY_LARGE_DISTANCE))


def red_light_violation(xy: torch.Tensor, valid: torch.Tensor, ctx: MapContext, t0: int) -> torch.Tensor:
    """Official `compute_red_light_violation` for steps t0 .. 90 (t0 >= 1), using step t0 - 1 for crossing.

    xy [B, E, T, 2] and valid [B, E, T] cover steps t0 - 1 .. 90 (T = 92 - t0). -> [B, E, T - 1]
    """
    b, e, t, _ = xy.shape
    out_shape = (b, e, t - 1)
    if ctx.lanes is None or not ctx.has_signals or ctx.signal_lane_id.numel() == 0:
        return torch.zeros(out_shape, dtype=torch.bool, device=xy.device)
    lanes = ctx.lanes
    steps = slice(t0 - 1, t0 - 1 + t)
    state = ctx.signal_state[steps]  # [T, J]
    stop_xy = ctx.signal_stop_xy[steps]  # [T, J, 2]
    j = state.shape[1]
    # Lane of each signal: first kept surface-street lane with that id (official argmax of matches).
    match_lane = ctx.lane_ids[None, :] == ctx.signal_lane_id[:, None]  # [J, n_lane]
    lane_valid = match_lane.any(-1)  # [J]
    lane_index = match_lane.to(torch.int64).argmax(-1)  # [J]
    # Stop-point "fence" segment: the (quirky) nearest segment of the signal's lane, per step.
    fence = lanes.nearest_segment_in_lane(stop_xy.reshape(-1, 2), lane_index[None].expand(t, j).reshape(-1)).reshape(t, j)
    seg_a = lanes.segs.start[fence][..., :2]  # [T, J, 2]
    seg_v = lanes.segs.vec[fence][..., :2]  # [T, J, 2]
    len2 = dot2(seg_v, seg_v)  # [T, J]
    stop_rel = divide_no_nan(dot2(stop_xy - seg_a, seg_v), len2)  # [T, J]
    obj_rel = divide_no_nan(dot2(xy[:, :, :, None] - seg_a, seg_v), len2)  # [B, E, T, J]
    behind = obj_rel < stop_rel
    ahead = obj_rel > stop_rel
    crossed = behind[:, :, :-1] & ahead[:, :, 1:]  # [B, E, T-1, J]
    is_stop = (state[1:] == SIGNAL_STOP_STATES[0]) | (state[1:] == SIGNAL_STOP_STATES[1])  # [T-1, J]
    cond = valid[:, :, 1:, None] & is_stop[None, None] & lane_valid[None, None, None] & crossed  # [B, E, T-1, J]
    # The lane association is only needed where every other condition already holds (exact pruning).
    need = cond.any(-1)  # [B, E, T-1]
    out = torch.zeros(out_shape, dtype=torch.bool, device=xy.device)
    rows = torch.nonzero(need)  # [M, 3]
    if rows.shape[0] == 0:
        return out
    pts = xy[rows[:, 0], rows[:, 1], rows[:, 2] + 1]  # [M, 2]
    # Current lane of these agent states (official, non-geometric association).
    cur_lane_id = ctx.lane_ids[lanes.nearest(pts)]  # [M]
    match = cur_lane_id[:, None] == ctx.signal_lane_id[None]  # [M, J]
    hit = (match & cond[rows[:, 0], rows[:, 1], rows[:, 2]]).any(-1)  # [M]
    out[rows[:, 0], rows[:, 1], rows[:, 2]] = hit
    return out


def compute_features(st: SceneTensors, ctx: MapContext) -> dict[str, torch.Tensor]:
    """All per-step features of the evaluated agents over the 80 future steps. -> dict of [B, E, 80]"""
    cur = st.current_time_index
    e = st.n_eval
    fut = slice(cur + 1, None)
    speed, accel, dh, d2h = kinematics(st.pos[:, :e], st.heading[:, :e])  # [B, E, 91]
    xy = st.pos[..., :2]  # [B, N, 91, 2]
    xy_f = xy[:, :, fut].contiguous()
    head_f = st.heading[:, :, fut].contiguous()
    valid_f = st.valid[:, :, fut]
    centre_d = _pair_geometry(xy_f, valid_f, e)  # [B, E, N, 80]
    dist_obj = distance_to_nearest_object(xy_f, head_f, st.length, st.width, valid_f, e, centre_d)
    # TTC uses 2-D speeds (z = 0) of every agent; steps cur .. 90 suffice for the future ones.
    zeros = torch.zeros_like(xy[..., :1])
    speed2d = kinematics(torch.cat([xy, zeros], -1), st.heading)[0][:, :, fut]  # [B, N, 80]
    ttc = time_to_collision(xy_f, head_f, speed2d, st.length, st.width, valid_f, e, centre_d)
    road = distance_to_road_edge(
        st.pos[:, :e, fut].contiguous(), head_f[:, :e], st.length[:e], st.width[:e], st.height[:e], valid_f[:, :e], ctx.road_edges
    )
    tl = red_light_violation(xy[:, :e, cur:], st.valid[:, :e, cur:], ctx, cur + 1)
    return {
        "linear_speed": speed[..., fut],
        "linear_acceleration": accel[..., fut],
        "angular_speed": dh[..., fut],
        "angular_acceleration": d2h[..., fut],
        "distance_to_nearest_object": dist_obj,
        "collision_per_step": dist_obj < 0.0,
        "time_to_collision": ttc,
        "distance_to_road_edge": road,
        "offroad_per_step": road > 0.0,
        "traffic_light_violation_per_step": tl,
    }
