"""Multi-node scaling on one machine: `python -m benchmarks.multinode [--nodes 1 2 3] [--scenes 12] [--json F]`.

A `ray.cluster_utils.Cluster` (one raylet per node) with a head of 1 CPU holding the scorers
(`scorer` resource) and N = 1, 2, 3 "rollout" nodes of 1 CPU each (`rollout` resource), one
rollout actor per rollout node (1 CPU, placed by `runtime.rollout_resources`). Measured per N:

1. streaming evaluate (`RayExecutor`, fast backend) of an untrained cpu-demo checkpoint on
   synthetic scenes: rows per second, steady = (rows - 1) / (last row - first row);
2. RFT collection (`run_distributed`, one MPO stage on configs/tiny_test.yaml, sync mode,
   1 scene chunk per rollout actor): scene-rollouts per second of the collect, mean over steps
   after the first (`runtime/scene_rollouts_per_second`).

All nodes are processes of THIS machine: they share its cores (2 on the dev machine), so more
than ~2 busy nodes cannot run faster, and other load on the machine shows up directly. The load
average is printed next to every number.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rft_config(work: Path, n: int, steps: int) -> Path:
    p = work / f"rft_{n}.yaml"
    p.write_text(
        f"include: {ROOT}/configs/tiny_test.yaml\n"
        f"output_dir: {work}/rft_{n}\n"
        "data: {synthetic: {n_scenes: 12, n_val_scenes: 2, seed: 11, params: {min_agents: 4, max_agents: 8}}, batch_size: 6}\n"
        f"stages!:\n  - {{name: rft, objective: mpo, steps: {steps}, lr: 1.0e-3, params: {{alpha: 0.5, beta: 0.04, n_rollout: 8}}}}\n"
        "eval: {after_each_stage: false}\n"
        "tracking: {enabled: false}\n"
        f"runtime: {{num_rollout_actors: {n}, num_scorers: 1, rollout_cpus: 1, scorer_cpus: 0.5, "
        "rollout_resources: {rollout: 1}, scorer_resources: {scorer: 1}, distributed_eval: false}\n"
    )
    return p


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--scenes", type=int, default=12)
    p.add_argument("--rollouts", type=int, default=8)
    p.add_argument("--rft-steps", type=int, default=4)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import numpy as np
    import ray
    import torch
    from ray.cluster_utils import Cluster

    from benchmarks.distributed_eval import _checkpoint
    from learner.distributed_eval import RayExecutor
    from learner.driver import load_config_with_runtime, run_distributed
    from smart_r1.data.synth import write_synthetic_dataset
    from smart_r1.eval.evaluate import evaluate

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_mn_"))
    ckpt = _checkpoint(work)
    scenes = str(write_synthetic_dataset(work / "scenes", num_scenes=args.scenes, seed=3, num_shards=1, progress=False)[0])
    out: dict = {"cores": os.cpu_count(), "scenes": args.scenes, "rollouts": args.rollouts, "runs": {}}
    for n in args.nodes:
        tmp = tempfile.mkdtemp(prefix="srt_bmn_", dir="/tmp")
        cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, resources={"scorer": 2},
                                                                    object_store_memory=150_000_000,
                                                                    include_dashboard=False, temp_dir=tmp))
        for _ in range(n):
            cluster.add_node(num_cpus=1, resources={"rollout": 1}, object_store_memory=80_000_000)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        rec: dict = {"load_before": os.getloadavg()[0]}
        try:
            ex = RayExecutor(num_rollout_workers=n, num_scorers=1, rollout_cpus=1, scorer_cpus=0.5,
                             rollout_resources={"rollout": 1}, scorer_resources={"scorer": 1})
            t0 = time.perf_counter()
            res = evaluate([ckpt], scenes, backend="fast", num_rollouts=args.rollouts, out_dir=work / f"eval_{n}",
                           report=False, progress=False, executor=ex)
            dt = time.perf_counter() - t0
            assert res.n_scored == args.scenes and not res.failed
            st = ex.stats
            rec["eval_rows_per_second"] = args.scenes / dt
            rec["eval_steady_rows_per_second"] = (args.scenes - 1) / max(st["last_row_seconds"] - st["first_row_seconds"], 1e-9)
            cfg, rt = load_config_with_runtime(str(_rft_config(work, n, args.rft_steps)))
            hist = run_distributed(cfg, runtime=rt).history
            rates = [h["runtime/scene_rollouts_per_second"] for h in hist[1:]]
            rec["rft_scene_rollouts_per_second"] = float(np.mean(rates))
            rec["load_after"] = os.getloadavg()[0]
        finally:
            ray.shutdown()
            cluster.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)
        out["runs"][n] = rec
        print(f"{n} rollout node(s): evaluate {rec['eval_rows_per_second']:.2f} rows/s "
              f"(steady {rec['eval_steady_rows_per_second']:.2f}); RFT collect {rec['rft_scene_rollouts_per_second']:.1f} "
              f"scene-rollouts/s; load {rec['load_before']:.1f} -> {rec['load_after']:.1f}", flush=True)
    base = out["runs"][args.nodes[0]]
    for n, rec in out["runs"].items():
        rec["eval_scaling"] = rec["eval_steady_rows_per_second"] / base["eval_steady_rows_per_second"]
        rec["rft_scaling"] = rec["rft_scene_rollouts_per_second"] / base["rft_scene_rollouts_per_second"]
    print(json.dumps(out["runs"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
