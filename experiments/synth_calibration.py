"""Calibration of the `womd` synthetic profile against real WOMD (issue 12).

    python -m experiments.synth_calibration [--scenes 24] [--ladder-scenes 8] [--rollouts 32] [--seed 100]

1. Feature distributions: the WOSAC 2025 features (`smart_r1.metrics.features` through the fast
   backend) of the *logged* futures, for the real scene in tests/fixtures/womd/ and for
   womd-profile scenes, over (a) the official evaluated agents (SDC + tracks to predict) and
   (b) every vehicle valid at the current step; valid future steps only. Prints p10 / median /
   p90 per feature (and the mean of the collision / offroad indicators).
2. The baseline ladder on womd-profile scenes (fast backend, `--rollouts` rollouts): constant
   velocity, log replay + 1 m noise, log replay, oracle; and on the real scene (no oracle there).
Markdown goes to stdout (pasted into docs/synthetic_data.md); `--json PATH` keeps the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "tests" / "fixtures" / "womd" / "scenario_637f20cafde22ff8.tfrecord"
FEATURES = (
    ("linear_speed", "speed (m/s)"),
    ("linear_acceleration", "acceleration (m/s²)"),
    ("angular_speed", "yaw rate (rad/s)"),
    ("distance_to_nearest_object", "distance to nearest object (m)"),
    ("time_to_collision", "time to collision (s, capped 5)"),
    ("distance_to_road_edge", "distance to road edge (m, <0 inside)"),
)
LADDER = ("constant_velocity", "log_replay_noise", "log_replay", "oracle")


def log_features(scene, backend, who: str) -> dict[str, np.ndarray]:
    """Valid logged-future values of each feature over the evaluated agents (`who`: eval / vehicles)."""
    from smart_r1.data.scene import STATE_HEADING, STATE_X, STATE_Z
    from smart_r1.data.synth.quality import scene_with_eval
    from smart_r1.sim.rollouts import Rollouts

    sc = scene_with_eval(scene, who)
    cur = sc.current_time_index
    sim_rows = np.flatnonzero(sc.agent_valid[:, cur])
    fut = sc.agent_states[sim_rows, cur + 1 :][..., [STATE_X, STATE_X + 1, STATE_Z, STATE_HEADING]]
    ro = Rollouts(scenario_id=sc.scenario_id, agent_id=sc.agent_id[sim_rows], trajectories=fut[None])
    feats = backend.score_detailed(sc, ro, keep_features=True).features
    rows = np.flatnonzero(sc.eval_agent_mask())
    rows = rows[np.argsort(sc.agent_id[rows], kind="stable")]
    valid = sc.agent_valid[rows, cur + 1 :]  # [E, 80]
    out = {}
    for key, _ in FEATURES + (("collision_per_step", ""), ("offroad_per_step", "")):
        v = np.asarray(feats[key][-1], np.float64)  # [E, 80] the log (last batch element), SI units
        m = valid & np.isfinite(v) & (np.abs(v) < 1e9)
        out[key] = v[m]
    return out


def summarize(values: list[dict]) -> dict[str, dict]:
    out = {}
    for key in values[0]:
        v = np.concatenate([d[key] for d in values])
        if key.endswith("_per_step"):
            out[key] = {"mean": float(v.mean()) if v.size else float("nan"), "n": int(v.size)}
        else:
            q = np.percentile(v, [10, 50, 90]) if v.size else [float("nan")] * 3
            out[key] = {"p10": float(q[0]), "p50": float(q[1]), "p90": float(q[2]), "n": int(v.size)}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=24)
    ap.add_argument("--ladder-scenes", type=int, default=8)
    ap.add_argument("--rollouts", type=int, default=32)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import tempfile

    from smart_r1.data.scenario_io import iter_scenes
    from smart_r1.data.synth import write_synthetic_dataset
    from smart_r1.eval.evaluate import evaluate_scene
    from smart_r1.eval.sources import make_source
    from smart_r1.metrics.base import get_backend

    backend = get_backend("fast", device="cpu")
    real = list(iter_scenes(str(REAL)))
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_dataset(tmp, num_scenes=args.scenes, seed=args.seed, progress=False, profile="womd")
        synth = list(iter_scenes(tmp))
    res: dict = {"n_real": len(real), "n_synth": len(synth), "shape": {}}
    for name, scenes in (("real", real), ("womd", synth)):
        res["shape"][name] = {
            "tracks": [int(s.n_agent) for s in scenes],
            "sim_agents": [int(s.sim_agent_mask().sum()) for s in scenes],
            "tracks_to_predict": [int(s.tracks_to_predict.sum()) for s in scenes],
        }
    res["features"] = {
        who: {name: summarize([log_features(s, backend, who) for s in scenes]) for name, scenes in (("real", real), ("womd", synth))}
        for who in ("eval", "vehicles")
    }
    ladder: dict = {"womd": {}, "real": {}}
    t0 = time.process_time()
    for name, scenes in (("womd", synth[: args.ladder_scenes]), ("real", real)):
        for b in LADDER:
            if name == "real" and b == "oracle":
                continue
            src = make_source(f"baseline:{b}")
            ladder[name][b] = float(np.mean([evaluate_scene(src, s, backend, args.rollouts, seed=0).scores.metametric for s in scenes]))
    res["ladder"] = ladder
    res["ladder_cpu_s"] = time.process_time() - t0
    res["load_average_1min"] = os.getloadavg()[0]
    print(to_markdown(res, args))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


def to_markdown(res: dict, args) -> str:
    lines = []
    sh = res["shape"]
    lines.append(f"Scenes: real WOMD {res['n_real']} (tests/fixtures/womd), womd profile {res['n_synth']} (seed {args.seed}).\n")
    lines.append("| | real WOMD | womd profile (median [min, max]) |")
    lines.append("|---|---:|---:|")
    for k, label in (("tracks", "tracks"), ("sim_agents", "simulated agents (valid at step 10)"), ("tracks_to_predict", "tracks to predict")):
        r, w = sh["real"][k], sh["womd"][k]
        lines.append(f"| {label} | {', '.join(map(str, r))} | {int(np.median(w))} [{min(w)}, {max(w)}] |")
    for who, title in (("eval", "official evaluated agents (SDC + tracks to predict)"), ("vehicles", "every vehicle / cyclist valid at step 10")):
        lines.append(f"\nLogged-future WOSAC features, {title}: p10 / median / p90 over valid steps\n")
        lines.append("| feature | real WOMD | womd profile |")
        lines.append("|---|---:|---:|")
        f = res["features"][who]
        for key, label in FEATURES:
            cells = []
            for name in ("real", "womd"):
                d = f[name][key]
                cells.append(f"{d['p10']:.2f} / {d['p50']:.2f} / {d['p90']:.2f} (n={d['n']})")
            lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
        for key, label in (("collision_per_step", "collision (share of steps)"), ("offroad_per_step", "offroad (share of steps)")):
            lines.append(f"| {label} | {f['real'][key]['mean']:.3f} | {f['womd'][key]['mean']:.3f} |")
    lines.append(f"\nBaseline ladder (realism meta metric, fast backend, {args.rollouts} rollouts; womd: {args.ladder_scenes} scenes)\n")
    lines.append("| policy | womd profile | real WOMD |")
    lines.append("|---|---:|---:|")
    for b in LADDER:
        w = res["ladder"]["womd"].get(b)
        r = res["ladder"]["real"].get(b)
        lines.append(f"| {b} | {w:.4f} | {'-' if r is None else f'{r:.4f}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
