"""`write_synthetic_dataset`: synthetic scenes as WOMD-named TFRecord shards."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from smart_r1.data.synth.config import SynthConfig
from smart_r1.data.synth.generator import generate_scenario, scenario_id_for
from smart_r1.data.synth.state import write_state_file
from smart_r1.data.tfrecord import write_records


def shard_name(split: str, shard: int, num_shards: int) -> str:
    return f"{split}.tfrecord-{shard:05d}-of-{num_shards:05d}"


def write_synthetic_dataset(
    out_dir,
    num_scenes: int,
    seed: int,
    num_shards: int = 1,
    split: str = "training",
    progress: bool = True,
    profile: str = "small",
    **config_overrides,
) -> list[Path]:
    """Write `num_scenes` synthetic scenes into `num_shards` TFRecord shards under `out_dir`.

    Scene `i` is `generate_scenario(seed, i, config)` and goes to shard `i * num_shards // num_scenes`
    (contiguous blocks), so the same arguments give byte-identical files. `profile` picks the
    preset (`SynthConfig.from_profile`: "small" or "womd"); `config_overrides` are `SynthConfig`
    fields on top of it (e.g. `min_agents=8, max_agents=32`). Also writes the generator state
    of every scene to `out_dir/.synth_state.json` (`smart_r1.data.synth.state`; what
    `baseline:oracle` restarts a scene from). Returns the shard paths.
    """
    if num_scenes < 1:
        raise ValueError(f"write_synthetic_dataset: num_scenes must be >= 1, got {num_scenes}")
    if not (1 <= num_shards <= num_scenes):
        raise ValueError(f"write_synthetic_dataset: need 1 <= num_shards <= num_scenes, got {num_shards} for {num_scenes} scenes")
    config = SynthConfig.from_profile(profile, **config_overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_state_file(out, seed, config.to_dict(), {scenario_id_for(seed, i, config.scenario_id_prefix): i for i in range(num_scenes)})
    bar = tqdm(total=num_scenes, desc="synth scenes", unit="scene", disable=not progress)
    paths = []
    for shard in range(num_shards):
        lo, hi = shard * num_scenes // num_shards, (shard + 1) * num_scenes // num_shards

        def records(lo=lo, hi=hi) -> Iterator[bytes]:
            for i in range(lo, hi):
                yield generate_scenario(seed, i, config).SerializeToString()
                bar.update(1)

        path = out / shard_name(split, shard, num_shards)
        write_records(path, records())
        paths.append(path)
    bar.close()
    return paths
