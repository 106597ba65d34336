"""Agent behaviour for synthetic scenes: one vectorised 10 Hz simulation of every agent.

Every agent (vehicle, cyclist, pedestrian) moves along a fixed path (a lane route or a walking
line) with a lateral offset; its longitudinal motion is the Intelligent Driver Model (IDM)
with per-agent parameters and AR(1) acceleration noise. Leaders come from two sources, both
vectorised over all agent pairs:

- path leaders: agents ahead on a lane of the follower's route (exact arc-length gaps);
- cone leaders: any agent whose box lies ahead within the follower's corridor (merges,
  diverging lanes, cyclists, pedestrians).

Junction rules are gates: a route's connector (junction lane, or lane across a mid-block
crosswalk) can be entered only with a reservation. Reservations of conflicting connectors
exclude each other, are denied on red (and on yellow unless the vehicle cannot stop), need a
full stop first at stop signs, and lower-priority movements (left turns, the minor road)
also need an accepted gap to approaching higher-priority traffic. Walkers reserve their
crosswalk the same way; vehicles yield to walkers on or waiting at a crosswalk. A vehicle
without reservation treats its stop line as a standing obstacle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from smart_r1.data.scene import AgentType, SignalState
from smart_r1.data.synth import geometry as geo
from smart_r1.data.synth.roadmap import RoadMap

DT = 0.1  # log step (s)
SUB = 3  # log steps per decision step
DT_SIM = DT * SUB  # decision (reaction) interval: accelerations are held constant over it
N_LOG = 91
PATH_DS = 0.5  # path sampling step (m)
INF = 1e9
VEH, PED, CYC = int(AgentType.VEHICLE), int(AgentType.PEDESTRIAN), int(AgentType.CYCLIST)
# Driving styles (SynthConfig.driver_styles): probabilities of cautious / normal / aggressive and
# the factors each applies to an agent's parameters (desired speed, time headway, minimum gap,
# acceleration, comfortable deceleration, noise, accepted gap, stop-sign wait).
STYLE_P = (0.25, 0.5, 0.25)
STYLE_FACTORS = {
    "v0f": (0.93, 1.0, 1.07),
    "T": (1.3, 1.0, 0.7),
    "s0": (1.2, 1.0, 0.8),
    "a": (0.8, 1.0, 1.25),
    "b": (0.85, 1.0, 1.2),
    "sigma": (0.8, 1.0, 1.4),
    "gap_t": (1.3, 1.0, 0.65),
    "stop_wait": (1.5, 1.0, 0.5),
}


@dataclass
class TrafficLog:
    """Logged tracks (only agents valid at some logged step), in track order."""

    agent_type: np.ndarray  # [n, ] int8
    size: np.ndarray  # [n, 3] length, width, height
    x: np.ndarray  # [n, 91]
    y: np.ndarray  # [n, 91]
    heading: np.ndarray  # [n, 91]
    vx: np.ndarray  # [n, 91]
    vy: np.ndarray  # [n, 91]
    valid: np.ndarray  # [n, 91] bool
    signal_states: np.ndarray  # [n_group, 91] int8 (empty when the layout has no signals)


class _PathBank:
    """Routes/walking lines resampled at PATH_DS, packed in flat arrays for vectorised lookup."""

    def __init__(self) -> None:
        self.xy: list[np.ndarray] = []
        self.head: list[np.ndarray] = []
        self.lat_scale: list[np.ndarray] = []
        self.meta: list[dict] = []
        self.offset = 0

    def add(self, pts: np.ndarray, lane_idx: list[int], lane_start: list[float], **meta) -> int:
        pts = geo.resample(pts, PATH_DS)  # [m, 2]
        head = np.unwrap(geo.tangent_headings(pts))  # [m]
        # lateral offsets fade out in tight turns (a cyclist keeps clear of the corner curb)
        curv = np.abs(np.gradient(head)) / PATH_DS  # [m] 1/m
        scale = np.clip(1.0 - 12.0 * curv, 0.0, 1.0)
        win = np.ones(21) / 21.0
        scale = np.convolve(np.pad(scale, 10, mode="edge"), win, mode="valid")  # [m] smooth over ~10 m
        scale = np.minimum(scale, np.convolve(np.pad(scale, 10, mode="edge"), win, mode="valid"))
        self.xy.append(pts)
        self.head.append(head)
        self.lat_scale.append(scale)
        self.meta.append(dict(off=self.offset, n=pts.shape[0], length=(pts.shape[0] - 1) * PATH_DS, lanes=lane_idx, starts=lane_start, **meta))
        self.offset += pts.shape[0]
        return len(self.meta) - 1

    def pack(self) -> None:
        self.XY = np.concatenate(self.xy, axis=0)  # [n_total, 2]
        self.H = np.concatenate(self.head, axis=0)  # [n_total]
        self.LS = np.concatenate(self.lat_scale, axis=0)  # [n_total]


class TrafficSim:
    def __init__(
        self, rm: RoadMap, rng: np.random.Generator, config, n_target: int, min_agents: int | None = None,
        pull_out_spots: list | None = None, static_spots: list | None = None,
    ) -> None:
        self.rm, self.rng, self.cfg = rm, rng, config
        self.pull_out_spots = list(pull_out_spots or [])  # parking spots whose vehicle pulls out some time (needs lane changes on)
        # where the static parked cars stand (known to vehicles pulling out): [n, 2]
        self.static_xy = np.array([sp[0] for sp in static_spots], np.float64).reshape(-1, 2) if static_spots else np.zeros((0, 2))
        self.n_target = n_target
        self.min_agents = config.min_agents if min_agents is None else min_agents
        n_lane = len(rm.lanes)
        self.n_conn = len(rm.connectors)
        self.n_cw = len(rm.crosswalks)
        # ----- type budget -----
        has_walk = bool(rm.sidewalks)
        n_ped = int(round(n_target * config.pedestrian_fraction * rng.uniform(0.5, 1.5))) if has_walk else 0
        n_cyc = int(round(n_target * config.cyclist_fraction * rng.uniform(0.5, 1.5)))
        if n_target >= 12:
            n_ped, n_cyc = max(n_ped, 1 if has_walk else 0), max(n_cyc, 1)
        n_veh = max(1, n_target - n_ped - n_cyc)
        self.budget = {VEH: n_veh, PED: n_target - n_veh - n_cyc if n_ped else 0, CYC: n_cyc}
        self.budget[VEH] = n_target - self.budget[PED] - self.budget[CYC]
        # ----- paths -----
        self.bank = _PathBank()
        self.route_path: dict[tuple[int, ...], int] = {}
        lane_len = {lane.id: lane.length for lane in rm.lanes}
        for lane in rm.lanes:
            if lane.connector >= 0:
                continue
            for route in rm.routes_from(lane.id):
                pts, starts, s = [], [], 0.0
                for i, lid in enumerate(route):
                    p = rm.lane_by_id[lid].pts
                    pts.append(p if i == 0 else p[1:])
                    starts.append(s)
                    s += lane_len[lid]
                gate = [i for i, lid in enumerate(route) if rm.lane_by_id[lid].connector >= 0]
                k = gate[0] if gate else -1
                self.route_path[route] = self.bank.add(
                    np.concatenate(pts, 0), [rm.lane_index[lid] for lid in route], starts,
                    conn=rm.lane_by_id[route[k]].connector if k >= 0 else -1,
                    gate_s0=starts[k] if k >= 0 else math.inf,
                    gate_len=lane_len[route[k]] if k >= 0 else 0.0,
                    bike=all(rm.lane_by_id[lid].rightmost for lid in route),
                    limits=[rm.lane_by_id[lid].speed_limit for lid in route],
                    # later gates of routes through several junctions (grid layouts): (conn, s0, len)
                    more_gates=[(rm.lane_by_id[route[g]].connector, starts[g], lane_len[route[g]]) for g in gate[1:]],
                )
        self.walk_paths: list[int] = []
        pseudo = n_lane
        for sw in rm.sidewalks:
            for pts in (sw, sw[::-1]):
                self.walk_paths.append(self.bank.add(pts, [pseudo], [0.0], conn=-1, cw=-1, gate_s0=math.inf, gate_s1=math.inf))
                pseudo += 1
        self.cross_paths: list[int] = []
        for cp in rm.crossing_paths:
            self.cross_paths.append(self.bank.add(cp.pts, [pseudo], [0.0], conn=-1, cw=cp.crosswalk, gate_s0=cp.gate_s0, gate_s1=cp.gate_s1))
            pseudo += 1
        self.jay_paths: list[int] = []  # crossings outside crosswalks (SynthConfig.jaywalk_fraction)
        if config.jaywalk_fraction > 0:
            for jp in rm.jaywalk_paths:
                self.jay_paths.append(self.bank.add(jp.pts, [pseudo], [0.0], conn=-1, cw=-1, gate_s0=jp.gate_s0, gate_s1=jp.gate_s1,
                                                    jay=True, road_w=jp.gate_s1 - jp.gate_s0))
                pseudo += 1
        self.bank.pack()
        self.K = max(len(m["lanes"]) for m in self.bank.meta)
        # ----- agent arrays: one slot per agent ever created, [cap] unless noted -----
        cap = 2 * n_target + 32
        self.cap = cap
        f = lambda v=0.0: np.full(cap, v, np.float64)  # noqa: E731
        self.type = np.zeros(cap, np.int8)
        self.L, self.W, self.Hgt = f(), f(), f()
        self.path_off = np.zeros(cap, np.int64)
        self.path_n = np.ones(cap, np.int64) * 2
        self.path_len = f()
        self.lat = f()
        self.R = np.full((cap, self.K), -1, np.int64)  # [cap, K] lane (or pseudo-lane) index
        self.C = np.full((cap, self.K), INF)  # [cap, K] start arc length of each route lane
        self.lim = np.full((cap, self.K), 30.0)  # [cap, K] speed limit per route lane
        self.gate_s0, self.gate_s1 = f(math.inf), f(math.inf)
        self.next_gates: list[list] = [[] for _ in range(cap)]  # per slot: gates after the current one
        self.conn = np.full(cap, -1, np.int64)
        self.cw = np.full(cap, -1, np.int64)
        self.granted = np.zeros(cap, bool)
        self.passed = np.zeros(cap, bool)
        self.stopped_t = f()
        self.v0f, self.T, self.s0, self.a, self.b = f(1.0), f(1.5), f(2.0), f(1.5), f(2.0)
        self.sigma, self.noise = f(), f()
        self.gap_t, self.stop_wait = f(4.0), f(1.0)
        self.style = np.ones(cap, np.int8)  # [cap] 0 cautious, 1 normal, 2 aggressive
        self.jay = np.zeros(cap, bool)  # [cap] walker on a crossing outside a crosswalk
        # lane changes (SynthConfig.lane_change_rate): a vehicle switches to the route of a parallel
        # lane; its lateral offset `lc_shift` fades out smoothly over `lc_len` metres from `lc_s0`.
        # Poses are then logged per step (a path switch would change the past otherwise).
        self.lc_on = config.lane_change_rate > 0
        if self.lc_on:
            self.lc_s0, self.lc_len, self.lc_shift = f(), f(), f()
            self.log_xy = np.zeros((cap, N_LOG, 2))  # [cap, 91, 2]
            self.log_h = np.zeros((cap, N_LOG))  # [cap, 91]
            self.neighbours = self._parallel_lanes()
        self.held = np.zeros(cap, bool)  # [cap] parked, waiting to pull out into its lane
        self.held_R = {}  # slot -> route lanes while held (held agents are on no lane for the others)
        self.s, self.v = f(), f()
        self.alive = np.zeros(cap, bool)
        self.ever_logged = np.zeros(cap, bool)
        self.n_used = 0
        self._ver, self._cache_ver, self._cache = 0, -1, {}
        self.counts = {VEH: 0, PED: 0, CYC: 0}  # tracks so far (alive, or logged at some step)
        self.lane_start_ids = [lane.id for lane in rm.source_lanes()]
        self.conn_prio = np.array([c.priority for c in rm.connectors], np.int64)  # [n_conn]
        self.conn_group = np.array([c.signal_group for c in rm.connectors], np.int64)  # [n_conn] -1: no signal
        self.conn_stop = np.array([c.stop_sign for c in rm.connectors], bool)  # [n_conn]
        self.holders = np.zeros(self.n_conn, np.int64)  # [n_conn] reservations held
        self.cw_busy = np.zeros(self.n_cw, np.int64)  # [n_cw] walkers on the crosswalk
        self.cw_conns = [np.array([i for i, c in enumerate(rm.connectors) if cw in c.crosswalks], np.int64) for cw in range(self.n_cw)]  # n_cw x [k]
        self.conn_cws = [np.array(c.crosswalks, np.int64) for c in rm.connectors]  # n_conn x [k]
        # logs: arc length and speed per logged step (poses are computed once at the end)
        self.log_s = np.zeros((cap, N_LOG))  # [cap, 91] arc length
        self.log_v = np.zeros((cap, N_LOG))  # [cap, 91] speed
        self.log_valid = np.zeros((cap, N_LOG), bool)  # [cap, 91]

    # ------------------------------------------------------------------ agents
    def _new_agent(self, kind: int, path: int, s: float, v: float, lat: float | None = None) -> int | None:
        if self.n_used >= self.cap:
            return None
        i = self.n_used
        self.n_used += 1
        rng = self.rng
        m = self.bank.meta[path]
        self.type[i] = kind
        if kind == VEH:
            big = rng.random() < 0.1
            self.L[i] = rng.uniform(5.5, 7.5) if big else rng.uniform(4.0, 5.4)
            self.W[i] = rng.uniform(2.2, 2.5) if big else rng.uniform(1.8, 2.1)
            self.Hgt[i] = rng.uniform(2.5, 3.2) if big else rng.uniform(1.4, 1.9)
            self.v0f[i] = rng.uniform(0.8, 1.15)
            self.T[i], self.s0[i] = rng.uniform(1.0, 2.2), rng.uniform(1.8, 3.2)
            self.a[i], self.b[i] = rng.uniform(1.0, 2.2) * (0.7 if big else 1.0), rng.uniform(1.5, 2.8)
            self.sigma[i] = rng.uniform(0.03, 0.25)
            self.lat[i] = 0.0 if big else float(np.clip(rng.normal(0.0, 0.08), -0.15, 0.15))
        elif kind == CYC:
            self.L[i], self.W[i], self.Hgt[i] = rng.uniform(1.6, 2.0), rng.uniform(0.6, 0.8), rng.uniform(1.6, 1.9)
            self.v0f[i] = 1.0
            self.T[i], self.s0[i] = rng.uniform(1.0, 1.8), rng.uniform(1.5, 2.5)
            self.a[i], self.b[i] = rng.uniform(0.6, 1.2), rng.uniform(1.5, 2.5)
            self.sigma[i] = rng.uniform(0.05, 0.2)
            lane_w = 3.3
            self.lat[i] = -(lane_w / 2 - self.W[i] / 2 - rng.uniform(0.35, 0.6))  # right of the lane centre
        else:
            self.L[i] = rng.uniform(0.45, 0.9)
            self.W[i] = float(np.clip(self.L[i] * rng.uniform(0.8, 1.25), 0.45, 0.95))  # roughly square
            self.Hgt[i] = rng.uniform(1.5, 1.95)
            self.v0f[i] = 1.0
            self.T[i], self.s0[i], self.a[i], self.b[i] = rng.uniform(0.6, 1.2), rng.uniform(0.8, 1.2), 0.8, 1.5
            self.sigma[i] = rng.uniform(0.02, 0.1)
            # keep right: sidewalk walkers well clear of walkers waiting at the curb; on crossing
            # paths (with rounded corners) a moderate offset so queues round corners without overlapping
            crossing = np.isfinite(m.get("gate_s0", math.inf))
            # (the official collision check is the full box with rounded corners: walkers passing
            # each other need >= ~1 m between centres)
            self.lat[i] = (-rng.uniform(0.5, 0.7) if crossing else -rng.uniform(0.5, 0.9)) if lat is None else lat
        self.path_off[i], self.path_n[i], self.path_len[i] = m["off"], m["n"], m["length"]
        k = len(m["lanes"])
        self.R[i] = -1
        self.C[i] = INF
        self.R[i, :k] = m["lanes"]
        self.C[i, :k] = m["starts"]
        self.conn[i] = self.cw[i] = -1
        self.jay[i] = bool(m.get("jay", False))
        self.held[i] = False
        if self.lc_on:
            self.lc_s0[i] = self.lc_len[i] = self.lc_shift[i] = 0.0
        if kind == PED:
            self.next_gates[i] = []
            self.lim[i] = rng.uniform(1.0, 1.6)
            self.cw[i] = m.get("cw", -1)
            self.gate_s0[i], self.gate_s1[i] = m["gate_s0"], m["gate_s1"]
        else:
            self.lim[i, :k] = m["limits"]
            self.lim[i, k:] = m["limits"][-1]
            if kind == CYC:
                self.lim[i] = np.minimum(self.lim[i], rng.uniform(4.0, 7.0))
            self.conn[i] = m["conn"]
            self.gate_s0[i] = m["gate_s0"]
            self.gate_s1[i] = m["gate_s0"] + m["gate_len"] + self.L[i] / 2 + 1.0
            self.next_gates[i] = list(m.get("more_gates", ()))
        self.gap_t[i] = rng.uniform(3.0, 5.0)
        self.stop_wait[i] = rng.uniform(0.3, 1.5)
        self.style[i] = 1
        if self.cfg.driver_styles and kind != PED:
            self._apply_style(i, int(rng.choice(3, p=STYLE_P)))
        self.s[i], self.v[i] = s, v
        self.granted[i] = self.passed[i] = self.ever_logged[i] = False
        self.stopped_t[i] = self.noise[i] = 0.0
        self.alive[i] = True
        self._ver += 1
        self.counts[kind] += 1
        return i

    def _apply_style(self, i: int, style: int) -> None:
        """Scale agent i's IDM / gap-acceptance parameters by its driving style (0 cautious, 1 normal, 2 aggressive)."""
        self.style[i] = style
        for name, factors in STYLE_FACTORS.items():
            arr = getattr(self, name)
            arr[i] *= factors[style]

    def _count(self, kind: int) -> int:
        return self.counts[kind]

    def _tracks(self) -> int:
        return self.counts[VEH] + self.counts[PED] + self.counts[CYC]

    def _discard(self, i: int) -> None:
        """Undo the agent just created in slot i (placement failed)."""
        self.alive[i] = False
        self._ver += 1
        self.counts[int(self.type[i])] -= 1
        self.n_used -= 1

    def _routes(self, lane_id: int, bike: bool) -> list[int]:
        paths = [self.route_path[r] for r in self.rm.routes_from(lane_id)]
        if bike:
            paths = [p for p in paths if self.bank.meta[p]["bike"]]
        return paths

    def place_initial(self, fill: float) -> None:
        """Queue vehicles/cyclists along every non-gated lane (round robin) and walkers on paths."""
        rng = self.rng
        want = {k: int(round(fill * n)) for k, n in self.budget.items()}
        lanes = [lane for lane in self.rm.lanes if lane.connector < 0]
        order = rng.permutation(len(lanes))
        cursor, prev_v, queue = {}, {}, {}
        for idx in order:
            lane = lanes[idx]
            gated = any(self.rm.lane_by_id[e].connector >= 0 for e in lane.exit)
            drive_off = 0.0 if (gated or lane.exit) else 0.5 * lane.speed_limit * self.cfg.warmup_seconds
            dense = float(np.clip((self.n_target - 40) / 100, 0.0, 0.6))
            queue[lane.id] = rng.random() < (0.6 if gated else dense)  # slow queue / congested flow
            cursor[lane.id] = lane.length - (rng.uniform(2.0, 12.0) if gated else rng.uniform(4.0, 30.0) + drive_off)
            prev_v[lane.id] = None
        active = [lanes[i] for i in order]
        while active and (self._count(VEH) < want[VEH] or self._count(CYC) < want[CYC]):
            nxt = []
            for lane in active:
                kind = VEH
                if lane.rightmost and self._count(CYC) < want[CYC] and rng.random() < 0.35:
                    kind = CYC
                if self._count(kind) >= want[kind]:
                    kind = CYC if kind == VEH else VEH
                    if self._count(kind) >= want[kind] or (kind == CYC and not lane.rightmost):
                        continue
                paths = self._routes(lane.id, kind == CYC)
                if not paths:
                    continue
                path = paths[int(rng.integers(len(paths)))]
                i = self._new_agent(kind, path, 0.0, 0.0)
                if i is None:
                    return
                vmax = self.lim[i, 0] * self.v0f[i] * (rng.uniform(0.0, 0.35) if queue[lane.id] else rng.uniform(0.55, 0.95))
                front = cursor[lane.id]
                s = front - self.L[i] / 2
                v = vmax
                if prev_v[lane.id] is not None:
                    pv = prev_v[lane.id]
                    need = self.s0[i] + v * self.T[i] * rng.uniform(1.0, 1.4) + max(0.0, v * v - pv * pv) / (2 * 3.0) + rng.exponential(4.0)
                    s -= need
                gate_dist = self.gate_s0[i] - (s + self.L[i] / 2)
                if np.isfinite(gate_dist):
                    v = min(v, math.sqrt(2 * 1.2 * max(0.0, gate_dist - 6.0)))
                if s - self.L[i] / 2 < 1.0:
                    self._discard(i)
                    continue
                self.s[i], self.v[i] = s, v
                cursor[lane.id] = s - self.L[i] / 2
                prev_v[lane.id] = v
                nxt.append(lane)
            active = nxt
        # walkers (they also make up for vehicles the lanes could not hold)
        n_walk = want[PED]
        if self.walk_paths:
            n_walk = max(n_walk, sum(want.values()) - self._count(VEH) - self._count(CYC))
            self.budget[PED] = max(self.budget[PED], n_walk)
        for _ in range(n_walk * 3):
            if self._count(PED) >= n_walk:
                break
            if self.jay_paths and rng.random() < self.cfg.jaywalk_fraction:
                path = self.jay_paths[int(rng.integers(len(self.jay_paths)))]
            else:
                use_cross = self.cross_paths and rng.random() < 0.5
                path = (self.cross_paths if use_cross else self.walk_paths)[int(rng.integers(len(self.cross_paths if use_cross else self.walk_paths)))]
            m = self.bank.meta[path]
            hi = min(m["length"] - 1.0, m["gate_s0"] - 0.5)
            if hi < 1.0:
                continue
            s = float(rng.uniform(0.5, hi))
            i = self._new_agent(PED, path, s, 0.0)
            if i is None:
                break
            self.v[i] = self.lim[i, 0] * rng.uniform(0.6, 1.0)
            if self._too_close(i):
                self._discard(i)

    def _too_close(self, i: int) -> bool:
        """Whether agent i's box (inflated) overlaps any other live agent's at placement."""
        idx = np.flatnonzero(self.alive[: self.n_used])
        idx = idx[idx != i]
        if idx.size == 0:
            return False
        pos, _ = self._pose(np.array([i]))
        pj, _ = self._pose(idx)
        d = np.linalg.norm(pj - pos, axis=1)
        rad = 0.5 * np.hypot(self.L[idx], self.W[idx]) + 0.5 * math.hypot(self.L[i], self.W[i]) + 1.0
        return bool((d < rad).any())

    def spawn(self) -> None:
        rng = self.rng
        if self._tracks() >= self.n_target:
            return
        p = self.cfg.spawn_rate_per_lane_hz * DT_SIM
        if self._tracks() < self.min_agents:
            p = 1.0  # below the minimum: fill every free lane start
        for lid in self.lane_start_ids:
            if self._tracks() >= self.n_target or rng.random() >= p:
                continue
            need_veh = self._count(VEH) < self.budget[VEH]
            need_cyc = self._count(CYC) < self.budget[CYC] and self.rm.lane_by_id[lid].rightmost
            if not (need_veh or need_cyc):
                continue
            kind = CYC if need_cyc and (not need_veh or rng.random() < 0.3) else VEH
            paths = self._routes(lid, kind == CYC)
            if not paths:
                continue
            i = self._new_agent(kind, paths[int(rng.integers(len(paths)))], 0.0, 0.0)
            if i is None:
                return
            li = self.rm.lane_index[lid]
            others = np.flatnonzero(self.alive[: self.n_used])
            others = others[others != i]
            on_lane = others[(self.R[others, 0] == li) | (self.R[others] == li).any(1)]
            v = self.lim[i, 0] * self.v0f[i] * rng.uniform(0.8, 1.0)
            s = self.L[i] / 2 + 0.5
            ok = True
            if on_lane.size:
                k = np.argmax(self.R[on_lane] == li, axis=1)
                s_in = self.s[on_lane] - self.C[on_lane, k]
                j = on_lane[np.argmin(s_in)]
                gap = s_in.min() - self.L[j] / 2 - s - self.L[i] / 2
                vl = self.v[j]
                v = min(v, vl + 1.0)
                ok = gap > self.s0[i] + v * self.T[i] * 1.3 + max(0.0, v * v - vl * vl) / (2 * 2.0) + 2.0
            self.s[i], self.v[i] = s, v
            if not ok or self._too_close(i):
                self._discard(i)
        # walkers entering at sidewalk ends
        if self.walk_paths and self._tracks() < self.n_target and self._count(PED) < self.budget[PED] and rng.random() < 0.16:
            paths = self.walk_paths + self.cross_paths
            if self.jay_paths and rng.random() < self.cfg.jaywalk_fraction:
                paths = self.jay_paths
            path = paths[int(rng.integers(len(paths)))]
            i = self._new_agent(PED, path, 0.3, 0.0)
            if i is not None:
                self.v[i] = self.lim[i, 0] * rng.uniform(0.7, 1.0)
                if self._too_close(i):
                    self._discard(i)

    # ------------------------------------------------------------------ kinematics
    def _pose(self, idx: np.ndarray, s: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Position and heading of agents `idx` at arc lengths `s` (default: current).  -> [n, 2], [n]"""
        s = self.s[idx] if s is None else s
        f = np.clip(s / PATH_DS, 0.0, self.path_n[idx] - 1.000001)  # [n]
        i0 = f.astype(np.int64)
        t = f - i0  # [n]
        g0 = self.path_off[idx] + i0
        xy = self.bank.XY[g0] * (1 - t)[:, None] + self.bank.XY[g0 + 1] * t[:, None]  # [n, 2]
        h0 = self.bank.H[g0]
        h = h0 + (self.bank.H[g0 + 1] - h0) * t  # [n]
        fade = self.type[idx] != PED  # walkers keep their side (they pass each other); riders fade in turns
        ls = self.bank.LS[g0] * (1 - t) + self.bank.LS[g0 + 1] * t  # [n]
        lat = self.lat[idx] * np.where(fade, ls, 1.0)  # [n]
        if self.lc_on:  # lane change in progress: offset fading out with a smoothstep over lc_len
            ln = self.lc_len[idx]
            u = np.clip((s - self.lc_s0[idx]) / np.maximum(ln, 1e-6), 0.0, 1.0)  # [n]
            shift = np.where(ln > 0, self.lc_shift[idx] * (1.0 - u * u * (3.0 - 2.0 * u)), 0.0)
            slope = np.where(ln > 0, -self.lc_shift[idx] * 6.0 * u * (1.0 - u) / np.maximum(ln, 1e-6), 0.0)  # d shift / ds
            lat = lat + shift
        xy[:, 0] -= np.sin(h) * lat  # lateral offset to the left: -right * lat
        xy[:, 1] += np.cos(h) * lat
        if self.lc_on:
            h = h + np.arctan(slope)
        return xy, h

    def _active(self) -> dict:
        """Per-agent constants gathered for the live agents (rebuilt only when the set changes)."""
        if self._cache_ver != self._ver:
            idx = np.flatnonzero(self.alive[: self.n_used])  # [n]
            is_ped = self.type[idx] == PED
            L = self.L[idx]
            a, b = self.a[idx], self.b[idx]
            self._cache = dict(
                idx=idx, n=idx.size, ar=np.arange(idx.size), L=L, W=self.W[idx], typ=self.type[idx], is_ped=is_ped,
                C=self.C[idx], R=self.R[idx], lim=self.lim[idx], v0f=self.v0f[idx], Cfin=self.C[idx] < INF,
                a=a, b=b, T=self.T[idx], sab=2.0 * np.sqrt(a * b), sigma=self.sigma[idx], a_max=a * 1.3,
                s0s=np.stack([self.s0[idx], self.s0[idx], np.where(is_ped, 0.2, 1.0)]),  # [3, n]
                half_L=0.5 * L, sumL=0.5 * (L[:, None] + L[None, :]), front=np.where(is_ped, 0.3, 0.5 * L + 0.5),
                cone_w=(0.5 * self.W[idx] + np.where(is_ped, 0.15, 0.45))[:, None],
                ped_lead=is_ped[None, :] & ~is_ped[:, None], end=self.path_len[idx] - np.where(is_ped, 0.3, 0.5 * L + 0.5),
                gate_s0=self.gate_s0[idx], conn=self.conn[idx],
                # a walker crossing outside a crosswalk also stops for vehicles across its way
                jay_follow=(self.jay[idx] & is_ped)[:, None] & ~is_ped[None, :] if self.jay_paths else None,
            )
            self._cache_ver = self._ver
        return self._cache

    def step(self, log_index: int | None, signal_now: np.ndarray | None, to_red: np.ndarray | None = None) -> None:
        """One decision step of DT_SIM: leaders, gates, IDM; logs the 10 Hz sub-steps."""
        if self.lc_on:
            self._lane_changes()
        if self.pull_out_spots:
            self._pull_outs()
        P = self._active()
        idx, n, ar = P["idx"], P["n"], P["ar"]
        if n == 0:
            return
        pos, hd = self._pose(idx)  # [n, 2], [n]
        s, v = self.s[idx], self.v[idx]  # [n]
        L, W, typ = P["L"], P["W"], P["typ"]

        # ----- path leaders: agents ahead on a lane of the follower's route -----
        C, R = P["C"], P["R"]  # [n, K]
        k_cur = (C <= s[:, None]).sum(1) - 1  # [n]
        lane_cur = R[ar, k_cur]  # [n]
        s_in = s - C[ar, k_cur]  # [n]
        M = (R[:, None, :] == lane_cur[None, :, None]) & (self._kk >= k_cur[:, None, None])  # [n, n, K]
        raw = np.where(M, C[:, None, :], INF).min(-1) + (s_in[None, :] - s[:, None])  # [n, n] centre gap along route
        raw[ar, ar] = -1.0
        gap_p = np.where((raw > 0) & (raw < 120), raw - P["sumL"], INF)  # [n, n]
        jp = gap_p.argmin(1)  # [n]
        g_path = gap_p[ar, jp]
        vl_path = v[jp]
        same_lane_ahead = ((lane_cur[:, None] == lane_cur[None, :]) & (s_in[None, :] > s_in[:, None])).any(1)  # [n]

        # ----- cone leaders (complex arithmetic: rotate offsets into each follower's frame) -----
        z = pos[:, 0] + 1j * pos[:, 1]  # [n]
        e = np.exp(1j * hd)  # [n]
        rel = (z[None, :] - z[:, None]) * e.conj()[:, None]  # [n, n]: lon + i lat of j seen from i
        lon, lat = rel.real, rel.imag
        dh = e[None, :] * e.conj()[:, None]  # [n, n] unit complex of heading difference
        acos, asin = np.abs(dh.real), np.abs(dh.imag)
        half_w_j = 0.5 * (W[None, :] * acos + L[None, :] * asin)  # [n, n]
        ext_j = 0.5 * (L[None, :] * acos + W[None, :] * asin)  # [n, n]
        heading_ok = (dh.real > 0.54) | P["ped_lead"]  # |dh| < 1 rad, or a walker ahead of a vehicle
        if P["jay_follow"] is not None:
            heading_ok = heading_ok | P["jay_follow"]
        cone = (lon > 0) & (lon < 35.0) & (np.abs(lat) < P["cone_w"] + half_w_j) & heading_ok
        cone[ar, ar] = False
        mutual = cone & cone.T
        if mutual.any():
            cone &= ~(mutual & (lon > lon.T))  # of a mutual pair, only the one closer behind yields
        gap_c = np.where(cone, lon - P["half_L"][:, None] - ext_j, INF)  # [n, n]
        jc = gap_c.argmin(1)
        g_cone = gap_c[ar, jc]
        vl_cone = np.maximum(0.0, v[jc] * dh[ar, jc].real)

        # ----- gates (reservations) -----
        if self.has_gates:
            self._gates(idx, s, v, L, typ, same_lane_ahead, signal_now, to_red)
            gs0 = self.gate_s0[idx]  # (not the cached copy: a passed gate may have just handed over to the next)
            gated = (~self.granted[idx]) & (gs0 < INF) & (~self.passed[idx])
            g_stop = np.where(gated, gs0 - s - P["front"], INF)  # [n] gap to the stop line
        else:
            gated = np.zeros(n, bool)
            g_stop = np.full(n, INF)

        # ----- IDM -----
        v0 = self._desired_speed(P, s, k_cur)  # [n]
        a, b = P["a"], P["b"]
        dyn = v * P["T"]
        dv = v / P["sab"]
        g = np.stack([g_path, g_cone, g_stop])  # [3, n]
        vl = np.stack([vl_path, vl_cone, np.zeros(n)])  # [3, n]
        ss = P["s0s"] + np.maximum(0.0, dyn + dv * (v - vl))  # [3, n] desired gaps
        acc_int = -a * ((ss / np.maximum(g, 0.05)) ** 2).max(0)  # [n]
        ratio = v / np.maximum(v0, 0.1)
        acc_free = np.where(ratio <= 1.0, a * (1.0 - ratio**4), -b * np.minimum(1.0, ratio - 1.0))  # [n]
        noise = self.noise[idx] * 0.85 + self.rng.standard_normal(n) * 0.53
        self.noise[idx] = noise
        acc = np.clip(acc_free + acc_int + P["sigma"] * noise, -9.0, P["a_max"])  # [n]
        if self.pull_out_spots:
            acc = np.where(self.held[idx], 0.0, acc)  # parked until it pulls out

        # ----- integrate exactly at constant acceleration (stopping inside the step) -----
        t_stop = np.where(acc < 0, np.minimum(DT_SIM, v / np.maximum(-acc, 1e-9)), DT_SIM)  # [n]
        end = P["end"]
        for j in range(SUB):
            tj = np.minimum(j * DT, t_stop)
            sj = s + v * tj + 0.5 * acc * tj * tj
            if log_index is not None and 0 <= log_index + j < N_LOG:
                li = log_index + j
                ok = sj <= end
                ii = idx[ok]
                self.log_s[ii, li] = sj[ok]
                self.log_v[ii, li] = np.maximum(0.0, v + acc * tj)[ok]
                self.log_valid[ii, li] = True
                self.ever_logged[ii] = True
                if self.lc_on:
                    self.log_xy[ii, li], self.log_h[ii, li] = self._pose(ii, sj[ok])
        ts = t_stop
        self.s[idx] = s + v * ts + 0.5 * acc * ts * ts
        self.v[idx] = np.maximum(0.0, v + acc * ts)
        if gated.any() and self.n_conn > 0:
            conn = self.conn[idx]
            near = gated & (conn >= 0) & self.conn_stop[np.maximum(conn, 0)] & (self.v[idx] < 0.3) & (g_stop < 4.0)
            self.stopped_t[idx[near]] += DT_SIM

        # ----- leaving view -----
        gone = idx[self.s[idx] > end]
        for i in gone:
            self._release(int(i))
            if not self.ever_logged[i]:
                self.counts[int(self.type[i])] -= 1  # left during warm-up: never a track
        if gone.size:
            self.alive[gone] = False
            self._ver += 1

    def _desired_speed(self, P, s, k_cur):
        """IDM desired speed: the lowest limit ahead reachable with comfortable braking."""
        C, lim = P["C"], P["lim"]  # [n, K]
        dist = np.maximum(0.0, C - (s + P["half_L"])[:, None])  # [n, K] (0 on the current lane)
        allowed = np.sqrt(lim * lim + 2.4 * dist)  # [n, K]
        ahead = (self._kk[0] >= k_cur[:, None]) & P["Cfin"]
        return np.where(ahead, allowed, INF).min(1) * P["v0f"]  # [n]

    # ------------------------------------------------------------------ reservations
    def _release(self, i: int) -> None:
        if self.granted[i] and not self.passed[i]:
            if self.type[i] == PED:
                if self.cw[i] >= 0:
                    self.cw_busy[self.cw[i]] -= 1
            else:
                self.holders[self.conn[i]] -= 1
        self.passed[i] = True
        self.granted[i] = False
        if self.next_gates[i]:  # a route through several junctions: the next gate applies
            conn, s0, length = self.next_gates[i].pop(0)
            self.conn[i], self.gate_s0[i], self.gate_s1[i] = conn, s0, s0 + length + self.L[i] / 2 + 1.0
            self.passed[i] = False
            self.stopped_t[i] = 0.0
            self._ver += 1  # the cached per-agent gate constants change

    def _gates(self, idx, s, v, L, typ, same_lane_ahead, signal_now, to_red) -> None:
        gate_s0, gate_s1 = self.gate_s0[idx], self.gate_s1[idx]
        pending = np.isfinite(gate_s0) & ~self.passed[idx]
        if not pending.any():
            return
        is_ped = typ == PED
        # release
        done = pending & self.granted[idx] & (s > gate_s1)
        for i in idx[done]:
            self._release(int(i))
        pending &= ~done
        dist = np.where(is_ped, gate_s0 - s, gate_s0 - s - 0.5 * L)  # [n] to the stop line
        veh_pend = pending & ~is_ped
        conn = self.conn[idx]
        # signals: the official check is the box centre crossing the stop point on red, so a
        # reservation holder whose centre would cross on red gives it up while it can stop.
        centre = dist + 0.5 * L + 0.3  # [n] centre to the line
        if signal_now is not None and veh_pend.any():
            grp = np.where(conn >= 0, self.conn_group[np.maximum(conn, 0)], -1)  # [n]
            t_red = np.where(grp >= 0, to_red[np.maximum(grp, 0)], INF)  # [n] seconds until red
            late = centre / np.maximum(v, 0.1) > t_red - 0.2
            revoke = veh_pend & self.granted[idx] & (grp >= 0) & late & (centre > 0) & (v * v < 2 * 6.0 * np.maximum(dist, 1e-3))
            for i in idx[revoke]:
                self.granted[i] = False
                self.holders[self.conn[i]] -= 1
        # walkers waiting at a crosswalk (vehicles yield to them)
        ped_wait = pending & is_ped & ~self.granted[idx] & (dist < 1.5)
        if self.jay_paths:
            jay = self.jay[idx]
            self._jaywalkers(idx, ped_wait & jay, s, v)
            ped_wait &= ~jay
        cw_wait = np.zeros(self.n_cw, bool)  # [n_cw]
        cw_wait[self.cw[idx[ped_wait]]] = True
        for i in idx[ped_wait]:
            cw = self.cw[i]
            if self.cw_conns[cw].size == 0 or self.holders[self.cw_conns[cw]].sum() == 0:
                self.granted[i] = True
                self.cw_busy[cw] += 1
        # vehicles: first in lane, within request distance
        req_d = v * v / (2 * self.b[idx]) + 1.5 * v + 8.0
        cand = veh_pend & ~self.granted[idx] & (dist < req_d) & ~same_lane_ahead
        if not cand.any():
            return
        waiting = veh_pend & ~self.granted[idx]  # approaching vehicles not yet admitted
        w_conn = conn[waiting]
        w_eta = dist[waiting] / np.maximum(v[waiting], 0.5)
        w_go = np.ones(w_conn.size, bool)
        if signal_now is not None:
            grp = self.conn_group[w_conn]
            w_go &= (grp < 0) | (signal_now[np.maximum(grp, 0)] == int(SignalState.GO))
        w_go &= ~self.conn_stop[w_conn]
        w_prio = self.conn_prio[w_conn]
        order = np.lexsort((dist[cand], -self.conn_prio[conn[cand]]))
        for r in order:
            li = np.flatnonzero(cand)[r]
            i = int(idx[li])
            c = int(conn[li])
            if signal_now is not None and self.conn_group[c] >= 0:
                g = self.conn_group[c]
                if signal_now[g] not in (int(SignalState.GO), int(SignalState.CAUTION)):
                    continue
                # time for the centre to reach the line, accelerating at most at a
                ai = self.a[i]
                eta = (-v[li] + math.sqrt(v[li] * v[li] + 2 * ai * max(centre[li], 0.0))) / ai
                if eta > to_red[g] - 1.0:
                    continue
            if self.conn_stop[c] and self.stopped_t[i] < self.stop_wait[i]:
                continue
            if (self.holders[self.rm.conflicts[c]] > 0).any():
                continue
            cws = self.conn_cws[c]
            if cws.size and ((self.cw_busy[cws] > 0).any() or cw_wait[cws].any()):
                continue
            gap_t = self.gap_t[i]
            if self.cfg.gap_jitter > 0:  # gap acceptance redrawn at every decision (hidden randomness)
                gap_t *= 1.0 + self.cfg.gap_jitter * (2.0 * self.rng.random() - 1.0)
            hp = self.rm.conflicts[c][w_conn] & (w_prio > self.conn_prio[c]) & w_go & (w_eta < gap_t)
            if hp.any():
                continue
            self.granted[i] = True
            self.holders[c] += 1

    def _jaywalkers(self, idx, waiting, s, v) -> None:
        """Walkers at the curb of a crossing outside a crosswalk go when every vehicle heading for
        the crossing can still stop comfortably after 3/4 of their (per-decision jittered) accepted
        gap, and none stands on it; vehicles then yield to them like to any walker ahead."""
        if not waiting.any():
            return
        veh = np.flatnonzero(~(self.type[idx] == PED))  # rows of idx
        if veh.size == 0:
            for li in np.flatnonzero(waiting):
                self.granted[idx[li]] = True
            return
        pv, hv = self._pose(idx[veh])  # [m, 2], [m]
        dirv = np.stack([np.cos(hv), np.sin(hv)], 1)  # [m, 2]
        for li in np.flatnonzero(waiting):
            i = int(idx[li])
            m = self.bank.meta[self._path_of(i)]
            # the crossing: from the curb (gate_s0) to the far curb (gate_s1) along the walker's path
            g = self.path_off[i]
            a = self.bank.XY[g + int(self.gate_s0[i] / PATH_DS)]
            b = self.bank.XY[g + min(int(self.gate_s1[i] / PATH_DS), self.path_n[i] - 1)]
            c, half = 0.5 * (a + b), 0.5 * float(np.linalg.norm(b - a)) + 1.0
            rel = c[None] - pv  # [m, 2]
            lon = (rel * dirv).sum(1)
            lat = np.abs(rel[:, 0] * dirv[:, 1] - rel[:, 1] * dirv[:, 0])
            gap = self.gap_t[i] * (1.0 + self.cfg.gap_jitter * (2.0 * self.rng.random() - 1.0))
            # far enough to stop comfortably for the walker (they yield to walkers in their corridor)
            vv = v[veh]
            reach = vv * 0.75 * gap + vv * vv / (2 * 2.5) + self.L[idx[veh]] / 2 + 4.0
            blocking = (lat < half) & (lon > -self.L[idx[veh]] / 2 - 2.0) & (lon < reach)
            if not blocking.any():
                self.granted[i] = True

    # ------------------------------------------------------------------ lane changes
    def _parallel_lanes(self) -> dict[int, list[int]]:
        """Lane index -> indices of the non-gated lanes beside it in the same direction (2.5-4.8 m)."""
        lanes = self.rm.lanes
        out: dict[int, list[int]] = {}
        for a, la in enumerate(lanes):
            if la.connector >= 0 or la.length < 40.0:
                continue
            pa = la.pts[len(la.pts) // 2]
            da = la.pts[min(len(la.pts) - 1, len(la.pts) // 2 + 1)] - la.pts[max(0, len(la.pts) // 2 - 1)]
            da = da / (np.linalg.norm(da) + 1e-9)
            for b, lb in enumerate(lanes):
                if b == a or lb.connector >= 0 or lb.length < 40.0:
                    continue
                d = np.linalg.norm(lb.pts - pa, axis=1)
                k = int(d.argmin())
                if not (2.5 < d[k] < 4.8) or k in (0, len(lb.pts) - 1):
                    continue
                db = lb.pts[min(len(lb.pts) - 1, k + 1)] - lb.pts[max(0, k - 1)]
                if float(np.dot(da, db / (np.linalg.norm(db) + 1e-9))) > 0.97:
                    out.setdefault(a, []).append(b)
        return out

    def _lane_changes(self) -> None:
        """Discretionary lane changes: each vehicle with a parallel lane, not changing lanes and
        not about to need a junction reservation, changes with probability rate x DT_SIM (rate by
        style, x3 when held up below 70 % of its desired speed), when the gaps to the leader and
        the follower in the target lane are safe."""
        n = self.n_used
        live = np.flatnonzero(self.alive[:n] & (self.type[:n] == VEH))
        if live.size == 0:
            return
        s, v = self.s[live], self.v[live]
        k_cur = (self.C[live] <= s[:, None]).sum(1) - 1  # [m]
        lane = self.R[live, np.maximum(k_cur, 0)]
        idle = s > self.lc_s0[live] + self.lc_len[live]
        gate_far = (~self.granted[live]) & ((self.gate_s0[live] - s > 40.0) | self.passed[live] | ~np.isfinite(self.gate_s0[live]))
        has_nb = np.array([int(ln) in self.neighbours for ln in lane], bool)
        cand = idle & gate_far & has_nb & (v > 3.0) & (k_cur >= 0)
        if not cand.any():
            return
        rate = self.cfg.lane_change_rate * np.array([0.4, 1.0, 2.2])[self.style[live]]
        slow = v < 0.7 * self.lim[live, 0] * self.v0f[live]
        go = cand & (self.rng.random(live.size) < rate * np.where(slow, 3.0, 1.0) * DT_SIM)
        for r in np.flatnonzero(go):
            self._try_lane_change(int(live[r]), int(lane[r]))

    def _try_lane_change(self, i: int, lane_idx: int) -> None:
        rng, rm = self.rng, self.rm
        nb = self.neighbours[lane_idx][int(rng.integers(len(self.neighbours[lane_idx])))]
        routes = rm.routes_from(rm.lanes[nb].id)
        path = self.route_path[routes[int(rng.integers(len(routes)))]]
        m = self.bank.meta[path]
        pos, _ = self._pose(np.array([i]))
        pts = self.bank.xy[path]
        j = int(np.linalg.norm(pts - pos[0], axis=1).argmin())
        s_new = j * PATH_DS
        v = self.v[i]
        if not (5.0 < s_new < m["length"] - max(30.0, 4.0 * v)) or s_new > m["gate_s0"] - 40.0:
            return
        q = pts[j]
        dq = self.bank.head[path][j]
        dirq = np.array([math.cos(dq), math.sin(dq)])
        others = np.flatnonzero(self.alive[: self.n_used])
        others = others[others != i]
        if others.size:
            po, ho = self._pose(others)
            rel = po - q
            lon = rel @ dirq
            lat = rel[:, 0] * dirq[1] * -1.0 + rel[:, 1] * dirq[0]
            same = (np.abs(lat) < 2.2) & (np.cos(ho - dq) > 0.8)
            half = 0.5 * (self.L[others] + self.L[i])
            ahead = same & (lon > 0)
            if ahead.any():
                jj = np.flatnonzero(ahead)[lon[ahead].argmin()]
                if lon[jj] - half[jj] < 3.0 + 0.6 * v + 1.5 * max(0.0, v - self.v[others[jj]]):
                    return
            behind = same & (lon <= 0)
            if behind.any():
                jj = np.flatnonzero(behind)[lon[behind].argmax()]
                vb = self.v[others[jj]]
                if -lon[jj] - half[jj] < 3.0 + 0.9 * vb + 2.0 * max(0.0, vb - v):
                    return
            walkers = (self.type[others] == PED) & (np.abs(lat) < 3.0) & (lon > -3.0) & (lon < 30.0 + 2.0 * v)
            if walkers.any():
                return
        # switch to the new route; the lateral offset between the two lanes fades out
        k = len(m["lanes"])
        self.path_off[i], self.path_n[i], self.path_len[i] = m["off"], m["n"], m["length"]
        self.R[i] = -1
        self.C[i] = INF
        self.R[i, :k] = m["lanes"]
        self.C[i, :k] = m["starts"]
        self.lim[i, :k] = m["limits"]
        self.lim[i, k:] = m["limits"][-1]
        self.conn[i] = m["conn"]
        self.gate_s0[i] = m["gate_s0"]
        self.gate_s1[i] = m["gate_s0"] + m["gate_len"] + self.L[i] / 2 + 1.0
        self.next_gates[i] = list(m.get("more_gates", ()))
        self.granted[i] = self.passed[i] = False
        self.stopped_t[i] = 0.0
        self.s[i] = s_new
        self.lc_s0[i], self.lc_len[i], self.lc_shift[i] = s_new, max(25.0, 4.0 * v), 0.0
        base, _ = self._pose(np.array([i]))
        d = pos[0] - base[0]
        self.lc_shift[i] = -d[0] * dirq[1] + d[1] * dirq[0]  # left of the new path: +
        self._ver += 1

    # ------------------------------------------------------------------ pulling out of parking
    def _place_pull_out(self, spot) -> None:
        """A vehicle parked on `spot` (centre, heading, length) that will pull out into the lane
        beside it: an agent on that lane's route, held still, offset sideways onto the spot."""
        xy, hd, _ = spot
        rm, rng = self.rm, self.rng
        best, best_d = None, 6.0
        for lane in rm.lanes:
            if lane.connector >= 0 or not lane.rightmost:
                continue
            d = np.linalg.norm(lane.pts - xy, axis=1)
            k = int(d.argmin())
            seg = lane.pts[min(k + 1, len(lane.pts) - 1)] - lane.pts[max(k - 1, 0)]
            if d[k] < best_d and math.cos(math.atan2(seg[1], seg[0]) - hd) > 0.9:
                best, best_d = lane, float(d[k])
        if best is None:
            return
        routes = rm.routes_from(best.id)
        path = self.route_path[routes[int(rng.integers(len(routes)))]]
        m = self.bank.meta[path]
        j = int(np.linalg.norm(self.bank.xy[path] - xy, axis=1).argmin())
        s0 = j * PATH_DS
        if not (5.0 < s0 < min(m["length"] - 40.0, m["gate_s0"] - 25.0)):
            return
        i = self._new_agent(VEH, path, s0, 0.0)
        if i is None:
            return
        self.lat[i] = 0.0
        self.lc_s0[i], self.lc_len[i], self.lc_shift[i] = s0, 12.0, 0.0
        base, _ = self._pose(np.array([i]))
        h = self.bank.head[path][j]
        d = xy - base[0]
        self.lc_shift[i] = -d[0] * math.sin(h) + d[1] * math.cos(h)
        self.held[i] = True
        self.held_R[i] = self.R[i].copy()
        self.R[i] = -1
        self._ver += 1

    def _pull_outs(self) -> None:
        """Held vehicles pull out (rate ~0.1/s by style) when the lane behind them is clear for a
        comfortable merge and nothing stands just ahead."""
        held = np.flatnonzero(self.held[: self.n_used] & self.alive[: self.n_used])
        if held.size == 0:
            return
        rate = 0.1 * np.array([0.5, 1.0, 2.0])[self.style[held]]
        for i in held[self.rng.random(held.size) < rate * DT_SIM]:
            i = int(i)
            m_off = self.path_off[i]
            j = int(min(self.s[i] / PATH_DS, self.path_n[i] - 1))
            q, h = self.bank.XY[m_off + j], self.bank.H[m_off + j]
            dirq = np.array([math.cos(h), math.sin(h)])
            others = np.flatnonzero(self.alive[: self.n_used])
            others = others[others != i]
            if others.size:
                po, ho = self._pose(others)
                rel = po - q
                lon = rel @ dirq
                lat = -rel[:, 0] * dirq[1] + rel[:, 1] * dirq[0]
                lane_band = (np.abs(lat) < 2.5) & (np.cos(ho - h) > 0.5)
                vb = self.v[others]
                behind = lane_band & (lon < 0) & (-lon < vb * 4.0 + 15.0)
                ahead = (np.abs(lat) < 4.5) & (lon >= 0) & (lon < self.L[i] + 12.0)  # lane and parking strip: room to swing out
                walker = (self.type[others] == PED) & (np.abs(lat) < 4.5) & (np.abs(lon) < 12.0)
                if behind.any() or ahead.any() or walker.any():
                    continue
            if self.static_xy.shape[0]:
                rel = self.static_xy - q
                lon, lat = rel @ dirq, -rel[:, 0] * dirq[1] + rel[:, 1] * dirq[0]
                if ((lon >= 0) & (lon < self.L[i] + 14.0) & (np.abs(lat) < 4.5)).any():
                    continue  # a parked car just ahead: no room to swing out
            self.held[i] = False
            self.R[i] = self.held_R.pop(i)
            self._ver += 1

    def _path_of(self, i: int) -> int:
        return int(np.searchsorted([mm["off"] for mm in self.bank.meta], self.path_off[i], side="right") - 1)

    # ------------------------------------------------------------------ run
    def run(self, warmup_s: float, fork_step: int = 10, on_fork=None) -> TrafficLog:
        """Warm up for `warmup_s`, then log 91 steps. `on_fork(sim, k)` (optional) is called
        after the spawns and before the motion of the decision step `k` that produces log step
        `fork_step`: the oracle snapshots the simulation there."""
        rm = self.rm
        n_warm = int(round(warmup_s / DT_SIM)) * SUB  # warm-up in 10 Hz steps (multiple of SUB)
        n_dec = (n_warm + N_LOG + SUB - 1) // SUB  # decision steps
        sig = to_red = None
        if rm.signal is not None:
            ext = (np.arange(n_dec + 300) * SUB - n_warm) * DT  # decision times (+ 60 s to see the next red)
            sig = rm.signal.states(ext)  # [n_group, n_ext]
            to_red = np.zeros(sig.shape, np.float64)  # [n_group, n_ext] seconds until STOP
            nxt = np.full(sig.shape[0], 300 * DT_SIM)
            for ti in range(sig.shape[1] - 1, -1, -1):
                nxt = np.where(sig[:, ti] == int(SignalState.STOP), 0.0, nxt + DT_SIM)
                to_red[:, ti] = nxt
        self.has_gates = self.n_conn > 0 or any(np.isfinite(m.get("gate_s0", math.inf)) for m in self.bank.meta)
        self._kk = np.arange(self.K)[None, None, :]  # [1, 1, K]
        for spot in self.pull_out_spots:
            self._place_pull_out(spot)
        self.place_initial(fill=min(1.0, max(0.8, (self.min_agents + 2) / self.n_target)))
        self._sig, self._to_red, self._n_warm, self._n_dec = sig, to_red, n_warm, n_dec
        k_fork = None
        if on_fork is not None:  # the decision step whose sub-steps hold fork_step
            k_fork = next(k for k in range(n_dec) if k * SUB - n_warm <= fork_step < (k + 1) * SUB - n_warm)
        for k in range(n_dec):
            self.spawn()
            if k == k_fork:
                on_fork(self, k)
            self.advance(k, k + 1, spawn_first=False)
        return self.collect()

    def advance(self, k_from: int, k_to: int, spawn_first: bool = True) -> None:
        """Run decision steps [k_from, k_to) (spawning new agents first unless `spawn_first=False`
        for the first one, already spawned: the state a fork snapshot holds)."""
        sig, to_red, n_warm = self._sig, self._to_red, self._n_warm
        for k in range(k_from, k_to):
            if spawn_first or k > k_from:
                self.spawn()
            li = k * SUB - n_warm
            self.step(li if li > -SUB else None, sig[:, k] if sig is not None else None, to_red[:, k] if sig is not None else None)

    def log_poses(self, slots: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logged poses of agent `slots` at log `steps`: xy [n, t, 2], heading [n, t], valid [n, t]
        (positions of invalid steps are the path start; callers fill them)."""
        if self.lc_on:
            return self.log_xy[slots][:, steps], geo.wrap(self.log_h[slots][:, steps]), self.log_valid[slots][:, steps]
        s = self.log_s[slots][:, steps]  # [n, t]
        rows = np.repeat(slots, len(steps))
        pos, hd = self._pose(rows, s.reshape(-1))
        return pos.reshape(len(slots), len(steps), 2), geo.wrap(hd).reshape(len(slots), len(steps)), self.log_valid[slots][:, steps]

    def collect(self) -> TrafficLog:
        """The logged tracks (agents valid at some logged step, in slot order)."""
        rm, n_warm = self.rm, self._n_warm
        sig = self._sig
        keep = np.flatnonzero(self.log_valid[: self.n_used].any(1))  # [n_track]
        self.kept_slots = keep
        valid = self.log_valid[keep]  # [n_track, 91]
        a_idx, t_idx = np.nonzero(valid)
        rows = keep[a_idx]
        if self.lc_on:
            pos, hd = self.log_xy[rows, t_idx], self.log_h[rows, t_idx]
        else:
            pos, hd = self._pose(rows, self.log_s[rows, t_idx])
        spd = self.log_v[rows, t_idx]
        out = {k: np.zeros(valid.shape) for k in ("x", "y", "h", "vx", "vy")}  # each [n_track, 91]
        out["x"][a_idx, t_idx], out["y"][a_idx, t_idx] = pos[:, 0], pos[:, 1]
        out["h"][a_idx, t_idx] = geo.wrap(hd)
        out["vx"][a_idx, t_idx], out["vy"][a_idx, t_idx] = spd * np.cos(hd), spd * np.sin(hd)
        # velocities consistent with the logged positions: central differences inside each
        # track's (contiguous) visible span, one-sided at its ends
        for name, comp in (("vx", "x"), ("vy", "y")):
            p = out[comp]  # [n_track, 91]
            fd = np.full(p.shape, np.nan)  # [n_track, 91]
            pair = valid[:, 1:] & valid[:, :-1]  # [n_track, 90]
            d = np.where(pair, (p[:, 1:] - p[:, :-1]) / DT, np.nan)  # [n_track, 90]
            both = np.isfinite(d[:, 1:]) & np.isfinite(d[:, :-1])
            fd[:, 1:-1] = np.where(both, 0.5 * (d[:, 1:] + d[:, :-1]), np.where(np.isfinite(d[:, 1:]), d[:, 1:], d[:, :-1]))
            fd[:, 0], fd[:, -1] = d[:, 0], d[:, -1]
            out[name] = np.where(valid & np.isfinite(fd), fd, out[name])
        if sig is not None:
            t10 = np.arange(N_LOG) + n_warm  # 10 Hz step index since the start of warm-up
            sig_log = rm.signal.states((t10 - n_warm) * DT)  # [n_group, 91]
        else:
            sig_log = np.zeros((0, N_LOG), np.int8)
        return TrafficLog(
            agent_type=self.type[keep].copy(),
            size=np.stack([self.L[keep], self.W[keep], self.Hgt[keep]], 1),  # [n_track, 3]
            x=out["x"], y=out["y"], heading=out["h"], vx=out["vx"], vy=out["vy"],
            valid=valid,
            signal_states=sig_log,
        )
