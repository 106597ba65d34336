"""Where a run's outputs go on a cluster (`learner.cluster`): relative output dirs under the
storage root, refused inside Ray's working-dir copy, and an object-store target staged locally,
pushed as it grows and pulled back on resume (pyarrow.fs; the local filesystem through a
`file://` URI stands in for s3:// / gs://, same code path)."""

from __future__ import annotations

import os

import pytest


def test_relative_output_dir_goes_under_storage(tmp_path, monkeypatch):
    from learner.cluster import resolve_output_dir

    monkeypatch.delenv("SMART_R1_STORAGE", raising=False)
    assert resolve_output_dir("runs/a", str(tmp_path)) == str(tmp_path / "runs/a")
    assert resolve_output_dir("runs/a", "s3://bucket/sr1/") == "s3://bucket/sr1/runs/a"
    assert resolve_output_dir("/abs/out", "s3://bucket") == "/abs/out"
    assert resolve_output_dir("gs://b/out") == "gs://b/out"
    monkeypatch.setenv("SMART_R1_STORAGE", str(tmp_path / "env"))
    assert resolve_output_dir("x") == str(tmp_path / "env" / "x")


def test_relative_output_dir_refused_in_ray_working_dir_copy(monkeypatch):
    from learner.cluster import resolve_output_dir

    monkeypatch.delenv("SMART_R1_STORAGE", raising=False)
    cwd = "/tmp/ray/session_x/runtime_resources/working_dir_files/_ray_pkg_abc"
    with pytest.raises(ValueError, match="runtime.storage"):
        resolve_output_dir(".smart_r1_runs/demo", cwd=cwd)


def test_uri_target_is_staged_pushed_and_pulled(tmp_path):
    from learner.cluster import RunStorage

    remote = tmp_path / "bucket" / "run"
    st = RunStorage(f"file://{remote}", sync_seconds=0, stage_root=str(tmp_path / "stage_a"), stage=True)
    assert st.remote and not str(st.local_dir).startswith(str(remote))
    os.makedirs(os.path.join(st.local_dir, "checkpoints"))
    with open(os.path.join(st.local_dir, "checkpoints", "00_bc.pt"), "wb") as f:
        f.write(b"x" * 1000)
    with open(os.path.join(st.local_dir, "vocab.npz"), "wb") as f:
        f.write(b"v")
    assert st.push() == 2 and st.push() == 0  # only new or changed files go up
    assert (remote / "checkpoints" / "00_bc.pt").read_bytes() == b"x" * 1000
    # another node (another staging dir) resumes from the object store
    st2 = RunStorage(f"file://{remote}", sync_seconds=0, stage_root=str(tmp_path / "stage_b"), stage=True)
    assert st2.local_dir != st.local_dir
    assert st2.pull() == 2
    assert open(os.path.join(st2.local_dir, "checkpoints", "00_bc.pt"), "rb").read() == b"x" * 1000
