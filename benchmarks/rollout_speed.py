"""Rollout engine speed: `python -m benchmarks.rollout_speed`.

Seconds per scene for 32 rollouts x 80 steps (16 tokens) at 32, 64 and 128 simulated agents
with the `tiny` preset (3 x 2048-token vocabularies, 1024 map segments) on synthetic scenes
(4 x 4 grid of 2-lane roads over 200 m, 1280 map tokens), for
- the engine (`sim.engine.rollout`: rollouts batched, map encoded once, temporal KV caches), and
- the naive loop (`sim.engine.naive_rollout`: per rollout, per step, full forward on positions 0..p).
Same model, same seeds; the naive loop is timed on `--naive-rollouts` rollouts (it is a plain loop
over rollouts, so its time is linear in R) and scaled to 32; its tokens are checked equal to the
engine's rollouts with the same indices. Both wall-clock and process CPU time are reported
(one torch thread by default: on a shared machine CPU time is the stable figure).
FLOPs (torch.utils.flop_counter: matmuls only; the per-edge attention dot products are elementwise
ops and not counted) per step, and the fraction of this CPU's measured single-thread matmul
throughput the engine reaches.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from smart_r1.model.batch import collate, vocab_sizes_of
from smart_r1.model.presets import get_preset
from smart_r1.model.smart import SmartModel
from smart_r1.model.synthetic import SyntheticVocab, synthetic_tokenized_scene
from smart_r1.sim.engine import naive_rollout, rollout


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def matmul_gflops() -> dict:
    out = {}
    for name, (m, k, n) in {"1024^3": (1024, 1024, 1024), "edges 65536x387x128": (65536, 387, 128),
                            "rows 4096x128x128": (4096, 128, 128)}.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        best = float("inf")
        for _ in range(5):
            c = time.process_time()
            for _ in range(3):
                a @ b
            best = min(best, (time.process_time() - c) / 3)
        out[name] = 2 * m * k * n / best / 1e9
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--rollouts", type=int, default=32)
    ap.add_argument("--naive-rollouts", type=int, default=1)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    vocab = SyntheticVocab(sizes=(2048, 2048, 2048), map_size=1024, seed=0)
    torch.manual_seed(args.seed)
    model = SmartModel(get_preset(args.preset), vocab_sizes_of(vocab)).eval()
    peak = matmul_gflops()
    res = {"preset": args.preset, "n_parameters": model.num_parameters(), "threads": args.threads,
           "rollouts": args.rollouts, "naive_rollouts_timed": args.naive_rollouts, "machine": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg(), "matmul_gflops": peak, "scenes": []}
    print(f"matmul GFLOP/s (CPU time, {args.threads} thread): " + ", ".join(f"{k}: {v:.1f}" for k, v in peak.items()))
    for n in args.agents:
        sc = synthetic_tokenized_scene(vocab, n_agent=n, n_road=4, extent=200.0, seed=1000 + n, not_sim_fraction=0.0)
        batch = collate([sc], vocab)
        kw = dict(sampler="topk", seed=args.seed, sampler_kwargs={"k": 5}, catk_target=False)
        eng, ew, ec = _timed(lambda: rollout(model, batch, n_rollout=args.rollouts, **kw))
        nr = args.naive_rollouts
        nai, nw, nc = _timed(lambda: naive_rollout(model, batch, n_rollout=nr, **kw))
        same = bool(torch.equal(eng.token_index[:nr], nai.token_index))
        scale = args.rollouts / nr
        # FLOPs: engine per step (all R rollouts) from an R=2 run; naive per step = mean of the
        # forwards on 3 and 18 positions (linear in positions), per rollout.
        f_eng2 = _flops(lambda: rollout(model, batch, n_rollout=2, **kw))
        eng_step = f_eng2 / 2 * args.rollouts / 16
        with torch.no_grad():
            f3 = _flops(lambda: model(batch, n_position=3))
            f18 = _flops(lambda: model(batch, n_position=18))
        naive_step = (f3 + f18) / 2 * args.rollouts
        row = {
            "n_agent": n, "n_sim_agent": int(sc.sim_mask.sum()), "n_map_token": sc.n_map_token,
            "engine_wall_s": ew, "engine_cpu_s": ec,
            "naive_wall_s": nw * scale, "naive_cpu_s": nc * scale,
            "speedup_wall": nw * scale / ew, "speedup_cpu": nc * scale / ec,
            "tokens_equal": same,
            "engine_gflop_per_step": eng_step / 1e9, "naive_gflop_per_step": naive_step / 1e9,
            "engine_matmul_gflops_achieved": eng_step * 16 / ec / 1e9,
        }
        row["engine_fraction_of_peak"] = row["engine_matmul_gflops_achieved"] / max(peak.values())
        res["scenes"].append(row)
        print(json.dumps(row), flush=True)
    res["load_avg_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
