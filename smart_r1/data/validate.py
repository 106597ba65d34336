"""The one validation path for scenes: every command that reads scenes checks them here.

    scene = check_scene(scene, ref, require_map=True)         # raises SceneValidationError
    scenes, problems = read_checked_scenes(spec, only_ids=..., require_map=True)

What is checked is `Scene.problems()` (smart_r1.data.scene): zero agents, NaN/inf poses of
valid states, no agent valid at the current step (nothing to simulate), agents to evaluate not
valid at the current step, an out-of-range SDC / current step, and no map features. The
message of a failing scene is one line naming the file, the record (index and byte offset),
the scenario id, the field and the agent ids.

Missing map: the metrics need road edges, so `score` and `evaluate` require a map
(`require_map=True`); `render`, `simulate`, `train` and `preprocess` accept a scene without map
features (`require_map=False`; the readers count them in `ReadStats.missing_map`). Which
commands need what is `REQUIRE_MAP` below, the one place that says it.
"""

from __future__ import annotations

from typing import Iterable

from smart_r1.data.scene import Scene, SceneValidationError
from smart_r1.data.tfrecord import PathSpec, ReadStats, RecordRef
from smart_r1.errors import EmptyInputError

NO_MAP = "no map features"

# command -> does a scene without map features fail validation?
REQUIRE_MAP = {
    "score": True,
    "evaluate": True,
    "render": False,
    "simulate": False,
    "train": False,
    "preprocess": False,
}


def scene_problems(scene: Scene, require_map: bool = False) -> list[str]:
    """`Scene.problems()`, minus the missing-map problem unless `require_map`."""
    problems = scene.problems()
    if not require_map:
        problems = [p for p in problems if NO_MAP not in p]
    return problems


def where(ref: RecordRef | None = None, scene: Scene | None = None) -> str:
    """`file: record i at byte offset o` of a record (or the scene's source file)."""
    if ref is not None:
        return f"{ref.path}: record {ref.index} at byte offset {ref.offset}"
    if scene is not None and scene.source:
        return scene.source
    return "<in memory>"


def scene_error(scene: Scene, problems: list[str], ref: RecordRef | None = None) -> SceneValidationError:
    """One `SceneValidationError` for `problems` of `scene` (one line: record, scene, fields, ids)."""
    err = SceneValidationError(f"{where(ref, scene)}: " + "; ".join(problems))
    err.scenario_id = scene.scenario_id
    return err


def check_scene(scene: Scene, ref: RecordRef | None = None, require_map: bool = False) -> Scene:
    """`scene` if it passes validation, else `SceneValidationError` naming the record and fields."""
    problems = scene_problems(scene, require_map)
    if problems:
        raise scene_error(scene, problems, ref)
    return scene


def require_records(n_records: int, spec, what: str = "records") -> None:
    """`EmptyInputError` when an input held nothing (an empty input is an error, never '0 scenes')."""
    if n_records == 0:
        raise EmptyInputError(f"{spec}: the input holds no {what} (empty file?)")


def read_checked_scenes(
    spec: PathSpec,
    only_ids: Iterable[str] | None = None,
    require_map: bool = False,
    stats: ReadStats | None = None,
) -> tuple[dict, dict[str, str]]:
    """Read and validate the scenes of `spec` (path / glob / list / directory of TFRecords).

    Returns `({scenario_id: (Scene, Scenario proto)}, {scenario_id: problem message})`: a scene
    that fails validation is in the second dict (one-line message) and not in the first. `only_ids` restricts to those scenes. A corrupt or non-Scenario record raises
    (`TFRecordCorruptError` / `ScenarioParseError`, naming file, record and byte offset); a
    scenario id seen twice raises `InputError`; an input without records raises `EmptyInputError`.
    """
    from smart_r1.data.convert import parse_scenario, scenario_to_scene
    from smart_r1.data.tfrecord import iter_records
    from smart_r1.errors import InputError

    stats = stats if stats is not None else ReadStats()
    wanted = set(only_ids) if only_ids is not None else None
    good: dict = {}
    bad: dict[str, str] = {}
    n_records = 0
    for ref in iter_records(spec, stats=stats):
        n_records += 1
        proto = parse_scenario(ref.data, ref.path, ref.index, ref.offset)
        sid = str(proto.scenario_id)
        if wanted is not None and sid not in wanted:
            continue
        if sid in good or sid in bad:
            raise InputError(f"{where(ref)}: scenario {sid!r} appears twice in {spec}")
        scene = scenario_to_scene(proto, ref.path, ref.index, ref.offset)
        problems = scene_problems(scene, require_map)
        if problems:
            bad[sid] = str(scene_error(scene, problems, ref))
            continue
        good[sid] = (scene, proto)
    require_records(n_records, spec)
    return good, bad
