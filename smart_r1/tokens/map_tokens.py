"""Map tokens: polylines cut into short fixed-point segments matched to a segment vocabulary.

Scheme:
- Sources: lanes, road lines, road edges (polylines) and crosswalks (polygons, closed into a
  ring); z is dropped, repeated points removed. Features with < 2 distinct points (zero length)
  give no token (counted in `MapTokenizer.last_stats`).
- A polyline of arc length L is cut into `n = max(1, round(L / segment_length))` equal pieces
  (so pieces are 0.67-1.5 x `segment_length`, shorter only for short features), each resampled
  at `n_points` points evenly spaced in arc length (default 10 m, 11 points: ~1 m apart).
- Token pose: the middle point, heading of the chord first -> last point. The token's shape is
  its points in that frame, `[n_points, 2]`.
- Segment vocabulary: k-disks (same algorithm and tolerance search as the motion vocabulary,
  distance = mean point distance) over the normalised shapes of the build scenes; entry 0 is
  the straight segment of nominal length. Without data (or a vocabulary built without a map),
  `parametric_map_vocab` gives constant-curvature arcs over a grid of lengths x curvatures.
  Each token stores the index of the nearest entry (`map_token_vocab_index`); the exact points
  stay in `map_token_points`, so the model may use either.
- Traffic lights: `map_token_signal [n_map_token, 19]` is the lane's `SignalState` at each anchor
  step (0, 5, ..., 90), 0 (UNKNOWN) for non-lanes and lanes without a signal entry.
- `radius` (metres, None = whole map) keeps only tokens whose middle point is within it of the
  SDC (`center="sdc"`) or of any agent valid at the current step (`center="agents"`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from smart_r1.data.scene import MapKind, Scene
from smart_r1.tokens.geometry import points_to_local
from smart_r1.tokens.kdisks import kdisks_vocab
from smart_r1.tokens.tokenized_scene import N_ANCHOR, STEPS_PER_TOKEN

DEFAULT_KINDS = ("lane", "road_line", "road_edge", "crosswalk")


@dataclass
class MapConfig:
    """Map segmentation, segment vocabulary and token selection settings (reference: 1024 entries of 11 points)."""

    segment_length: float = 10.0  # metres per segment (nominal)
    n_points: int = 11
    kinds: tuple = DEFAULT_KINDS  # MapKind names (lower case)
    vocab_size: int = 256
    tolerance: float = 0.1  # metres, mean point distance (starting value of the search)
    samples: int = 20_000
    max_tolerance_steps: int = 8
    radius: float | None = None  # keep tokens within this of the centre; None = all
    center: str = "agents"  # "sdc" | "agents"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["kinds"] = list(self.kinds)
        return d

    @staticmethod
    def from_dict(d: dict | None) -> "MapConfig":
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(MapConfig)}
        if "kinds" in d:
            d["kinds"] = tuple(d["kinds"])
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"MapConfig: unknown field(s) {unknown}; known: {sorted(names)}")
        return MapConfig(**d)

    def kind_values(self) -> np.ndarray:
        try:
            return np.array([int(MapKind[k.upper()]) for k in self.kinds], np.int8)
        except KeyError as err:
            raise ValueError(f"MapConfig.kinds: unknown map kind {err}; known: {[k.name.lower() for k in MapKind]}") from None


MapVocabConfig = MapConfig  # name used by motion_vocab


def _resample(points: np.ndarray, n_points: int, segment_length: float) -> list[np.ndarray]:
    """points [n, 2] (distinct consecutive) -> list of segments [n_points, 2]."""
    d = np.linalg.norm(np.diff(points, axis=0), axis=1)  # [n-1]
    s = np.concatenate([[0.0], np.cumsum(d)])  # [n]
    total = float(s[-1])
    n_seg = max(1, int(round(total / segment_length)))
    edges = np.linspace(0.0, total, n_seg + 1)  # [n_seg+1]
    frac = np.linspace(0.0, 1.0, n_points)  # [n_points]
    q = edges[:-1, None] + (edges[1:] - edges[:-1])[:, None] * frac[None]  # [n_seg, n_points]
    x = np.interp(q.ravel(), s, points[:, 0]).reshape(q.shape)  # [n_seg, n_points]
    y = np.interp(q.ravel(), s, points[:, 1]).reshape(q.shape)  # [n_seg, n_points]
    return list(np.stack([x, y], -1))  # n_seg x [n_points, 2]


@dataclass
class MapSegments:
    points: np.ndarray  # [n_seg, n_points, 2] float64 global
    pose: np.ndarray  # [n_seg, 3] middle point, chord heading
    feature_index: np.ndarray  # [n_seg] int64 row in scene.map
    n_skipped_features: int = 0


def segment_scene_map(scene: Scene, config: MapConfig) -> MapSegments:
    """Cut the scene's selected map features into segments (module docstring)."""
    m = scene.map
    kinds = config.kind_values()
    segs, feats = [], []
    skipped = 0
    for i in np.flatnonzero(np.isin(m.kind, kinds)):
        p = np.asarray(m.polyline(int(i))[:, :2], np.float64)  # [n, 2]
        if int(m.kind[i]) == int(MapKind.CROSSWALK) and p.shape[0] >= 3:
            p = np.concatenate([p, p[:1]], axis=0)
        if p.shape[0] >= 2:
            keep = np.concatenate([[True], np.linalg.norm(np.diff(p, axis=0), axis=1) > 1e-6])
            p = p[keep]
        if p.shape[0] < 2 or not np.isfinite(p).all():
            skipped += 1
            continue
        for seg in _resample(p, config.n_points, config.segment_length):
            segs.append(seg)
            feats.append(int(i))
    if not segs:
        return MapSegments(np.zeros((0, config.n_points, 2)), np.zeros((0, 3)), np.zeros(0, np.int64), skipped)
    pts = np.stack(segs)  # [n_seg, n_points, 2]
    mid = pts[:, config.n_points // 2]  # [n_seg, 2]
    chord = pts[:, -1] - pts[:, 0]  # [n_seg, 2]
    heading = np.arctan2(chord[:, 1], chord[:, 0])  # [n_seg]
    pose = np.concatenate([mid, heading[:, None]], axis=1)  # [n_seg, 3]
    return MapSegments(pts, pose, np.asarray(feats, np.int64), skipped)


def normalised_shapes(seg: MapSegments) -> np.ndarray:
    """Segment points in each segment's own frame.  -> [n_seg, n_points, 2] float32"""
    if seg.points.shape[0] == 0:
        return np.zeros((0,) + seg.points.shape[1:], np.float32)
    return np.asarray(points_to_local(seg.pose, seg.points), np.float32)


def straight_segment(config: MapConfig) -> np.ndarray:
    """The straight segment of nominal length, centred.  [n_points, 2]"""
    x = np.linspace(-0.5, 0.5, config.n_points) * config.segment_length
    return np.stack([x, np.zeros_like(x)], -1).astype(np.float32)


def parametric_map_vocab(config: MapConfig) -> np.ndarray:
    """Data-free segment vocabulary: arcs over a grid of lengths x curvatures.  [vocab_size, n_points, 2]"""
    n_len = 8
    n_curv = max(1, -(-(config.vocab_size - 1) // n_len))
    lengths = np.linspace(0.2, 1.5, n_len) * config.segment_length  # [n_len]
    curv = np.tanh(np.linspace(-2.5, 2.5, n_curv)) * 0.3  # [n_curv] 1/m
    out = [straight_segment(config)]
    u = np.linspace(-0.5, 0.5, config.n_points)
    for length in lengths:
        for k in curv:
            s = u * length  # [n_points]
            if abs(k) < 1e-6:
                pts = np.stack([s, np.zeros_like(s)], -1)
            else:
                pts = np.stack([np.sin(k * s) / k, (1 - np.cos(k * s)) / k], -1)
            chord = pts[-1] - pts[0]
            pose = np.array([*pts[config.n_points // 2], math.atan2(chord[1], chord[0])])
            out.append(np.asarray(points_to_local(pose, pts), np.float32))
    return np.stack(out)[: config.vocab_size].astype(np.float32)


class MapSegmentPool:
    """Collects normalised segment shapes over scenes (streaming uniform sub-sample) and builds the
    segment vocabulary with k-disks."""

    def __init__(self, config: MapConfig, seed: int = 0):
        self.config = config
        self.seed = seed
        self._rng = np.random.default_rng([seed, 2])
        self._keys = np.zeros(0)
        self._shapes = np.zeros((0, config.n_points, 2), np.float32)
        self.n_segments = 0

    def add(self, scene: Scene) -> None:
        shapes = normalised_shapes(segment_scene_map(scene, self.config))  # [n, n_points, 2]
        self.n_segments += shapes.shape[0]
        keys = np.concatenate([self._keys, self._rng.random(shapes.shape[0])])
        allv = np.concatenate([self._shapes, shapes])
        if keys.shape[0] > self.config.samples:
            keep = np.sort(np.argsort(keys, kind="stable")[: self.config.samples])
            keys, allv = keys[keep], allv[keep]
        self._keys, self._shapes = keys, allv

    def build(self) -> tuple[np.ndarray, dict]:
        cfg = self.config
        samples = self._shapes
        n_param = 0
        if samples.shape[0] < cfg.vocab_size * 4:  # too little map data: add parametric arcs
            param = parametric_map_vocab(cfg)
            n_param = param.shape[0]
            samples = np.concatenate([samples, param]).astype(np.float32)
        x = torch.as_tensor(samples)  # [n, n_points, 2]
        forced = torch.as_tensor(straight_segment(cfg))  # [n_points, 2]
        centres, info = kdisks_vocab(x, cfg.vocab_size, cfg.tolerance, self.seed + 7, forced, True, cfg.max_tolerance_steps, 0.01)
        vocab = np.where(centres[:, None, None] < 0, straight_segment(cfg)[None], samples[np.maximum(centres, 0)])
        info.update(
            config=cfg.to_dict(), n_segments_seen=int(self.n_segments), n_samples=int(self._shapes.shape[0]),
            n_parametric_samples=int(n_param),
        )
        return vocab.astype(np.float32), info


class MapTokenizer:
    """Scene map -> map token arrays (the `map_token_*` fields of `TokenizedScene`)."""

    def __init__(self, map_vocab: np.ndarray | torch.Tensor | None = None, config: MapConfig | None = None):
        self.config = config or MapConfig()
        if map_vocab is None:
            map_vocab = parametric_map_vocab(self.config)
        self.vocab = torch.as_tensor(np.asarray(map_vocab, np.float32))  # [M, n_points, 2]
        if self.vocab.shape[1] != self.config.n_points:
            raise ValueError(
                f"MapTokenizer: map vocabulary has {self.vocab.shape[1]} points per segment, config n_points={self.config.n_points}"
            )
        self.last_stats: dict = {}

    def match(self, shapes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """shapes [n, n_points, 2] -> (vocab index [n] int64, mean point distance [n])."""
        x = torch.as_tensor(np.asarray(shapes, np.float32))  # [n, P, 2]
        idx = torch.zeros(x.shape[0], dtype=torch.long)  # [n]
        dist = torch.zeros(x.shape[0])  # [n]
        chunk = max(1, (1 << 22) // max(1, self.vocab.numel()))
        for s in range(0, x.shape[0], chunk):
            d = torch.linalg.vector_norm(x[s : s + chunk, None] - self.vocab[None], dim=-1).mean(-1)  # [c, M]
            best, arg = d.min(1)
            idx[s : s + chunk], dist[s : s + chunk] = arg, best
        return idx.numpy(), dist.numpy()

    def tokenize(self, scene: Scene) -> dict[str, np.ndarray]:
        cfg = self.config
        seg = segment_scene_map(scene, cfg)
        keep = np.ones(seg.pose.shape[0], bool)  # [n_seg]
        if cfg.radius is not None and seg.pose.shape[0]:
            cur = scene.current_time_index
            if cfg.center == "sdc":
                centres = scene.xy[scene.sdc_index, cur][None]  # [1, 2]
            elif cfg.center == "agents":
                centres = scene.xy[scene.agent_valid[:, cur], cur]  # [n_c, 2]
            else:
                raise ValueError(f"MapConfig.center: {cfg.center!r} is not 'sdc' or 'agents'")
            d = np.linalg.norm(seg.pose[:, None, :2] - centres[None], axis=-1).min(1)  # [n_seg]
            keep = d <= cfg.radius
        pts, pose, feat = seg.points[keep], seg.pose[keep], seg.feature_index[keep]
        shapes = normalised_shapes(MapSegments(pts, pose, feat))
        idx, dist = self.match(shapes) if shapes.shape[0] else (np.zeros(0, np.int64), np.zeros(0))
        m = scene.map
        kind = m.kind[feat].astype(np.int8)  # [n_tok]
        subtype = m.subtype[feat].astype(np.int8)  # [n_tok]
        signal = np.zeros((feat.shape[0], N_ANCHOR), np.int8)  # [n_tok, N_ANCHOR]
        sig = scene.signals
        if sig.n_lane and feat.shape[0]:
            col = {int(l): j for j, l in enumerate(sig.lane_id)}
            fid = m.feature_id[feat]  # [n_tok]
            steps = np.minimum(np.arange(N_ANCHOR) * STEPS_PER_TOKEN, sig.state.shape[0] - 1)  # [N_ANCHOR]
            for r in np.flatnonzero(kind == int(MapKind.LANE)):
                j = col.get(int(fid[r]))
                if j is not None:
                    signal[r] = np.where(sig.present[steps, j], sig.state[steps, j], 0)
        self.last_stats = {
            "n_segments": int(seg.pose.shape[0]),
            "n_kept": int(keep.sum()),
            "n_skipped_features": int(seg.n_skipped_features),
            "mean_vocab_distance": float(dist.mean()) if dist.size else 0.0,
            "max_vocab_distance": float(dist.max()) if dist.size else 0.0,
        }
        return {
            "map_token_points": pts.astype(np.float32),
            "map_token_pose": pose.astype(np.float32),
            "map_token_kind": kind,
            "map_token_subtype": subtype,
            "map_token_vocab_index": idx.astype(np.int64),
            "map_token_signal": signal,
        }
