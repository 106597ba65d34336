"""The main job, as a function (the `smart-r1 demo` command calls it)."""

from __future__ import annotations

from pathlib import Path


def run_demo(config_path: Path, out_dir: Path, resume: bool = False, use_ray: bool = True) -> int:
    """Synthesize -> cache -> summary. Grows into the full SFT-RFT-SFT pipeline."""
    from smart_r1.data.cache import SceneCache, preprocess
    from smart_r1.data.synth import write_synthetic_dataset

    out_dir.mkdir(parents=True, exist_ok=True)
    raw_dir = out_dir / "scenarios"
    shards = write_synthetic_dataset(raw_dir, num_scenes=64, seed=0, num_shards=4)
    cache_dir = out_dir / "cache"
    preprocess(",".join(str(p) for p in shards), cache_dir)
    cache = SceneCache(cache_dir)
    print(f"cached {len(cache)} scenes in {cache_dir}")
    return 0
