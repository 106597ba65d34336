"""`fast` metric backend: the WOSAC 2025 sim-agents metrics in vectorised torch.

Matches the official `waymo_open_dataset` implementation (1.6.7) to float32 rounding: same
features (see `features.py` for the quirk list), same estimators (`estimators.py`), same
meta metric, minADE/ADE and simulated rates. Runs on CUDA when available (constructor arg
`device`), float32 throughout.

Extra outputs (not in the official result):
- `SceneScores.per_rollout_metametric` [n_rollout]: the meta metric of each rollout scored
  alone against the log, i.e. the rollout treated as a 1-rollout submission (each agent's
  histogram pools that rollout's 80 steps; Bernoulli estimates from that single rollout).
  Meant for per-rollout RL rewards.
- `FastBackend.score_detailed` returns a `FastResult` with the scores, the per-rollout
  likelihoods, and the log-replay rates (collision / offroad / red-light rates of the logged
  scene itself, over the evaluated agents and their log-valid steps) used to check that
  logged (or synthetic) scenes are clean.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from smart_r1.data.scene import (
    CURRENT_TIME_INDEX_WOMD,
    N_FUTURE_STEP,
    N_STEP_WOMD,
    STATE_HEADING,
    STATE_HEIGHT,
    STATE_LENGTH,
    STATE_WIDTH,
    STATE_X,
    STATE_Z,
    AgentType,
    LaneType,
    MapKind,
    Scene,
)
from smart_r1.errors import InputError, NonFiniteInputError
from smart_r1.metrics.base import LIKELIHOOD_FIELDS, METRIC_WEIGHTS, MetricBackend, SceneScores, register_backend
from smart_r1.metrics.estimators import (
    HistogramConfig,
    bernoulli_log_likelihood,
    histogram_log_likelihood,
    masked_mean,
)
from smart_r1.metrics.features import MapContext, SceneTensors, central_and, compute_features
from smart_r1.metrics.geometry import LaneAssociation, RoadEdgeDistance
from smart_r1.sim.rollouts import Rollouts

# challenge_2025_sim_agents_config.textproto (histograms; Bernoulli pseudocount 0.001).
HISTOGRAMS_2025 = {
    "linear_speed": HistogramConfig(0.0, 25.0, 10, 0.1),
    "linear_acceleration": HistogramConfig(-12.0, 12.0, 11, 0.1),
    "angular_speed": HistogramConfig(-0.628, 0.628, 11, 0.1),
    "angular_acceleration": HistogramConfig(-3.14, 3.14, 11, 0.1),
    "distance_to_nearest_object": HistogramConfig(-5.0, 40.0, 10, 0.1),
    "time_to_collision": HistogramConfig(0.0, 5.0, 10, 0.1),
    "distance_to_road_edge": HistogramConfig(-20.0, 40.0, 10, 0.1),
}
BERNOULLI_PSEUDOCOUNT = 0.001


class FastMetricsError(InputError):
    """Rollouts / scene the metrics cannot score; the message names the scene and agents."""


class NonFiniteMetricInputError(FastMetricsError, NonFiniteInputError):
    """NaN / inf in the log or the rollouts given to the metrics: never scored (a NaN would
    silently shift every likelihood); the message names the scene, field and agent ids."""


@dataclass
class FastResult:
    scores: SceneScores
    per_rollout_likelihoods: dict[str, np.ndarray]  # name -> [n_rollout]
    log_rates: dict[str, float]  # log_collision_rate, log_offroad_rate, log_traffic_light_violation_rate
    features: dict[str, np.ndarray] | None = field(default=None, repr=False)  # name -> [n_rollout + 1, E, 80]


def _tensor(a, dtype=None, device=None) -> torch.Tensor:
    """`torch.as_tensor` of a numpy array, copying arrays that are read-only (scenes that arrive
    through Ray's shared memory are), which torch would otherwise wrap with a warning."""
    a = np.asarray(a)
    if not a.flags.writeable:
        a = a.copy()
    return torch.as_tensor(a, dtype=dtype, device=device)


def _f32(x) -> float:
    """Python float holding a float32 value (the official `SimAgentMetrics` fields are float32)."""
    return float(np.float32(float(x)))


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _map_key(scene: Scene) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(scene.scenario_id).encode())
    for arr in (scene.map.points, scene.map.kind, scene.map.subtype, scene.map.polyline_offsets, scene.map.feature_id,
                scene.signals.lane_id, scene.signals.state, scene.signals.stop_point, scene.signals.present):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def build_map_context(scene: Scene, device: torch.device) -> MapContext:
    m = scene.map
    where = f"scene {scene.scenario_id!r}" + (f" ({scene.source})" if scene.source else "")
    edges = [m.polyline(i) for i in m.indices_of(MapKind.ROAD_EDGE)]
    if not any(p.shape[0] >= 2 for p in edges):
        raise FastMetricsError(f"{where}: field map_features: no road edge polyline (the official metrics need road edges)")
    road = RoadEdgeDistance(edges, device)
    lane_rows = [i for i in m.indices_of(MapKind.LANE) if int(m.subtype[i]) == int(LaneType.SURFACE_STREET)]
    lane_polys = [m.polyline(i) for i in lane_rows]
    lanes, lane_ids = None, None
    if any(p.shape[0] >= 2 for p in lane_polys):
        lanes = LaneAssociation(lane_polys, device)
        lane_ids = _tensor(m.feature_id[np.asarray(lane_rows, np.int64)[lanes.segs.kept_index]], device=device)
    sig = scene.signals
    n_step = scene.n_step
    present = np.asarray(sig.present, bool)  # [n_step, J]
    state = np.where(present, np.asarray(sig.state, np.int64), 0)  # [n_step, J]
    stop_xy = np.where(present[..., None], np.asarray(sig.stop_point, np.float32)[..., :2], 0.0).astype(np.float32)
    has_signals = state.shape[0] > 0
    if state.shape[0] not in (0, n_step):
        raise FastMetricsError(f"{where}: field dynamic_map_states: {state.shape[0]} steps, tracks have {n_step}")
    return MapContext(
        road_edges=road,
        lanes=lanes,
        lane_ids=lane_ids,
        signal_lane_id=_tensor(np.asarray(sig.lane_id, np.int64), device=device),
        signal_state=_tensor(state, device=device),
        signal_stop_xy=_tensor(stop_xy, device=device),
        has_signals=has_signals,
    )


