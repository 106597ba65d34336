"""WOMD-sized synthetic scenes: generation speed and preprocessing throughput (issue 12).

    python -m benchmarks.synth_womd_preprocess [--scenes 12] [--big 2] [--seed 0]

`--scenes` womd-profile scenes (`SynthConfig.from_profile("womd")`) plus `--big` scenes forced to
140-160 tracks (the cache and tokenizer must take 128+ agents) go through each stage, one core,
CPU seconds of this process per scene:
- generate: `generate_scenario` + `SerializeToString` (what `data synth` does per scene);
- parse: TFRecord read + proto parse + conversion to `Scene` (`iter_scenes`);
- cache write / read: `write_cache_shard` (Parquet, one row group per scene) / `SceneCache[i]`
  (the in-process half of `smart-r1 data preprocess`; Ray adds one task per shard);
- tokenize: `Tokenizer.tokenize` (motion tokens of every agent + map tokens) with a
  256-token-per-type vocabulary of synthetic motions (`motion_vocab.synthetic_motions`).
Prints a JSON summary (tracks per scene, seconds per scene per stage, scenes/s).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def _cpu(fn):
    c0 = time.process_time()
    out = fn()
    return out, time.process_time() - c0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=12)
    ap.add_argument("--big", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    except (AttributeError, OSError):
        pass
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from smart_r1.data.cache import SceneCache, write_cache_shard
    from smart_r1.data.scenario_io import iter_scenes
    from smart_r1.data.synth import SynthConfig, generate_scenario
    from smart_r1.data.tfrecord import write_records
    from smart_r1.tokens.motion_vocab import VOCAB_TYPES, MotionVocab, synthetic_motions
    from smart_r1.tokens.tokenizer import Tokenizer

    womd = SynthConfig.from_profile("womd")
    big = SynthConfig.from_profile("womd", min_agents=140, max_agents=160)
    jobs = [(womd, i) for i in range(args.scenes)] + [(big, 10_000 + i) for i in range(args.big)]
    generate_scenario(args.seed, 99_999, womd)  # warm imports
    records, t_gen = _cpu(lambda: [generate_scenario(args.seed, i, cfg).SerializeToString() for cfg, i in jobs])
    n = len(records)
    out: dict = {"scenes": n, "big_scenes": args.big}
    with tempfile.TemporaryDirectory() as tmp:
        tfr = Path(tmp) / "womd.tfrecord"
        write_records(tfr, iter(records))
        scenes, t_parse = _cpu(lambda: list(iter_scenes(str(tfr))))
        cache_dir = Path(tmp) / "cache"
        cache_dir.mkdir()
        _, t_write = _cpu(lambda: write_cache_shard(cache_dir / "womd.parquet", scenes))
        cache = SceneCache(cache_dir)
        back, t_read = _cpu(lambda: [cache[i] for i in range(len(cache))])
        assert len(back) == n and all(a.n_agent == b.n_agent for a, b in zip(scenes, back))
        vocab = MotionVocab({t: synthetic_motions(t, 256, seed=0) for t in VOCAB_TYPES})
        tok = Tokenizer(vocab)
        tok.tokenize(scenes[0])  # warm up
        tokens, t_tok = _cpu(lambda: [tok.tokenize(s) for s in scenes])
    tracks = np.array([s.n_agent for s in scenes])
    out.update({
        "tracks_median": float(np.median(tracks[: args.scenes])), "tracks_max": int(tracks.max()),
        "sim_agents_max": int(max(int(s.sim_agent_mask().sum()) for s in scenes)),
        "mean_kb_per_scene": sum(len(r) for r in records) / n / 1024,
        "cpu_s_per_scene": {"generate": t_gen / n, "parse": t_parse / n, "cache_write": t_write / n, "cache_read": t_read / n, "tokenize": t_tok / n},
        "scenes_per_cpu_s": {"generate": n / t_gen, "parse+cache_write": n / (t_parse + t_write), "cache_read": n / t_read, "tokenize": n / t_tok},
        "load_average_1min": os.getloadavg()[0],
    })
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
