"""The road network of one synthetic scene: lanes, connectors (gated lanes), map decorations,
pedestrian paths, and the signal programme. Built by the layouts, consumed by `traffic` and
turned into `MapFeature` protos by `generator`.

Conventions: right-hand traffic; lane polylines point in the travel direction; road edges are
oriented with the road on their left (port) side, as the official offroad metric expects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from smart_r1.data.scene import RoadEdgeType, RoadLineType, SignalState
from smart_r1.data.synth import geometry as geo

MPH_PER_MPS = 2.2369363


@dataclass
class Lane:
    id: int
    pts: np.ndarray  # [n, 2] travel direction
    speed_limit: float  # m/s
    entry: list[int] = field(default_factory=list)
    exit: list[int] = field(default_factory=list)
    connector: int = -1  # index into RoadMap.connectors when this lane is gated
    rightmost: bool = False  # cyclists may use it
    interpolating: bool = False

    @property
    def length(self) -> float:
        return float(geo.arc_length(self.pts)[-1])


@dataclass
class Connector:
    """A gated lane (through a junction or across a mid-block crosswalk).

    A vehicle must hold a reservation to pass the connector's start; reservations of
    conflicting connectors are mutually exclusive.
    """

    lane_id: int
    entry_lane: int
    exit_lane: int
    turn: str  # "straight" | "left" | "right"
    priority: int  # higher goes first; lower yields with gap acceptance
    signal_group: int = -1  # -1: no signal
    stop_sign: bool = False
    crosswalks: list[int] = field(default_factory=list)


@dataclass
class PedPath:
    pts: np.ndarray  # [n, 2]
    gate_s0: float = math.inf  # arc length where the walker waits for the crosswalk
    gate_s1: float = math.inf  # arc length past which the crosswalk is free again
    crosswalk: int = -1


def crossing_path(sharp: np.ndarray, gate_s0: float, gate_s1: float, crosswalk: int) -> PedPath:
    """A walking path with rounded corners; gate arc lengths are re-measured on the rounded path."""
    s = geo.arc_length(sharp)
    at = lambda d: np.array([np.interp(d, s, sharp[:, 0]), np.interp(d, s, sharp[:, 1])])  # noqa: E731
    pts = geo.round_corners(sharp, 2.5)
    return PedPath(pts, geo.project_arc_length(pts, at(gate_s0)), geo.project_arc_length(pts, at(gate_s1)), crosswalk)


@dataclass
class SignalProgram:
    """Fixed-time signal: per group, a cycle of GO/CAUTION/STOP with an offset."""

    green: list[float]  # per group, seconds
    yellow: float
    all_red: float
    offset: float  # seconds into the cycle at logged step 0

    def states(self, times: np.ndarray) -> np.ndarray:
        """Signal state per group at `times` (seconds from logged step 0).  -> [n_group, n_time] int8"""
        n_group = len(self.green)
        slots = [g + self.yellow + self.all_red for g in self.green]
        cycle = sum(slots)
        tc = (np.asarray(times) + self.offset) % cycle  # [n_time]
        out = np.full((n_group, tc.shape[0]), int(SignalState.STOP), np.int8)  # [n_group, n_time]
        start = 0.0
        for k in range(n_group):
            rel = tc - start
            out[k][(rel >= 0) & (rel < self.green[k])] = int(SignalState.GO)
            out[k][(rel >= self.green[k]) & (rel < self.green[k] + self.yellow)] = int(SignalState.CAUTION)
            start += slots[k]
        return out


@dataclass
class RoadMap:
    layout: str
    lanes: list[Lane] = field(default_factory=list)
    connectors: list[Connector] = field(default_factory=list)
    road_lines: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (RoadLineType, [n, 2])
    road_edges: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (RoadEdgeType, [n, 2])
    crosswalks: list[np.ndarray] = field(default_factory=list)  # [4, 2] polygons
    stop_signs: list[tuple[np.ndarray, list[int]]] = field(default_factory=list)  # (position [2], lane ids)
    sidewalks: list[np.ndarray] = field(default_factory=list)  # [n, 2] walking lines (either direction)
    crossing_paths: list[PedPath] = field(default_factory=list)  # sidewalk -> crosswalk -> sidewalk
    jaywalk_paths: list[PedPath] = field(default_factory=list)  # sidewalk -> across the road (no crosswalk) -> sidewalk
    parking_spots: list[tuple[np.ndarray, float, float]] = field(default_factory=list)  # (centre [2], heading, max length)
    signal: SignalProgram | None = None
    conflicts: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))  # [n_conn, n_conn]
    ground: tuple[float, float, float] = (0.0, 0.0, 0.0)  # z = gx * x + gy * y + z0
    _next_id: int = 100

    # ----- building -----
    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add_lane(self, pts: np.ndarray, speed_limit: float, rightmost: bool = False, interpolating: bool = False) -> Lane:
        lane = Lane(self.new_id(), geo.resample(pts, 1.0), speed_limit, rightmost=rightmost, interpolating=interpolating)
        self.lanes.append(lane)
        return lane

    def connect(self, a: Lane, b: Lane) -> None:
        a.exit.append(b.id)
        b.entry.append(a.id)

    def add_connector(self, src: Lane, dst: Lane, pts: np.ndarray, turn: str, priority: int, speed_limit: float, **kw) -> Lane:
        lane = self.add_lane(pts, speed_limit, rightmost=src.rightmost and dst.rightmost, interpolating=True)
        lane.connector = len(self.connectors)
        self.connectors.append(Connector(lane.id, src.id, dst.id, turn, priority, **kw))
        self.connect(src, lane)
        self.connect(lane, dst)
        return lane

    def finalize(self) -> "RoadMap":
        self.lane_by_id = {lane.id: lane for lane in self.lanes}
        self.lane_index = {lane.id: i for i, lane in enumerate(self.lanes)}
        n = len(self.connectors)
        conf = np.zeros((n, n), bool)  # [n_conn, n_conn]
        coarse = [geo.resample(self.lane_by_id[c.lane_id].pts, 1.5) for c in self.connectors]
        for i in range(n):
            for j in range(i + 1, n):
                ci, cj = self.connectors[i], self.connectors[j]
                if ci.entry_lane == cj.entry_lane:
                    continue  # same approach lane: car following handles it
                if ci.exit_lane == cj.exit_lane or geo.min_distance(coarse[i], coarse[j]) < 3.3:
                    conf[i, j] = conf[j, i] = True
        self.conflicts = conf
        self._routes: dict[int, list[tuple[int, ...]]] = {}
        return self

    # ----- queries -----
    def routes_from(self, lane_id: int) -> list[tuple[int, ...]]:
        """All lane-id sequences from `lane_id` to a lane without exits."""
        if lane_id not in self._routes:
            lane = self.lane_by_id[lane_id]
            if not lane.exit:
                out = [(lane_id,)]
            else:
                out = [(lane_id,) + rest for nxt in lane.exit for rest in self.routes_from(nxt)]
            self._routes[lane_id] = out
        return self._routes[lane_id]

    def source_lanes(self) -> list[Lane]:
        return [lane for lane in self.lanes if not lane.entry and lane.connector < 0]

    def ground_z(self, xy: np.ndarray) -> np.ndarray:
        gx, gy, z0 = self.ground
        return gx * xy[..., 0] + gy * xy[..., 1] + z0


# ------------------------------------------------------------------------------------------
# Shared builders
# ------------------------------------------------------------------------------------------


def add_lane_lines(rm: RoadMap, center: np.ndarray, n_fwd: int, n_bwd: int, w: float, two_way: bool) -> None:
    """Road lines of a corridor whose reference line is `center` (forward lanes on its right)."""
    if two_way:
        rm.road_lines.append((int(RoadLineType.SOLID_DOUBLE_YELLOW), center))
    for i in range(1, n_fwd):
        rm.road_lines.append((int(RoadLineType.BROKEN_SINGLE_WHITE), geo.offset_polyline(center, -i * w)))
    for i in range(1, n_bwd):
        rm.road_lines.append((int(RoadLineType.BROKEN_SINGLE_WHITE), geo.offset_polyline(center, i * w)[::-1]))


def build_corridor(
    rng: np.random.Generator,
    rm: RoadMap,
    center: np.ndarray,
    n_fwd: int,
    n_bwd: int,
    w: float,
    speed_limit: float,
    crosswalk_at: float | None = None,
    parking: tuple[bool, bool] = (False, False),
) -> None:
    """A two-way road along `center` ([n, 2], forward direction): lanes, lines, edges, sidewalks.

    With `crosswalk_at` (arc length), every lane is split there by a short gated connector
    across a mid-block crosswalk. `parking` = (right, left) adds a parking strip outside the
    outermost lane on that side (inside the road edge); its spots go to `rm.parking_spots`.
    """
    center = geo.resample(center, 1.0)
    s = geo.arc_length(center)
    h_fwd, h_bwd = n_fwd * w, n_bwd * w
    park_f = float(rng.uniform(2.4, 2.8)) if parking[0] else 0.0
    park_b = float(rng.uniform(2.4, 2.8)) if parking[1] else 0.0
    e_fwd, e_bwd = h_fwd + park_f, h_bwd + park_b  # road edges (lanes + parking strips)
    cw_w = float(rng.uniform(3.0, 4.5))
    sw = float(rng.uniform(2.2, 3.0))  # sidewalk line beyond the road edge
    cw = -1
    if crosswalk_at is not None:
        c0, c1 = crosswalk_at - cw_w / 2, crosswalk_at + cw_w / 2
        pa = np.stack([np.interp([c0, c1], s, center[:, 0]), np.interp([c0, c1], s, center[:, 1])], 1)  # [2, 2]
        tang = pa[1] - pa[0]
        tang /= np.linalg.norm(tang)
        nrm = geo.rot90(tang)
        cw = len(rm.crosswalks)
        rm.crosswalks.append(
            np.array([pa[0] - nrm * (e_fwd + 0.5), pa[1] - nrm * (e_fwd + 0.5), pa[1] + nrm * (e_bwd + 0.5), pa[0] + nrm * (e_bwd + 0.5)])  # [4, 2]
        )
        # crossing walkers: from one sidewalk to the other across the crosswalk
        mid = np.array([np.interp(crosswalk_at, s, center[:, 0]), np.interp(crosswalk_at, s, center[:, 1])])  # [2]
        for side in (1.0, -1.0):
            a_off = (e_bwd + sw) if side > 0 else -(e_fwd + sw)
            b_off = -(e_fwd + sw) if side > 0 else (e_bwd + sw)
            a, b = mid + nrm * a_off, mid + nrm * b_off
            path = geo.line(a, b, 0.5)
            edge_a = abs(a_off) - (e_bwd if side > 0 else e_fwd)
            width = e_fwd + e_bwd
            rm.crossing_paths.append(crossing_path(path, edge_a - 0.6, edge_a + width + 0.8, cw))

    # places to cross outside a crosswalk (used only with SynthConfig.jaywalk_fraction > 0; fixed
    # positions, no random draws, so scenes without jaywalkers are unchanged)
    nrm_at = lambda d: geo.rot90(np.array([np.interp(d + 0.5, s, center[:, 0]) - np.interp(d - 0.5, s, center[:, 0]),  # noqa: E731
                                           np.interp(d + 0.5, s, center[:, 1]) - np.interp(d - 0.5, s, center[:, 1])]))
    for frac in (0.3, 0.62):
        at = frac * s[-1]
        if crosswalk_at is not None and abs(at - crosswalk_at) < 20.0:
            continue
        mid = np.array([np.interp(at, s, center[:, 0]), np.interp(at, s, center[:, 1])])  # [2]
        nj = nrm_at(at)
        nj /= np.linalg.norm(nj)
        for side in (1.0, -1.0):
            a_off = (e_bwd + sw) if side > 0 else -(e_fwd + sw)
            b_off = -(e_fwd + sw) if side > 0 else (e_bwd + sw)
            edge_a = abs(a_off) - (e_bwd if side > 0 else e_fwd)
            path = geo.line(mid + nj * a_off, mid + nj * b_off, 0.5)
            rm.jaywalk_paths.append(PedPath(path, edge_a - 0.6, edge_a + e_fwd + e_bwd + 0.8, -1))

    def lane_pieces(offset: float, forward: bool) -> list[np.ndarray]:
        pts = geo.offset_polyline(center, offset)
        if not forward:
            pts = pts[::-1]
        if crosswalk_at is None:
            return [pts]
        ls = geo.arc_length(pts)
        at = crosswalk_at if forward else ls[-1] - crosswalk_at
        cut = [at - cw_w / 2 - 1.5, at + cw_w / 2 + 1.0]
        out, lo = [], 0.0
        for hi in cut + [ls[-1]]:
            t = np.linspace(lo, hi, max(2, int((hi - lo) / 1.0) + 1))  # [m]
            out.append(np.stack([np.interp(t, ls, pts[:, 0]), np.interp(t, ls, pts[:, 1])], 1))  # [m, 2]
            lo = hi
        return out

    for forward, n in ((True, n_fwd), (False, n_bwd)):
        for i in range(n):
            off = -(i + 0.5) * w if forward else (i + 0.5) * w
            pieces = lane_pieces(off, forward)
            rightmost = i == n - 1
            lanes = [rm.add_lane(pieces[0], speed_limit, rightmost)]
            if len(pieces) == 3:
                after = rm.add_lane(pieces[2], speed_limit, rightmost)
                rm.add_connector(lanes[0], after, pieces[1], "straight", 2, speed_limit, crosswalks=[cw])
    add_lane_lines(rm, center, n_fwd, n_bwd, w, two_way=n_bwd > 0)
    rm.road_edges.append((int(RoadEdgeType.BOUNDARY), geo.offset_polyline(center, -e_fwd)))
    rm.road_edges.append((int(RoadEdgeType.BOUNDARY), geo.offset_polyline(center, e_bwd)[::-1]))
    rm.sidewalks.append(geo.offset_polyline(center, -e_fwd - sw))
    rm.sidewalks.append(geo.offset_polyline(center, e_bwd + sw))
    # parking strips: a solid white line at the lane edge, spots along the strip centre
    heading = np.unwrap(geo.tangent_headings(center))  # [n]
    for park, h_lane, sign in ((park_f, h_fwd, -1.0), (park_b, h_bwd, 1.0)):
        if park <= 0:
            continue
        line = geo.offset_polyline(center, sign * h_lane)  # [n, 2]
        rm.road_lines.append((int(RoadLineType.SOLID_SINGLE_WHITE), line if sign < 0 else line[::-1]))
        strip = geo.offset_polyline(center, sign * (h_lane + park / 2 - 0.1))  # [n, 2] (a little towards the lane)
        pos = float(rng.uniform(3.0, 10.0))
        while pos < s[-1] - 4.0:
            length = float(rng.uniform(4.0, 5.2))
            c = pos + length / 2
            if crosswalk_at is None or abs(c - crosswalk_at) > cw_w / 2 + length / 2 + 5.0:
                xy = np.array([np.interp(c, s, strip[:, 0]), np.interp(c, s, strip[:, 1])])  # [2]
                hd = float(np.interp(c, s, heading)) + (0.0 if sign < 0 else math.pi)  # parked along the traffic
                rm.parking_spots.append((xy, hd, length))
            pos += length + float(rng.uniform(0.8, 6.0))


def build_junction(
    rng: np.random.Generator,
    rm: RoadMap,
    angles: list[float],
    n_in: list[int],
    n_out: list[int],
    w: float,
    speed_limits: list[float],
    arm_length: float,
    signal_groups: list[int] | None,
    stop_arms: set[int],
    crosswalk_arms: set[int],
    priority_arms: set[int] | None = None,
    center: np.ndarray | None = None,
    arm_far: dict[int, float] | None = None,
) -> tuple[list[list[Lane]], list[list[Lane]]]:
    """A junction of arms at `angles` (radians, outward directions, CCW order).

    Arm k has `n_in[k]` lanes towards the centre (on its left side seen from the centre) and
    `n_out[k]` lanes away. Connectors join every inbound lane to the allowed outbound lanes
    (rightmost lane turns right, leftmost turns left, all go straight). `signal_groups[k]`
    gives the signal group of arm k's approaches; `stop_arms` have stop signs. `center` ([2])
    places the junction (default: the origin); `arm_far` fixes the far end (distance from the
    centre) of some arms, so that arms of neighbouring junctions meet (grid layouts). Returns
    the inbound and outbound lanes per arm.
    """
    c0 = np.zeros(2) if center is None else np.asarray(center, np.float64)
    na = len(angles)
    u = [geo.unit(a) for a in angles]
    nrm = [geo.rot90(x) for x in u]
    h_in = [n_in[k] * w for k in range(na)]
    h_out = [n_out[k] * w for k in range(na)]
    r_m = [max(h_in[k], h_out[k], 6.0) + 2.0 for k in range(na)]
    corners: dict[int, np.ndarray | None] = {}
    fillet = float(rng.uniform(4.0, 8.0))
    for k in range(na):
        j = (k + 1) % na
        gap = (angles[j] - angles[k]) % (2 * math.pi)
        corners[k] = None
        if gap < math.radians(150):
            sol = geo.line_intersection(nrm[k] * h_in[k], u[k], -nrm[j] * h_out[j], u[j])
            if sol is not None:
                t, tp = sol
                corners[k] = nrm[k] * h_in[k] + u[k] * t
                r_m[k] = max(r_m[k], t + fillet)
                r_m[j] = max(r_m[j], tp + fillet)
    cw_w = float(rng.uniform(3.0, 4.5))
    r_stop = [r_m[k] + (cw_w + 1.5 if k in crosswalk_arms else 1.0) for k in range(na)]
    r_far = [r_stop[k] + arm_length * float(rng.uniform(0.85, 1.15)) for k in range(na)]
    for k, far in (arm_far or {}).items():
        if far < r_stop[k] + 10.0:
            raise ValueError(f"build_junction: arm {k} ends at {far:.1f} m, within 10 m of its stop line ({r_stop[k]:.1f} m)")
        r_far[k] = far
    sw = float(rng.uniform(2.2, 3.0))  # sidewalk line beyond the road edge

    def pt(k: int, r: float, lat: float) -> np.ndarray:
        return c0 + u[k] * r + nrm[k] * lat

    lanes_in: list[list[Lane]] = []
    lanes_out: list[list[Lane]] = []
    crosswalk_of: dict[int, int] = {}
    for k in range(na):
        lanes_in.append(
            [
                rm.add_lane(geo.line(pt(k, r_far[k], (i + 0.5) * w), pt(k, r_stop[k], (i + 0.5) * w)), speed_limits[k], rightmost=i == n_in[k] - 1)
                for i in range(n_in[k])
            ]
        )
        lanes_out.append(
            [
                rm.add_lane(geo.line(pt(k, r_stop[k], -(i + 0.5) * w), pt(k, r_far[k], -(i + 0.5) * w)), speed_limits[k], rightmost=i == n_out[k] - 1)
                for i in range(n_out[k])
            ]
        )
        # road lines along the arm (from the stop line outwards)
        center = geo.line(pt(k, r_stop[k], 0.0), pt(k, r_far[k], 0.0))
        add_lane_lines(rm, center, n_out[k], n_in[k], w, two_way=True)
        if k in crosswalk_arms:
            a, b = r_m[k] + 0.5, r_m[k] + 0.5 + cw_w
            crosswalk_of[k] = len(rm.crosswalks)
            rm.crosswalks.append(np.array([pt(k, a, -h_out[k] - 0.5), pt(k, b, -h_out[k] - 0.5), pt(k, b, h_in[k] + 0.5), pt(k, a, h_in[k] + 0.5)]))  # [4, 2]
            rc = 0.5 * (a + b)
            for side in (1.0, -1.0):
                lat_a = h_in[k] + sw if side > 0 else -(h_out[k] + sw)
                lat_b = -(h_out[k] + sw) if side > 0 else h_in[k] + sw
                r0 = rc + float(rng.uniform(6.0, 25.0))
                r1 = rc + float(rng.uniform(6.0, 25.0))
                path = np.concatenate([geo.line(pt(k, r0, lat_a), pt(k, rc, lat_a), 0.5)[:-1], geo.line(pt(k, rc, lat_a), pt(k, rc, lat_b), 0.5)[:-1], geo.line(pt(k, rc, lat_b), pt(k, r1, lat_b), 0.5)])
                edge_a = (r0 - rc) + sw
                width = h_in[k] + h_out[k]
                rm.crossing_paths.append(crossing_path(path, edge_a - 0.6, edge_a + width + 0.8, crosswalk_of[k]))
        for lat in (h_in[k] + sw, -(h_out[k] + sw)):
            rm.sidewalks.append(geo.line(pt(k, r_m[k] + 1.0, lat), pt(k, r_far[k], lat)))
        if k in stop_arms:
            rm.stop_signs.append((pt(k, r_stop[k], h_in[k] + 0.8), [lane.id for lane in lanes_in[k]]))

    # connectors
    for k in range(na):
        head_in = angles[k] + math.pi
        for j in range(na):
            if j == k:
                continue
            delta = float(geo.wrap(angles[j] - head_in))
            if abs(delta) > math.radians(150):
                continue
            turn = "straight" if abs(delta) < math.radians(35) else ("right" if delta < 0 else "left")
            if turn == "straight":
                pairs = [(i, min(i, n_out[j] - 1)) for i in range(n_in[k])]
            elif turn == "right":
                pairs = [(n_in[k] - 1, n_out[j] - 1)]
            else:
                pairs = [(0, 0)]
            if k in stop_arms:
                prio = 0
            elif priority_arms is not None and k not in priority_arms:
                prio = 0
            else:
                prio = 1 if turn == "left" else 2
            for i_in, i_out in pairs:
                lat_in, lat_out = (i_in + 0.5) * w, -(i_out + 0.5) * w
                p0, m0 = pt(k, r_stop[k], lat_in), pt(k, r_m[k], lat_in)
                m3, p3 = pt(j, r_m[j], lat_out), pt(j, r_stop[j], lat_out)
                mid = geo.smooth_join(m0, -u[k], m3, u[j])
                pts = np.concatenate([geo.line(p0, m0)[:-1], mid[:-1], geo.line(m3, p3)])  # [n, 2]
                limit = min(speed_limits[k], speed_limits[j])
                if turn != "straight":
                    hd = np.unwrap(geo.tangent_headings(geo.resample(mid, 1.0)))  # [m]
                    curv = float(np.abs(np.diff(hd)).max()) + 1e-6  # rad per metre
                    limit = min(limit, math.sqrt(2.5 / curv))  # lateral acceleration <= 2.5 m/s^2
                cws = [crosswalk_of[x] for x in (k, j) if x in crosswalk_of]
                rm.add_connector(
                    lanes_in[k][i_in], lanes_out[j][i_out], pts, turn, prio, limit,
                    signal_group=signal_groups[k] if signal_groups is not None else -1,
                    stop_sign=k in stop_arms, crosswalks=cws,
                )

    # road edges: one per pair of neighbouring arms, road on the left
    for k in range(na):
        j = (k + 1) % na
        a_far, a_m = pt(k, r_far[k], h_in[k]), pt(k, r_m[k], h_in[k])
        b_m, b_far = pt(j, r_m[j], -h_out[j]), pt(j, r_far[j], -h_out[j])
        c = corners[k]
        bend = geo.quad_bezier(a_m, c0 + c, b_m, 24) if c is not None else geo.line(a_m, b_m, 1.0)
        edge = np.concatenate([geo.line(a_far, a_m, 2.0)[:-1], geo.resample(bend, 1.0)[:-1], geo.line(b_m, b_far, 2.0)])  # [n, 2]
        rm.road_edges.append((int(RoadEdgeType.BOUNDARY), edge))
    return lanes_in, lanes_out