def _agent_order(scene: Scene, rollouts: Rollouts | None):
    """Rows of the simulated agents (evaluated first, sorted by id), #eval, rollout column per row."""
    where = f"scene {scene.scenario_id!r}" + (f" ({scene.source})" if scene.source else "")
    cur = scene.current_time_index
    if cur != CURRENT_TIME_INDEX_WOMD or scene.n_step != N_STEP_WOMD:
        raise FastMetricsError(f"{where}: WOSAC needs {N_STEP_WOMD} steps with current_time_index {CURRENT_TIME_INDEX_WOMD}, "
                               f"got {scene.n_step} steps, current {cur}")
    sim_rows = np.flatnonzero(scene.agent_valid[:, cur])  # [n_sim]
    sim_ids = scene.agent_id[sim_rows]
    eval_ids = scene.eval_agent_ids()  # sorted, official order
    missing_eval = sorted(set(eval_ids.tolist()) - set(sim_ids.tolist()))
    if missing_eval:
        raise FastMetricsError(f"{where}: evaluated agents not valid at step {cur}: ids {missing_eval}")
    log_pose = scene.agent_states[sim_rows][..., [STATE_X, STATE_X + 1, STATE_Z, STATE_HEADING]]  # [n_sim, n_step, 4]
    box = scene.agent_states[sim_rows, cur][:, [STATE_LENGTH, STATE_WIDTH, STATE_HEIGHT]]  # [n_sim, 3]
    bad_log = (scene.agent_valid[sim_rows] & ~np.isfinite(log_pose).all(-1)).any(-1) | ~np.isfinite(box).all(-1)  # [n_sim]
    if bad_log.any():
        raise NonFiniteMetricInputError(
            f"{where}: field tracks.states: NaN/inf pose or box in the log of agent ids {sim_ids[bad_log].tolist()}"
        )
    row_of = {int(i): int(r) for i, r in zip(sim_ids, sim_rows)}
    eval_set = set(eval_ids.tolist())
    order_ids = list(eval_ids.tolist()) + [int(i) for i in sim_ids if int(i) not in eval_set]
    rows = np.asarray([row_of[i] for i in order_ids], np.int64)
    cols = None
    if rollouts is not None:
        got = [int(i) for i in rollouts.agent_id]
        if len(set(got)) != len(got):
            dup = sorted({i for i in got if got.count(i) > 1})
            raise FastMetricsError(f"{where}: rollouts list agent ids {dup} more than once")
        missing = sorted(set(sim_ids.tolist()) - set(got))
        extra = sorted(set(got) - set(sim_ids.tolist()))
        if missing or extra:
            raise FastMetricsError(f"{where}: rollouts must hold exactly the agents valid at step {cur}; missing ids {missing}, extra ids {extra}")
        if rollouts.n_step != N_FUTURE_STEP:
            raise FastMetricsError(f"{where}: rollouts have {rollouts.n_step} steps, WOSAC needs {N_FUTURE_STEP}")
        if rollouts.n_rollout < 1:
            raise FastMetricsError(f"{where}: no rollouts")
        col_of = {i: c for c, i in enumerate(got)}
        cols = np.asarray([col_of[i] for i in order_ids], np.int64)
        bad = ~np.isfinite(rollouts.trajectories).all(axis=(0, 2, 3))  # [n_agent]
        if bad.any():
            raise NonFiniteMetricInputError(f"{where}: rollouts hold NaN/inf for agent ids {rollouts.agent_id[bad].tolist()}")
    return rows, len(eval_ids), cols


