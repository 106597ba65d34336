"""Generator state of synthetic scenes: what `baseline:oracle` needs to restart a scene.

`write_synthetic_dataset` writes `.synth_state.json` next to the shards it writes (a dot file:
directory listings and globs of scene files skip it, and the shards themselves stay exactly
what the generator wrote). It maps every scenario id to `(seed, index, config)`:

    {"generator": "smart_r1.data.synth", "version": 1,
     "configs": {"<sha1-12>": {SynthConfig fields}},
     "scenes": {"<scenario_id>": [seed, index, "<sha1-12>"], ...}}

`scenario_to_scene` looks the scene up there (`state_for(source, scenario_id)`) and keeps the
entry as `Scene.generator_state` (a JSON string: generator, version, seed, index, config); the
Parquet scene cache stores that field like any other, so cached scenes keep it. Scenes without
an entry (real WOMD, hand-made files) have `generator_state == ""`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

STATE_FILE = ".synth_state.json"
GENERATOR = "smart_r1.data.synth"
STATE_VERSION = 1


def _config_key(config_dict: dict) -> str:
    return hashlib.sha1(json.dumps(config_dict, sort_keys=True).encode()).hexdigest()[:12]


def scene_state(seed: int, index: int, config_dict: dict) -> str:
    """The `Scene.generator_state` JSON of scene (seed, index) generated with `config_dict`
    (key order kept: the generator draws the layout in `layout_weights`' order)."""
    return json.dumps({"generator": GENERATOR, "version": STATE_VERSION, "seed": int(seed), "index": int(index), "config": config_dict})


def write_state_file(out_dir, seed: int, config_dict: dict, scenario_ids: dict[str, int]) -> Path:
    """Add `scenario_ids` (id -> index) generated with (seed, config) to `out_dir/.synth_state.json`
    (merged with what is there; written atomically)."""
    from smart_r1.data.atomic import atomic_output

    path = Path(out_dir) / STATE_FILE
    data = {"generator": GENERATOR, "version": STATE_VERSION, "configs": {}, "scenes": {}}
    if path.exists():
        try:
            old = json.loads(path.read_text())
            if old.get("generator") == GENERATOR and old.get("version") == STATE_VERSION:
                data["configs"].update(old.get("configs", {}))
                data["scenes"].update(old.get("scenes", {}))
        except ValueError:
            pass  # unreadable: rewritten from this call's scenes
    key = _config_key(config_dict)
    data["configs"][key] = config_dict
    for sid, index in scenario_ids.items():
        data["scenes"][sid] = [int(seed), int(index), key]
    with atomic_output(path, prefix=f".{path.name}.tmp-", suffix="") as tmp:
        Path(tmp).write_text(json.dumps(data))  # key order kept: layout_weights' order matters to the generator
    _load_state_file.cache_clear()
    return path


@functools.lru_cache(maxsize=64)
def _load_state_file(path: str, mtime_ns: int, size: int) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable synthetic generator state ({err})") from err
    if data.get("generator") != GENERATOR or data.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: not a version-{STATE_VERSION} {GENERATOR} state file")
    return data


def state_for(source: str, scenario_id: str) -> str:
    """`Scene.generator_state` for scene `scenario_id` read from file `source` ("" when there is
    no state file next to it or the scene is not in it)."""
    if not source:
        return ""
    path = os.path.join(os.path.dirname(os.path.abspath(source)), STATE_FILE)
    try:
        st = os.stat(path)
    except OSError:
        return ""
    data = _load_state_file(path, st.st_mtime_ns, st.st_size)
    entry = data["scenes"].get(scenario_id)
    if entry is None:
        return ""
    seed, index, key = entry
    if key not in data["configs"]:
        raise ValueError(f"{path}: scene {scenario_id!r} names config {key!r}, which the file lacks")
    return scene_state(seed, index, data["configs"][key])
