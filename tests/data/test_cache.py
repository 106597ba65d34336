"""Scene cache: exact Arrow round trip, preprocess on Ray, resume after a killed run, dataset."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from womd_helpers import REPO, real_record_bytes, tiny_scene, write_copies  # noqa: E402

from smart_r1.data.cache import (  # noqa: E402
    MANIFEST_NAME,
    PreprocessError,
    SceneCache,
    SceneDataset,
    collate_scenes,
    make_dataloader,
    preprocess,
    read_cache_shard,
    scenes_to_table,
    table_to_scenes,
    write_cache_shard,
)
from smart_r1.data.convert import scenario_to_scene  # noqa: E402
from smart_r1.data.tfrecord import write_records  # noqa: E402


def assert_scenes_identical(a, b, path="scene"):
    """Every field equal: arrays by dtype, shape and bytes (NaN payloads included)."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            assert_scenes_identical(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), path
        assert a.dtype == b.dtype and a.shape == b.shape, (path, a.dtype, b.dtype, a.shape, b.shape)
        assert a.tobytes() == b.tobytes(), path
    else:
        assert a == b, (path, a, b)


@pytest.fixture(scope="module")
def real_scene():
    return scenario_to_scene(real_record_bytes(), source="real.tfrecord")


def test_arrow_round_trip_exact(real_scene, tmp_path):
    odd = tiny_scene(scenario_id="odd")
    odd.agent_states[0, 3, 0] = np.nan  # NaN in an invalid-looking slot survives bit-exact
    odd.agent_valid[0, 3] = False
    scenes = [real_scene, odd, tiny_scene(n_agent=0, with_map=False, scenario_id="empty")]
    back = table_to_scenes(scenes_to_table(scenes))
    for a, b in zip(scenes, back):
        assert_scenes_identical(a, b)
    assert back[0].agent_xyz_f64 is not None and back[1].agent_xyz_f64 is None  # optional stays None
    p = write_cache_shard(tmp_path / "s.parquet", scenes, metadata={"note": "x"})
    for a, b in zip(scenes, read_cache_shard(p)):
        assert_scenes_identical(a, b)
    back[0].agent_states[0, 0, 0] = 1.0  # decoded arrays are writable copies
    assert sorted(f.name for f in tmp_path.iterdir()) == ["s.parquet"]


def test_preprocess_in_process_and_dataset(tmp_path, real_scene):
    write_copies(tmp_path / "in", n_shards=3, per_shard=2)
    man = preprocess(str(tmp_path / "in" / "*.tfrecord"), tmp_path / "cache", num_workers=0, progress=False)
    assert man["complete"] and man["n_scenes"] == 6 and man["n_inputs"] == 3
    on_disk = json.loads((tmp_path / "cache" / MANIFEST_NAME).read_text())
    assert on_disk["n_scenes"] == 6
    e = on_disk["shards"][0]
    assert e["input_size"] == (tmp_path / "in" / "shard-00000-of-00003.tfrecord").stat().st_size
    assert {"input_path", "input_mtime_ns", "output", "n_scenes", "skipped"} <= set(e)

    cache = SceneCache(tmp_path / "cache")
    assert len(cache) == 6 and cache.scenario_ids() == [f"copy{i:04d}" for i in range(6)]
    s = cache[4]
    assert_scenes_identical(real_scene.replace(scenario_id="copy0004", source=s.source), s)
    assert s.source.endswith("shard-00002-of-00003.tfrecord")
    assert cache[-1].scenario_id == "copy0005"
    with pytest.raises(IndexError):
        cache[6]

    ds = SceneDataset(cache)
    a = [[x.scenario_id for x in b] for b in ds.iter_batches(4, shuffle=True, seed=7)]
    b = [[x.scenario_id for x in b] for b in ds.iter_batches(4, shuffle=True, seed=7)]
    c = [[x.scenario_id for x in b] for b in ds.iter_batches(4, shuffle=True, seed=8)]
    assert a == b and a != c and [len(x) for x in a] == [4, 2]
    assert sorted(sum(a, [])) == sorted(cache.scenario_ids())
    sub = SceneDataset(cache, indices=[1, 3])
    assert [sub[i].scenario_id for i in range(len(sub))] == ["copy0001", "copy0003"]

    import torch  # noqa: F401  (DataLoader path)

    dl = make_dataloader(ds, batch_size=3, shuffle=True, seed=1)
    batches = [[x.scenario_id for x in batch] for batch in dl]
    again = [[x.scenario_id for x in batch] for batch in make_dataloader(ds, batch_size=3, shuffle=True, seed=1)]
    assert batches == again and sorted(sum(batches, [])) == sorted(cache.scenario_ids())
    assert isinstance(collate_scenes([s]), list)


