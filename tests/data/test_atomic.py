"""atomic_output: the target appears whole or not at all; no temp file is left behind."""

from __future__ import annotations

import os

import pytest

from smart_r1.data.atomic import atomic_output


def test_atomic_output_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    with atomic_output(target) as tmp:
        assert os.path.dirname(tmp) == str(target.parent) and not target.exists()
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert target.read_bytes() == b"new" and (target.stat().st_mode & 0o777) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


def test_atomic_output_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(target, prefix=".out.bin.mark-", suffix="", fsync=False) as tmp:
            assert os.path.basename(tmp).startswith(".out.bin.mark-")
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
