"""Distributed evaluation benchmark: `python -m benchmarks.distributed_eval [--scenes 16] [--rollouts 8] [--json F]`.

Scenes/s of `smart-r1 evaluate` on synthetic scenes with the fast backend, for one source: an
untrained cpu-demo checkpoint (built from configs/tiny_test.yaml's vocabulary; a checkpoint is
the costly source — baselines roll out in microseconds), measured:

1. single process (`evaluate`, torch 1 thread), for reference;
2. `RayExecutor` with 1 and with 2 rollout actors (1 scorer), one private local Ray instance
   (address='local', 2 CPUs), torch 1 thread per actor. Wall time per run includes starting
   the run's actors (each loads the checkpoint once) and excludes `ray.init`; the steady rate
   is (scenes - 1) / (last row - first row), i.e. without the actors' start.

Every run starts from an empty scores file (no resume). Prints the machine's load average
before and after: the dev machine is shared, so wall-clock numbers depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _checkpoint(work: Path) -> str:
    from smart_r1.train.checkpoint import Checkpoint
    from smart_r1.train.config import load_config
    from smart_r1.train.pipeline import build_model_for, prepare_data

    cfg = load_config(ROOT / "configs" / "tiny_test.yaml")
    data = prepare_data(cfg, work / "data")
    model = build_model_for(cfg, data.vocab)
    return str(Checkpoint(
        model=model.state_dict(), config={}, stage_index=0, stage_name="init", step=0, vocab_dir=str(data.vocab_dir),
        vocab_id=getattr(data.vocab, "vocab_id", None), model_config=model.config.to_dict(),
    ).save(work / "run" / "checkpoints" / "last.pt"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=16)
    p.add_argument("--rollouts", type=int, default=8)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    import torch

    from learner.distributed_eval import RayExecutor
    from smart_r1.data.synth import write_synthetic_dataset
    from smart_r1.eval.evaluate import evaluate

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_deval_"))
    ckpt = _checkpoint(work)
    scenes = str(write_synthetic_dataset(work / "scenes", num_scenes=args.scenes, seed=3, num_shards=1, progress=False)[0])
    out: dict = {"scenes": args.scenes, "rollouts": args.rollouts, "load_before": os.getloadavg()}

    def timed(name: str, **kw) -> None:
        t0 = time.perf_counter()
        res = evaluate([ckpt], scenes, backend="fast", num_rollouts=args.rollouts, out_dir=work / name, report=False,
                       progress=False, **kw)
        dt = time.perf_counter() - t0
        assert res.n_scored == args.scenes and not res.failed, (res.n_scored, res.failed)
        rec = {"seconds": dt, "scenes_per_second": args.scenes / dt,
               "rollout_seconds_sum": sum(r["seconds_rollout"] for r in res.rows),
               "score_seconds_sum": sum(r["seconds_score"] for r in res.rows)}
        ex = kw.get("executor")
        steady = ""
        if ex is not None:
            st = ex.stats
            rec["first_row_seconds"] = st["first_row_seconds"]
            rec["steady_scenes_per_second"] = (args.scenes - 1) / max(st["last_row_seconds"] - st["first_row_seconds"], 1e-9)
            steady = f", first row after {st['first_row_seconds']:.1f} s, then {rec['steady_scenes_per_second']:.2f} scenes/s"
        out[name] = rec
        print(f"{name:>14}: {dt:6.1f} s  {args.scenes / dt:5.2f} scenes/s{steady}  (rollout {rec['rollout_seconds_sum']:.1f} s, "
              f"score {rec['score_seconds_sum']:.1f} s summed over scenes; load {os.getloadavg()[0]:.1f})", flush=True)

    timed("single_process")
    ray.init(address="local", num_cpus=2, object_store_memory=300_000_000, include_dashboard=False,
             _temp_dir=tempfile.mkdtemp(prefix="srt_bench_", dir="/tmp"), log_to_driver=False)
    try:
        for n in (1, 2):
            timed(f"ray_{n}_rollout", executor=RayExecutor(num_rollout_workers=n, num_scorers=1, rollout_cpus=0.5,
                                                           scorer_cpus=0.5))
    finally:
        ray.shutdown()
    out["speedup_2_vs_1"] = out["ray_1_rollout"]["seconds"] / out["ray_2_rollout"]["seconds"]
    out["steady_speedup_2_vs_1"] = out["ray_2_rollout"]["steady_scenes_per_second"] / out["ray_1_rollout"]["steady_scenes_per_second"]
    out["load_after"] = os.getloadavg()
    print(f"2 vs 1 rollout actors: {out['speedup_2_vs_1']:.2f}x wall, {out['steady_speedup_2_vs_1']:.2f}x steady; load average before {out['load_before']}, after {out['load_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
