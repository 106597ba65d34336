"""Synthetic WOMD scenes (the offline default dataset).

`generate_scenario(seed, index, config)` returns a real `waymo.open_dataset.Scenario` proto;
`write_synthetic_dataset(out_dir, num_scenes, seed, num_shards, **config)` writes WOMD-named
TFRecord shards. Layouts live in `smart_r1.data.synth.layouts` (`@register_layout`), agent
behaviour in `smart_r1.data.synth.traffic`; presets `PROFILES` ("small", "womd") via
`SynthConfig.from_profile`; the oracle policy (the generator restarted at the current step) in
`smart_r1.data.synth.oracle`. See docs/synthetic_data.md.
"""

from smart_r1.data.synth.config import PROFILES, SynthConfig
from smart_r1.data.synth.dataset import shard_name, write_synthetic_dataset
from smart_r1.data.synth.generator import generate_scenario, scenario_id_for
from smart_r1.data.synth.layouts import LAYOUTS, register_layout

__all__ = ["PROFILES", "SynthConfig", "generate_scenario", "write_synthetic_dataset", "shard_name", "scenario_id_for", "LAYOUTS", "register_layout"]
