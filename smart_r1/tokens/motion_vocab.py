"""Motion-token vocabulary per agent type, built from data with k-disks.

A motion token is 0.5 s of motion: the 5 poses (10 Hz) after an anchor pose, in the anchor's
frame (x forward, y left, heading relative), `poses[type]: [n_token, 5, 3]`. Tokens are
compared through the 4 corners of a fixed-size box per type (`geometry.TOKEN_BOX_SIZE`:
vehicle 4.8 x 2.0 m, cyclist 2.0 x 1.0, pedestrian 1.0 x 1.0), `corners[type]: [n_token, 5, 4, 2]`.
UNSET / OTHER agents use the vehicle vocabulary.

Build (`build_motion_vocab(scenes, config)`), per type:
1. Samples: every window of 6 consecutive valid logged steps (anchor + 5) of every agent of the
   type, headings de-flipped (`fix_heading_flips`), implausible windows dropped (per-step
   displacement / yaw caps), uniformly sub-sampled (seeded, streaming) to `config.samples`.
2. Synthetic motions: `synthetic_fraction` x n_real always (so the vocabulary covers plausible
   motions the build data lacks, e.g. highway speeds in synthetic scenes), and more when the
   type has too few samples (< `config.min_samples`): fill with synthetic, kinematically plausible
   motions (`synthetic_motions`: constant-curvature arcs with constant acceleration over a
   range of speeds; pedestrians: constant-velocity walks in any direction relative to the
   heading with a slow heading drift), up to `min_samples`. Counts are recorded.
3. k-disks on the flattened corners (distance = mean over the 5 x 4 corners of the corner
   distance): token 0 is the exact stationary motion (all zeros); then repeatedly a random
   remaining sample becomes a centre and every sample within `tolerance` of it is removed,
   until `size` centres or no samples are left.
   Tolerance adaptation (`adapt_tolerance`): if `size` centres are reached with samples left
   (not every sample covered) the tolerance is raised (x2), if the samples run out first it is
   lowered (/2), then bisected geometrically, `max_tolerance_steps` runs in all; the smallest
   tolerance whose run covers every sample wins. If it has fewer than `size` centres, the rest
   are filled farthest-point first (the sample farthest from all centres), which keeps every
   sample covered. So the vocabulary has exactly `size` tokens and every sample used lies
   within the final tolerance (recorded per type) of some token.
Saved as a directory: `vocab.npz` (poses per type, map segment vocabulary) + `vocab.json`
(config, sample counts, final tolerances, data hash of the scenes, `vocab_id` = content hash
of the arrays and the data hash).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tqdm import tqdm

from smart_r1.data.scene import STATE_HEADING, STATE_X, STATE_Y, AgentType, Scene
from smart_r1.tokens.geometry import TOKEN_BOX_SIZE, VOCAB_TYPES, box_corners, transform_to_local, vocab_type, wrap_angle
from smart_r1.tokens.kdisks import (  # noqa: F401  (re-exported: the k-disks names used to live here)
    KDisksResult,
    _nearest_centre_distance,
    kdisks,
    kdisks_vocab,
    pairwise_mean_point_distance,
)
from smart_r1.tokens.map_tokens import MapConfig, MapSegmentPool, MapVocabConfig
from smart_r1.tokens.tokenized_scene import STEPS_PER_TOKEN

FORMAT_VERSION = 1
TYPE_NAMES = {int(AgentType.VEHICLE): "vehicle", int(AgentType.PEDESTRIAN): "pedestrian", int(AgentType.CYCLIST): "cyclist"}
NAME_TO_TYPE = {v: k for k, v in TYPE_NAMES.items()}

# Per-step (0.1 s) plausibility caps for data samples: (max displacement m, max |yaw change| rad).
DEFAULT_STEP_CAPS = {"vehicle": (5.0, 0.6), "pedestrian": (1.5, 1.5), "cyclist": (3.0, 1.0)}


@dataclass
class VocabConfig:
    """Motion vocabulary build settings. Reference (SMART / CAT-K): size 2048, tolerance 0.05 m,
    2e5 samples per type. Defaults are CPU-sized (a few seconds per type on 2 cores)."""

    size: int = 1024  # tokens per type (vehicle, pedestrian, cyclist)
    tolerance: float = 0.05  # k-disks radius, metres of mean corner distance (starting value)
    samples: int = 50_000  # max data samples per type (uniform sub-sample)
    min_samples: int = 8_192  # below this, synthetic motions fill up to it
    synthetic_fraction: float = 0.1  # always add this many synthetic motions per real sample (coverage beyond the data)
    seed: int = 0
    adapt_tolerance: bool = True
    min_tolerance: float = 0.01  # the search never goes below this (redundant data: fill instead)
    max_tolerance_steps: int = 8  # k-disks runs in the tolerance search
    window_stride: int = 1  # steps between sampled window starts
    step_caps: dict = field(default_factory=lambda: dict(DEFAULT_STEP_CAPS))
    flip_threshold: float = 2.0  # rad; a per-step heading jump above this is a flip (+pi)
    build_map_vocab: bool = True  # also build the map-segment vocabulary (map_tokens.MapVocabConfig)
    map: dict = field(default_factory=dict)  # MapVocabConfig overrides

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "VocabConfig":
        names = {f.name for f in dataclasses.fields(VocabConfig)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"VocabConfig: unknown field(s) {unknown}; known: {sorted(names)}")
        cfg = VocabConfig(**d)
        MapConfig.from_dict(cfg.map)  # validate the map overrides early
        return cfg


# ----------------------------------------------------------------------------------------------
# Heading clean-up (shared with the tokenizer)
# ----------------------------------------------------------------------------------------------


def fix_heading_flips(heading: np.ndarray, valid: np.ndarray, threshold: float = 2.0, max_gap: int = 5) -> np.ndarray:
    """Undo 180-degree heading flips of noisy (mostly slow) tracks.

    heading [n_agent, n_step], valid [n_agent, n_step] -> [n_agent, n_step]. Walking forward in
    time, a valid heading that differs from the previous valid (cleaned) heading, at most
    `max_gap` steps earlier, by more than `threshold` rad (physically impossible in 0.1-0.5 s)
    is turned by pi. Within each run of valid steps linked that way, the labelling that changes
    fewer steps wins (so a track whose first steps are the flipped ones is fixed at its start,
    not reversed from then on). Across longer gaps the logged heading is kept.
    """
    h = np.asarray(heading, np.float64).copy()  # [n_agent, n_step]
    n_agent, n_step = h.shape
    prev = np.zeros(n_agent)  # [n_agent]
    last = np.full(n_agent, -(10**6))  # [n_agent] step of the last valid heading
    flipped = np.zeros((n_agent, n_step), bool)  # [n_agent, n_step]
    chunk = np.zeros((n_agent, n_step), np.int64)  # [n_agent, n_step] run id of each valid step
    run = np.zeros(n_agent, np.int64)  # [n_agent]
    for t in range(n_step):
        v = valid[:, t]  # [n_agent]
        near = v & (t - last <= max_gap)  # [n_agent]
        run = np.where(v & ~near, run + 1, run)
        jump = np.abs(wrap_angle(h[:, t] - prev))  # [n_agent]
        flip = near & (jump > threshold)  # [n_agent]
        h[flip, t] = wrap_angle(h[flip, t] + math.pi)
        flipped[:, t] = flip  # this step's label was changed
        chunk[:, t] = run
        prev = np.where(v, h[:, t], prev)
        last = np.where(v, t, last)
    for a in np.flatnonzero((flipped & valid).any(1)):
        for r in np.unique(chunk[a][valid[a]]):
            steps = valid[a] & (chunk[a] == r)  # [n_step]
            if flipped[a, steps].sum() * 2 > steps.sum():  # most steps were changed: use the other labelling
                h[a, steps] = wrap_angle(h[a, steps] + math.pi)
    return h.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Samples
# ----------------------------------------------------------------------------------------------


def scene_motion_windows(scene: Scene, types: Iterable[int], config: VocabConfig) -> dict[int, tuple[np.ndarray, int, int]]:
    """All plausible 0.5 s windows of a scene per vocabulary type.

    Returns {type: (local poses [n, 5, 3] float32, n_windows_valid, n_dropped)}.
    """
    k = STEPS_PER_TOKEN
    valid = scene.agent_valid  # [n_agent, n_step]
    heading = fix_heading_flips(scene.heading, valid, config.flip_threshold)  # [n_agent, n_step]
    pose = np.concatenate([scene.agent_states[..., [STATE_X, STATE_Y]], heading[..., None]], axis=-1)  # [n_agent, n_step, 3]
    pose = pose.astype(np.float64)
    starts = np.arange(0, scene.n_step - k, config.window_stride)  # [n_win]
    steps = starts[:, None] + np.arange(k + 1)[None]  # [n_win, 6]
    win_valid = valid[:, steps].all(-1)  # [n_agent, n_win]
    vt = np.array([vocab_type(t) for t in scene.agent_type], np.int64)  # [n_agent]
    out = {}
    for t in types:
        rows = np.flatnonzero(vt == t)  # [n_rows]
        wv = win_valid[rows]  # [n_rows, n_win]
        r, w = np.nonzero(wv)  # [n]
        if r.size == 0:
            out[t] = (np.zeros((0, k, 3), np.float32), 0, 0)
            continue
        seq = pose[rows[r]][np.arange(r.size)[:, None], steps[w]]  # [n, 6, 3]
        local = transform_to_local(seq[:, 0], seq[:, 1:])  # [n, 5, 3]
        full = np.concatenate([np.zeros((r.size, 1, 3)), local], axis=1)  # [n, 6, 3]
        step_d = np.linalg.norm(np.diff(full[..., :2], axis=1), axis=-1).max(-1)  # [n]
        step_yaw = np.abs(wrap_angle(np.diff(full[..., 2], axis=1))).max(-1)  # [n]
        cap_d, cap_yaw = config.step_caps[TYPE_NAMES[t]]
        ok = (step_d <= cap_d) & (step_yaw <= cap_yaw) & np.isfinite(local).all((1, 2))  # [n]
        out[t] = (local[ok].astype(np.float32), int(r.size), int((~ok).sum()))
    return out


def synthetic_motions(agent_type: int, n: int, seed: int = 0) -> np.ndarray:
    """`n` kinematically plausible 0.5 s motions for `agent_type`, local frame.  -> [n, 5, 3]

    Vehicles / cyclists: constant curvature `kappa` and constant acceleration `a` from speed `v0`
    (bicycle-like: heading = kappa * arc length; |kappa * v| bounded by a lateral acceleration cap;
    vehicles may also reverse slowly). Pedestrians: constant velocity in a direction `phi` relative
    to the heading (mostly forward) with heading drift `omega`. 20 % of samples are near-stationary.
    """
    rng = np.random.default_rng([seed, int(agent_type), 7919])
    t = np.arange(1, STEPS_PER_TOKEN + 1) * 0.1  # [5]
    name = TYPE_NAMES[vocab_type(agent_type)]
    if name == "pedestrian":
        speed = rng.uniform(0.0, 3.5, n)  # [n]
        speed[rng.random(n) < 0.2] *= 0.05
        phi = np.where(rng.random(n) < 0.7, rng.normal(0.0, 0.3, n), rng.uniform(-math.pi, math.pi, n))  # [n]
        omega = rng.normal(0.0, 0.5, n)  # [n]
        x = speed[:, None] * np.cos(phi)[:, None] * t  # [n, 5]
        y = speed[:, None] * np.sin(phi)[:, None] * t  # [n, 5]
        h = omega[:, None] * t  # [n, 5]
        return np.stack([x, y, wrap_angle(h)], -1).astype(np.float32)
    vmax, amax, kmax, lat = (35.0, 5.0, 0.2, 4.0) if name == "vehicle" else (12.0, 3.0, 0.4, 3.0)
    v0 = rng.uniform(0.0, vmax, n)  # [n]
    v0[rng.random(n) < 0.2] *= 0.05
    if name == "vehicle":
        rev = rng.random(n) < 0.05
        v0[rev] = -rng.uniform(0.0, 3.0, int(rev.sum()))
    acc = rng.uniform(-amax, amax * 0.6, n)  # [n]
    kmax_v = np.minimum(kmax, lat / np.maximum(np.abs(v0), 1e-3) ** 2)  # [n]
    kappa = rng.uniform(-1.0, 1.0, n) * kmax_v  # [n]
    s = v0[:, None] * t + 0.5 * acc[:, None] * t**2  # [n, 5] arc length
    # no reversal through zero within the token: clamp the arc length once speed hits zero
    t_stop = np.where(acc * v0 < 0, -v0 / np.where(acc == 0, 1, acc), np.inf)  # [n]
    s_stop = v0 * t_stop + 0.5 * acc * t_stop**2  # [n]
    s = np.where(t[None] > t_stop[:, None], s_stop[:, None], s)  # [n, 5]
    theta = kappa[:, None] * s  # [n, 5]
    small = np.abs(kappa) < 1e-6  # [n]
    safe_k = np.where(small, 1.0, kappa)[:, None]  # [n, 1]
    x = np.where(small[:, None], s, np.sin(theta) / safe_k)  # [n, 5]
    y = np.where(small[:, None], 0.0, (1.0 - np.cos(theta)) / safe_k)  # [n, 5]
    return np.stack([x, y, wrap_angle(theta)], -1).astype(np.float32)


def _flat_corners(poses: np.ndarray | torch.Tensor, agent_type: int) -> torch.Tensor:
    """poses [n, 5, 3] -> corners flattened [n, 20, 2] float32 torch."""
    p = torch.as_tensor(np.asarray(poses), dtype=torch.float32)  # [n, 5, 3]
    c = box_corners(p, *TOKEN_BOX_SIZE[int(agent_type)])  # [n, 5, 4, 2]
    return c.reshape(p.shape[0], -1, 2)  # [n, 20, 2]


# ----------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------


def scene_digest(scene: Scene) -> str:
    """sha256 of one scene's agent data (id, types, states, validity)."""
    h = hashlib.sha256()
    h.update(scene.scenario_id.encode())
    for a in (scene.agent_id, scene.agent_type, scene.agent_states, scene.agent_valid):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def combine_digests(digests: Iterable[str]) -> str:
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()[:16]