def test_preprocess_corrupt_input(tmp_path):
    write_copies(tmp_path / "in", n_shards=2, per_shard=2)
    bad = tmp_path / "in" / "shard-00001-of-00002.tfrecord"
    raw = bytearray(bad.read_bytes())
    raw[500] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(PreprocessError, match="shard-00001-of-00002.tfrecord.*data CRC mismatch"):
        preprocess(str(tmp_path / "in"), tmp_path / "cache", num_workers=0, progress=False)
    man = json.loads((tmp_path / "cache" / MANIFEST_NAME).read_text())
    assert man["n_shards_done"] == 1 and not man["complete"]  # the good shard is kept
    man = preprocess(str(tmp_path / "in"), tmp_path / "cache", num_workers=0, skip_corrupt=True, progress=False)
    assert man["complete"] and man["n_scenes"] == 3 and man["n_skipped"] == 1
    assert len(SceneCache(tmp_path / "cache")) == 3


@pytest.mark.ray
def test_preprocess_resumes_after_killed_run(tmp_path):
    """Kill a Ray preprocess after its first shard lands; the re-run keeps finished shards."""
    n_shards, per_shard = 8, 3
    write_copies(tmp_path / "in", n_shards=n_shards, per_shard=per_shard)
    out = tmp_path / "cache"
    code = (
        "import sys; from smart_r1.data.cache import preprocess; "
        "preprocess(sys.argv[1], sys.argv[2], num_workers=1, progress=False)"
    )
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "in" / "*.tfrecord"), str(out)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(out.glob("*.parquet")):
            assert proc.poll() is None, "preprocess exited before finishing a shard"
            time.sleep(0.02)
        assert list(out.glob("*.parquet")), "no shard finished within 120 s"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait(timeout=30)
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.parquet")}
    assert 1 <= len(finished) < n_shards, f"kill came too late to test resuming ({len(finished)} shards done)"

    man = preprocess(str(tmp_path / "in" / "*.tfrecord"), out, num_workers=0, progress=False)
    assert man["complete"] and man["n_scenes"] == n_shards * per_shard
    for name, (ino, mtime) in finished.items():
        st = (out / name).stat()
        assert (st.st_ino, st.st_mtime_ns) == (ino, mtime), f"{name} was rewritten"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # temp files of the killed run are gone
    ids = SceneCache(out).scenario_ids()
    assert sorted(ids) == [f"copy{i:04d}" for i in range(n_shards * per_shard)]  # each exactly once


@pytest.mark.ray
def test_preprocess_on_ray_then_skip_on_rerun(tmp_path, ray_local):  # preprocess attaches to the shared instance
    write_copies(tmp_path / "in", n_shards=3, per_shard=1)
    write_records(tmp_path / "in" / "extra.tfrecord.gz", [real_record_bytes()])
    man = preprocess(str(tmp_path / "in"), tmp_path / "cache", num_workers=2, progress=False)
    assert man["complete"] and man["n_scenes"] == 4
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.parquet")}
    assert len(stamps) == 4
    man2 = preprocess(str(tmp_path / "in"), tmp_path / "cache", num_workers=2, progress=False)
    assert man2["n_scenes"] == 4
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.parquet")} == stamps
    # A changed input is converted again.
    write_records(tmp_path / "in" / "extra.tfrecord.gz", [real_record_bytes(), real_record_bytes()])
    man3 = preprocess(str(tmp_path / "in"), tmp_path / "cache", num_workers=0, progress=False)
    assert man3["n_scenes"] == 5
