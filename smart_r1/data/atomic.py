"""Atomic file output: write to a temp file in the target's folder, rename it onto the target.

    with atomic_output(path) as tmp:
        write_whatever(tmp)

A reader never sees a half-written `path`; a run killed mid-write leaves at most a temp file
(named `prefix` + random + `suffix`, so callers can find and clear stale ones).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_output"]


@contextmanager
def atomic_output(
    path: str | os.PathLike, prefix: str | None = None, suffix: str = ".tmp", fsync: bool = True
) -> Iterator[str]:
    """Yield a temp file name next to `path` (its folder is created). When the block succeeds the
    temp file is fsynced (`fsync`), made mode 0644 and renamed onto `path`; when the block
    raises it is removed. `prefix` defaults to `.<name>.`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}." if prefix is None else prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