def build_scene_tensors(scene: Scene, rollouts: Rollouts, device: torch.device) -> SceneTensors:
    """Stack the rollouts and the log into the official 91-step layout (B = n_rollout + 1, log last)."""
    rows, n_eval, cols = _agent_order(scene, rollouts)
    cur = scene.current_time_index
    st = scene.agent_states[rows]  # [N, 91, 9]
    log_pose = st[..., [STATE_X, STATE_X + 1, STATE_Z, STATE_HEADING]]  # [N, 91, 4]
    sim = rollouts.trajectories[:, cols]  # [R, N, 80, 4]
    r = sim.shape[0]
    hist = np.broadcast_to(log_pose[None, :, : cur + 1], (r,) + log_pose[:, : cur + 1].shape)  # [R, N, 11, 4]
    pose = np.concatenate([np.concatenate([hist, sim], axis=2), log_pose[None]], axis=0).astype(np.float32)  # [R+1, N, 91, 4]
    log_valid = scene.agent_valid[rows]  # [N, 91]
    valid = np.broadcast_to(log_valid[None], (r + 1,) + log_valid.shape).copy()  # [R+1, N, 91]
    valid[:r, :, cur + 1 :] = True  # simulated agents are valid at every simulated step
    t = lambda a, dt=torch.float32: _tensor(np.ascontiguousarray(a), dtype=dt, device=device)  # noqa: E731
    return SceneTensors(
        pos=t(pose[..., :3]),
        heading=t(pose[..., 3]),
        valid=t(valid, torch.bool),
        # Box sizes: the log's current step, constant over the simulated steps (official converters).
        length=t(st[:, cur, STATE_LENGTH]),
        width=t(st[:, cur, STATE_WIDTH]),
        height=t(st[:, cur, STATE_HEIGHT]),
        n_eval=n_eval,
        current_time_index=cur,
    )


