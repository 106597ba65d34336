"""Scene loading for the tokens package (CLI, tests): thin wrappers over the data package."""

from __future__ import annotations

from typing import Iterable, Iterator

from smart_r1.data.scene import Scene


def iter_scenes(patterns: str | Iterable[str]) -> Iterator[Scene]:
    """Scenes of every record of the files matching `patterns` (path, glob, comma list, directory
    or list of them), via `smart_r1.data.scenario_io.iter_scenes`."""
    from smart_r1.data.scenario_io import iter_scenes as _iter

    if not isinstance(patterns, str):
        patterns = list(patterns)
    yield from _iter(patterns)


def synthetic_scenes(num_scenes: int, seed: int = 0) -> Iterator[Scene]:
    """In-memory synthetic scenes `generate_scenario(seed, i)`, i < num_scenes (no files)."""
    from smart_r1.data.convert import scenario_to_scene
    from smart_r1.data.synth import generate_scenario

    for i in range(num_scenes):
        yield scenario_to_scene(generate_scenario(seed, i))
