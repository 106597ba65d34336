"""Files in, Scenes out: the one entry point for reading WOMD `Scenario` TFRecord shards.

    for scene in iter_scenes("data/*.tfrecord*", validate=True):
        ...

Errors name the file, the record index and the byte offset:
- `TFRecordCorruptError`: framing (CRC, truncation, bad gzip stream);
- `ScenarioParseError`: the record is not a Scenario;
- `SceneValidationError` (validate=True): zero agents, NaN/inf poses, agents to evaluate not
  valid at the current step, no agent valid at the current step, no map features (the last
  one only when `allow_missing_map=False`; otherwise it is counted in `stats.missing_map`).

With `skip_corrupt=True` each of those records is skipped and counted in `stats`
(`ReadStats.skipped`, with `not_scenario` / `invalid` breaking it down) and reading goes on.
"""

from __future__ import annotations

from typing import Iterator

from smart_r1.data.convert import ScenarioParseError, parse_scenario, scenario_to_scene
from smart_r1.data.scene import Scene, SceneValidationError
from smart_r1.data.tfrecord import PathSpec, ReadStats, RecordRef, expand_paths, iter_file_records, iter_records
from smart_r1.data.validate import check_scene, scene_problems

__all__ = [
    "ScenarioParseError",
    "SceneValidationError",
    "iter_scenes",
    "iter_scenes_with_refs",
    "load_scene",
    "read_scenario_protos",
    "validation_problems",
]

def validation_problems(scene: Scene, allow_missing_map: bool = True) -> list[str]:
    """`Scene.problems()`, minus the missing-map problem when that is allowed
    (`smart_r1.data.validate.scene_problems`, the one validation path)."""
    return scene_problems(scene, require_map=not allow_missing_map)


def _check_scene(scene: Scene, ref: RecordRef, allow_missing_map: bool) -> None:
    """`SceneValidationError` naming the record if `scene` has validation problems."""
    check_scene(scene, ref, require_map=not allow_missing_map)


def iter_scenes_with_refs(
    paths: PathSpec,
    skip_corrupt: bool = False,
    validate: bool = False,
    allow_missing_map: bool = True,
    stats: ReadStats | None = None,
) -> Iterator[tuple[RecordRef, Scene]]:
    """Like `iter_scenes`, also yielding the record each scene came from."""
    stats = stats if stats is not None else ReadStats()
    for ref in iter_records(paths, skip_corrupt=skip_corrupt, stats=stats):
        try:
            scene = scenario_to_scene(ref)
        except ScenarioParseError as err:
            if not skip_corrupt:
                raise
            stats.record_skip(err)
            stats.not_scenario += 1
            continue
        if scene.map.n_feature == 0:
            stats.missing_map += 1
        if validate:
            try:
                _check_scene(scene, ref, allow_missing_map)
            except SceneValidationError as err:
                if not skip_corrupt:
                    raise
                stats.record_skip(err)
                stats.invalid += 1
                continue
        yield ref, scene


def iter_scenes(
    paths: PathSpec,
    skip_corrupt: bool = False,
    validate: bool = False,
    allow_missing_map: bool = True,
    stats: ReadStats | None = None,
) -> Iterator[Scene]:
    """Stream the `Scene`s of every record of `paths` (a path, glob, comma list, directory or list)."""
    for _, scene in iter_scenes_with_refs(paths, skip_corrupt, validate, allow_missing_map, stats):
        yield scene


def read_scenario_protos(paths: PathSpec, skip_corrupt: bool = False, stats: ReadStats | None = None) -> Iterator:
    """Stream `waymo.open_dataset.Scenario` protos (checked like `iter_scenes`, no conversion)."""
    stats = stats if stats is not None else ReadStats()
    for ref in iter_records(paths, skip_corrupt=skip_corrupt, stats=stats):
        try:
            yield parse_scenario(ref.data, ref.path, ref.index, ref.offset)
        except ScenarioParseError as err:
            if not skip_corrupt:
                raise
            stats.record_skip(err)
            stats.not_scenario += 1


def load_scene(path, index: int = 0, validate: bool = False, allow_missing_map: bool = True) -> Scene:
    """The `index`-th record of one file (or the first file a glob names) as a `Scene`."""
    files = expand_paths(path)
    if len(files) != 1:
        raise ValueError(f"load_scene wants one file, {path!r} names {len(files)}")
    for ref in iter_file_records(files[0]):
        if ref.index == index:
            scene = scenario_to_scene(ref)
            if validate:
                _check_scene(scene, ref, allow_missing_map)
            return scene
    raise IndexError(f"{files[0]}: no record {index} (file holds fewer records)")