def _likelihoods(feats: dict[str, torch.Tensor], log_valid: torch.Tensor, is_vehicle: torch.Tensor, grouped: dict) -> dict[str, torch.Tensor]:
    """Likelihoods for each group of rollouts.

    feats: name -> [R + 1, E, 80] (log last); log_valid [E, 80]; is_vehicle [E];
    grouped(x [R, ...]) -> [G, S, ...]. Returns name -> [G].
    """
    group = grouped["fn"]
    out = {}
    # QUIRK (official): kinematic validity is derived from the already-sliced 80-step log
    # validity, so the first / last simulated step drop out for speeds, two at each end for
    # accelerations.
    speed_valid = central_and(log_valid)  # [E, 80]
    accel_valid = central_and(speed_valid)
    ttc_valid = log_valid & is_vehicle[:, None]
    masks = {
        "linear_speed": speed_valid,
        "angular_speed": speed_valid,
        "linear_acceleration": accel_valid,
        "angular_acceleration": accel_valid,
        "distance_to_nearest_object": log_valid,
        "time_to_collision": ttc_valid,  # 2025: vehicles only
        "distance_to_road_edge": log_valid,
    }
    for name, mask in masks.items():
        x = feats[name]
        # QUIRK (official): simulated values at log-invalid steps still enter the pooled histogram.
        ll = histogram_log_likelihood(x[-1], group(x[:-1]), HISTOGRAMS_2025[name])  # [G, E, 80]
        out[name + "_likelihood"] = torch.exp(masked_mean(ll, mask))
    tl_valid = log_valid & is_vehicle[:, None]
    for name, feat, mask in (
        ("collision_indication", "collision_per_step", log_valid),
        ("offroad_indication", "offroad_per_step", log_valid),
        ("traffic_light_violation", "traffic_light_violation_per_step", tl_valid),
    ):
        ind = (feats[feat] & mask[None]).any(-1)  # [R + 1, E]
        ll = bernoulli_log_likelihood(ind[-1], group(ind[:-1]), BERNOULLI_PSEUDOCOUNT)  # [G, E]
        out[name + "_likelihood"] = torch.exp(ll.mean(-1))
    return out


