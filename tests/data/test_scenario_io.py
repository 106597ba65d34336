"""Files in, Scenes out: multi-shard reading, corruption, skip counts, validation."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from womd_helpers import (  # noqa: E402
    REAL_SCENARIO_FILE,
    REAL_SCENARIO_ID,
    real_record_bytes,
    scenario_copies,
    tiny_scene,
    write_copies,
)

from smart_r1.data.convert import ScenarioParseError, scene_to_scenario  # noqa: E402
from smart_r1.data.scenario_io import iter_scenes, load_scene, read_scenario_protos  # noqa: E402
from smart_r1.data.scene import SceneValidationError  # noqa: E402
from smart_r1.data.tfrecord import ReadStats, TFRecordCorruptError, write_records  # noqa: E402


def test_load_real_scene():
    s = load_scene(REAL_SCENARIO_FILE, validate=True)
    assert s.scenario_id == REAL_SCENARIO_ID and s.n_agent == 83 and s.map.n_feature == 301
    with pytest.raises(IndexError, match="no record 1"):
        load_scene(REAL_SCENARIO_FILE, index=1)


def test_multi_shard_glob_and_gzip(tmp_path):
    write_copies(tmp_path, n_shards=2, per_shard=2)
    write_records(tmp_path / "z.tfrecord.gz", scenario_copies(1, prefix="gz"))
    st = ReadStats()
    ids = [s.scenario_id for s in iter_scenes(str(tmp_path / "*"), validate=True, stats=st)]
    assert ids == ["copy0000", "copy0001", "copy0002", "copy0003", "gz0000"]
    assert st.records == 5 and st.files == 3 and st.skipped == 0
    assert [p.scenario_id for p in read_scenario_protos(tmp_path / "z.tfrecord.gz")] == ["gz0000"]
    assert load_scene(tmp_path / "shard-00001-of-00002.tfrecord", index=1).scenario_id == "copy0003"


def test_flipped_byte_and_truncation_in_scenario_file(tmp_path):
    recs = scenario_copies(3)
    p = tmp_path / "bad.tfrecord"
    write_records(p, recs)
    raw = bytearray(p.read_bytes())
    second = 16 + len(recs[0])  # byte offset of record 1
    raw[second + 12 + 1000] ^= 0x40  # flip one bit inside record 1's data
    raw = raw[:-100]  # and truncate the last record
    p.write_bytes(bytes(raw))
    with pytest.raises(TFRecordCorruptError) as ei:
        list(iter_scenes(p))
    assert (ei.value.index, ei.value.offset) == (1, second) and "data CRC mismatch" in str(ei.value)
    assert str(p) in str(ei.value)
    st = ReadStats()
    ids = [s.scenario_id for s in iter_scenes(p, skip_corrupt=True, stats=st)]
    assert ids == ["copy0000"]
    assert st.skipped == 2 and st.files_abandoned == 1
    assert any("truncated data" in e for e in st.errors) and any("data CRC" in e for e in st.errors)


def test_non_scenario_record_in_file(tmp_path, real_submission_path):
    p = tmp_path / "mixed.tfrecord"
    write_records(p, [real_record_bytes(), Path(real_submission_path).read_bytes(), real_record_bytes()])
    with pytest.raises(ScenarioParseError) as ei:
        list(iter_scenes(p))
    assert ei.value.path == str(p) and ei.value.index == 1 and ei.value.offset == 16 + len(real_record_bytes())
    assert f"{p}: record 1 at byte offset {ei.value.offset}" in str(ei.value)
    st = ReadStats()
    assert len(list(iter_scenes(p, skip_corrupt=True, stats=st))) == 2
    assert st.skipped == 1 and st.not_scenario == 1
    st = ReadStats()
    assert len(list(read_scenario_protos(p, skip_corrupt=True, stats=st))) == 2 and st.not_scenario == 1


def _write_scenes(path, scenes):
    write_records(path, [scene_to_scenario(s).SerializeToString() for s in scenes])


def test_validation_errors_name_scene_file_record(tmp_path):
    good = tiny_scene(scenario_id="good")
    empty = tiny_scene(n_agent=0, scenario_id="empty")
    nan = tiny_scene(scenario_id="nanpose")
    nan.agent_states[1, 20, 0] = np.nan
    nomap = tiny_scene(with_map=False, scenario_id="nomap")
    gone = tiny_scene(scenario_id="gone")
    gone.agent_valid[:, 10] = False  # nobody valid at the current step
    p = tmp_path / "v.tfrecord"
    _write_scenes(p, [good, empty, nan, nomap, gone])

    # Without validation everything loads (and nothing silently became empty).
    st = ReadStats()
    assert [s.scenario_id for s in iter_scenes(p, stats=st)] == ["good", "empty", "nanpose", "nomap", "gone"]
    assert st.missing_map == 1

    with pytest.raises(SceneValidationError) as ei:
        list(iter_scenes(p, validate=True))
    msg = str(ei.value)
    assert "'empty'" in msg and "zero agents" in msg and f"{p}: record 1 at byte offset" in msg

    def err_for(index, **kw):
        with pytest.raises(SceneValidationError) as ei:
            load_scene(p, index=index, validate=True, **kw)
        return str(ei.value)

    assert "NaN/inf pose" in err_for(2) and "'nanpose'" in err_for(2) and "record 2" in err_for(2)
    assert load_scene(p, index=3, validate=True).scenario_id == "nomap"  # missing map allowed by default
    assert "no map features" in err_for(3, allow_missing_map=False) and "'nomap'" in err_for(3, allow_missing_map=False)
    assert "no agent valid at current step" in err_for(4) and "record 4" in err_for(4)

    st = ReadStats()
    ids = [s.scenario_id for s in iter_scenes(p, validate=True, skip_corrupt=True, allow_missing_map=False, stats=st)]
    assert ids == ["good"]
    assert st.skipped == 4 and st.invalid == 4
    assert "4 failed validation" in st.summary()
