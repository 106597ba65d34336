"""Shared fixtures for the tokens tests: the real scene and small vocabularies (built once)."""

from __future__ import annotations

import pytest

from smart_r1.tokens.motion_vocab import VocabConfig, build_motion_vocab

from .helpers import random_scene

# Small but real: k-disks with the tolerance search, synthetic fill, map vocabulary.
SMALL_CONFIG = dict(size=128, samples=2000, min_samples=4000, seed=0, max_tolerance_steps=5, map={"vocab_size": 64, "samples": 3000})
SYNTH_CONFIG = dict(size=512, samples=6000, min_samples=3000, seed=0, max_tolerance_steps=4, map={"vocab_size": 128, "samples": 5000})


@pytest.fixture(scope="session")
def real_scene(real_scenario_path):
    from smart_r1.tokens._scene_loader import iter_scenes

    scenes = list(iter_scenes(str(real_scenario_path)))
    assert len(scenes) == 1
    return scenes[0]


@pytest.fixture(scope="session")
def synthetic_scenes():
    return [random_scene(seed) for seed in range(6)]


@pytest.fixture(scope="session")
def small_vocab(synthetic_scenes):
    return build_motion_vocab(synthetic_scenes, VocabConfig(**SMALL_CONFIG), progress=False)


@pytest.fixture(scope="session")
def synth_vocab():
    """512-token vocabulary from 10 generated synthetic scenes (smart_r1.data.synth, in memory)."""
    from smart_r1.tokens._scene_loader import synthetic_scenes

    return build_motion_vocab(synthetic_scenes(10, seed=0), VocabConfig(**SYNTH_CONFIG), progress=False)