@register_backend("fast")
class FastBackend(MetricBackend):
    """Vectorised torch WOSAC metrics. `device`: "cuda" / "cpu" / None (CUDA when available).

    `num_threads`: torch intra-op threads while scoring on CPU (restored afterwards). Default 1:
    the work is many small kernels, and on a shared 2-core box two threads were measured ~7x
    slower than one; parallelise across processes (Ray workers) instead. None: leave torch's setting.
    """

    def __init__(
        self,
        config_year: int = 2025,
        device: str | torch.device | None = None,
        cache_size: int = 64,
        per_rollout: bool = True,
        num_threads: int | None = 1,
    ):
        super().__init__(config_year)
        self.device = torch.device(device) if device is not None else _default_device()
        self.num_threads = num_threads
        self.per_rollout = per_rollout
        self._cache: OrderedDict[str, MapContext] = OrderedDict()
        self._cache_size = cache_size

    # ------------------------------------------------------------------
    def map_context(self, scene: Scene) -> MapContext:
        key = _map_key(scene)
        ctx = self._cache.get(key)
        if ctx is None:
            ctx = build_map_context(scene, self.device)
            self._cache[key] = ctx
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return ctx

    def features(self, scene: Scene, rollouts: Rollouts) -> dict[str, torch.Tensor]:
        """Per-step features [n_rollout + 1, E, 80] (log last), evaluated agents in sorted id order."""
        st = build_scene_tensors(scene, rollouts, self.device)
        return compute_features(st, self.map_context(scene))

    def score_detailed(self, scene: Scene, rollouts: Rollouts, keep_features: bool = False) -> FastResult:
        old = torch.get_num_threads()
        set_threads = self.num_threads is not None and self.device.type == "cpu" and self.num_threads != old
        if set_threads:
            torch.set_num_threads(self.num_threads)
        try:
            with torch.no_grad():
                return self._score_detailed(scene, rollouts, keep_features)
        finally:
            if set_threads:
                torch.set_num_threads(old)

    def _score_detailed(self, scene: Scene, rollouts: Rollouts, keep_features: bool) -> FastResult:
        st = build_scene_tensors(scene, rollouts, self.device)
        ctx = self.map_context(scene)
        feats = compute_features(st, ctx)
        cur = st.current_time_index
        e = st.n_eval
        r = rollouts.n_rollout
        log_valid_full = st.valid[-1, :e]  # [E, 91]
        log_valid = log_valid_full[:, cur + 1 :]  # [E, 80]
        rows, _, _ = _agent_order(scene, None)
        is_vehicle = _tensor(scene.agent_type[rows[:e]] == int(AgentType.VEHICLE), device=self.device)  # [E]

        full = _likelihoods(feats, log_valid, is_vehicle, {"fn": lambda x: x[None]})
        lik = {k: _f32(full[k][0]) for k in LIKELIHOOD_FIELDS}
        weights = METRIC_WEIGHTS[self.config_year]
        # Official: python-float sum of float32 weights x float32 likelihoods, stored as float32.
        meta = _f32(sum(float(np.float32(weights[k])) * lik[k] for k in LIKELIHOOD_FIELDS))

        per_rollout = None
        per_lik = {}
        if self.per_rollout:
            pr = _likelihoods(feats, log_valid, is_vehicle, {"fn": lambda x: x[:, None]})
            per_lik = {k: pr[k].cpu().numpy().astype(np.float32) for k in LIKELIHOOD_FIELDS}
            per_rollout = sum(np.float32(weights[k]) * per_lik[k] for k in LIKELIHOOD_FIELDS).astype(np.float32)  # [R]

        # minADE / ADE. QUIRK (official): the per-agent mean divides by the number of log-valid
        # steps among all 91 (history included, where the error is 0).
        err = torch.linalg.vector_norm(st.pos[:-1, :e] - st.pos[-1:, :e], dim=-1)  # [R, E, 91]
        err = torch.where(log_valid_full[None], err, torch.zeros_like(err))
        ade = err.sum(-1) / log_valid_full.to(torch.float32).sum(-1)[None]  # [R, E]
        min_ade = _f32(ade.mean(-1).min())
        mean_ade = _f32(ade.mean())

        def rate(ind):  # [R, E] bool -> fraction, float32 like the official proto field
            return _f32(float(ind.sum().item()) / float(ind.numel()))

        coll = (feats["collision_per_step"] & log_valid[None]).any(-1)  # [R + 1, E]
        off = (feats["offroad_per_step"] & log_valid[None]).any(-1)
        # The official simulated red-light rate filters by log validity only (no vehicle filter).
        tl = (feats["traffic_light_violation_per_step"] & log_valid[None]).any(-1)
        scores = SceneScores(
            scenario_id=str(scene.scenario_id),
            metametric=meta,
            likelihoods=lik,
            min_average_displacement_error=min_ade,
            average_displacement_error=mean_ade,
            simulated_collision_rate=rate(coll[:r]),
            simulated_offroad_rate=rate(off[:r]),
            simulated_traffic_light_violation_rate=rate(tl[:r]),
            config_year=self.config_year,
            backend="fast",
            per_rollout_metametric=per_rollout,
        )
        log_rates = {
            "log_collision_rate": rate(coll[r:]),
            "log_offroad_rate": rate(off[r:]),
            "log_traffic_light_violation_rate": rate(tl[r:]),
        }
        kept = {k: v.cpu().numpy() for k, v in feats.items()} if keep_features else None
        return FastResult(scores=scores, per_rollout_likelihoods=per_lik, log_rates=log_rates, features=kept)

    def score(self, scene: Scene, rollouts: Rollouts) -> SceneScores:
        return self.score_detailed(scene, rollouts).scores

    def score_many(self, scenes, rollouts_list) -> list[SceneScores]:
        # Scenes differ in agents and maps: batched within a scene (all rollouts + log at once),
        # looped over scenes; map preprocessing is cached per scene.
        return [self.score(s, r) for s, r in zip(scenes, rollouts_list)]

    @torch.no_grad()
    def log_replay_rates(self, scene: Scene) -> dict[str, float]:
        """Collision / offroad / red-light rates of the logged scene (evaluated agents, log-valid
        steps) -- the `log_*` rates of `score_detailed` without needing rollouts."""
        rows, _, _ = _agent_order(scene, None)
        cur = scene.current_time_index
        sim_rows = np.flatnonzero(scene.agent_valid[:, cur])
        fut = scene.agent_states[sim_rows, cur + 1 :][..., [STATE_X, STATE_X + 1, STATE_Z, STATE_HEADING]]  # [n_sim, 80, 4]
        ro = Rollouts(scenario_id=scene.scenario_id, agent_id=scene.agent_id[sim_rows], trajectories=fut[None])
        old = self.per_rollout
        self.per_rollout = False
        try:
            return self.score_detailed(scene, ro).log_rates
        finally:
            self.per_rollout = old
