"""Render speed: seconds for a 91-frame GIF of a 128-agent synthetic scene (and the real
WOMD scene), log + one simulated rollout, plus the PNG grid. Target (issue 7): < 10 s per GIF.

    python -m benchmarks.render_speed
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from smart_r1.data.convert import scenario_to_scene
from smart_r1.data.scenario_io import load_scene
from smart_r1.data.synth import generate_scenario
from smart_r1.data.synth.config import SynthConfig
from smart_r1.sim.baselines import get_baseline
from smart_r1.viz.render import RenderConfig, render_gif, render_grid

REAL = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "womd" / "scenario_637f20cafde22ff8.tfrecord"


def _largest_synthetic(n_try: int = 6):
    best = None
    for i in range(n_try):
        scene = scenario_to_scene(generate_scenario(7, i, SynthConfig(min_agents=128, max_agents=128)))
        if best is None or scene.n_agent > best.n_agent:
            best = scene
    return best


def bench(scene, label: str, out: Path) -> dict:
    rollouts = get_baseline("constant_velocity")(scene, num_rollouts=2, seed=0)
    config = RenderConfig(frame_px=480)
    t0 = time.perf_counter(), time.process_time()
    render_gif(scene, rollouts, out / f"{label}.gif", 0, config)
    gif_wall, gif_cpu = time.perf_counter() - t0[0], time.process_time() - t0[1]
    t1 = time.perf_counter()
    render_grid(scene, rollouts, out / f"{label}.png", config)
    return {
        "scene": label,
        "n_agent": scene.n_agent,
        "n_map_features": scene.map.n_feature,
        "gif_91_frames_s": round(gif_wall, 2),
        "gif_cpu_s": round(gif_cpu, 2),
        "grid_png_s": round(time.perf_counter() - t1, 2),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(_largest_synthetic(), "synthetic_largest", Path(tmp)), bench(load_scene(REAL), "637f20cafde22ff8", Path(tmp))]
    rows.append({"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
