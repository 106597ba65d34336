"""Official WOSAC 2025 results as parity fixtures for the fast metric backend.

Runs the installed official code (`waymo_open_dataset` 1.6.7, in-process, TensorFlow; the
same calls as `metrics.compute_scenario_metrics_for_bundle`) and stores under
`tests/fixtures/metrics/parity/`:
- `official.json`: one entry per (scene, rollout policy) with the official `SimAgentMetrics`
  fields, `scenes/<id>.binproto.gz` (the Scenario proto scored) and
  `rollouts/<id>__<policy>.npz` (float32 trajectories [n_rollout, n_sim, 80, 4] + agent ids).
- `real_637f20cafde22ff8.json` (`--real`): the 4 rollout sets of the reference table on the
  real scene (shared submission, log replay, frozen, const-vel; 32 rollouts).

Scenes: `smart_r1.data.synth.generate_scenario(1000 + i, 0, SynthConfig(min_agents=6,
max_agents=14))`, map cropped to 50 m around the agents (the cropped scene is the fixture), every
4th scene with all signals forced to STOP (red-light violations). Policies: log + noise,
constant velocity, frozen, perturbed (random walk); 16 rollouts (32 was not affordable:
~15-45 s per case for the official code on the shared 2-core box). Rollout positions are
rounded to 1/128 m and headings to 1/1024 rad so the npz files compress (still float32).
Preload tcmalloc for speed: `LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4`.
Resumable (entries already in official.json are skipped). Not a test.

    python -m benchmarks.make_parity_fixtures [--n-scenes 20] [--n-rollout 16] [--real]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from smart_r1.data.convert import scenario_to_scene  # noqa: E402
from smart_r1.data.scenario_io import read_scenario_protos  # noqa: E402
from smart_r1.data.scene import Scene  # noqa: E402
from smart_r1.metrics.base import LIKELIHOOD_FIELDS, RATE_FIELDS  # noqa: E402
from smart_r1.metrics.submission import read_submission, rollouts_to_scenario_rollouts  # noqa: E402
from smart_r1.sim.rollouts import Rollouts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL_SCENARIO = ROOT / "tests" / "fixtures" / "womd" / "scenario_637f20cafde22ff8.tfrecord"
REAL_SUBMISSION = ROOT / "tests" / "fixtures" / "womd" / "constant_velocity_submission_637f20cafde22ff8.binproto"
OUT_DIR = ROOT / "tests" / "fixtures" / "metrics" / "parity"

METRIC_FIELDS = (
    ("metametric",)
    + LIKELIHOOD_FIELDS
    + ("min_average_displacement_error", "average_displacement_error")
    + RATE_FIELDS
)


# ----------------------------------------------------------------------------------------------
# The shared real scene and submission, through the library's readers
# ----------------------------------------------------------------------------------------------


def read_scenario_proto(path: str | os.PathLike):
    """First `Scenario` record of a TFRecord file."""
    for proto in read_scenario_protos(str(path)):
        return proto
    raise ValueError(f"{path}: no records")


def load_real_scene():
    sc = read_scenario_proto(REAL_SCENARIO)
    return sc, scenario_to_scene(sc, str(REAL_SCENARIO))


def load_real_submission_rollouts() -> Rollouts:
    (rollouts,) = read_submission(REAL_SUBMISSION).values()
    return rollouts


# ----------------------------------------------------------------------------------------------
# Rollout policies
# ----------------------------------------------------------------------------------------------


def _sim_rows(scene: Scene) -> np.ndarray:
    return np.flatnonzero(scene.sim_agent_mask())


def policy_rollouts(scene: Scene, policy: str, n_rollout: int = 32, seed: int = 0) -> Rollouts:
    """Rollouts [n_rollout, n_sim, 80, 4] of a simple policy: log / log_noise / frozen / const_vel /
    const_vel_noise / perturbed (random-walk perturbation of the log, headings included)."""
    rng = np.random.default_rng(seed)
    rows = _sim_rows(scene)
    cur = scene.current_time_index
    st = scene.agent_states[rows]  # [n_sim, n_step, 9]
    pose = st[..., [0, 1, 2, 3]]  # [n_sim, n_step, 4]
    n_sim = rows.size
    fut = pose[:, cur + 1 : cur + 81]  # [n_sim, 80, 4]
    if policy == "log":
        traj = np.broadcast_to(fut, (n_rollout, n_sim, 80, 4)).copy()
    elif policy == "log_noise":
        traj = np.broadcast_to(fut, (n_rollout, n_sim, 80, 4)).copy()
        traj[..., :2] += rng.normal(0, 0.3, traj[..., :2].shape)
        traj[..., 3] += rng.normal(0, 0.03, traj[..., 3].shape)
    elif policy == "frozen":
        traj = np.broadcast_to(pose[:, cur][None, :, None], (n_rollout, n_sim, 80, 4)).copy()
    elif policy in ("const_vel", "const_vel_noise"):
        prev_ok = scene.agent_valid[rows, cur - 1]  # [n_sim]
        vel = np.where(prev_ok[:, None], pose[:, cur, :3] - pose[:, cur - 1, :3], 0.0)  # [n_sim, 3]
        k = np.arange(1, 81, dtype=np.float32)[:, None]  # [80, 1]
        xyz = pose[:, cur, None, :3] + k[None] * vel[:, None]  # [n_sim, 80, 3]
        head = np.broadcast_to(pose[:, cur, None, 3:4], (n_sim, 80, 1))
        one = np.concatenate([xyz, head], -1)  # [n_sim, 80, 4]
        traj = np.broadcast_to(one, (n_rollout, n_sim, 80, 4)).copy()
        if policy == "const_vel_noise":
            scale = rng.uniform(0.5, 1.5, (n_rollout, n_sim, 1, 1))
            traj[..., :3] = pose[None, :, cur, None, :3] + (traj[..., :3] - pose[None, :, cur, None, :3]) * scale
            traj[..., :2] += rng.normal(0, 0.2, traj[..., :2].shape)
    elif policy == "perturbed":
        base = np.broadcast_to(fut, (n_rollout, n_sim, 80, 4)).copy()
        drift = np.cumsum(rng.normal(0, 0.15, (n_rollout, n_sim, 80, 2)), axis=2)
        base[..., :2] += drift
        base[..., 3] += np.cumsum(rng.normal(0, 0.02, (n_rollout, n_sim, 80)), axis=2)
        base[..., 3] = (base[..., 3] + math.pi) % (2 * math.pi) - math.pi
        traj = base
    else:
        raise ValueError(f"unknown rollout policy {policy!r}")
    return Rollouts(scenario_id=scene.scenario_id, agent_id=scene.agent_id[rows], trajectories=traj.astype(np.float32))


# ----------------------------------------------------------------------------------------------
# Official scoring (in-process)
# ----------------------------------------------------------------------------------------------


def _official_config():
    from google.protobuf import text_format
    from waymo_open_dataset.protos import sim_agents_metrics_pb2
    from waymo_open_dataset.wdl_limited.sim_agents_metrics import metrics

    path = Path(metrics.__file__).with_name("challenge_2025_sim_agents_config.textproto")
    cfg = sim_agents_metrics_pb2.SimAgentMetricsConfig()
    text_format.Parse(path.read_text(), cfg)
    return cfg


def rollouts_to_proto(rollouts: Rollouts):
    return rollouts_to_scenario_rollouts(rollouts)


def official_scores(scenario, rollouts: Rollouts, return_features: bool = False):
    """Official `SimAgentMetrics` (dict of METRIC_FIELDS) for a Scenario proto and Rollouts."""
    from waymo_open_dataset.wdl_limited.sim_agents_metrics import metric_features, metrics

    cfg = _official_config()
    sr = rollouts_to_proto(rollouts)
    log_f, sim_f = metric_features.compute_scenario_rollouts_features(scenario, sr, metric_features._ChallengeType.SIM_AGENTS)
    m = metrics.compute_scenario_metrics_for_features_bundle(cfg, scenario.scenario_id, log_f, sim_f)
    out = {k: float(getattr(m, k)) for k in METRIC_FIELDS}
    if return_features:
        feats = {}
        for name in ("valid", "average_displacement_error", "linear_speed", "linear_acceleration", "angular_speed",
                     "angular_acceleration", "distance_to_nearest_object", "collision_per_step", "time_to_collision",
                     "distance_to_road_edge", "offroad_per_step", "traffic_light_violation_per_step"):
            feats["log_" + name] = getattr(log_f, name).numpy()
            feats["sim_" + name] = getattr(sim_f, name).numpy()
        feats["object_id"] = log_f.object_id.numpy()
        return out, feats
    return out


# ----------------------------------------------------------------------------------------------
# Fixture generation
# ----------------------------------------------------------------------------------------------

POLICIES = ("log_noise", "const_vel", "frozen", "perturbed")


def crop_map(scenario, radius: float = 50.0):
    """Copy of `scenario` keeping only map features within `radius` m of any valid agent state
    (keeps the official scorer affordable; the cropped scene IS the fixture, both backends see it)."""
    from waymo_open_dataset.protos import scenario_pb2

    out = scenario_pb2.Scenario()
    out.CopyFrom(scenario)
    xy = np.asarray([(s.center_x, s.center_y) for tr in scenario.tracks for s in tr.states if s.valid], np.float64)  # [n, 2]
    lo, hi = xy.min(0) - radius, xy.max(0) + radius
    del out.map_features[:]
    for f in scenario.map_features:
        which = f.WhichOneof("feature_data")
        d = getattr(f, which)
        if which == "stop_sign":
            pts = np.asarray([(d.position.x, d.position.y)])
        elif which in ("crosswalk", "speed_bump", "driveway"):
            pts = np.asarray([(p.x, p.y) for p in d.polygon]).reshape(-1, 2)
        else:
            pts = np.asarray([(p.x, p.y) for p in d.polyline]).reshape(-1, 2)
        if pts.size and ((pts >= lo) & (pts <= hi)).all(-1).any():
            out.map_features.add().CopyFrom(f)
    return out


def all_signals_stop(scenario):
    """Copy of `scenario` with every traffic-signal state set to STOP (exercises red-light violations)."""
    from waymo_open_dataset.protos import scenario_pb2

    out = scenario_pb2.Scenario()
    out.CopyFrom(scenario)
    for dms in out.dynamic_map_states:
        for ls in dms.lane_states:
            ls.state = 4
    return out


def synthetic_scenarios(n: int, max_agents: int = 14):
    """Parity scenes from the synthetic generator (seed = index); every 4th with all signals STOP."""
    from smart_r1.data.synth.config import SynthConfig
    from smart_r1.data.synth.generator import generate_scenario

    cfg = SynthConfig(min_agents=6, max_agents=max_agents, scenario_id_prefix="parity")
    for i in range(n):
        sc = crop_map(generate_scenario(1000 + i, 0, cfg))
        if i % 4 == 3:
            sc = all_signals_stop(sc)
        yield sc


def quantize_rollouts(ro: Rollouts) -> Rollouts:
    """Round x/y/z to 1/128 m and heading to 1/1024 rad (still float32; compresses ~2x)."""
    t = ro.trajectories.copy()
    t[..., :3] = np.round(t[..., :3] * 128) / 128
    t[..., 3] = np.round(t[..., 3] * 1024) / 1024
    return Rollouts(scenario_id=ro.scenario_id, agent_id=ro.agent_id, trajectories=t.astype(np.float32))


def load_fixture_case(entry: dict, root: Path = OUT_DIR):
    """(scenario proto, Scene, Rollouts, official dict) of one entry of `official.json`."""
    import gzip

    from waymo_open_dataset.protos import scenario_pb2

    sc = scenario_pb2.Scenario()
    sc.ParseFromString(gzip.decompress((root / entry["scene_file"]).read_bytes()))
    scene = scenario_to_scene(sc)
    z = np.load(root / entry["rollouts_file"])
    ro = Rollouts(scenario_id=sc.scenario_id, agent_id=z["agent_id"], trajectories=z["trajectories"])
    return sc, scene, ro, entry["official"]


REAL_SETS = ("submission", "log", "frozen", "const_vel")


def real_rollout_sets(scene: Scene) -> dict[str, Rollouts]:
    """The 4 rollout sets of the reference table: the shared submission, log replay, frozen, const-vel (x32)."""
    return {
        "submission": load_real_submission_rollouts(),
        "log": policy_rollouts(scene, "log"),
        "frozen": policy_rollouts(scene, "frozen"),
        "const_vel": policy_rollouts(scene, "const_vel"),
    }


def make_real_fixture(out: Path = OUT_DIR) -> None:
    sc, scene = load_real_scene()
    res = {"scenario_id": sc.scenario_id, "sets": {}}
    for name, ro in real_rollout_sets(scene).items():
        res["sets"][name] = official_scores(sc, ro)
        print(name, res["sets"][name], flush=True)
    (out / "real_637f20cafde22ff8.json").write_text(json.dumps(res, indent=1))


def main(argv=None) -> int:
    import gzip

    from tqdm import tqdm

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-scenes", type=int, default=20)
    ap.add_argument("--n-rollout", type=int, default=16)
    ap.add_argument("--max-agents", type=int, default=14)
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--out", default=str(OUT_DIR))
    ap.add_argument("--real", action="store_true", help="(re)make real_637f20cafde22ff8.json: the 4 real-scene rollout sets")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.real:
        make_real_fixture(out)
        return 0
    (out / "scenes").mkdir(parents=True, exist_ok=True)
    (out / "rollouts").mkdir(parents=True, exist_ok=True)
    index_path = out / "official.json"
    entries = json.loads(index_path.read_text()) if index_path.exists() else []
    done = {(e["scenario_id"], e["policy"]) for e in entries}
    policies = args.policies.split(",")
    bar = tqdm(total=args.n_scenes * len(policies), desc="official parity fixtures")
    for k, sc in enumerate(synthetic_scenarios(args.n_scenes, args.max_agents)):
        scene = scenario_to_scene(sc)
        scene_file = f"scenes/{sc.scenario_id}.binproto.gz"
        if not (out / scene_file).exists():
            (out / scene_file).write_bytes(gzip.compress(sc.SerializeToString(), 9))
        for p, policy in enumerate(policies):
            bar.update(1)
            if (sc.scenario_id, policy) in done:
                continue
            ro = quantize_rollouts(policy_rollouts(scene, policy, args.n_rollout, seed=100 * k + p))
            ro_file = f"rollouts/{sc.scenario_id}__{policy}.npz"
            np.savez_compressed(out / ro_file, trajectories=ro.trajectories, agent_id=ro.agent_id)
            t0 = time.time()
            scores = official_scores(sc, ro)
            entries.append({
                "scenario_id": sc.scenario_id, "policy": policy, "scene_file": scene_file, "rollouts_file": ro_file,
                "n_rollout": ro.n_rollout, "n_sim_agents": int(ro.n_agent), "official_seconds": round(time.time() - t0, 1),
                "official": scores,
            })
            index_path.write_text(json.dumps(entries, indent=1))
    bar.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
