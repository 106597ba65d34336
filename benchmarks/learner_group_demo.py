"""The demo's schedule (configs/cpu_demo.yaml through `run_distributed`, i.e. `smart-r1 train --ray`),
shortened, with the update in the driver (`--num-workers 0`) or on N Ray Train ranks
(`runtime.learner.num_workers`): step seconds per stage, the driver's CPU seconds and peak RSS,
the ranks' peak RSS. Numbers: benchmarks/README.md, "Data-parallel learner".

    python -m benchmarks.learner_group_demo --num-workers 0 --out /tmp/demo_dp
    python -m benchmarks.learner_group_demo --num-workers 1 --out /tmp/demo_dp   # reuses the prepared data
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--rank-cpus", type=float, default=0.5)
    p.add_argument("--bc-epochs", type=float, default=2)
    p.add_argument("--rft-steps", type=int, default=4)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    from learner.driver import load_config_with_runtime, run_distributed

    over = [f"stages.bc.epochs={args.bc_epochs}", f"stages.rft.steps={args.rft_steps}", "tracking.enabled=false",
            "eval.after_each_stage=false", "progress=false", f"runtime.learner.num_workers={args.num_workers}",
            f"runtime.learner.resources={{CPU: {args.rank_cpus}}}"]
    cfg, rt = load_config_with_runtime("configs/cpu_demo.yaml", over)
    l0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_distributed(cfg, runtime=rt, out_dir=args.out)
    per: dict[str, list[float]] = {}
    for h in res.history:
        per.setdefault(h["stage"], []).append(h["step_seconds"])
    print(json.dumps({
        "num_workers": args.num_workers, "wall_s": time.perf_counter() - t0, "driver_cpu_s": time.process_time() - c0,
        "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rank_peak_rss_mb": max(h.get("memory/learner_rank_peak_rss_mb", 0.0) for h in res.history),
        "steps": {k: len(v) for k, v in per.items()}, "step_s": {k: round(sum(v), 2) for k, v in per.items()},
        "loadavg_1m": (l0 + os.getloadavg()[0]) / 2}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