def data_hash(scenes: Iterable[Scene]) -> str:
    """Order-independent hash of the scenes' agent data (ids, types, states, validity)."""
    return combine_digests(scene_digest(s) for s in scenes)


class MotionVocab:
    """Template motions per agent type (torch float32).

    `poses[type]: [n_token, 5, 3]`, `corners[type]: [n_token, 5, 4, 2]` for every `AgentType`
    (UNSET / OTHER alias the vehicle tensors). Token 0 of every type is the stationary motion.
    `map_segments: [n_map_vocab, n_point, 2] | None`: the map-segment vocabulary (map_tokens).
    """

    def __init__(self, poses: dict[int, np.ndarray | torch.Tensor], meta: dict | None = None, map_segments=None):
        self.poses: dict[int, torch.Tensor] = {}
        self.corners: dict[int, torch.Tensor] = {}
        for t in VOCAB_TYPES:
            p = torch.as_tensor(np.asarray(poses[t], np.float32))  # [n_token, 5, 3]
            if p.ndim != 3 or p.shape[1:] != (STEPS_PER_TOKEN, 3):
                raise ValueError(f"MotionVocab: poses for {TYPE_NAMES[t]} have shape {tuple(p.shape)}, expected [n, 5, 3]")
            self.poses[t] = p
            self.corners[t] = box_corners(p, *TOKEN_BOX_SIZE[t])  # [n_token, 5, 4, 2]
        for t in (int(AgentType.UNSET), int(AgentType.OTHER)):
            self.poses[t] = self.poses[int(AgentType.VEHICLE)]
            self.corners[t] = self.corners[int(AgentType.VEHICLE)]
        self.map_segments = None if map_segments is None else torch.as_tensor(np.asarray(map_segments, np.float32))
        self.meta = dict(meta or {})
        self.meta.setdefault("data_hash", "")
        self.vocab_id = self._content_hash()
        self.meta["vocab_id"] = self.vocab_id

    # ----- sizes -----
    def size(self, agent_type: int) -> int:
        return int(self.poses[vocab_type(agent_type)].shape[0])

    @property
    def sizes(self) -> dict[str, int]:
        return {TYPE_NAMES[t]: self.size(t) for t in VOCAB_TYPES}

    @property
    def max_size(self) -> int:
        return max(self.size(t) for t in VOCAB_TYPES)

    @property
    def data_hash(self) -> str:
        return str(self.meta.get("data_hash", ""))

    def stationary_index(self, agent_type: int) -> int:
        return 0

    def padded_poses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All vocabularies in one tensor indexed by `AgentType` value.

        Returns poses `[5, max_size, 5, 3]` (zeros beyond a type's size) and valid `[5, max_size]` bool.
        """
        n_types = max(int(t) for t in AgentType) + 1
        out = torch.zeros(n_types, self.max_size, STEPS_PER_TOKEN, 3)  # [5, V, 5, 3]
        valid = torch.zeros(n_types, self.max_size, dtype=torch.bool)  # [5, V]
        for t in AgentType:
            n = self.size(int(t))
            out[int(t), :n] = self.poses[int(t)]
            valid[int(t), :n] = True
        return out, valid

    # ----- identity / io -----
    def _content_hash(self) -> str:
        h = hashlib.sha256(f"smart-r1-motion-vocab-v{FORMAT_VERSION}".encode())
        for t in VOCAB_TYPES:
            h.update(f"|{t}|".encode())
            h.update(self.poses[t].numpy().astype(np.float32).tobytes())
        if self.map_segments is not None:
            h.update(b"|map|")
            h.update(self.map_segments.numpy().astype(np.float32).tobytes())
        h.update(self.data_hash.encode())
        return h.hexdigest()[:16]

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {f"{TYPE_NAMES[t]}_poses": self.poses[t].numpy() for t in VOCAB_TYPES}
        if self.map_segments is not None:
            arrays["map_segments"] = self.map_segments.numpy()
        np.savez(d / "vocab.npz", **arrays)
        meta = dict(self.meta)
        meta.update(format_version=FORMAT_VERSION, vocab_id=self.vocab_id, content_hash=self.vocab_id, sizes=self.sizes)
        (d / "vocab.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        return d

    @staticmethod
    def load(directory: str | Path) -> "MotionVocab":
        d = Path(directory)
        npz, js = d / "vocab.npz", d / "vocab.json"
        for f in (npz, js):
            if not f.exists():
                raise FileNotFoundError(f"motion vocabulary {d}: missing {f.name}")
        meta = json.loads(js.read_text())
        with np.load(npz) as z:
            missing = [f"{TYPE_NAMES[t]}_poses" for t in VOCAB_TYPES if f"{TYPE_NAMES[t]}_poses" not in z.files]
            if missing:
                raise ValueError(f"motion vocabulary {npz}: missing arrays {missing}")
            poses = {t: z[f"{TYPE_NAMES[t]}_poses"] for t in VOCAB_TYPES}
            segs = z["map_segments"] if "map_segments" in z.files else None
        vocab = MotionVocab(poses, meta, segs)
        stored = meta.get("vocab_id")
        if stored and stored != vocab.vocab_id:
            raise ValueError(f"motion vocabulary {d}: vocab.json vocab_id {stored} != content hash {vocab.vocab_id}")
        return vocab

    def __repr__(self) -> str:
        return f"MotionVocab(id={self.vocab_id}, sizes={self.sizes})"


def build_motion_vocab(scenes: Iterable[Scene], config: VocabConfig | None = None, progress: bool = True) -> MotionVocab:
    """k-disks motion vocabulary (and map-segment vocabulary) from `scenes` (see module docstring)."""
    config = config or VocabConfig()
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    rng = np.random.default_rng([config.seed, 1])
    pool: dict[int, tuple[np.ndarray, np.ndarray]] = {
        t: (np.zeros(0), np.zeros((0, STEPS_PER_TOKEN, 3), np.float32)) for t in VOCAB_TYPES
    }
    counts = {t: {"n_windows": 0, "n_dropped_implausible": 0} for t in VOCAB_TYPES}
    digests: list[str] = []
    scenario_ids: list[str] = []
    map_pool = None
    if config.build_map_vocab:
        map_pool = MapSegmentPool(MapVocabConfig.from_dict(config.map), seed=config.seed)
    for scene in tqdm(scenes, desc="vocab samples", unit="scene", disable=not progress):
        digests.append(scene_digest(scene))
        scenario_ids.append(scene.scenario_id)
        windows = scene_motion_windows(scene, VOCAB_TYPES, config)
        for t, (local, n_win, n_drop) in windows.items():
            counts[t]["n_windows"] += n_win
            counts[t]["n_dropped_implausible"] += n_drop
            keys = rng.random(local.shape[0])  # [n] streaming uniform sub-sample: keep smallest keys
            k_all = np.concatenate([pool[t][0], keys])
            s_all = np.concatenate([pool[t][1], local])
            if k_all.shape[0] > config.samples:
                keep = np.argsort(k_all, kind="stable")[: config.samples]
                keep.sort()
                k_all, s_all = k_all[keep], s_all[keep]
            pool[t] = (k_all, s_all)
        if map_pool is not None:
            map_pool.add(scene)
    if not digests:
        raise ValueError("build_motion_vocab: no scenes to build the vocabulary from")
    dhash = combine_digests(digests)

    poses_out: dict[int, np.ndarray] = {}
    types_meta: dict[str, dict] = {}
    for t in VOCAB_TYPES:
        t0, c0 = time.perf_counter(), time.process_time()
        real = pool[t][1]  # [n_real, 5, 3]
        n_syn = max(0, config.min_samples - real.shape[0], int(math.ceil(config.synthetic_fraction * real.shape[0])))
        syn = synthetic_motions(t, n_syn, config.seed) if n_syn else np.zeros((0, STEPS_PER_TOKEN, 3), np.float32)
        samples = np.concatenate([real, syn]).astype(np.float32)  # [n, 5, 3]
        x = _flat_corners(samples, t)  # [n, 20, 2]
        forced = _flat_corners(np.zeros((1, STEPS_PER_TOKEN, 3), np.float32), t)[0]  # [20, 2]
        centres, info = kdisks_vocab(
            x, config.size, config.tolerance, config.seed + 1000 * t, forced, config.adapt_tolerance, config.max_tolerance_steps, config.min_tolerance
        )
        poses = np.where(centres[:, None, None] < 0, 0.0, samples[np.maximum(centres, 0)]).astype(np.float32)  # [size, 5, 3]
        poses_out[t] = poses
        info.update(counts[t], n_real_samples=int(real.shape[0]), n_synthetic_samples=int(n_syn), size=int(len(centres)))
        info["build_seconds"] = round(time.perf_counter() - t0, 3)
        info["build_cpu_seconds"] = round(time.process_time() - c0, 3)
        types_meta[TYPE_NAMES[t]] = info

    map_segments, map_meta = None, {}
    if map_pool is not None:
        map_segments, map_meta = map_pool.build()
    meta = {
        "config": config.to_dict(),
        "data_hash": dhash,
        "n_scenes": len(digests),
        "scenario_ids_sample": sorted(scenario_ids)[:20],
        "types": types_meta,
        "map": map_meta,
        "box_size": {TYPE_NAMES[t]: list(TOKEN_BOX_SIZE[t]) for t in VOCAB_TYPES},
        "build_seconds": round(time.perf_counter() - t_start, 3),
        "build_cpu_seconds": round(time.process_time() - cpu_start, 3),  # this process, all threads
    }
    return MotionVocab(poses_out, meta, map_segments)
