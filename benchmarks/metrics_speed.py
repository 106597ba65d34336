"""WOSAC 2025 metrics speed: `fast` (torch) vs `official` (waymo_open_dataset, TensorFlow).

    python -m benchmarks.metrics_speed [--repeats 5] [--skip-official] [--skip-official-large]
                                       [--device cpu|cuda] [--threads N] [--readme]

Scenes: the real 637f20cafde22ff8 with the shared 32-rollout submission, and a large synthetic
scene (128 agents requested from `smart_r1.data.synth`, 32 noisy constant-velocity rollouts).
Each measurement runs in a fresh subprocess so the peak RSS (ru_maxrss) belongs to it; the
official scorer runs with tcmalloc preloaded when installed. Seconds per 32-rollout scene:
fast = median of `--repeats` warm runs (the map preprocessing is cached per scene after the
first call; the cold first call is reported too); official = one run (features + likelihoods).
`--readme` appends the figures to benchmarks/README.md ("## WOSAC metrics").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
LARGE_AGENTS = 128

_CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
from benchmarks.metrics_speed import load_case
backend, case, repeats, device, threads = {backend!r}, {case!r}, {repeats}, {device!r}, {threads}
sc, scene, ro = load_case(case)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = dict(backend=backend, case=case, n_sim_agents=int(ro.n_agent), n_rollout=int(ro.n_rollout), n_eval=int(len(scene.eval_agent_ids())))
if backend == "fast":
    import torch
    if threads:
        torch.set_num_threads(threads)
    from smart_r1.metrics.fast import FastBackend
    fb = FastBackend(device=device, num_threads=None)
    t = time.perf_counter(); s = fb.score(scene, ro); out["cold_s"] = time.perf_counter() - t
    times, cpu = [], []
    for _ in range(repeats):
        if device.startswith("cuda"): torch.cuda.synchronize()
        t = time.perf_counter(); c = time.process_time(); s = fb.score(scene, ro)
        if device.startswith("cuda"): torch.cuda.synchronize()
        times.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
    out["seconds"] = float(np.median(times)); out["all_s"] = times; out["threads"] = torch.get_num_threads()
    out["cpu_seconds"] = float(np.median(cpu))
    if device.startswith("cuda"): out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
else:
    from benchmarks.make_parity_fixtures import official_scores
    t = time.perf_counter(); c = time.process_time(); o = official_scores(sc, ro)
    out["seconds"] = time.perf_counter() - t; out["cpu_seconds"] = time.process_time() - c
    s = None
    out["metametric"] = o["metametric"]
if s is not None:
    out["metametric"] = s.metametric
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["peak_rss_delta_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
print("RESULT " + json.dumps(out))
"""


def load_case(case: str):
    """(scenario proto, Scene, Rollouts) of a benchmark case: "real" or "large"."""
    from benchmarks.make_parity_fixtures import load_real_scene, load_real_submission_rollouts, policy_rollouts, scenario_to_scene

    if case == "real":
        sc, scene = load_real_scene()
        return sc, scene, load_real_submission_rollouts()
    if case == "large":
        from waymo_open_dataset.protos import scenario_pb2

        path = os.environ.get("SMART_R1_BENCH_LARGE_SCENARIO", "")
        if path and os.path.exists(path):  # the parent's scene: every child scores the very same one
            sc = scenario_pb2.Scenario()
            sc.ParseFromString(Path(path).read_bytes())
        else:
            sc = make_large_scenario()
        scene = scenario_to_scene(sc)
        return sc, scene, policy_rollouts(scene, "const_vel_noise", 32, seed=1)
    raise ValueError(f"unknown case {case!r}")


def make_large_scenario():
    from smart_r1.data.synth.config import SynthConfig
    from smart_r1.data.synth.generator import generate_scenario

    return generate_scenario(7, 0, SynthConfig(min_agents=LARGE_AGENTS, max_agents=LARGE_AGENTS, max_tracks_to_predict=8))


def run_child(backend: str, case: str, repeats: int = 5, device: str = "cpu", threads: int = 0, timeout: float = 3600) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true")
    if backend == "official" and os.path.exists(TCMALLOC):
        env["LD_PRELOAD"] = TCMALLOC
    code = _CHILD.format(root=str(ROOT), backend=backend, case=case, repeats=repeats, device=device, threads=threads)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
            res["tcmalloc"] = "LD_PRELOAD" in env
            return res
    raise RuntimeError(f"{backend}/{case} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")


def format_rows(results: list[dict]) -> str:
    lines = [
        "| scene | sim agents (eval) | backend | wall s / 32-rollout scene | CPU s (all threads) | peak RSS MB (delta) | meta metric |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        name = "637f20cafde22ff8 + shared submission" if r["case"] == "real" else f"synthetic, {LARGE_AGENTS} agents requested"
        extra = ""
        if r["backend"] == "fast":
            extra = f" (cold {r['cold_s']:.3f}, {r['threads']} thread{'s' if r['threads'] > 1 else ''})"
        elif r.get("tcmalloc"):
            extra = " (tcmalloc)"
        lines.append(
            f"| {name} | {r['n_sim_agents']} ({r['n_eval']}) | {r['backend']}{extra} | {r['seconds']:.3f} | {r.get('cpu_seconds', float('nan')):.3f} | "
            f"{r['peak_rss_mb']:.0f} ({r['peak_rss_delta_mb']:.0f}) | {r['metametric']:.5f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 0], help="torch threads for fast (0 = torch default)")
    ap.add_argument("--skip-official", action="store_true")
    ap.add_argument("--skip-official-large", action="store_true")
    ap.add_argument("--cases", default="real,large")
    ap.add_argument("--readme", action="store_true", help="append the table to benchmarks/README.md")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    import tempfile

    tmp = tempfile.NamedTemporaryFile(suffix=".binproto", delete=False)
    tmp.write(make_large_scenario().SerializeToString())
    tmp.close()
    os.environ["SMART_R1_BENCH_LARGE_SCENARIO"] = tmp.name
    results = []
    for case in args.cases.split(","):
        for th in args.threads:
            r = run_child("fast", case, args.repeats, args.device, th)
            print(json.dumps(r), flush=True)
            results.append(r)
        if not args.skip_official and not (case == "large" and args.skip_official_large):
            r = run_child("official", case)
            print(json.dumps(r), flush=True)
            results.append(r)
    os.unlink(tmp.name)
    table = format_rows(results)
    print(table)
    for case in {r["case"] for r in results}:
        metas = {r["backend"]: r["metametric"] for r in results if r["case"] == case}
        if "official" in metas and "fast" in metas:
            print(f"{case}: |fast - official| meta metric = {abs(metas['fast'] - metas['official']):.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.readme:
        host = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        with open(ROOT / "benchmarks" / "README.md", "a") as f:
            f.write(f"\n## WOSAC metrics\n\n`python -m benchmarks.metrics_speed` ({time.strftime('%Y-%m-%d')}, {host}, shared and "
                    f"busy: timings are noisy)\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
